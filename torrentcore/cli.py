"""The ``torrentcore`` command: ``info``, ``run``, ``seed``, ``create``, ``plugins``.

This is the program's entry point, so it is the one place that patches the
standard library for gevent (before anything imports ``socket``) and the one
place that configures structlog.

Exit codes: 0 success, 1 runtime failure, 2 bad input, 130 interrupted (Ctrl-C).
"""

import importlib.metadata as _metadata

from gevent import monkey


def _patch_all() -> None:
    """``monkey.patch_all()``, scanning the installed packages' entry points once instead of 25 times.

    gevent looks up its plugin entry points for every module it patches, and each look-up reads every
    installed distribution's metadata: 0.1-0.25 s of every start-up here. One scan, then a filter.
    """
    scan = _metadata.entry_points
    everything = scan()
    _metadata.entry_points = lambda **params: everything.select(**params)  # type: ignore[assignment]
    try:
        monkey.patch_all()
    finally:
        _metadata.entry_points = scan


_patch_all()

import gevent  # noqa: E402

# Ctrl-C that lands while the hub runs is handled by main() (exit 130), not printed by the hub.
gevent.get_hub().NOT_ERROR += (KeyboardInterrupt,)

import argparse  # noqa: E402
import ipaddress  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
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
from .process import install_stop_handlers, printing  # noqa: E402

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
    """``HOST:PORT`` or ``[V6]:PORT`` (an IPv6 address needs the brackets)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise argparse.ArgumentTypeError(f"invalid peer address {text!r} (expected HOST:PORT or [IPv6]:PORT)")
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1])), int(port)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid IPv6 address in {text!r}") from None
    if ":" in host or "[" in host or "]" in host:
        raise argparse.ArgumentTypeError(f"invalid peer address {text!r} (write IPv6 addresses as [ADDRESS]:PORT)")
    return host, int(port)


def _udp_port(text: str) -> int:
    """A port number, 0 (any free port) to 65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r} (expected 0-65535)")
    return int(text)


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="show tracebacks and debug logs")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="warning" if top else argparse.SUPPRESS,
                        help="log level (default: warning)")
    parser.add_argument("--log-format", choices=["console", "json"], default="console" if top else default,
                        help="log format on stderr (default: console)")


def _plugin_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("plugin loading and settings (docs/plugins.md)")
    g.add_argument("-p", "--plugin", dest="plugin", action="append", default=[], metavar="NAME",
                   help="load plugin NAME: an installed opt-in plugin, or a module by import name; "
                        "'-p no:NAME' is --no-plugin NAME (repeatable)")
    g.add_argument("--no-plugin", "--disable", dest="disable", action="append", default=[], metavar="NAME",
                   help="do not load the plugin NAME (repeatable; see 'torrentcore plugins')")
    g.add_argument("--plugin-opt", dest="plugin_opts", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="set a plugin setting (repeatable; overrides the config file; see 'torrentcore plugins')")
    g.add_argument("--config", default=None, metavar="FILE",
                   help="plugin settings, one [NAME] section per plugin; .toml is read as TOML, anything else "
                        "as INI (default: $XDG_CONFIG_HOME/torrentcore/config.toml or config.ini, if present)")


def _network_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("network")
    g.add_argument("--port", type=int, default=None,
                   help="port to accept peers on (default: first free in 6881-6889; 0: any free port)")
    g.add_argument("--listen-host", default="0.0.0.0",
                   help="address(es) to listen on, comma-separated, e.g. 127.0.0.1,::1 "
                        "(default: all IPv4 and IPv6 addresses)")
    g.add_argument("--max-peers", type=int, default=50, help="most connected peers (default: 50)")
    g.add_argument("--peer", dest="peers", action="append", type=parse_peer, default=[], metavar="HOST:PORT",
                   help="also connect to this peer (repeatable)")
    g.add_argument("--max-download-rate", type=parse_rate, default=0, metavar="RATE",
                   help="limit download rate, e.g. 2M (default: unlimited)")
    g.add_argument("--max-upload-rate", type=parse_rate, default=0, metavar="RATE",
                   help="limit upload rate, e.g. 500k (default: unlimited)")
    g.add_argument("--upload-slots", type=int, default=4, help="regular unchoke slots (default: 4)")
    g.add_argument("--no-pex", action="store_true",
                   help="do not exchange peer lists with peers (BEP 11; always off for private torrents)")
    g.add_argument("--no-dht", action="store_true",
                   default=os.environ.get("TORRENTCORE_NO_DHT", "") not in ("", "0"),
                   help="do not use the DHT (BEP 5) to find peers (also: TORRENTCORE_NO_DHT=1)")
    g.add_argument("--dht-bootstrap", action="append", type=parse_peer, default=[], metavar="HOST:PORT",
                   help="DHT node to bootstrap from (repeatable; default: the well-known public routers)")
    g.add_argument("--dht-port", type=_udp_port, default=None, metavar="N",
                   help="UDP port of the DHT node (default: the --port number, else 6881; any free one if taken)")
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
    p.add_argument("torrent", help=".torrent file or magnet link")
    p.add_argument("-o", "--output", default=".", metavar="DIR",
                   help="download folder (default: .); '-' with --storage memory writes a single-file "
                        "torrent's data to standard output, in order, as it arrives")
    p.add_argument("--no-seed", action="store_true", help="exit as soon as the download is complete")
    p.add_argument("--metadata-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="magnet links: give up if no peer sends the metadata within this time (default: 120)")
    sel = p.add_argument_group("file selection (files numbered as 'torrentcore info' lists them, from 0)")
    sel.add_argument("--only", action="append", default=[], metavar="GLOB|INDEX",
                     help="download only the files matching (repeatable); a glob is matched against the "
                          "path inside the torrent or as 'info' shows it ('*' also matches '/')")
    sel.add_argument("--skip", action="append", default=[], metavar="GLOB|INDEX",
                     help="do not download the files matching (repeatable; applied after --only)")
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

    p = sub.add_parser("plugins", help="list installed plugins, strategies, storage backends and settings")
    _common(p, top=False)
    p.add_argument("--json", action="store_true", help="print JSON for machines")
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
        raise MetainfoError("'seed' needs a .torrent file to check the data against; 'torrentcore run MAGNET' "
                            "saves NAME.torrent in its download folder")
    return metainfo.load(path)


def _magnet_peer_sources(magnet, peer_id: bytes, dht_node=None, port: int | None = None) -> list:
    """Where a magnet link's metadata may come from, as :data:`torrentcore.metadata.PeerSource` callables.

    The trackers of the link (``tr=``; announced with ``port``, the ``--port`` we will listen on, else 6881,
    the first one tried) and the DHT node, if one runs.
    """
    from .metadata import tracker_source

    sources = [tracker_source(magnet.trackers, peer_id, port or 6881)] if magnet.trackers else []
    if dht_node is not None:
        sources.append(lambda info_hash: dht_node.get_peers(info_hash, timeout=30.0))
    return sources


def _fetch_interruptibly(fetcher, timeout: float):
    """``fetcher.fetch(timeout)``; Ctrl-C / SIGTERM / SIGHUP end it with one line and exit code 130 / 143 / 129."""

    from .metadata import MetadataError

    stopped: list[int] = []

    def stop(code: int) -> None:
        stopped.append(code)
        fetcher.stop()

    handlers = install_stop_handlers(stop)  # SIGINT, SIGTERM, SIGHUP
    try:
        return fetcher.fetch(timeout=timeout)
    except MetadataError:
        if stopped:
            error = TorrentcoreError("interrupted while fetching the metadata")
            error.exit_code = stopped[0]
            raise error from None
        raise
    finally:
        for handler in handlers:
            handler.cancel()


def _load_magnet(args, save_path: str):
    """``run MAGNET``: fetch the metadata (BEP 9), save NAME.torrent in the download folder, return the Metainfo.

    Sets ``args.magnet_peer_id`` (the same id is used for the download) and ``args.magnet_peers`` (``x.pe=`` peers
    and those that sent the metadata, dialled first by the download).
    """
    from . import metainfo
    from .magnet import parse_magnet
    from .metadata import MetadataFetcher, find_saved_torrent, save_torrent_file, torrent_file
    from .session import make_peer_id

    magnet = parse_magnet(args.torrent)
    args.magnet_peer_id = make_peer_id()
    saved = find_saved_torrent(save_path, magnet.info_hash)
    if saved is not None:  # a second run on the same folder: the metadata is already here
        structlog.get_logger(__name__).info("metadata found on disk", path=saved, info_hash=magnet.info_hash_hex)
        args.magnet_peers = list(magnet.peers)
        return metainfo.load(saved)
    sources = _magnet_peer_sources(magnet, args.magnet_peer_id, getattr(args, "dht_node", None), args.port)
    if not sources and not magnet.peers and not args.peers:
        raise BadInputError("the magnet link names no tracker (tr=) and no peer (x.pe=), no --peer was given "
                            "and the DHT is off: there is nowhere to fetch its metadata from")
    fetcher = MetadataFetcher(magnet.info_hash, args.magnet_peer_id, [*magnet.peers, *args.peers], sources)
    result = _fetch_interruptibly(fetcher, args.metadata_timeout)
    data = torrent_file(result.raw_info, magnet.trackers)
    meta = metainfo.parse(data)
    path = save_torrent_file(save_path, meta.name, data)
    structlog.get_logger(__name__).info("metadata saved", path=path, info_hash=meta.info_hash_hex)
    # Peers that sent bad metadata are not dialled again by the download.
    args.magnet_peers = [*result.peers, *(p for p in magnet.peers if p not in fetcher.bad_peers())]
    return meta


def cmd_info(args) -> int:
    """``torrentcore info``."""
    from .magnet import is_magnet, parse_magnet

    if is_magnet(args.torrent):
        m = parse_magnet(args.torrent)
        sources = _peer_sources(m.trackers, None, m.peers)
        data = {"magnet": True, "info_hash": m.info_hash_hex, "name": m.name, "trackers": m.trackers,
                "peers": sources["magnet_peers"], "peer_sources": sources}
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            print(f"name:       {m.name or '(unknown until metadata is fetched)'}")
            print(f"info-hash:  {m.info_hash_hex}")
            for n, tier in enumerate(m.trackers):
                print(f"tracker:    tier {n}: {' '.join(tier)}")
            _write_peer_sources(sys.stdout, sources)
        return EXIT_OK
    meta = _load_torrent(args.torrent)
    files = [{"index": i, "path": f.relpath, "length": f.length} for i, f in enumerate(meta.data_files)]
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
        "peer_sources": _peer_sources(meta.trackers, meta.private, []),
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
    _write_peer_sources(out, data["peer_sources"])
    out.write(f"files ({len(files)}):\n")
    for f in files:
        out.write(f"  {f['index']:>4}  {_human(f['length']):>10}  {f['path']}\n")
    return EXIT_OK


def _peer_sources(trackers: list[list[str]], private: bool | None, peers: list[tuple[str, int]]) -> dict:
    """Where peers of a torrent may come from: its trackers, DHT and PEX unless private (BEP 27), and the
    peers a magnet link names (``x.pe``). ``private`` is ``None`` for a magnet (unknown until metadata)."""
    from .peer.connection import format_address

    allowed = "no: private torrent" if private else "allowed"
    if private is None:
        allowed = "allowed unless the metadata says private"
    return {
        "trackers": [url for tier in trackers for url in tier],
        "dht": allowed,
        "pex": allowed,
        "magnet_peers": [format_address(p) for p in peers],
    }


def _write_peer_sources(out, sources: dict) -> None:
    count = len(sources["trackers"])
    out.write("peer sources:\n")
    out.write(f"  trackers:   {f'{count} (listed above)' if count else 'none'}\n")
    out.write(f"  DHT:        {sources['dht']}\n")
    out.write(f"  PEX:        {sources['pex']}\n")
    if sources["magnet_peers"]:
        out.write(f"  x.pe peers: {' '.join(sources['magnet_peers'])}\n")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"  # pragma: no cover


def _make_pm(args):
    from . import plugins

    enable = [n for n in args.plugin if not n.startswith("no:")]
    disable = [*args.disable, *(n[3:] for n in args.plugin if n.startswith("no:"))]
    return plugins.get_plugin_manager(disabled=disable, extra_modules=enable)


def _plugin_settings(args, pm) -> dict:
    """``options.plugin_settings``: declared defaults, the config file, then ``--plugin-opt`` (validated)."""
    from . import plugins

    config_name = args.config or "config file"
    if args.config is None:
        default = plugins.default_config_path()
        config_name = next((c for c in (default, default[:-5] + ".ini") if os.path.isfile(c)), config_name)
    return plugins.resolve_settings(pm, args.plugin_opts, plugins.load_config(args.config), config_name)


def _run_torrent(args, pm, save_path: str, seed_only: bool) -> int:
    from . import plugins
    from .magnet import is_magnet
    from .session import Torrent

    magnet = is_magnet(args.torrent) and not seed_only
    if save_path == "-" and (magnet or getattr(args, "storage", None) != "memory"):
        raise BadInputError("-o - (the data to standard output) needs --storage memory and a .torrent file")
    if magnet:
        _start_dht(args)  # a peer source for the metadata too (args.dht_node)
    meta = _load_magnet(args, save_path) if magnet else _load_torrent(args.torrent)
    if not meta.private:
        _start_dht(args)
    else:
        _stop_dht(args)  # private torrents (BEP 27) never use the DHT
    from .selection import select_files

    # Files chosen with run --only/--skip (None: all); a selection matching nothing is bad input (exit 2).
    args.selected_files = select_files(meta, getattr(args, "only", []), getattr(args, "skip", []))
    if save_path == "-" and (meta.multi_file or args.selected_files is not None):
        raise BadInputError("-o - (the data to standard output) works for single-file torrents only")
    strategy = plugins.choose_strategy(pm, args.strategy)
    storage = plugins.choose_storage(pm, args.storage)
    args.seed_only = seed_only  # `seed` never downloads: incomplete data is an error
    if seed_only:
        args.no_seed = False
    # `run` is a download that gives back for a while; `seed` runs until stopped unless limits are given.
    for name, run_default in (("seed_ratio", 1.0), ("seed_time", 30.0), ("seed_idle", 2.0)):
        if getattr(args, name) is None:
            setattr(args, name, None if seed_only else run_default)
    torrent = Torrent(meta, save_path, pm, args, strategy, storage, peer_id=getattr(args, "magnet_peer_id", None))
    torrent.add_peers(getattr(args, "magnet_peers", None) or [], source="magnet")

    install_stop_handlers(torrent.stop)  # SIGINT 130, SIGTERM 143, SIGHUP 129: a clean stop
    code = torrent.run()
    if torrent.error:
        print(f"torrentcore: error: {torrent.error}", file=sys.stderr)
    return code


def _start_dht(args) -> None:
    """Start the process's one DHT node as ``args.dht_node`` (idempotent; nothing with ``--no-dht``).

    Never called for private torrents (BEP 27).
    """
    if getattr(args, "no_dht", True) or getattr(args, "dht_node", None) is not None:
        return
    from .dht import DHTNode, default_state_path

    hosts = [h.strip() for h in (getattr(args, "listen_host", None) or "").split(",") if h.strip()]
    host = next((h for h in hosts if ":" not in h), "0.0.0.0")  # the DHT node speaks IPv4
    port = args.dht_port if args.dht_port is not None else (args.port or 6881)
    node = DHTNode(port=port, bootstrap=args.dht_bootstrap or None, state_path=default_state_path(), host=host)
    try:
        node.start()
    except OSError as exc:
        node.stop()  # releases its state file
        structlog.get_logger(__name__).warning("cannot start the dht node", error=str(exc))
        return
    args.dht_node = node


def _stop_dht(args) -> None:
    """Stop the DHT node (saves its state file), if one was started."""
    node = getattr(args, "dht_node", None)
    if node is not None:
        node.stop()
        args.dht_node = None


def cmd_run(args, pm) -> int:
    """``torrentcore run``."""
    try:
        # "-o -": the data goes to standard output (memory storage, single-file torrents; checked below).
        save_path = "-" if args.output == "-" else os.path.abspath(args.output)
        return _run_torrent(args, pm, save_path, seed_only=False)
    finally:
        _stop_dht(args)


def cmd_seed(args, pm) -> int:
    """``torrentcore seed``."""
    if not os.path.isdir(args.data):
        raise BadInputError(f"data folder {args.data} does not exist")
    try:
        return _run_torrent(args, pm, os.path.abspath(args.data), seed_only=True)
    finally:
        _stop_dht(args)


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
    """``torrentcore plugins [--json]``: every installed plugin (state, kinds, distribution), what it offers."""
    from . import plugins

    infos = plugins.plugin_infos(pm)
    offers = plugins.providers(pm)
    values = getattr(args, "plugin_settings", {})
    if args.json:
        print(json.dumps({"plugins": [i.as_json() for i in infos], "strategies": offers["strategy"],
                          "storages": offers["storage"], "settings": values}, indent=2, default=repr))
        return EXIT_OK
    for i in infos:
        origin = f"{i.dist} {i.version}" if i.dist else f"module {i.module}" + (f" {i.version}" if i.version else "")
        note = "  (load with -p " + i.name + ")" if i.state == "opt-in" else ""
        note += f"  ({i.error})" if i.error else ""
        print(f"plugin    {i.name:20} {i.state:9} {', '.join(i.kinds) or '-':28} {origin}{note}")
    for kind, label in (("strategy", "strategy"), ("storage", "storage ")):
        for name, owner in sorted(offers[kind].items()):
            print(f"{label}  {name:20} from {owner}")
    declared = plugins.declared_settings(pm)
    for ns in sorted(declared):
        for key, setting in sorted(declared[ns].items()):
            value = values.get(ns, {}).get(key, setting.default)
            print(f"setting   {ns + '.' + key:26} = {value!r:10} ({setting.type.__name__}, default "
                  f"{setting.default!r}) {setting.help}")
    return EXIT_OK


# --- entry point -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code (also used by ``python -m torrentcore``)."""
    argv = sys.argv[1:] if argv is None else argv
    # First pass: which plugins to load, so that they can add options to the full parser.
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    _plugin_options(pre)
    pre.add_argument("--debug", action="store_true")
    try:
        known, _ = pre.parse_known_args(argv)
    except argparse.ArgumentError:  # the full parser below reports it, with the sub-command's usage
        known, _ = pre.parse_known_args([])
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
            return printing(cmd_info, args)  # stdout closed or unwritable: one line, exit 1
        if args.command == "create":
            return cmd_create(args)
        if pm is None:
            pm = _make_pm(args)
        args.plugin_settings = _plugin_settings(args, pm)  # what plugins read: options.plugin_settings
        if args.command == "run":
            return cmd_run(args, pm)
        if args.command == "seed":
            return cmd_seed(args, pm)
        return printing(cmd_plugins, args, pm)
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
