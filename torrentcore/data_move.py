"""Moving a torrent's data to another folder and renaming its files or folders, on disk and in its file list.

:meth:`TorrentHandle.move_data <torrentcore.handle.TorrentHandle.move_data>` and
:meth:`~torrentcore.handle.TorrentHandle.rename_path` stop the torrent, call the steps here, then start
it again; the steps touch only what they are given (a metainfo, folders, path components), never the
torrent or the handle:

* :func:`move_files`: every data file to the same relative place in another folder (renamed, or copied
  then deleted across filesystems), folders made one component at a time, never through a link; on any
  failure the files already moved are put back before the error goes on.
* :func:`rename_target`: which file list components a rename changes, or why it is refused.
* :func:`rename_on_disk`: ``renameat`` inside the folder reached without following a link, never over
  something already there.
* :func:`renamed`: the metainfo with the new names (info hash, pieces and web seed URLs unchanged).
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import replace
from typing import TYPE_CHECKING

import structlog

from .metainfo import _safe_component
from .statefile import UnsafePath, open_folder_under

if TYPE_CHECKING:  # pragma: no cover
    from .metainfo import Metainfo

log = structlog.get_logger(__name__)

Parts = tuple[str, ...]


def move_files(meta: Metainfo, old: str, new: str) -> None:
    """Move the data files of ``meta`` from folder ``old`` to folder ``new`` (same relative layout); files
    missing or links in ``old`` are skipped. Raises (OSError, or UnsafePath for a link planted in ``new``)
    after putting back the files already moved."""
    moved: list[tuple[str, str]] = []
    try:
        os.makedirs(new, exist_ok=True)
        for entry in meta.data_files:
            src = os.path.join(old, *entry.path)
            if os.path.islink(src) or not os.path.isfile(src):
                continue
            # Folders inside the new place are made one component at a time; a planted link is refused.
            os.close(open_folder_under(new, entry.path[:-1], create=True))
            dst = os.path.join(new, *entry.path)
            if os.path.lexists(dst):
                raise OSError(f"{dst} already exists")
            shutil.move(src, dst)
            moved.append((src, dst))
    except BaseException:
        for src, dst in reversed(moved):  # put back what was moved, and go on where it was
            try:
                shutil.move(dst, src)
            except OSError:
                log.warning("cannot move a file back after a failed move", path=dst)
        raise


def rename_target(meta: Metainfo, path: str, name: str) -> tuple[Parts, Parts]:
    """The components of ``path`` (``/``-separated, starting with the torrent's name) and of its new path
    with the last component ``name``; both equal when nothing changes. Raises :class:`ValueError` for a path
    the torrent has not, a ``name`` that is not a plain component (empty, ``.``, ``..``, a separator or a
    control character) or that another file already has."""
    old_parts = tuple(p for p in path.strip("/").split("/"))
    if not isinstance(name, str) or not name or _safe_component(name) != name or name in (".", ".."):
        raise ValueError(f"{name!r} is not a plain file or folder name")
    depth = len(old_parts)
    if not any(f.path[:depth] == old_parts for f in meta.files if not f.pad):
        raise ValueError(f"the torrent has no file or folder {path!r}")
    new_parts = (*old_parts[:-1], name)
    if new_parts == old_parts:
        return old_parts, new_parts
    if any(f.path[:depth] == new_parts for f in meta.files):
        raise ValueError(f"the torrent already has {'/'.join(new_parts)!r}")
    return old_parts, new_parts


def rename_on_disk(save_path: str, old_parts: Parts, name: str) -> None:
    """Rename the file or folder ``save_path/old_parts...`` to ``name`` in its own folder, reached one
    component at a time without following a link; nothing when it is not on disk (yet). Raises
    :class:`OSError`, ``UnsafePath`` for a link, :class:`FileExistsError` when ``name`` is taken."""
    fd = open_folder_under(save_path, old_parts[:-1], create=False)
    if fd is not None:
        try:
            _rename_in(fd, old_parts[-1], name)
        finally:
            os.close(fd)


def renamed(meta: Metainfo, old_parts: Parts, new_parts: Parts) -> Metainfo:
    """``meta`` with the files under ``old_parts`` under ``new_parts``; renaming the top component renames
    the torrent."""
    depth = len(old_parts)
    files = [replace(f, path=new_parts + f.path[depth:]) if f.path[:depth] == old_parts else f
             for f in meta.files]
    return replace(meta, files=files, name=new_parts[-1] if depth == 1 else meta.name)


def _rename_in(fd: int, old: str, new: str) -> None:
    """Rename ``old`` to ``new`` inside the folder ``fd``: never a link (:class:`UnsafePath` is raised), never
    over something already there (:class:`FileExistsError`); nothing when ``old`` does not exist."""
    try:
        st = os.lstat(old, dir_fd=fd)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise UnsafePath(f"{old} is not a regular file or folder")
    try:
        os.lstat(new, dir_fd=fd)
    except FileNotFoundError:
        pass
    else:
        raise FileExistsError(f"{new} already exists")
    os.rename(old, new, src_dir_fd=fd, dst_dir_fd=fd)


__all__ = ["move_files", "rename_target", "rename_on_disk", "renamed"]
