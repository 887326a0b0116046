"""The filesystem storage's resume record: where it lives, its JSON form, and which claimed pieces are hashed
before it is trusted.

A record is one JSON object per torrent and download folder, in the state directory (never beside the data)::

    {"version": 3, "info_hash": "<hex>", "save_path": "/abs/folder",
     "files": [[size, mtime_ns], ...],      # every file that is neither a pad file nor a symlink, in order
     "pieces": "<hex bitfield>",            # the pieces verified and written
     "boot": "<boot id>" | null,            # the boot it was written in (plugins/_boot.py)
     "unsynced": [k, ...]}                  # positions in "files" not known to be on the disk yet

Version 2 (every file ``fsync``-ed before the record was written) has neither "boot" nor "unsynced", and is
still read. The storage (``plugins/filesystem.py``) decides what to trust: this module only reads, writes and
samples.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable
from typing import NamedTuple

from torrentcore.hookspec import Bitfield, Metainfo, keyed_name, state_dir

#: 3 names the boot it was written in and the files not fsync-ed yet ("boot", "unsynced"); 2 (every file
#: fsync-ed before the record) is still read.
RESUME_VERSION = 3
RESUME_VERSIONS_READ = (2, 3)
#: A resume record is small (one bit per piece, two numbers per file): refuse to read more than
#: this many bytes beyond what the torrent's own record can need (see :func:`max_record_bytes`).
RESUME_SLACK_BYTES = 64 * 1024
#: Sub-folder of the state directory holding resume records.
RESUME_FOLDER = "resume"
#: Claimed pieces of a resume record hashed before it is trusted (the first, the last, and random ones)...
RESUME_SAMPLE = 8
#: ...but no more than one in this many claimed pieces (the first and the last always): 8 of a 4 MiB
#: torrent's 16 pieces were half its data, 38 % of the start-up of 500 trusted torrents (py-spy,
#: benchmarks/many_torrents.py). Every trusted piece is hashed anyway before its first upload.
RESUME_SAMPLE_ONE_IN = 8


class Record(NamedTuple):
    """A decoded record: the pieces it claims, each listed file's ``(size, mtime_ns)`` (``(-1, -1)``: absent),
    the positions of the files not known to be on the disk yet, and the boot it was written in."""

    claimed: set[int]
    stats: list[tuple[int, int]]
    unsynced: list[int]
    boot: str | None


def resume_path(save_path: str, torrent: Metainfo) -> str:
    """Where the resume record of ``torrent`` downloaded to ``save_path`` lives (in the state directory).

    Keyed by info-hash and the folder's absolute path: the same torrent in two folders has two records.
    """
    name = keyed_name(torrent.info_hash_hex, os.path.abspath(save_path), suffix=".resume")
    return os.path.join(state_dir(), RESUME_FOLDER, name)


def max_record_bytes(torrent: Metainfo) -> int:
    """The largest resume record ``torrent`` can have (hex bitfield, two 20-digit numbers per file, the path)."""
    return RESUME_SLACK_BYTES + 2 * ((torrent.num_pieces + 7) // 8) + 48 * len(torrent.files) + 8 * 4096


def _is_count(value: object) -> bool:
    """A JSON integer that can be a size or a time (``-1`` for a missing file); never a bool."""
    return type(value) is int and -1 <= value < 2**63


def decode(record: object, torrent: Metainfo, save_path: str, files: int) -> Record:
    """The record of ``torrent`` in ``save_path`` listing ``files`` files, from its decoded JSON.

    Raises :class:`ValueError` for a record of the wrong shape (types, sizes, another torrent or folder).
    """
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if record.get("version") not in RESUME_VERSIONS_READ:
        raise ValueError(f"unknown version {str(record.get('version'))[:20]}")
    if record.get("info_hash") != torrent.info_hash_hex or record.get("save_path") != save_path:
        raise ValueError("it belongs to another torrent or folder")
    stats, hex_bits = record.get("files"), record.get("pieces")
    if not isinstance(stats, list) or len(stats) != files:
        raise ValueError("'files' does not list this torrent's files")
    if not isinstance(hex_bits, str) or len(hex_bits) != 2 * ((torrent.num_pieces + 7) // 8):
        raise ValueError("'pieces' is not this torrent's bitfield")
    for entry in stats:
        if not (isinstance(entry, list) and len(entry) == 2 and all(map(_is_count, entry))):
            raise ValueError("a file entry is not [size, mtime]")
    boot, unsynced = record.get("boot"), record.get("unsynced", [])
    if boot is not None and not isinstance(boot, str):
        raise ValueError("'boot' is not a string")
    if not (isinstance(unsynced, list) and all(type(k) is int and 0 <= k < files for k in unsynced)):
        raise ValueError("'unsynced' does not list files of this torrent")
    bits = bytes.fromhex(hex_bits)
    n = torrent.num_pieces
    if n % 8 and bits[-1] & ((1 << (8 - n % 8)) - 1):
        raise ValueError("'pieces' has bits set past the last piece")
    return Record(set(Bitfield(n, bits).indices()), [(size, mtime) for size, mtime in stats], unsynced, boot)


def encode(torrent: Metainfo, save_path: str, stats: list[tuple[int, int]], pieces: Iterable[int],
           boot: str | None, unsynced: list[int]) -> bytes:
    """The record's bytes: ``stats`` per listed file, the verified ``pieces``, the ``boot`` and the positions
    in ``stats`` of the files not known to be on the disk yet."""
    bits = Bitfield(torrent.num_pieces)
    for i in pieces:
        bits.set(i)
    record = {
        "version": RESUME_VERSION,
        "info_hash": torrent.info_hash_hex,
        "save_path": save_path,
        "files": stats,
        "pieces": bits.to_bytes().hex(),
        "boot": boot,
        "unsynced": unsynced,
    }
    return json.dumps(record, separators=(",", ":")).encode()


def sample(claimed: set[int]) -> list[int]:
    """The claimed pieces to hash before the record is trusted: the first, the last and random others, at
    most RESUME_SAMPLE and one in RESUME_SAMPLE_ONE_IN."""
    if not claimed:
        return []
    ordered = sorted(claimed)
    chosen = {ordered[0], ordered[-1]}
    rest = ordered[1:-1]
    extra = min(RESUME_SAMPLE, len(ordered) // RESUME_SAMPLE_ONE_IN) - len(chosen)
    chosen.update(random.sample(rest, max(0, min(len(rest), extra))))
    return sorted(chosen)
