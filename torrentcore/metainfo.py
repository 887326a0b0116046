"""Reading .torrent files (BEP 3, 12, 27, 47, and v2 and hybrid torrents of BEP 52).

:func:`load` / :func:`parse` turn a metainfo file into a :class:`Metainfo`:
validated piece layout, trackers by tier and file paths made safe to create
under a download folder. Anything malformed raises
:class:`~torrentcore.errors.MetainfoError` (or ``BencodeError``) with one line
saying what is wrong.

Path safety rules (every path stays inside the download folder):

* each path component is decoded as UTF-8 (``path.utf-8`` preferred), invalid
  bytes become ``_``; ``/``, ``\\``, NUL and control characters become ``_``;
* components that are empty, ``.`` or ``..`` become ``_``;
* components longer than 240 bytes are shortened, keeping the extension;
* on Windows also: ``<>:"|?*`` become ``_`` (so ``C:`` cannot name a drive
  and ``:`` cannot open an alternate data stream), trailing dots and spaces
  are dropped, and device names (``CON``, ``NUL``, ``COM1``, ``LPT1``, ...,
  with or without an extension) get a ``_`` after their stem;
* a file whose whole path is longer than :data:`MAX_PATH_BYTES` is refused;
* a torrent name that is unusable (empty, ``.``, ``..``) is replaced by the
  info-hash in hex, as libtorrent does;
* two files that would land on the same path (or a file that would sit where
  another file needs a folder) get ``.1``, ``.2``, ... before the extension;
  on Windows and macOS names differing only in case or Unicode normalization
  count as the same.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import sys
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from . import bencode, merkle, metainfo_v2
from .errors import MetainfoError

#: Largest piece length accepted (libtorrent's limit too); pieces are held in memory.
MAX_PIECE_LENGTH = 512 * 1024 * 1024
#: Largest number of files in one torrent (each takes at least five of ``bencode.MAX_TOKENS``).
MAX_FILES = 250_000
#: Largest number of pieces (libtorrent's ``load_torrent_limits.max_pieces`` default, 0x200000).
MAX_PIECES = 0x200000
#: Largest file, and largest torrent, in bytes: 256 TiB (libtorrent's ``max_file_size`` and ``max_file_offset``).
MAX_TOTAL_SIZE = 2**48 - 1
#: Longest path of one file below the download folder, in UTF-8 bytes (Linux's ``PATH_MAX``).
MAX_PATH_BYTES = 4096
#: Byte budget for one path component (filesystems allow 255; leave room for ``.N``).
MAX_COMPONENT_BYTES = 240
#: How many ``.N`` suffixes to try before giving up on a duplicate name.
MAX_DUPLICATES = 100
#: Pre-BEP 47 padding files are recognised by this name prefix.
PAD_PREFIX = "_____padding_file_"

_CASE_INSENSITIVE_FS = sys.platform in ("darwin", "win32")
#: Apply Windows' file name rules (tests turn this on to check them on any platform).
_WINDOWS_NAMES = sys.platform == "win32"
_WINDOWS_BAD_CHARS = frozenset('<>:"|?*')
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{dev}{n}" for dev in ("COM", "LPT") for n in (*"123456789", "\u00b9", "\u00b2", "\u00b3")]
)


@dataclass(frozen=True)
class FileEntry:
    """One file of the torrent, placed in the torrent's byte stream.

    ``path`` is relative to the download folder and already safe (it starts
    with the torrent's folder name for multi-file torrents). Pad files (BEP 47)
    occupy bytes in the stream but are never written; symlinks have length 0
    and are not created.
    """

    path: tuple[str, ...]
    length: int
    offset: int
    pad: bool = False
    symlink: bool = False
    executable: bool = False
    hidden: bool = False
    #: The file's v2 ``pieces root`` (SHA-256 Merkle root; ``b""`` for v1 torrents, pad and empty files).
    root: bytes = b""

    @property
    def relpath(self) -> str:
        """The path joined with ``/`` (for display and JSON)."""
        return "/".join(self.path)


@dataclass
class Metainfo:
    """A parsed, validated torrent: v1, v2 or hybrid (BEP 52).

    ``info_hash`` is the 20-byte hash the torrent is known by on the wire and in resume records: the v1
    SHA-1 for v1 and hybrid torrents, the v2 SHA-256 truncated to 20 bytes for v2-only ones.
    ``info_hash_v2`` is the full SHA-256 of a v2 or hybrid torrent. ``pieces`` is empty for v2-only
    torrents, whose pieces are checked against ``piece_layers`` (see :meth:`piece_ok`).
    """

    info_hash: bytes
    name: str
    piece_length: int
    pieces: bytes
    files: list[FileEntry]
    total_length: int
    trackers: list[list[str]] = field(default_factory=list)
    private: bool = False
    multi_file: bool = False
    hybrid: bool = False
    created_by: str | None = None
    comment: str | None = None
    creation_date: int | None = None
    #: Web seeds: BEP 19 (``url-list``, GetRight style) and BEP 17 (``httpseeds``) URLs, as given.
    url_list: list[str] = field(default_factory=list)
    http_seeds: list[str] = field(default_factory=list)
    nodes: list[tuple[str, int]] = field(default_factory=list)
    raw_info: bytes = b""
    info_hash_v2: bytes | None = None
    #: ``pieces root`` -> its file's piece layer (concatenated 32-byte hashes), for files over one piece.
    piece_layers: dict[bytes, bytes] = field(default_factory=dict)
    piece_count: int = 0

    @property
    def num_pieces(self) -> int:
        """Number of pieces."""
        return self.piece_count or len(self.pieces) // 20

    @property
    def v2(self) -> bool:
        """Whether the torrent has a v2 part (v2-only or hybrid)."""
        return self.info_hash_v2 is not None

    @property
    def v2_only(self) -> bool:
        """Whether the torrent has no v1 part."""
        return self.info_hash_v2 is not None and not self.pieces

    @property
    def info_hash_v2_hex(self) -> str | None:
        """The full v2 info-hash (SHA-256) in hex, or None for a v1 torrent."""
        return None if self.info_hash_v2 is None else self.info_hash_v2.hex()

    @property
    def info_hashes(self) -> tuple[bytes, ...]:
        """Every 20-byte hash peers, trackers and the DHT know this torrent by (two for a hybrid)."""
        if self.info_hash_v2 is not None and self.pieces:
            return (self.info_hash, self.info_hash_v2[:20])
        return (self.info_hash,)

    @property
    def pad_in_piece(self) -> dict[int, int]:
        """Piece index -> bytes of pad files in it, for the pieces that hold any (sizes shown to users and
        told to trackers count no pad bytes)."""
        pads = self.__dict__.get("_pad_in_piece")
        if pads is None:
            pads = {}
            plen = self.piece_length
            for f in self.files:
                if f.pad and f.length:
                    end = f.offset + f.length
                    for i in range(f.offset // plen, (end - 1) // plen + 1):
                        lo, hi = max(f.offset, i * plen), min(end, (i + 1) * plen)
                        pads[i] = pads.get(i, 0) + hi - lo
            self.__dict__["_pad_in_piece"] = pads
        return pads

    def missing_layers(self) -> list[FileEntry]:
        """Files larger than one piece whose piece layer is not known (to be had from peers)."""
        if not self.v2:
            return []
        return [f for f in self.files if f.root and f.length > self.piece_length and f.root not in self.piece_layers]

    def piece_ok(self, index: int, data, *, sha1: Any = None, hashed: int = 0) -> bool:
        """Whether ``data`` is piece ``index``: its SHA-1 (v1, hybrid) and its Merkle hash (v2, hybrid).

        ``sha1`` (v1 torrents only): a SHA-1 object already fed ``data[:hashed]``, as a download feeds it while the
        blocks arrive; only the rest of ``data`` is hashed here.

        A hybrid's piece must pass both; the bytes of a piece past its file's end (pad) must be zeros
        for v2. A v2-only piece whose layer is missing does not pass (see :meth:`missing_layers`); a
        hybrid's passes on its SHA-1 alone until the layer is fetched.
        """
        if sha1 is not None:
            if self.info_hash_v2 is not None:
                raise ValueError("piece_ok: a SHA-1 fed beforehand is for v1 torrents only")
            if hashed < len(data):
                sha1.update(memoryview(data)[hashed:])
            return sha1.digest() == self.piece_hash(index)
        if self.pieces and hashlib.sha1(data).digest() != self.piece_hash(index):
            return False
        if self.info_hash_v2 is None:
            return True
        return self._v2_piece_ok(index, data)

    def _v2_piece_ok(self, index: int, data) -> bool:
        f, k = self._file_of_piece(index)
        view = memoryview(data)
        if f is None:
            return view == bytes(len(view))  # a piece of pad bytes only (cannot happen in a valid layout)
        n = min(self.piece_length, f.length - k * self.piece_length)
        if len(view) > n and view[n:] != bytes(len(view) - n):  # pad bytes must be zeros (compared in C)
            return False
        if f.length <= self.piece_length:
            return merkle.small_file_root(view[:n]) == f.root
        layer = self.piece_layers.get(f.root)
        if layer is None:
            return bool(self.pieces)  # a hybrid's SHA-1 already passed; a v2-only piece cannot be checked yet
        return merkle.piece_root(view[:n], self.piece_length) == layer[k * merkle.HASH : (k + 1) * merkle.HASH]

    def _file_of_piece(self, index: int) -> tuple[FileEntry | None, int]:
        """The v2 file piece ``index`` belongs to, and the piece's index within it."""
        starts = self.__dict__.get("_v2_starts")
        if starts is None:
            starts = [(f.offset // self.piece_length, f) for f in self.files if f.root]
            self.__dict__["_v2_starts"] = starts
        pos = bisect.bisect_right(starts, index, key=lambda item: item[0]) - 1
        if pos < 0:
            return None, 0
        first, f = starts[pos]
        if index * self.piece_length >= f.offset + f.length:
            return None, 0
        return f, index - first

    @property
    def info_hash_hex(self) -> str:
        """The v1 info-hash in lowercase hex."""
        return self.info_hash.hex()

    def piece_hash(self, index: int) -> bytes:
        """The SHA-1 that piece ``index`` must hash to."""
        return self.pieces[index * 20 : index * 20 + 20]

    def piece_size(self, index: int) -> int:
        """Length in bytes of piece ``index`` (the last one may be short)."""
        if index == self.num_pieces - 1:
            return self.total_length - index * self.piece_length
        return self.piece_length

    @property
    def data_files(self) -> list[FileEntry]:
        """Files that are really stored (no pad files)."""
        return [f for f in self.files if not f.pad]

    @property
    def data_length(self) -> int:
        """Bytes of real data (total length less pad files)."""
        if self.total_length == self.__dict__.get("_data_length_of", (None,))[0]:
            return self.__dict__["_data_length_of"][1]
        n = sum(f.length for f in self.files if not f.pad)
        self.__dict__["_data_length_of"] = (self.total_length, n)
        return n


def load(path: str) -> Metainfo:
    """Read and parse the .torrent file at ``path``."""
    try:
        size = os.path.getsize(path)
        if size > bencode.MAX_SIZE:
            raise MetainfoError(f"{path}: {size} bytes is too large for a .torrent file")
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise MetainfoError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse(data)


def parse(data: bytes) -> Metainfo:
    """Parse the bytes of a .torrent file."""
    if data[:1] != b"d":
        raise MetainfoError("not a torrent file: it is not a bencoded dictionary")
    # libtorrent tolerates a trailing newline after the dictionary; nothing else may follow.
    top, raw = bencode.decode_dict_with_spans(data.rstrip(b" \t\r\n"))
    info = top.get(b"info")
    if not isinstance(info, dict):
        raise MetainfoError("missing or invalid 'info' dictionary")
    raw_info = raw[b"info"]
    info_hash = hashlib.sha1(raw_info).digest()

    version = info.get(b"meta version")
    if isinstance(version, int) and version > 2:
        raise MetainfoError(f"unknown 'meta version' {version} (versions 1 and 2 are known)")
    v2 = version == 2
    if v2:
        try:
            bencode.check_sorted(raw_info)
        except bencode.BencodeError as exc:
            raise MetainfoError(f"invalid v2 info dictionary: {exc}") from None
    if b"pieces" not in info and not v2:
        if b"file tree" in info:
            raise MetainfoError("a v2 'file tree' without 'meta version' 2, and no v1 'pieces'")
        raise MetainfoError("missing 'pieces' in the info dictionary")
    v1 = b"pieces" in info
    info_hash_v2 = hashlib.sha256(raw_info).digest() if v2 else None
    if not v1:
        info_hash = info_hash_v2[:20]  # a v2-only torrent is known by the truncated SHA-256 on the wire
    hybrid = v1 and v2

    piece_length = info.get(b"piece length")
    if not isinstance(piece_length, int) or piece_length <= 0:
        raise MetainfoError("invalid or missing 'piece length'")
    if piece_length > MAX_PIECE_LENGTH:
        raise MetainfoError(f"piece length {piece_length} is larger than the supported {MAX_PIECE_LENGTH}")
    if v2 and (piece_length < 16384 or piece_length & (piece_length - 1)):
        raise MetainfoError("invalid 'piece length' for a v2 torrent (must be a power of two >= 16 KiB)")
    pieces = info[b"pieces"] if v1 else b""
    if not isinstance(pieces, bytes) or len(pieces) % 20:
        raise MetainfoError("invalid 'pieces': its length is not a multiple of 20")
    if len(pieces) // 20 > MAX_PIECES:
        raise MetainfoError(f"too many pieces ({len(pieces) // 20}; the limit is {MAX_PIECES})")

    name = _text(info, b"name")
    if name is None:
        raise MetainfoError("missing or invalid 'name' in the info dictionary")
    name = _safe_component(name)
    if name == "_" or name.strip() == "":
        name = info_hash.hex() if v1 else info_hash_v2.hex()

    tree: list[metainfo_v2.TreeFile] = []
    if v2:
        tree = metainfo_v2.read_file_tree(info, name, piece_length=piece_length, max_files=MAX_FILES,
                                          max_total=MAX_TOTAL_SIZE, safe=_safe_component,
                                          check_path=_check_path_length)
    if v1:
        files = _read_files(info, name)
        if v2 and not metainfo_v2.compatible(files, tree):
            raise MetainfoError("the v1 and v2 file lists of this hybrid torrent do not match")
        roots = [t.root for t in tree]
    else:
        files = [_RawFile(t.path, t.length, t.pad, t.symlink, t.executable, t.hidden) for t in tree]
        roots = [t.root for t in tree]
        if len(files[0].path) == 1:
            # A single-file v2 torrent: its file is named by the 'file tree' (as libtorrent saves it), and
            # so is the torrent, as for v1, where the file is the torrent's name.
            name = files[0].path[0]
    total = 0
    placed: list[FileEntry] = []
    for i, f in enumerate(files):
        root = roots[i] if i < len(roots) else b""
        placed.append(FileEntry(f.path, f.length, total, f.pad, f.symlink, f.executable, f.hidden, root))
        total += f.length
        if total > MAX_TOTAL_SIZE:
            raise MetainfoError(f"the torrent is larger than the supported {MAX_TOTAL_SIZE} bytes")
    if total <= 0:
        raise MetainfoError("invalid length: the torrent holds no data")
    expected = -(-total // piece_length)  # integer ceiling: a float division loses precision
    if v1 and expected != len(pieces) // 20:
        raise MetainfoError(
            f"piece count mismatch: {len(pieces) // 20} hashes for {total} bytes in "
            f"{piece_length}-byte pieces (expected {expected})"
        )
    if expected > MAX_PIECES:
        raise MetainfoError(f"too many pieces ({expected}; the limit is {MAX_PIECES})")
    layers = metainfo_v2.read_piece_layers(top.get(b"piece layers"), tree, piece_length) if v2 else {}
    _dedupe_paths(placed)

    return Metainfo(
        info_hash=info_hash,
        name=name,
        piece_length=piece_length,
        pieces=pieces,
        files=placed,
        total_length=total,
        trackers=_trackers(top),
        private=info.get(b"private") == 1,
        multi_file=b"files" in info if v1 else len(placed[0].path) > 1,
        hybrid=hybrid,
        created_by=_text(top, b"created by"),
        comment=_text(top, b"comment"),
        creation_date=top.get(b"creation date") if isinstance(top.get(b"creation date"), int) else None,
        url_list=_url_list(top),
        http_seeds=_url_list(top, b"httpseeds"),
        nodes=_nodes(top),
        raw_info=raw_info,
        info_hash_v2=info_hash_v2,
        piece_layers=layers,
        piece_count=expected,
    )


# --- helpers -----------------------------------------------------------------------------------


def _decode_text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace").replace("\ufffd", "_")


def _text(d: dict, key: bytes) -> str | None:
    """A text field, preferring the ``key.utf-8`` variant when it is valid."""
    for k in (key + b".utf-8", key):
        v = d.get(k)
        if isinstance(v, bytes):
            return _decode_text(v)
    return None


def _safe_component(comp: str, windows: bool | None = None) -> str:
    """Make one path component safe to create inside a folder.

    ``windows`` (default: whether we run on Windows) also applies Windows' rules:
    no ``<>:"|?*``, no trailing dot or space, no device names.
    """
    if windows is None:
        windows = _WINDOWS_NAMES
    comp = comp.strip("/\\")  # a leading or trailing separator carries no name (libtorrent agrees)
    out = "".join(
        "_" if (c in "/\\" or ord(c) < 32 or c == "\x7f" or (windows and c in _WINDOWS_BAD_CHARS)) else c
        for c in comp
    )
    if windows:
        out = out.rstrip(". ")
    if out in ("", ".", ".."):
        return "_"
    raw = out.encode("utf-8")
    if len(raw) > MAX_COMPONENT_BYTES:
        stem, dot, ext = out.rpartition(".")
        ext_b = (dot + ext).encode("utf-8") if dot and stem and len(ext.encode()) <= 20 else b""
        keep = raw[: MAX_COMPONENT_BYTES - len(ext_b)].decode("utf-8", errors="ignore")
        out = keep + ext_b.decode("utf-8")
    if windows:
        out = out.rstrip(". ") or "_"  # shortening may have left one
        stem, dot, ext = out.partition(".")
        if stem.rstrip(" ").upper() in _WINDOWS_DEVICES:
            out = f"{stem}_{dot}{ext}"
    return out


@dataclass
class _RawFile:
    path: tuple[str, ...]
    length: int
    pad: bool
    symlink: bool
    executable: bool
    hidden: bool


def _read_files(info: dict, name: str) -> list[_RawFile]:
    attr = info.get(b"attr", b"")
    if b"files" not in info:
        length = info.get(b"length")
        if not isinstance(length, int) or length < 0:
            raise MetainfoError("invalid or missing 'length'")
        attr = attr if isinstance(attr, bytes) else b""
        return [_RawFile((name,), length, False, False, b"x" in attr, b"h" in attr)]
    entries = info[b"files"]
    if not isinstance(entries, list) or not entries:
        raise MetainfoError("invalid 'files': no files in the torrent")
    if len(entries) > MAX_FILES:
        raise MetainfoError(f"too many files ({len(entries)})")
    out = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise MetainfoError(f"file #{n} is not a dictionary")
        attr = entry.get(b"attr", b"")
        attr = attr if isinstance(attr, bytes) else b""
        symlink = b"l" in attr
        length = entry.get(b"length", 0 if symlink else None)
        if not isinstance(length, int) or length < 0:
            raise MetainfoError(f"file #{n} has an invalid or missing 'length'")
        parts = entry.get(b"path.utf-8")
        if not _is_path_list(parts):
            parts = entry.get(b"path", [] if b"p" in attr else None)
        if not _is_path_list(parts):
            raise MetainfoError(f"file #{n} has an invalid or missing 'path'")
        comps = [_decode_text(p) for p in parts]
        pad = b"p" in attr or (bool(comps) and comps[-1].startswith(PAD_PREFIX))
        if symlink:
            target = entry.get(b"symlink path")
            if not _is_path_list(target):
                raise MetainfoError(f"file #{n} is a symlink with an invalid 'symlink path'")
            length = 0  # libtorrent and BEP 47: a symlink carries no data
        path = (name, *(_safe_component(c) for c in comps)) if comps else (name, "_")
        _check_path_length(path, n)
        out.append(_RawFile(path, length, pad, symlink, b"x" in attr, b"h" in attr))
    return out


def _is_path_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(p, bytes) for p in value)


def _key(comp: str) -> str:
    # macOS also ignores Unicode normalization (NFC "\u00e9" and NFD "e\u0301" are one name).
    return unicodedata.normalize("NFC", comp).casefold() if _CASE_INSENSITIVE_FS else comp


def _check_path_length(path: tuple[str, ...], n: int) -> None:
    size = len("/".join(path).encode("utf-8"))
    if size > MAX_PATH_BYTES:
        raise MetainfoError(f"file #{n} has a path of {size} bytes, longer than the supported {MAX_PATH_BYTES}")


def _with_suffix(comp: str, n: int) -> str:
    stem, dot, ext = comp.rpartition(".")
    if dot and stem:
        return f"{stem}.{n}.{ext}"
    return f"{comp}.{n}"


def _dedupe_paths(files: list[FileEntry]) -> None:
    """Rename files in place so no two share a path and no file blocks a folder.

    Every folder and file placed so far is a node keyed by ``(parent node, name)``,
    so each path is checked in time linear in its length, however deep it is.
    """
    nodes: dict[tuple[int, str], int] = {}
    file_nodes: set[int] = set()
    for i, f in enumerate(files):
        if f.pad:
            continue
        path = list(f.path)
        parent = 0  # the download folder
        for depth in range(len(path) - 1):
            base = path[depth]
            node = nodes.get((parent, _key(base)))
            n = 0
            # A folder on our path that is already a file: rename that folder component.
            while node in file_nodes:
                n += 1
                if n > MAX_DUPLICATES:
                    raise MetainfoError("too many duplicate file names")
                path[depth] = _with_suffix(base, n)
                node = nodes.get((parent, _key(path[depth])))
            if node is None:
                node = nodes[(parent, _key(path[depth]))] = len(nodes) + 1
            parent = node
        leaf = path[-1]
        for n in range(0, MAX_DUPLICATES + 1):
            cand = _with_suffix(leaf, n) if n else leaf
            if (parent, _key(cand)) not in nodes:
                break
        else:
            raise MetainfoError("too many duplicate file names")
        node = nodes[(parent, _key(cand))] = len(nodes) + 1
        file_nodes.add(node)
        path[-1] = cand
        if tuple(path) != f.path:
            _check_path_length(tuple(path), i)
            files[i] = FileEntry(tuple(path), f.length, f.offset, f.pad, f.symlink, f.executable, f.hidden, f.root)


def _trackers(top: dict) -> list[list[str]]:
    """Tracker tiers per BEP 12; ``announce`` alone when there is no usable list."""
    tiers: list[list[str]] = []
    seen: set[str] = set()
    announce_list = top.get(b"announce-list")
    if isinstance(announce_list, list):
        for tier in announce_list:
            if not isinstance(tier, list):
                continue
            urls = []
            for url in tier:
                if isinstance(url, bytes):
                    text = _decode_text(url).strip()
                    if text and text not in seen and "://" in text:
                        seen.add(text)
                        urls.append(text)
            if urls:
                tiers.append(urls)
    if not tiers:
        announce = top.get(b"announce")
        if isinstance(announce, bytes):
            text = _decode_text(announce).strip()
            if text and "://" in text:
                tiers.append([text])
    return tiers


def _url_list(top: dict, key: bytes = b"url-list") -> list[str]:
    value = top.get(key)
    items = value if isinstance(value, list) else [value]
    return [_decode_text(v).strip() for v in items if isinstance(v, bytes) and v.strip()]


def _nodes(top: dict) -> list[tuple[str, int]]:
    out = []
    value = top.get(b"nodes")
    if isinstance(value, list):
        for node in value:
            if (
                isinstance(node, list)
                and len(node) == 2
                and isinstance(node[0], bytes)
                and isinstance(node[1], int)
                and 0 < node[1] < 65536
            ):
                out.append((_decode_text(node[0]), node[1]))
    return out
