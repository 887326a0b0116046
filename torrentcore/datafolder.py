"""Messages for ``torrentcore seed -d DIR`` when DIR cannot be the folder holding a torrent's data.

``-d`` takes the folder that *holds* the data: the folder the file is in for a single-file torrent, the
folder holding the torrent's own folder for a multi-file one (the same as ``run -o``). Two mistakes are
common and get a message that names the fix instead of a bare "does not exist" or "0/N pieces verified":

* ``-d`` names a file (the data file itself) or nothing at all;
* ``-d`` is a folder, but no file of the torrent exists under it (the wrong folder, or the torrent's own
  folder given instead of the one holding it).

:func:`describe_missing_data` only looks at names on disk (``lstat``), never reads data, and returns
``None`` when it has nothing to say, so the engine's own checks (hashing what is there) go on as before.
"""

from __future__ import annotations

import os

from .metainfo import Metainfo

__all__ = ["describe_missing_data"]


def _size(n: int) -> str:
    """``41943040`` -> ``40.0 MiB`` (powers of 1024; exact below 1 KiB)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _present(folder: str, parts: tuple[str, ...]) -> bool:
    return os.path.lexists(os.path.join(folder, *parts))


def _holding_folder(meta: Metainfo, path: str) -> str | None:
    """The folder to give ``-d`` when ``path`` is one of the torrent's files itself (its path inside the
    torrent is the tail of ``path``), else ``None``."""
    parts = tuple(os.path.abspath(path).split(os.sep))
    for f in meta.data_files:
        if len(parts) > len(f.path) and parts[-len(f.path) :] == f.path:
            return os.sep.join(parts[: -len(f.path)]) or os.sep
    return None


def describe_missing_data(meta: Metainfo, folder: str) -> str | None:
    """A one-line message when ``folder`` cannot hold the data of ``meta`` (``seed -d``); ``None`` otherwise.

    * ``folder`` does not exist: says so;
    * ``folder`` is a file: says that ``-d`` takes the folder holding the data (for a single-file torrent,
      the folder the file is in) and suggests it;
    * not one file of the torrent exists under ``folder``: names where the data was expected, e.g. ``no data
      for NAME in DIR: expected DIR/NAME (a file of 40.0 MiB)``, suggesting the parent folder when
      ``folder`` is a multi-file torrent's own folder (``-d DIR/NAME``).
    """
    hint = "-d takes the folder holding the data (for a single-file torrent, the folder the file is in)"
    if not os.path.lexists(folder):
        return f"data folder {folder} does not exist; {hint}"
    if not os.path.isdir(folder):
        holding = _holding_folder(meta, folder)
        if holding is None and not meta.multi_file:
            holding = os.path.dirname(os.path.abspath(folder))
        try_it = f": try -d {holding}" if holding else ""
        return f"{folder} is a file, not a folder: {hint}{try_it}"
    files = [f for f in meta.files if f.length > 0 and not f.pad and not f.symlink]
    if not files or any(_present(folder, f.path) for f in files):
        return None
    top = files[0].path[0]  # the single file, or the torrent's folder (paths start with it)
    total = _size(sum(f.length for f in files))
    count = f"{len(files)} file{'s' if len(files) != 1 else ''}"
    what = f"a file of {total}" if not meta.multi_file else f"a folder of {count}, {total}"
    message = f"no data for {meta.name} in {folder}: expected {os.path.join(folder, top)} ({what})"
    own_folder = meta.multi_file and os.path.basename(os.path.normpath(folder)) == top
    if own_folder and any(_present(folder, f.path[1:]) for f in files):
        parent = os.path.dirname(os.path.abspath(folder))
        return f"{message}; that is the torrent's own folder: -d takes the folder holding it (try -d {parent})"
    return f"{message}; -d takes the folder holding the data"
