"""Making .torrent files, v1, v2 and hybrid (BEP 3, 12, 27, 47, 52): ``torrentcore create``.

:func:`create_torrent` turns a file or a folder into the bytes of a .torrent
and the :class:`~torrentcore.metainfo.Metainfo` parsed back from them (so what
is returned has passed the same validation as any torrent we load).

Choices, and how they compare with libtorrent's ``create_torrent``:

* **Files** of a folder are listed recursively and sorted by their path
  components compared bytewise as UTF-8 (``a/x`` before ``a.txt`` before
  ``b``), so the same tree always gives the same torrent. libtorrent keeps the
  directory's listing order. Hidden files are included (libtorrent agrees);
  zero-length files are listed (they occupy no bytes of the piece stream).
* **Symlinks** inside a folder are *not followed and not listed*; they are
  skipped without an error, and a warning names them. libtorrent's default
  follows them (a symlink to a file becomes a copy of the file's data, a
  symlink to a folder is walked, a dangling one is skipped silently); with its
  ``symlinks`` flag it records them as BEP 47 symlink entries. Not following
  them keeps data from outside the folder out of the torrent and cannot loop.
  The path given on the command line itself may be a symlink: it is what the
  user named, so it is resolved.
* **torrentcore's own files** are never packed: a name starting with
  ``.torrentcore-`` is what the engine writes beside the data (old-style resume
  records ``.torrentcore-<infohash>.resume`` and their ``.resume.tmp``, a magnet
  fetch's ``.torrentcore-*.torrent.part``, ``create``'s own temporary file), so
  such files inside a folder are skipped, and sharing one by name is refused.
  So is the .torrent being written, if it lies inside the folder (``exclude``).
* Anything that is neither a regular file, a folder nor a symlink (FIFO,
  socket, device) is refused with :class:`BadInputError`: reading it could
  block forever and skipping it silently would lose data. So is a name that
  is not valid UTF-8, or that :mod:`torrentcore.metainfo` would rename when
  loading (``\\``, control characters, components over 240 bytes): the
  torrent could not then be seeded from the very folder it was made from.
* **Piece length**: when not given, the smallest power of two from 16 KiB to
  16 MiB that gives at most 2000 pieces (so 1000-2000 pieces unless the
  bounds cut in: 1 GB gets 512 KiB pieces, as with libtorrent). A given piece
  length must be a power of two of at least 16 KiB (and at most what
  :mod:`torrentcore.metainfo` accepts).
* **Trackers**: each URL is its own tier. The first is ``announce``;
  ``announce-list`` is written only when there is more than one tracker, as
  libtorrent does. Duplicate URLs are dropped.
* **Web seeds** (BEP 19): written as the ``url-list`` list, http(s) URLs
  only, duplicates dropped.
* ``comment``, ``created by`` and ``creation date`` are written only when
  given (no hidden clock: the output depends only on the arguments and data).
* **Formats** (``kind``): ``v1`` (SHA-1 pieces over the concatenated files), ``v2`` (a ``file tree``
  with a SHA-256 Merkle root per file, ``piece layers`` for files over one piece) or ``hybrid`` (both
  in one info dictionary; in a multi-file hybrid every non-empty file is followed by a BEP 47 pad file
  ``.pad/N`` up to the next piece boundary, the last one too, so v1 pieces and v2 pieces coincide).
  For the same files and piece length the info-hashes are libtorrent 2.x's (its file order, pad
  files and keys). ``torrentcore create`` makes hybrids unless told otherwise, as libtorrent 2.x's
  ``create_torrent`` and qBittorrent's torrent creator do: v1-only clients can still join, and v2
  clients get per-file hashes.
* **Hashing** uses every core (:mod:`torrentcore.hash_pool`): worker threads, one per CPU unless
  ``threads`` says otherwise, each take the next run of pieces, read it into a buffer of their own and
  hash it (SHA-1, and for v2 the SHA-256 of each 16 KiB block and the piece's Merkle subtree, all in one
  worker call per piece); this greenlet only collects the hashes in order (and reports progress).
  libtorrent 2.1's ``set_piece_hashes`` keeps one thread busy (benchmarks/create_v2.py: 1.0 threads
  running or ready to run) but reads through memory-mapped files, which saves the copy.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import structlog

from . import config, hash_pool, merkle, metainfo
from .bencode import encode
from .errors import BadInputError
from .metainfo import Metainfo
from .webseed_urls import usable

log = structlog.get_logger(__name__)

#: Piece lengths chosen automatically stay within these bounds (both powers of two).
MIN_PIECE_LENGTH = 16 * 1024
MAX_AUTO_PIECE_LENGTH = 16 * 1024 * 1024
#: The automatic piece length aims at no more than this many pieces.
TARGET_PIECES = 2000

#: The formats :func:`create_torrent` makes (``kind``).
KINDS = ("v1", "v2", "hybrid")
#: What ``torrentcore create`` makes by default: libtorrent 2.x's ``create_torrent`` makes hybrids unless
#: told ``v1_only`` or ``v2_only``, and so does qBittorrent's torrent creator (format "Hybrid" preselected).
#: A hybrid is read by v1-only clients (aria2, Transmission 3/4) and gives v2 clients per-file hashes.
DEFAULT_KIND = "hybrid"

#: Files whose name starts with this are torrentcore's own (resume records, temporary files), never data.
ENGINE_FILE_PREFIX = ".torrentcore-"

__all__ = ["KINDS", "DEFAULT_KIND",
           "create_torrent", "auto_piece_length", "check_piece_length", "list_files", "SourceFile", "Listing",
           "is_engine_file", "torrent_name", "ENGINE_FILE_PREFIX"]


@dataclass(frozen=True)
class SourceFile:
    """One file to share: its path inside the torrent and where it is on disk."""

    path: tuple[str, ...]  # components below the torrent's folder; () for a single-file torrent
    disk_path: str
    length: int


class Listing(NamedTuple):
    """What sharing a path means (see :func:`list_files`)."""

    name: str
    files: list[SourceFile]
    skipped_symlinks: list[str]
    is_folder: bool
    skipped_ours: list[str]  # torrentcore's own files (and excluded paths) found inside the folder


def is_engine_file(name: str) -> bool:
    """True for a file name torrentcore writes beside the data itself (see :data:`ENGINE_FILE_PREFIX`)."""
    return name.startswith(ENGINE_FILE_PREFIX)


def torrent_name(path: str | os.PathLike) -> str:
    """The ``name`` a torrent of ``path`` gets (its last component); ``""`` for a path without one (``/``)."""
    return os.path.basename(os.path.normpath(os.path.abspath(os.fspath(path))))


def auto_piece_length(total: int) -> int:
    """The piece length for ``total`` bytes: a power of two in 16 KiB..16 MiB, at most ~2000 pieces."""
    length = MIN_PIECE_LENGTH
    while length < MAX_AUTO_PIECE_LENGTH and math.ceil(total / length) > TARGET_PIECES:
        length *= 2
    return length


def check_piece_length(length: int) -> int:
    """Validate a piece length given by the user; raise :class:`BadInputError` if unusable."""
    if (
        isinstance(length, bool)
        or not isinstance(length, int)
        or length < MIN_PIECE_LENGTH
        or length & (length - 1)
    ):
        raise BadInputError(f"invalid piece length {length!r}: it must be a power of two of at least 16 KiB")
    if length > metainfo.MAX_PIECE_LENGTH:
        raise BadInputError(
            f"invalid piece length {length}: more than the supported {metainfo.MAX_PIECE_LENGTH // 1024**2} MiB"
        )
    return length


def _check_name(component: str, where: str) -> None:
    try:
        component.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInputError(f"cannot share {where!r}: its name is not valid UTF-8 (rename it)") from None
    if metainfo._safe_component(component) != component:
        raise BadInputError(
            f"cannot share {where!r}: its name would be changed by clients when downloading "
            "(it contains '\\', control characters or is too long); rename it"
        )


def _sort_key(path: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(c.encode("utf-8") for c in path)


def _excluded(paths: Iterable[str | os.PathLike]) -> dict[str, set[str]]:
    """File name -> real paths of the folders it must not be packed from (one ``realpath`` per path)."""
    out: dict[str, set[str]] = {}
    for p in paths:
        p = os.path.abspath(os.fspath(p))
        out.setdefault(os.path.basename(p), set()).add(os.path.realpath(os.path.dirname(p)))
    return out


def list_files(path: str | os.PathLike, exclude: Iterable[str | os.PathLike] = ()) -> Listing:
    """What sharing ``path`` means: a :class:`Listing` ``(name, files, skipped_symlinks, is_folder, skipped_ours)``.

    ``files`` are sorted (see the module docstring); ``skipped_symlinks`` are
    the paths of symlinks found inside a folder and not followed;
    ``skipped_ours`` those of torrentcore's own files (:func:`is_engine_file`)
    and of the ``exclude`` paths found inside it.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    name = torrent_name(path)
    if not name:
        raise BadInputError(f"cannot make a torrent of {path}: it has no name (share a folder inside it)")
    _check_name(name, path)
    if stat.S_ISREG(st.st_mode):
        if is_engine_file(name):
            raise BadInputError(f"cannot share {path}: it is one of torrentcore's own files (a resume record or "
                                "a temporary file), not data")
        return Listing(name, [SourceFile((), path, st.st_size)], [], False, [])
    if not stat.S_ISDIR(st.st_mode):
        raise BadInputError(f"cannot share {path}: it is neither a regular file nor a folder")
    excluded = _excluded(exclude)
    files: list[SourceFile] = []
    skipped: list[str] = []
    ours: list[str] = []
    stack: list[tuple[str, tuple[str, ...]]] = [(path, ())]
    while stack:
        folder, rel = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            raise BadInputError(f"cannot read folder {folder}: {exc.strerror or exc}") from None
        for entry in entries:
            sub = (*rel, entry.name)
            try:
                if entry.is_symlink():
                    skipped.append(entry.path)
                    continue
                if entry.is_file(follow_symlinks=False) and (
                    is_engine_file(entry.name)
                    or (entry.name in excluded and os.path.realpath(folder) in excluded[entry.name])
                ):
                    ours.append(entry.path)
                    continue
                _check_name(entry.name, entry.path)
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, sub))
                elif entry.is_file(follow_symlinks=False):
                    files.append(SourceFile(sub, entry.path, entry.stat(follow_symlinks=False).st_size))
                else:
                    raise BadInputError(
                        f"cannot share {entry.path}: it is not a regular file (FIFO, socket or device)"
                    )
            except OSError as exc:
                raise BadInputError(f"cannot read {entry.path}: {exc.strerror or exc}") from None
    files.sort(key=lambda f: _sort_key(f.path))
    return Listing(name, files, sorted(skipped), True, sorted(ours))


def _sha1(data) -> bytes:
    return hashlib.sha1(data).digest()


def _v1_digest(piece: hash_pool.Piece, data: memoryview) -> bytes:
    return _sha1(data)


def _v1_pieces(files: Sequence[SourceFile], piece_length: int) -> Iterator[hash_pool.Piece]:
    """The pieces of the concatenated files (a piece may span several files; the last one may be short)."""
    segments: list[hash_pool.Segment] = []
    size = 0
    for f in files:
        offset = 0
        while offset < f.length:
            take = min(piece_length - size, f.length - offset)
            segments.append(hash_pool.Segment(f.disk_path, offset, take, f.length))
            size += take
            offset += take
            if size == piece_length:
                yield hash_pool.Piece(tuple(segments), size)
                segments, size = [], 0
    if segments:
        yield hash_pool.Piece(tuple(segments), size)


def _hash_pieces(
    files: Sequence[SourceFile], total: int, piece_length: int, progress: Callable[[int, int], None] | None,
    threads: int | None = None,
) -> bytes:
    count = math.ceil(total / piece_length)
    digests: list[bytes] = []

    def done(piece: hash_pool.Piece, digest: bytes) -> None:
        digests.append(digest)
        if progress is not None:
            progress(len(digests), count)

    hash_pool.hash_pieces(_v1_pieces(files, piece_length), piece_length, _v1_digest, done, _threads(threads))
    return b"".join(digests)


def _threads(threads: int | None) -> int | None:
    """The hashing threads asked for, else the configured number (None: one per usable CPU)."""
    return threads if threads is not None else config.CREATE_THREADS


class _V2Hashes(NamedTuple):
    pieces: bytes  # v1 SHA-1s of the padded pieces (hybrid), else b""
    roots: list[bytes]  # per file (b"" for empty files)
    layers: list[bytes]  # per file: its piece layer (b"" for files of at most one piece)


def _hash_file_piece(data, piece_length: int, small: bool, sha1: str) -> tuple[bytes, bytes]:
    """In a worker thread: the v2 hash of one piece of a file, and for a hybrid its SHA-1 (``sha1``:
    ``"padded"`` with the pad bytes that follow the file, ``"as-is"``, or ``""`` for none)."""
    v2 = merkle.small_file_root(data) if small else merkle.piece_root(data, piece_length)
    if not sha1:
        return v2, b""
    h = hashlib.sha1(data)
    if sha1 == "padded" and len(data) < piece_length:
        h.update(bytes(piece_length - len(data)))
    return v2, h.digest()


def _hash_v2(files: Sequence[SourceFile], piece_length: int, hybrid: bool, padded: bool,
             progress: Callable[[int, int], None] | None, threads: int | None = None) -> _V2Hashes:
    """Hash every file on its own (files start on piece boundaries): v2 piece hashes and, for a hybrid,
    the SHA-1 of each piece, with the file's pad bytes if ``padded`` (multi-file hybrids)."""
    count = sum(-(-f.length // piece_length) for f in files)
    sha1s: list[bytes] = []
    per_file: list[list[bytes]] = [[] for _ in files]
    mode = ("padded" if padded else "as-is") if hybrid else ""
    done_count = 0

    def pieces() -> Iterator[hash_pool.Piece]:
        for i, f in enumerate(files):
            for offset in range(0, f.length, piece_length):
                size = min(piece_length, f.length - offset)
                yield hash_pool.Piece((hash_pool.Segment(f.disk_path, offset, size, f.length),), size,
                                      (i, f.length <= piece_length))

    def digest(piece: hash_pool.Piece, data: memoryview) -> tuple[bytes, bytes]:
        return _hash_file_piece(data, piece_length, piece.tag[1], mode)

    def done(piece: hash_pool.Piece, result: tuple[bytes, bytes]) -> None:
        nonlocal done_count
        v2, v1 = result
        per_file[piece.tag[0]].append(v2)
        if v1:
            sha1s.append(v1)
        done_count += 1
        if progress is not None:
            progress(done_count, count)

    hash_pool.hash_pieces(pieces(), piece_length, digest, done, _threads(threads))
    roots: list[bytes] = []
    layers: list[bytes] = []
    for f, hashes in zip(files, per_file):
        if not f.length:
            roots.append(b"")
            layers.append(b"")
        elif f.length <= piece_length:
            roots.append(hashes[0])
            layers.append(b"")
        else:
            roots.append(merkle.layer_root(hashes, piece_length))
            layers.append(b"".join(hashes))
    return _V2Hashes(b"".join(sha1s), roots, layers)


def _v2_info(info: dict, name: str, files: Sequence[SourceFile], is_folder: bool, piece_length: int,
             hybrid: bool, progress: Callable[[int, int], None] | None, threads: int | None = None) -> dict:
    """Fill ``info`` with the v2 (and for a hybrid the v1) fields; return the ``piece layers``."""
    # As libtorrent: a file is padded to the next piece boundary when the torrent has several files
    # (the last one too), so a single-file hybrid keeps its short last piece.
    padded = is_folder and len(files) > 1
    hashes = _hash_v2(files, piece_length, hybrid, padded, progress, threads)
    tree: dict = {}
    for f, root in zip(files, hashes.roots):
        node = tree
        for comp in (f.path if is_folder else (name,)):
            node = node.setdefault(comp, {})
        node[""] = {"length": f.length, **({"pieces root": root} if root else {})}
    info["file tree"] = tree
    info["meta version"] = 2
    if hybrid:
        info["pieces"] = hashes.pieces
        if is_folder:
            entries: list[dict] = []
            for f in files:
                entries.append({"length": f.length, "path": list(f.path)})
                if padded and f.length % piece_length:
                    pad = piece_length - f.length % piece_length
                    entries.append({"attr": "p", "length": pad, "path": [".pad", str(pad)]})
            info["files"] = entries
        else:
            info["length"] = files[0].length
    return {root: layer for root, layer in zip(hashes.roots, hashes.layers) if layer}


def _check_trackers(trackers: Sequence[str] | str | None) -> list[str]:
    if trackers is None:
        trackers = []
    elif isinstance(trackers, str):
        trackers = [trackers]  # one URL, not a sequence of one-letter URLs
    out: list[str] = []
    for url in trackers:
        if not isinstance(url, str):
            raise BadInputError(f"invalid tracker URL {url!r}")
        url = url.strip()
        scheme, sep, rest = url.partition("://")
        if not sep or not scheme or not rest or any(c.isspace() for c in url):
            raise BadInputError(f"invalid tracker URL {url!r} (expected e.g. http://host:port/announce)")
        if url not in out:
            out.append(url)
    return out


def _check_web_seeds(seeds: Sequence[str] | str | None) -> list[str]:
    """Web seed URLs (BEP 19): http or https, with a host; duplicates dropped."""
    if seeds is None:
        return []
    out: list[str] = []
    for url in [seeds] if isinstance(seeds, str) else seeds:
        url = url.strip() if isinstance(url, str) else url
        if not isinstance(url, str) or not usable(url) or any(c.isspace() for c in url):
            raise BadInputError(f"invalid web seed URL {url!r} (expected http:// or https://host/path)")
        if url not in out:
            out.append(url)
    return out


def _some(paths: Sequence[str]) -> str:
    """The first few of ``paths`` for a log line."""
    return ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")


def create_torrent(
    path: str | os.PathLike,
    trackers: Sequence[str] | str | None = (),
    piece_length: int | None = None,
    private: bool = False,
    comment: str | None = None,
    created_by: str | None = None,
    creation_date: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    exclude: Iterable[str | os.PathLike] = (),
    web_seeds: Sequence[str] | str | None = (),
    kind: str = "v1",
    threads: int | None = None,
) -> tuple[bytes, Metainfo]:
    """Make a torrent of the file or folder ``path``; return its bytes and their parsed :class:`Metainfo`.

    ``kind`` is ``"v1"``, ``"v2"`` or ``"hybrid"`` (see the module docstring; ``torrentcore create``
    defaults to ``"hybrid"``, this function to ``"v1"``, what it always made).

    ``threads`` read and hash in parallel (None: :data:`~torrentcore.config.CREATE_THREADS`, by default one
    per CPU this process may use). ``progress(done, total)`` is called after each piece is hashed, in order. Files at
    the ``exclude`` paths (the .torrent being written) and torrentcore's own
    files are not packed (see :func:`list_files`). Raises
    :class:`BadInputError` for unusable input (missing or unreadable path,
    nothing to share, bad piece length or tracker URL) and
    :class:`TorrentcoreError` if a file changes while it is being hashed.
    """
    path = os.fspath(path)
    if kind not in KINDS:
        raise BadInputError(f"unknown torrent format {kind!r} (one of {', '.join(KINDS)})")
    urls = _check_trackers(trackers)
    seeds = _check_web_seeds(web_seeds)
    if piece_length is not None:
        check_piece_length(piece_length)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise BadInputError(f"invalid number of threads {threads!r}: it must be at least 1")
    name, files, skipped, is_folder, ours = list_files(path, exclude)
    if skipped:
        log.warning("symlinks are not followed: skipped", count=len(skipped), paths=_some(skipped))
    if ours:
        log.info("torrentcore's own files are not packed: skipped", count=len(ours), paths=_some(ours))
    total = sum(f.length for f in files)
    if is_folder and not files:
        kinds = " and ".join(k for k, found in (("symlinks", skipped), ("torrentcore's own files", ours)) if found)
        raise BadInputError(f"nothing to share: {path} contains no files" + (f" (only {kinds})" if kinds else ""))
    if total == 0:
        what = f"{path} is empty" if not is_folder else f"{path} holds only empty files ({len(files)})"
        raise BadInputError(f"nothing to share: {what}")
    if piece_length is None:
        piece_length = auto_piece_length(total)

    layers: dict = {}
    info: dict = {"name": name, "piece length": piece_length}
    if kind == "v1":
        info["pieces"] = _hash_pieces(files, total, piece_length, progress, threads)
        if is_folder:
            info["files"] = [{"length": f.length, "path": list(f.path)} for f in files]
        else:
            info["length"] = total
    else:
        layers = _v2_info(info, name, files, is_folder, piece_length, kind == "hybrid", progress, threads)
    if private:
        info["private"] = 1
    top: dict = {"info": info}
    if kind != "v1":
        top["piece layers"] = layers
    if urls:
        top["announce"] = urls[0]
        if len(urls) > 1:
            top["announce-list"] = [[url] for url in urls]
    if seeds:
        top["url-list"] = seeds  # BEP 19: a list (libtorrent writes a string for one; both are read)
    if comment is not None:
        top["comment"] = comment
    if created_by is not None:
        top["created by"] = created_by
    if creation_date is not None:
        top["creation date"] = int(creation_date)
    data = encode(top)
    return data, metainfo.parse(data)
