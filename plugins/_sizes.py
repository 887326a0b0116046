"""Sizes in plugin settings: ``1073741824``, ``512k``, ``64M``, ``2G``, ``1.5GiB`` (powers of 1024)."""

from __future__ import annotations

import re

from torrentcore.hookspec import BadInputError

#: A pattern, compiled (and cached by ``re``) when first used, not at import.
_SIZE = r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*"
_SCALE = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes in ``text``; a :class:`~torrentcore.errors.BadInputError` (exit code 2) naming ``what`` if invalid."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise BadInputError(f"invalid {what} {text} (must not be negative)")
        return text
    m = re.fullmatch(_SIZE, str(text))
    if not m:
        raise BadInputError(f"invalid {what} {text!r} (examples: 512k, 64M, 2G, 1048576)")
    return int(float(m.group(1)) * _SCALE[m.group(2).lower()])
