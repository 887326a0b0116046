"""File selection: ``run --only GLOB|INDEX --skip GLOB|INDEX`` and the pieces it makes wanted.

Files are numbered as ``torrentcore info`` lists them: the torrent's data
files (pad files excluded) in torrent order, from 0. An argument made only of
digits is an index; anything else is a glob (:func:`fnmatch.fnmatchcase`, so
``*`` also matches ``/``) tried against the file's path inside the torrent
(``sub/a.bin``) and against its path as ``info`` shows it, which for a
multi-file torrent starts with the torrent's folder (``name/sub/a.bin``).

``--only`` keeps the files any of its arguments match (every file when none
is given), then ``--skip`` removes the files its arguments match. An argument
that matches no file, an index out of range, or a selection that leaves no
file at all is a :class:`~torrentcore.errors.BadInputError` (exit code 2).

The wanted pieces are those overlapping any byte of a selected file; pieces
at a file's boundary also hold bytes of its neighbours, which are then
written too (they are part of a verified piece).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from .bitfield import Bitfield
from .errors import BadInputError
from .metainfo import FileEntry, Metainfo


def _inner_path(meta: Metainfo, f: FileEntry) -> str:
    """The file's path inside the torrent (without the torrent's own folder)."""
    parts = f.path[1:] if meta.multi_file and len(f.path) > 1 else f.path
    return "/".join(parts)


def _matches(meta: Metainfo, files: Sequence[FileEntry], arg: str, option: str) -> set[int]:
    if arg.isdigit():
        index = int(arg)
        if index >= len(files):
            raise BadInputError(f"{option} {arg}: the torrent has files 0 to {len(files) - 1} "
                                f"(see 'torrentcore info')")
        return {index}
    found = {
        i for i, f in enumerate(files)
        if fnmatch.fnmatchcase(_inner_path(meta, f), arg) or fnmatch.fnmatchcase(f.relpath, arg)
    }
    if not found:
        raise BadInputError(f"{option} {arg!r} matches no file of the torrent (see 'torrentcore info')")
    return found


def select_files(meta: Metainfo, only: Sequence[str] = (), skip: Sequence[str] = ()) -> list[int] | None:
    """Indices (into ``meta.data_files``) of the files to download, or ``None`` for every file.

    Raises :class:`BadInputError` when an argument matches nothing or nothing is left.
    """
    if not only and not skip:
        return None
    files = meta.data_files
    chosen: set[int] = set()
    for arg in only:
        chosen |= _matches(meta, files, arg, "--only")
    if not only:
        chosen = set(range(len(files)))
    for arg in skip:
        chosen -= _matches(meta, files, arg, "--skip")
    if not chosen:
        raise BadInputError("the file selection (--only/--skip) leaves no file to download")
    return sorted(chosen)


def wanted_pieces(meta: Metainfo, selected: Sequence[int] | None) -> Bitfield | None:
    """The pieces overlapping any selected file (``None``: no selection, every piece is wanted).

    A selection of only empty files wants no piece at all.
    """
    if selected is None:
        return None
    files = meta.data_files
    plen = meta.piece_length
    mask = Bitfield(meta.num_pieces)
    for i in selected:
        f = files[i]
        if f.length <= 0:
            continue
        for p in range(f.offset // plen, (f.offset + f.length - 1) // plen + 1):
            mask.set(p)
    return mask


__all__ = ["select_files", "wanted_pieces"]
