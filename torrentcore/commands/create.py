"""``torrentcore create``: a .torrent file from a file or folder (v1, v2 or hybrid), written whole or not at all."""

from __future__ import annotations

import os
import sys
import time

from ..errors import EXIT_OK, BadInputError, TorrentcoreError
from .text import hashes_text, human


def cmd_create(args) -> int:
    """``torrentcore create``: refuses to overwrite without ``--force`` (checked before hashing), warns when
    no tracker is given, never packs the output file or torrentcore's own files."""
    from ..create import DEFAULT_KIND, create_torrent, torrent_name

    out = args.output or f"{torrent_name(args.path) or 'torrent'}.torrent"
    _check_create_output(out, args.force)
    data, meta = create_torrent(
        args.path,
        trackers=args.tracker,
        web_seeds=args.web_seed,
        piece_length=args.piece_length,
        private=args.private,
        comment=args.comment,
        created_by=args.created_by,
        creation_date=None if args.no_date else int(time.time()),
        progress=_create_progress(),
        exclude=[out],
        kind=args.kind or DEFAULT_KIND,
        threads=args.threads,
    )
    _write_torrent_file(out, data, args.force)
    if not meta.trackers:
        how = ("it is private, so only --peer can connect peers (private torrents use no DHT or PEX)"
               if meta.private else "peers will have to find each other through the DHT, PEX or --peer")
        if meta.url_list:
            how += " (the web seeds serve the data without them)"
        print(f"torrentcore: warning: no tracker given (-t URL): {how}", file=sys.stderr)
    print(f"created {out}: {meta.name}, {human(meta.data_length)}, {meta.num_pieces} pieces of "
          f"{human(meta.piece_length)}, {hashes_text(meta)}")
    return EXIT_OK


def _check_create_output(out: str, force: bool) -> None:
    """Refuse (exit 2) an ``-o`` that exists, unless ``--force``; or that is a folder."""
    if os.path.isdir(out):
        raise BadInputError(f"{out} is a folder: give -o the name of the .torrent file to write")
    if os.path.lexists(out) and not force:
        raise BadInputError(_exists_message(out))


def _exists_message(out: str) -> str:
    return f"{out} already exists: add --force to overwrite it (or write elsewhere with -o FILE)"


def _write_torrent_file(out: str, data: bytes, force: bool) -> None:
    """Write ``out``: a new file only (``O_EXCL``), or with ``force`` a temporary file renamed over it, so an
    existing .torrent is either kept or replaced whole."""
    import secrets

    folder = os.path.dirname(os.path.abspath(out))
    # The name marks it as ours (create never packs it); os.open with 0o666 respects the umask.
    target = os.path.join(folder, f".torrentcore-create-{secrets.token_hex(6)}.torrent.part") if force else out
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:  # created since the check
        raise BadInputError(_exists_message(out)) from None
    except OSError as exc:
        raise TorrentcoreError(f"cannot write {out}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if target != out:
            os.replace(target, out)
    except OSError as exc:
        try:
            os.unlink(target)  # ours either way: created just now (O_EXCL)
        except OSError:
            pass
        raise TorrentcoreError(f"cannot write {out}: {exc.strerror}") from None


def _create_progress():
    if not sys.stderr.isatty():
        return None

    def report(done: int, total: int) -> None:
        sys.stderr.write(f"\rhashing {done}/{total} pieces ({100 * done // max(total, 1)}%)")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return report

