"""Sizes and info-hashes as the commands print them (``info``, ``create``)."""

from __future__ import annotations


def human(n: float) -> str:
    """``1536`` -> ``1.5 KiB`` (bytes as a whole number, larger units with one decimal)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"  # pragma: no cover


def hashes_text(meta) -> str:
    """``info-hash X`` (v1), ``info-hash X, v2 info-hash Y`` (hybrid) or ``v2 info-hash Y``."""
    if meta.hybrid:
        return f"info-hash {meta.info_hash_hex}, v2 info-hash {meta.info_hash_v2_hex}"
    if meta.v2_only:
        return f"v2 info-hash {meta.info_hash_v2_hex}"
    return f"info-hash {meta.info_hash_hex}"
