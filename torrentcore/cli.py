"""The ``torrentcore`` command: ``info``, ``run``, ``seed``, ``create``, ``plugins``.

This is the program's entry point, so it is the one place that patches the
standard library for gevent (before anything imports ``socket``) and the one
place that configures structlog.

Exit codes: 0 success, 1 runtime failure, 2 bad input, 130 interrupted (Ctrl-C).
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import structlog  # noqa: E402

from . import __version__  # noqa: E402
from .errors import (  # noqa: E402
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    BadInputError,
    TorrentcoreError,
)

LOG_LEVELS = ["debug", "info", "warning", "error"]


# --- option parsing --------------------------------------------------------------------------------


def parse_rate(text: str) -> int:
    """``500k``, ``2M``, ``1.5MiB``, ``0`` (unlimited) -> bytes per second."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]?)(i?[bB])?(/s)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid rate {text!r} (examples: 0, 500k, 2M)")
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def parse_peer(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise argparse.ArgumentTypeError(f"invalid peer address {text!r} (expected HOST:PORT)")
    return host.strip("[]"), int(port)


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="show tracebacks and debug logs")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="warning" if top else argparse.SUPPRESS,
                        help="log level (default: warning)")
    parser.add_argument("--log-format", choices=["console", "json"], default="console" if top else default,
                        help="log format on stderr (default: console)")


def _plugin_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="load a plugin module by import name (repeatable)")
    parser.add_argument("--disable", action="append", default=[], metavar="NAME",
                        help="do not load the plugin NAME (repeatable; see 'torrentcore plugins')")


def _network_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("network")
    g.add_argument("--port", type=int, default=None,
                   help="port to accept peers on (default: first free in 6881-6889; 0: any free port)")
    g.add_argument("--listen-host", default="0.0.0.0", help="address to listen on (default: all)")
    g.add_argument("--max-peers", type=int, default=50, help="most connected peers (default: 50)")
    g.add_argument("--peer", dest="peers", action="append", type=parse_peer, default=[], metavar="HOST:PORT",
                   help="also connect to this peer (repeatable)")
    g.add_argument("--max-download-rate", type=parse_rate, default=0, metavar="RATE",
                   help="limit download rate, e.g. 2M (default: unlimited)")
    g.add_argument("--max-upload-rate", type=parse_rate, default=0, metavar="RATE",
                   help="limit upload rate, e.g. 500k (default: unlimited)")
    g.add_argument("--upload-slots", type=int, default=4, help="regular unchoke slots (default: 4)")
    s = parser.add_argument_group("seeding")
    s.add_argument("--seed-ratio", type=float, default=None,
                   help="after completing, seed until uploaded/downloaded reaches this "
                        "(default: 1.0 for run, no limit for seed; 0 = no limit)")
    s.add_argument("--seed-time", type=float, default=None, metavar="MINUTES",
                   help="...or until this many minutes have passed, whichever comes first "
                        "(default: 30 for run, no limit for seed)")
    s.add_argument("--seed-idle", type=float, default=None, metavar="MINUTES",
                   help="...or until no peer has wanted data for this many minutes "
                        "(default: 2 for run, never for seed; 0 = never)")
    p = parser.add_argument_group("plugins")
    p.add_argument("--strategy", default="rarest-first", help="piece selection strategy (default: rarest-first)")
    p.add_argument("--storage", default="filesystem", help="storage backend (default: filesystem)")


def build_parser(pm=None) -> argparse.ArgumentParser:
    """The full argument parser; ``pm`` adds plugin options to ``run`` and ``seed``."""
    parser = argparse.ArgumentParser(
        prog="torrentcore",
        description="A BitTorrent engine: download, seed and inspect torrents.",
    )
    parser.add_argument("--version", action="version", version=f"torrentcore {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("info", help="show what a .torrent file or magnet link contains")
    _common(p, top=False)
    p.add_argument("torrent", help=".torrent file or magnet link")
    p.add_argument("--json", action="store_true", help="print JSON for machines")

    p = sub.add_parser("run", help="download a torrent (then seed it for a while)")
    _common(p, top=False)
    p.add_argument("torrent", help=".torrent file")
    p.add_argument("-o", "--output", default=".", metavar="DIR", help="download folder (default: .)")
    p.add_argument("--no-seed", action="store_true", help="exit as soon as the download is complete")
    _network_options(p)
    _plugin_options(p)
    if pm is not None:
        pm.hook.torrentcore_add_options(parser=p)

    p = sub.add_parser("seed", help="seed data that is already on disk")
    _common(p, top=False)
    p.add_argument("torrent", help=".torrent file")
    p.add_argument("-d", "--data", required=True, metavar="DIR",
                   help="folder holding the data (the torrent's files or folder inside it)")
    _network_options(p)
    _plugin_options(p)
    if pm is not None:
        pm.hook.torrentcore_add_options(parser=p)

    p = sub.add_parser("create", help="make a .torrent file from a file or folder")
    _common(p, top=False)
    p.add_argument("path", help="file or folder to share")
    p.add_argument("-t", "--tracker", action="append", default=[], metavar="URL",
                   help="tracker URL (repeatable; each one is its own tier)")
    p.add_argument("-o", "--output", metavar="FILE", help="where to write (default: NAME.torrent)")
    p.add_argument("--piece-length", type=parse_rate, default=None, metavar="BYTES",
                   help="piece length, e.g. 256k (default: chosen from the size)")
    p.add_argument("--private", action="store_true", help="mark private (BEP 27: trackers only)")
    p.add_argument("--comment", default=None)
    p.add_argument("--created-by", default=f"torrentcore {__version__}")
    p.add_argument("--no-date", action="store_true", help="omit the creation date (reproducible output)")

    p = sub.add_parser("plugins", help="list installed plugins, strategies and storage backends")
    _common(p, top=False)
    _plugin_options(p)
    return parser


# --- logging ---------------------------------------------------------------------------------------


def configure_logging(level: str, fmt: str) -> None:
    """Configure structlog (only here: library code just calls ``structlog.get_logger()``)."""
    numeric = getattr(logging, level.upper())
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


# --- commands --------------------------------------------------------------------------------------


def _load_torrent(path: str):
    from . import metainfo
    from .errors import MetainfoError
    from .magnet import is_magnet

    if is_magnet(path):
        raise MetainfoError("magnet links cannot be downloaded yet (fetching metadata from peers, BEP 9, "
                            "is not implemented): use the .torrent file; 'torrentcore info' reads the link")
    return metainfo.load(path)


def cmd_info(args) -> int:
    """``torrentcore info``."""
    from .magnet import is_magnet, parse_magnet

    if is_magnet(args.torrent):
        m = parse_magnet(args.torrent)
        data = {"magnet": True, "info_hash": m.info_hash_hex, "name": m.name, "trackers": m.trackers,
                "peers": [f"{h}:{p}" for h, p in m.peers]}
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            print(f"name:       {m.name or '(unknown until metadata is fetched)'}")
            print(f"info-hash:  {m.info_hash_hex}")
            for n, tier in enumerate(m.trackers):
                print(f"tracker:    tier {n}: {' '.join(tier)}")
        return EXIT_OK
    meta = _load_torrent(args.torrent)
    files = [{"path": f.relpath, "length": f.length} for f in meta.data_files]
    data = {
        "name": meta.name,
        "info_hash": meta.info_hash_hex,
        "total_size": meta.data_length,
        "piece_length": meta.piece_length,
        "pieces": meta.num_pieces,
        "private": meta.private,
        "hybrid_v1_v2": meta.hybrid,
        "files": files,
        "trackers": meta.trackers,
        "created_by": meta.created_by,
        "comment": meta.comment,
        "creation_date": meta.creation_date,
        "url_list": meta.url_list,
    }
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return EXIT_OK
    out = sys.stdout
    out.write(f"name:         {meta.name}\n")
    out.write(f"info-hash:    {meta.info_hash_hex}{'  (v1 part of a hybrid v1/v2 torrent)' if meta.hybrid else ''}\n")
    out.write(f"total size:   {_human(meta.data_length)} ({meta.data_length} bytes)\n")
    out.write(f"pieces:       {meta.num_pieces} x {_human(meta.piece_length)}\n")
    out.write(f"private:      {'yes' if meta.private else 'no'}\n")
    if meta.created_by:
        out.write(f"created by:   {meta.created_by}\n")
    if meta.creation_date is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(max(0, meta.creation_date)))
        out.write(f"created:      {stamp}\n")
    if meta.comment:
        out.write(f"comment:      {meta.comment}\n")
    if meta.trackers:
        for n, tier in enumerate(meta.trackers):
            out.write(f"tracker tier {n}: {' '.join(tier)}\n")
    else:
        out.write("trackers:     none (trackerless)\n")
    out.write(f"files ({len(files)}):\n")
    for f in files:
        out.write(f"  {_human(f['length']):>10}  {f['path']}\n")
    return EXIT_OK


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"  # pragma: no cover


def _make_pm(args):
    from . import plugins

    return plugins.get_plugin_manager(disabled=args.disable, extra_modules=args.plugin)


def _run_torrent(args, pm, save_path: str, seed_only: bool) -> int:
    from . import plugins
    from .session import Torrent

    meta = _load_torrent(args.torrent)
    strategy = plugins.choose_strategy(pm, args.strategy)
    storage = plugins.choose_storage(pm, args.storage)
    args.seed_only = seed_only  # `seed` never downloads: incomplete data is an error
    if seed_only:
        args.no_seed = False
    # `run` is a download that gives back for a while; `seed` runs until stopped unless limits are given.
    for name, run_default in (("seed_ratio", 1.0), ("seed_time", 30.0), ("seed_idle", 2.0)):
        if getattr(args, name) is None:
            setattr(args, name, None if seed_only else run_default)
    torrent = Torrent(meta, save_path, pm, args, strategy, storage)
    import gevent

    gevent.signal_handler(signal.SIGINT, torrent.stop, EXIT_INTERRUPTED)
    gevent.signal_handler(signal.SIGTERM, torrent.stop, 128 + signal.SIGTERM)
    code = torrent.run()
    if torrent.error:
        print(f"torrentcore: error: {torrent.error}", file=sys.stderr)
    return code


def cmd_run(args, pm) -> int:
    """``torrentcore run``."""
    return _run_torrent(args, pm, os.path.abspath(args.output), seed_only=False)


def cmd_seed(args, pm) -> int:
    """``torrentcore seed``."""
    if not os.path.isdir(args.data):
        raise BadInputError(f"data folder {args.data} does not exist")
    return _run_torrent(args, pm, os.path.abspath(args.data), seed_only=True)


def cmd_create(args) -> int:
    """``torrentcore create``."""
    from .create import create_torrent

    out = args.output
    data, meta = create_torrent(
        args.path,
        trackers=args.tracker,
        piece_length=args.piece_length,
        private=args.private,
        comment=args.comment,
        created_by=args.created_by,
        creation_date=None if args.no_date else int(time.time()),
        progress=_create_progress(),
    )
    if out is None:
        out = f"{meta.name}.torrent"
    try:
        with open(out, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise TorrentcoreError(f"cannot write {out}: {exc.strerror}") from None
    print(f"created {out}: {meta.name}, {_human(meta.data_length)}, {meta.num_pieces} pieces of "
          f"{_human(meta.piece_length)}, info-hash {meta.info_hash_hex}")
    return EXIT_OK


def _create_progress():
    if not sys.stderr.isatty():
        return None

    def report(done: int, total: int) -> None:
        sys.stderr.write(f"\rhashing {done}/{total} pieces ({100 * done // max(total, 1)}%)")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return report


def cmd_plugins(args, pm) -> int:
    """``torrentcore plugins``."""
    from . import plugins

    loaded = dict(pm.list_name_plugin())
    for name in plugins.available_plugins(pm):
        state = "loaded" if name in loaded and loaded[name] is not None else "disabled"
        print(f"plugin    {name:20} {state}")
    for name in sorted(plugins.strategies(pm)):
        print(f"strategy  {name}")
    for name in sorted(plugins.storages(pm)):
        print(f"storage   {name}")
    return EXIT_OK


# --- entry point -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code (also used by ``python -m torrentcore``)."""
    argv = sys.argv[1:] if argv is None else argv
    # First pass: which plugins to load, so that they can add options to the full parser.
    pre = argparse.ArgumentParser(add_help=False)
    _plugin_options(pre)
    pre.add_argument("--debug", action="store_true")
    known, _ = pre.parse_known_args(argv)
    debug = known.debug
    try:
        pm = None
        wants_pm = bool({"run", "seed", "plugins"} & set(argv))
        if wants_pm:
            pm = _make_pm(known)
        parser = build_parser(pm)
        args = parser.parse_args(argv)
        debug = args.debug
        configure_logging("debug" if debug else args.log_level, args.log_format or "console")
        if args.command == "info":
            return cmd_info(args)
        if args.command == "create":
            return cmd_create(args)
        if pm is None:
            pm = _make_pm(args)
        if args.command == "run":
            return cmd_run(args, pm)
        if args.command == "seed":
            return cmd_seed(args, pm)
        return cmd_plugins(args, pm)
    except TorrentcoreError as exc:
        if debug:
            traceback.print_exc()
        print(f"torrentcore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("torrentcore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the user gets one line, --debug gets the traceback
        if debug:
            traceback.print_exc()
        print(f"torrentcore: internal error: {exc!r} (run with --debug for details)", file=sys.stderr)
        return EXIT_RUNTIME


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


__all__ = ["main", "entry", "build_parser", "parse_rate", "EXIT_BAD_INPUT"]
