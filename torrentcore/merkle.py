"""BitTorrent v2 Merkle trees (BEP 52): SHA-256 over 16 KiB blocks.

Each file has its own binary tree. Its leaves are the SHA-256 digests of the file's 16 KiB blocks (the
last one may be short); leaves past the end of the file are 32 zero bytes, and the tree is as wide as the
next power of two. The root is the file's ``pieces root``. The *piece layer* is the layer whose nodes each
cover one piece (``piece length / 16 KiB`` leaves); a .torrent carries it in ``piece layers`` for every
file larger than one piece, so each downloaded piece can be checked alone. A file of at most one piece
has no piece layer: its piece is checked against the root itself.

Pure functions on bytes; nothing here does I/O.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

#: Size of a leaf block.
BLOCK = 16 * 1024
#: Size of a node hash.
HASH = 32
#: The hash of a leaf past the end of a file.
ZERO = bytes(HASH)


def sha256(data) -> bytes:
    """The SHA-256 digest of ``data``."""
    return hashlib.sha256(data).digest()


def next_pow2(n: int) -> int:
    """The smallest power of two that is at least ``n`` (1 for 0)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@lru_cache(maxsize=64)
def pad_hash(levels: int) -> bytes:
    """The root of a subtree of ``2**levels`` zero leaves."""
    h = ZERO
    for _ in range(levels):
        h = sha256(h + h)
    return h


def root_of(layer: list[bytes], width: int, pad: bytes = ZERO) -> bytes:
    """The root over ``layer`` widened to ``width`` (a power of two) with ``pad`` nodes.

    ``pad`` is the hash of one missing node of ``layer``'s level; each level up pads with the hash of two
    such nodes. Only the real nodes are hashed: missing right halves come from the pad chain.
    """
    if not layer:
        layer = [pad]
    nodes = list(layer)
    while width > 1:
        if len(nodes) % 2:
            nodes.append(pad)
        nodes = [sha256(nodes[i] + nodes[i + 1]) for i in range(0, len(nodes), 2)]
        pad = sha256(pad + pad)
        width //= 2
    return nodes[0]


def block_hashes(data) -> list[bytes]:
    """The leaf hashes of ``data`` (16 KiB blocks, the last may be short)."""
    view = memoryview(data)
    return [sha256(view[i : i + BLOCK]) for i in range(0, len(view), BLOCK)]


def piece_root(data, piece_length: int) -> bytes:
    """The piece-layer hash of one piece of a file larger than a piece (``data``: its bytes in the file)."""
    return root_of(block_hashes(data), piece_length // BLOCK)


def small_file_root(data) -> bytes:
    """The ``pieces root`` of a file of at most one piece (its whole data)."""
    leaves = block_hashes(data)
    return root_of(leaves, next_pow2(len(leaves)))


def layer_root(piece_layer: list[bytes], piece_length: int) -> bytes:
    """The ``pieces root`` of a file larger than one piece, from its piece layer."""
    levels = (piece_length // BLOCK).bit_length() - 1
    return root_of(piece_layer, next_pow2(len(piece_layer)), pad_hash(levels))


def file_root(data, piece_length: int) -> bytes:
    """The ``pieces root`` of a whole file (empty files have none: ``b""``)."""
    if not len(data):
        return b""
    if len(data) <= piece_length:
        return small_file_root(data)
    view = memoryview(data)
    layer = [piece_root(view[i : i + piece_length], piece_length) for i in range(0, len(view), piece_length)]
    return layer_root(layer, piece_length)


def split(layer: bytes) -> list[bytes]:
    """A concatenated layer as a list of 32-byte hashes."""
    return [layer[i : i + HASH] for i in range(0, len(layer), HASH)]


def proof_root(node: bytes, index: int, uncles: list[bytes]) -> bytes:
    """Climb from ``node`` (at ``index`` within its layer) through ``uncles`` (siblings, lowest first)."""
    for uncle in uncles:
        node = sha256(uncle + node) if index & 1 else sha256(node + uncle)
        index >>= 1
    return node


__all__ = [
    "BLOCK", "HASH", "ZERO", "sha256", "next_pow2", "pad_hash", "root_of", "block_hashes", "piece_root",
    "small_file_root", "layer_root", "file_root", "split", "proof_root",
]
