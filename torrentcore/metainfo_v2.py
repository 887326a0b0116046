"""The BitTorrent v2 part of a .torrent (BEP 52): ``file tree``, ``pieces root`` and ``piece layers``.

:func:`read_file_tree` walks the ``file tree`` of an info dictionary (iteratively, its depth bounded by
:data:`MAX_TREE_DEPTH`, at most ``MAX_FILES`` files) into files laid out as libtorrent lays them out:
in the order of the tree, each non-empty file followed by a pad file up to the next piece boundary, so
every file starts a piece. :func:`read_piece_layers` checks ``piece layers`` against the roots (each
layer has one hash per piece of its file and hashes up to the file's root); a file larger than one
piece whose layer is missing has to get it from peers. :func:`compatible` is the hybrid rule: the v1
``files`` list and the v2 tree describe the same files at the same offsets.

Rejections follow libtorrent 2.1.1 (``torrent_info.cpp``, ``load_torrent.cpp``), each with one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import merkle
from .errors import MetainfoError

#: Deepest folder nesting of a file tree (libtorrent's ``load_torrent_limits.max_directory_depth``).
MAX_TREE_DEPTH = 100
#: A v2 file may have at most this many 16 KiB blocks (libtorrent's ``file_storage::max_num_pieces``,
#: which bounds its Merkle tree indices).
MAX_FILE_BLOCKS = (1 << 30) - 1
#: Name of the folder libtorrent gives implied pad files (never created on disk).
PAD_FOLDER = ".pad"


@dataclass
class TreeFile:
    """One entry of a laid-out v2 file list (pad files included)."""

    path: tuple[str, ...]
    length: int
    root: bytes = b""
    pad: bool = False
    symlink: bool = False
    executable: bool = False
    hidden: bool = False


def read_file_tree(info: dict, name: str, *, piece_length: int, max_files: int, max_total: int,
                   safe: Callable[[str], str], check_path: Callable[[tuple[str, ...], int], None]) -> list[TreeFile]:
    """The files of ``info[b'file tree']``, laid out with pad files (see the module docstring).

    ``safe`` makes one path component safe, ``check_path`` refuses a path that is too long (the v1 rules).
    """
    tree = info.get(b"file tree")
    if not isinstance(tree, dict):
        raise MetainfoError("invalid or missing v2 'file tree'")
    multi = b"files" in info
    out: list[TreeFile] = []
    count = 0
    total = 0
    # An explicit stack of (path so far, entries, next entry): no recursion, bounded depth.
    stack: list[list] = [[(), list(tree.items()), 0]]
    while stack:
        frame = stack[-1]
        prefix, items, index = frame
        if index >= len(items):
            stack.pop()
            continue
        frame[2] = index + 1
        key, child = items[index]
        if not isinstance(child, dict) or not isinstance(key, bytes) or not key:
            raise MetainfoError("invalid v2 'file tree': an entry has an empty name or is not a dictionary")
        comp = safe(key.decode("utf-8", errors="replace").replace("\ufffd", "_"))
        leaf = len(child) == 1 and b"" in child
        if leaf:
            count += 1
            if count > max_files:
                raise MetainfoError(f"too many files in the v2 'file tree' (the limit is {max_files})")
            single = not multi and len(stack) == 1 and len(tree) == 1
            path = (comp,) if single else (name, *prefix, comp)
            check_path(path, count - 1)
            f = _read_leaf(child[b""], path, count - 1)
            if total + f.length > max_total:
                raise MetainfoError(f"the torrent is larger than the supported {max_total} bytes")
            out.append(f)
            total += f.length
            if total % piece_length:
                pad = piece_length - total % piece_length
                out.append(TreeFile((name, PAD_FOLDER, str(pad)), pad, pad=True))
                total += pad
        else:
            if len(stack) > MAX_TREE_DEPTH:
                raise MetainfoError(f"the v2 'file tree' is nested deeper than {MAX_TREE_DEPTH} folders")
            if child:
                stack.append([(*prefix, comp), list(child.items()), 0])
    if not count:
        raise MetainfoError("invalid v2 'file tree': no files in the torrent")
    return out


def _read_leaf(entry, path: tuple[str, ...], n: int) -> TreeFile:
    if not isinstance(entry, dict):
        raise MetainfoError(f"v2 file #{n} is not a dictionary")
    attr = entry.get(b"attr", b"")
    attr = attr if isinstance(attr, bytes) else b""
    if b"p" in attr:
        raise MetainfoError(f"v2 file #{n} has the pad attribute (pad files are implied in v2)")
    symlink = b"l" in attr and isinstance(entry.get(b"symlink path"), list)
    length = 0 if symlink else entry.get(b"length", -1)
    if not isinstance(length, int) or length < 0 or length // merkle.BLOCK >= MAX_FILE_BLOCKS:
        raise MetainfoError(f"v2 file #{n} has an invalid or too large 'length'")
    root = b""
    if symlink:
        target = entry[b"symlink path"]
        if not all(isinstance(p, bytes) for p in target):
            raise MetainfoError(f"v2 file #{n} is a symlink with an invalid 'symlink path'")
    elif length:
        root = entry.get(b"pieces root", b"")
        if not isinstance(root, bytes) or len(root) != merkle.HASH or root == merkle.ZERO:
            raise MetainfoError(f"v2 file #{n} has no valid 'pieces root'")
    return TreeFile(path, length, root, False, symlink, b"x" in attr, b"h" in attr)


def read_piece_layers(value, files: list[TreeFile], piece_length: int) -> dict[bytes, bytes]:
    """The checked ``piece layers`` (root -> concatenated hashes); ``value`` is the top-level entry or None."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MetainfoError("invalid 'piece layers': not a dictionary")
    big = {f.root: f.length for f in files if f.root and f.length > piece_length}
    layers: dict[bytes, bytes] = {}
    for root, layer in value.items():
        if not isinstance(root, bytes) or len(root) != merkle.HASH or not isinstance(layer, bytes):
            raise MetainfoError("invalid 'piece layers': an entry is not a 32-byte root and a string")
        if root not in big:
            raise MetainfoError("invalid 'piece layers': a layer belongs to no file larger than one piece")
        pieces = -(-big[root] // piece_length)
        if len(layer) != pieces * merkle.HASH:
            raise MetainfoError(f"invalid 'piece layers': {len(layer)} bytes where {pieces} hashes are needed")
        if merkle.layer_root(merkle.split(layer), piece_length) != root:
            raise MetainfoError("invalid 'piece layers': a layer does not hash to its file's 'pieces root'")
        layers[root] = layer
    return layers


def without_tail_pad(files: list[TreeFile]) -> list[TreeFile]:
    """``files`` without a pad file after the last non-empty file (libtorrent before 2.0.8 wrote none)."""
    for i in range(len(files) - 1, -1, -1):
        if files[i].length == 0:
            continue
        if files[i].pad:
            return files[:i] + files[i + 1 :]
        break
    return files


def compatible(v1: list, v2: list[TreeFile]) -> bool:
    """Whether a hybrid's v1 file list (``.path``, ``.length``, ``.pad`` each) matches its v2 layout.

    As libtorrent: same number of entries, same total; every non-empty, non-pad file at the same index
    with the same path, length and offset.
    """
    if len(v2) == len(v1) + 1:
        v2 = without_tail_pad(v2)
    if len(v1) != len(v2):
        return False
    off1 = off2 = 0
    for a, b in zip(v1, v2):
        rel_a = not a.pad and a.length > 0
        rel_b = not b.pad and b.length > 0
        if rel_a != rel_b:
            return False
        if rel_a and (a.length != b.length or a.path != b.path or off1 != off2):
            return False
        off1 += a.length
        off2 += b.length
    return off1 == off2


__all__ = ["TreeFile", "read_file_tree", "read_piece_layers", "without_tail_pad", "compatible",
           "MAX_TREE_DEPTH", "MAX_FILE_BLOCKS", "PAD_FOLDER"]
