"""Where a run of pieces lives on a web seed: URLs and byte ranges (BEP 19 and BEP 17).

BEP 19 (``url-list``, GetRight style) serves the torrent's files as they lie on disk, so a run of
consecutive pieces is a list of :class:`Span` s: a byte range of one file each, in stream order, pad files
(BEP 47) as spans without a URL (their bytes are zeros, never fetched). File URLs:

* single-file torrent: the URL is the file itself, unless it ends in ``/``: then the torrent's name is
  appended;
* multi-file torrent: ``URL`` (a ``/`` added when missing) + name + ``/`` + the file's path components.

Names and path components are the torrent's own bytes (``name.utf-8``/``path.utf-8`` preferred, as the
metainfo parser does), percent-encoded, never the names made safe for the local disk: a mirror holds the
files under their real names.

BEP 17 (``httpseeds``) is addressed by piece: ``URL?info_hash=...&piece=N&ranges=A-B`` (:func:`bep17_url`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote_from_bytes, urlencode, urlsplit

from . import bencode
from .metainfo import Metainfo

#: URL schemes a web seed may use (others, such as ``ftp://`` in some url-lists, are skipped).
SCHEMES = ("http", "https")


@dataclass(frozen=True)
class Span:
    """``length`` bytes at ``offset`` of one file; ``url`` is None for a pad file (zeros)."""

    url: str | None
    offset: int
    length: int


def usable(url: str) -> bool:
    """An http(s) URL with a host: something a web seed can be asked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in SCHEMES and bool(parts.hostname)


def _raw_paths(meta: Metainfo) -> tuple[bytes, list[list[bytes]]]:
    """The torrent's name and each file's path components, as bytes from the info dictionary."""
    info = bencode.decode(meta.raw_info) if meta.raw_info else {}
    name = info.get(b"name.utf-8")
    if not isinstance(name, bytes):
        name = info.get(b"name")
    if not isinstance(name, bytes):
        name = meta.name.encode()
    paths: list[list[bytes]] = []
    entries = info.get(b"files")
    if isinstance(entries, list):
        for entry in entries:
            parts = entry.get(b"path.utf-8") if isinstance(entry, dict) else None
            if not (isinstance(parts, list) and all(isinstance(p, bytes) for p in parts)):
                parts = entry.get(b"path", []) if isinstance(entry, dict) else []
            paths.append([p for p in parts if isinstance(p, bytes)])
    return name, paths


def file_urls(base: str, meta: Metainfo) -> list[str | None]:
    """The URL of each of ``meta.files`` on the BEP 19 web seed ``base`` (None for pad files)."""
    name, paths = _raw_paths(meta)
    if not meta.multi_file:
        return [base + quote_from_bytes(name) if base.endswith("/") else base]
    if not base.endswith("/"):
        base += "/"
    prefix = base + quote_from_bytes(name) + "/"
    out: list[str | None] = []
    for n, f in enumerate(meta.files):
        parts = paths[n] if n < len(paths) else [c.encode() for c in f.path[1:]]
        out.append(None if f.pad else prefix + "/".join(quote_from_bytes(p) for p in parts))
    return out


class UrlMap:
    """A BEP 19 web seed's view of one torrent: the byte ranges of files that make up runs of pieces."""

    def __init__(self, base: str, meta: Metainfo) -> None:
        self.meta = meta
        self.urls = file_urls(base, meta)

    def spans(self, first: int, count: int) -> list[Span]:
        """The spans of pieces ``first`` to ``first + count - 1``, in stream order (empty files left out)."""
        meta = self.meta
        start = first * meta.piece_length
        end = min(meta.total_length, (first + count) * meta.piece_length)
        out: list[Span] = []
        for f, url in zip(meta.files, self.urls):
            lo, hi = max(start, f.offset), min(end, f.offset + f.length)
            if lo < hi:
                out.append(Span(url, lo - f.offset, hi - lo))
        return out


def bep17_url(base: str, info_hash: bytes, piece: int, length: int) -> str:
    """The BEP 17 request for the whole of ``piece`` (``length`` bytes): ``ranges`` is inclusive."""
    query = urlencode({"info_hash": info_hash, "piece": piece, "ranges": f"0-{length - 1}"})
    return base + ("&" if "?" in base else "?") + query


__all__ = ["Span", "UrlMap", "file_urls", "bep17_url", "usable", "SCHEMES"]
