"""The ``torrentcore`` command: ``info``, ``run``, ``seed``, ``create``, ``plugins``.

This is the program's entry point, so it is the one place that patches the
standard library for gevent (before anything imports ``socket``) and the one
place that configures structlog.

Exit codes: 0 success, 1 runtime failure, 2 bad input, 130 interrupted (Ctrl-C).

About 700 lines: the parser of five sub-commands with their help texts, and the small commands ``info``,
``create`` and ``plugins``; ``run`` and ``seed`` are thin clients of :class:`torrentcore.Session`.
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
    from .config import ENCRYPTION_CHOICES, SessionConfig, TorrentConfig, default_of

    g = parser.add_argument_group("network")
    g.add_argument("--port", type=int, default=None,
                   help="port to accept peers on, for every torrent (default: first free in 6881-6889; 0: any free "
                        "port; a port given here must be free)")
    g.add_argument("--listen-host", default="0.0.0.0",
                   help="address(es) to listen on, comma-separated, e.g. 127.0.0.1,::1 "
                        "(default: all IPv4 and IPv6 addresses)")
    g.add_argument("--max-peers", type=int, default=default_of(TorrentConfig, "max_peers"),
                   help="most connected peers per torrent (default: %(default)s)")
    g.add_argument("--max-connections", type=int, default=default_of(SessionConfig, "max_connections"),
                   help="most peer connections of all torrents together (default: %(default)s)")
    g.add_argument("--max-connections-per-ip", type=int, default=default_of(SessionConfig, "max_connections_per_ip"),
                   help="most connections from one IP address, and most to one, loopback included "
                        "(default: %(default)s)")
    g.add_argument("--peer", dest="peers", action="append", type=parse_peer, default=[], metavar="HOST:PORT",
                   help="also connect to this peer (repeatable)")
    g.add_argument("--max-download-rate", type=parse_rate, default=0, metavar="RATE",
                   help="limit the download rate of all torrents together, e.g. 2M (default: unlimited)")
    g.add_argument("--max-upload-rate", type=parse_rate, default=0, metavar="RATE",
                   help="limit the upload rate of all torrents together, e.g. 500k (default: unlimited)")
    g.add_argument("--upload-slots", type=int, default=default_of(TorrentConfig, "upload_slots"),
                   help="regular unchoke slots per torrent (default: %(default)s)")
    g.add_argument("--encryption", choices=ENCRYPTION_CHOICES, default=default_of(SessionConfig, "encryption"),
                   help="peer encryption (MSE/PE): prefer (encrypted handshake; RC4 for the data when the peer "
                        "asks for it, plaintext when it offers both, as libtorrent), require (RC4 always), or "
                        "disable (default: %(default)s)")
    g.add_argument("--transports", type=_parse_transports, default=default_of(SessionConfig, "transports"),
                   metavar="LIST", help="peer transports in order of preference: utp, tcp or both, "
                                        "comma-separated (default: utp,tcp)")
    g.add_argument("--no-pex", action="store_true",
                   help="do not exchange peer lists with peers (BEP 11; always off for private torrents)")
    g.add_argument("--no-web-seeds", action="store_true",
                   help="do not fetch from the torrent's web seeds (BEP 19 url-list, BEP 17 httpseeds)")
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
    p.add_argument("--strategy", default=default_of(TorrentConfig, "strategy"),
                   help="piece selection strategy (default: %(default)s)")
    p.add_argument("--storage", default=default_of(TorrentConfig, "storage"),
                   help="storage backend (default: %(default)s)")


def _default_metadata_timeout() -> float:
    from .config import TorrentConfig, default_of

    return default_of(TorrentConfig, "metadata_timeout")


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

    p = sub.add_parser("run", help="download torrents (then seed them for a while)")
    _common(p, top=False)
    p.add_argument("torrent", nargs="+", help=".torrent file(s) or magnet link(s), all run in one session")
    p.add_argument("-o", "--output", default=".", metavar="DIR",
                   help="download folder (default: .); '-' with --storage memory writes a single-file "
                        "torrent's data to standard output, in order, as it arrives")
    p.add_argument("--no-seed", action="store_true", help="exit as soon as the download is complete")
    p.add_argument("--metadata-timeout", type=float, default=_default_metadata_timeout(), metavar="SECONDS",
                   help="magnet links: give up if no peer sends the metadata within this time (default: %(default)s)")
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
    p.add_argument("torrent", nargs="+", help=".torrent file(s), all seeded on one port")
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
    p.add_argument("-f", "--force", action="store_true", help="overwrite the output file if it exists")
    p.add_argument("--piece-length", type=parse_rate, default=None, metavar="BYTES",
                   help="piece length, e.g. 256k (default: chosen from the size)")
    p.add_argument("-w", "--web-seed", action="append", default=[], metavar="URL",
                   help="web seed URL (BEP 19 url-list; repeatable): the file itself, or for a folder the URL "
                        "of the folder that holds it")
    p.add_argument("--private", action="store_true", help="mark private (BEP 27: trackers only)")
    p.add_argument("--comment", default=None)
    p.add_argument("--created-by", default=f"torrentcore {__version__}")
    p.add_argument("--no-date", action="store_true", help="omit the creation date (reproducible output)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads that read and hash the data (default: one per CPU)")
    fmt = p.add_mutually_exclusive_group()
    for kind, text in (("hybrid", "v1 and v2 in one torrent (BEP 52; the default, as libtorrent 2.x and "
                                  "qBittorrent make: v1-only clients can join, v2 clients get per-file hashes)"),
                       ("v2", "v2 only (SHA-256 Merkle trees; v1-only clients cannot read it)"),
                       ("v1", "v1 only (SHA-1 pieces, BEP 3)")):
        fmt.add_argument(f"--{kind}", dest="kind", action="store_const", const=kind, help=text)

    from .daemon.command import add_parser as add_daemon_parser

    add_daemon_parser(sub, _common)

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
    from .magnet import is_magnet, parse_magnet

    if is_magnet(path):
        parse_magnet(path)  # a malformed link is reported as one (exit 2)
        raise MetainfoError("'seed' needs a .torrent file to check the data against; 'torrentcore run MAGNET' "
                            "saves NAME.torrent in its download folder")
    return metainfo.load(path)


def cmd_info(args) -> int:
    """``torrentcore info``."""
    from .magnet import is_magnet, parse_magnet

    if is_magnet(args.torrent):
        m = parse_magnet(args.torrent)
        sources = _peer_sources(m.trackers, None, m.peers)
        data = {"magnet": True, "info_hash": m.info_hash_hex,
                "info_hash_v2": None if m.info_hash_v2 is None else m.info_hash_v2.hex(),
                "name": m.name, "trackers": m.trackers, "web_seeds": m.web_seeds,
                "peers": sources["magnet_peers"], "peer_sources": sources}
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            print(f"name:       {m.name or '(unknown until metadata is fetched)'}")
            if m.info_hash_v2 is None or m.info_hash != m.info_hash_v2[:20]:
                print(f"info-hash:  {m.info_hash_hex}")
            if m.info_hash_v2 is not None:
                print(f"info-hash v2: {m.info_hash_v2.hex()}")
            for n, tier in enumerate(m.trackers):
                print(f"tracker:    tier {n}: {' '.join(tier)}")
            for url in m.web_seeds:
                print(f"web seed:   {url}")
            _write_peer_sources(sys.stdout, sources)
        return EXIT_OK
    meta = _load_torrent(args.torrent)
    files = [{"index": i, "path": f.relpath, "length": f.length} for i, f in enumerate(meta.data_files)]
    data = {
        "name": meta.name,
        "info_hash": meta.info_hash_hex,
        "info_hash_v1": None if meta.v2_only else meta.info_hash_hex,
        "info_hash_v2": meta.info_hash_v2_hex,
        "meta_version": 2 if meta.v2 else 1,
        "missing_piece_layers": len(meta.missing_layers()),
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
        "http_seeds": meta.http_seeds,
        "peer_sources": _peer_sources(meta.trackers, meta.private, []),
    }
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return EXIT_OK
    out = sys.stdout
    out.write(f"name:         {meta.name}\n")
    if meta.hybrid:
        out.write(f"info-hash:    {meta.info_hash_hex}  (v1; hybrid v1/v2 torrent)\n")
        out.write(f"info-hash v2: {meta.info_hash_v2_hex}\n")
    elif meta.v2_only:
        out.write(f"info-hash v2: {meta.info_hash_v2_hex}  (v2-only torrent; {meta.info_hash_hex} on the wire)\n")
    else:
        out.write(f"info-hash:    {meta.info_hash_hex}\n")
    out.write(f"total size:   {_human(meta.data_length)} ({meta.data_length} bytes)\n")
    out.write(f"pieces:       {meta.num_pieces} x {_human(meta.piece_length)}\n")
    if meta.missing_layers():
        out.write(f"piece layers: missing for {len(meta.missing_layers())} file(s) (they are fetched from peers)\n")
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
    for url in meta.url_list:
        out.write(f"web seed:     {url}\n")
    for url in meta.http_seeds:
        out.write(f"web seed:     {url}  (BEP 17 httpseeds)\n")
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


#: Configuration fields -> the option that sets them (named in the one line a bad value gets).
_OPTION_OF = {"listen_port": "--port", "dht_port": "--dht-port", "max_connections": "--max-connections",
              "max_connections_per_ip": "--max-connections-per-ip",
              "max_peers": "--max-peers", "upload_slots": "--upload-slots", "seed_ratio": "--seed-ratio",
              "seed_time": "--seed-time", "seed_idle": "--seed-idle", "metadata_timeout": "--metadata-timeout",
              "max_download_rate": "--max-download-rate", "max_upload_rate": "--max-upload-rate"}


def _parse_transports(text: str) -> tuple[str, ...]:
    """``utp,tcp`` -> ("utp", "tcp") (argparse type of ``--transports``)."""
    from .config import TRANSPORT_CHOICES

    names = tuple(t.strip().lower() for t in text.split(",") if t.strip())
    if not names or any(n not in TRANSPORT_CHOICES for n in names) or len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"expected utp, tcp or both (comma-separated), not {text!r}")
    return names


def _session_config(args, pm):
    """The SessionConfig of ``run``/``seed`` from the parsed options (a bad value: ValueError)."""
    from .config import SessionConfig

    hosts = tuple(h.strip() for h in (args.listen_host or "").split(",") if h.strip()) or ("0.0.0.0",)
    return SessionConfig(
        listen_port=args.port, listen_hosts=hosts, dht=not args.no_dht, dht_port=args.dht_port,
        dht_bootstrap=tuple(args.dht_bootstrap), pex=not args.no_pex, encryption=args.encryption,
        transports=args.transports, max_download_rate=args.max_download_rate, max_upload_rate=args.max_upload_rate,
        max_connections=args.max_connections, max_connections_per_ip=args.max_connections_per_ip,
        disabled_plugins=tuple(_disabled(args)), plugins=tuple(_enabled(args)),
        plugin_settings=args.plugin_settings)


def _torrent_config(args, pm, seed_only: bool):
    """The TorrentConfig of ``run``/``seed`` from the parsed options (a bad value: ValueError)."""
    from .config import TorrentConfig

    own = {"seed_ratio": args.seed_ratio, "seed_time": args.seed_time, "seed_idle": args.seed_idle}
    limits = {k: v for k, v in own.items() if v is not None}  # not given: the defaults of run or seed
    common = dict(
        max_peers=args.max_peers, upload_slots=args.upload_slots, strategy=args.strategy, storage=args.storage,
        peers=tuple(args.peers), web_seeds=not args.no_web_seeds, extra=_plugin_option_values(args, pm), **limits)
    if seed_only:
        return TorrentConfig.seeding_forever(**common)
    return TorrentConfig(seed=not args.no_seed, only=tuple(args.only), skip=tuple(args.skip),
                         metadata_timeout=args.metadata_timeout, **common)


def _plugin_option_values(args, pm) -> dict:
    """Values of the command-line options plugins added (``torrentcore_add_options``), by ``dest``."""
    if pm is None:
        return {}
    probe = argparse.ArgumentParser(add_help=False)
    pm.hook.torrentcore_add_options(parser=probe)
    return {a.dest: getattr(args, a.dest) for a in probe._actions if hasattr(args, a.dest)}


def _disabled(args) -> list[str]:
    return [*args.disable, *(n[3:] for n in args.plugin if n.startswith("no:"))]


def _enabled(args) -> list[str]:
    return [n for n in args.plugin if not n.startswith("no:")]


def _run_torrents(args, pm, sources: list[str], save_path: str, seed_only: bool) -> int:
    """Run every torrent of ``sources`` in one Session (one port, one DHT); return the worst exit code."""
    import gc

    import gevent

    from .magnet import is_magnet
    from .session import Session

    if save_path == "-" and (len(sources) != 1 or is_magnet(sources[0]) or args.storage != "memory"):
        raise BadInputError("-o - (the data to standard output) needs --storage memory and one .torrent file")
    try:
        session_config = _session_config(args, pm)
        torrent_config = _torrent_config(args, pm, seed_only)
    except ValueError as exc:
        message = str(exc)
        option = _OPTION_OF.get(message.split(" ", 1)[0])
        raise BadInputError(f"{option}: {message}" if option else message) from None
    # Every .torrent is read (and a malformed one refused) before anything starts.
    loaded = [_load_torrent(s) if seed_only or not is_magnet(s) else _check_magnet(s) for s in sources]
    if save_path == "-" and (loaded[0].multi_file or args.only or args.skip):
        raise BadInputError("-o - (the data to standard output) works for single-file torrents only")
    if seed_only and args.storage == "filesystem":
        from .datafolder import describe_missing_data

        for meta in loaded:
            missing = describe_missing_data(meta, save_path)
            if missing:  # the folder missing, a file, or no file of the torrent in it: say why (exit 2)
                raise BadInputError(missing)
    session = Session(session_config, plugin_manager=pm)
    handles = []
    try:
        for source in loaded:
            handles.append(session.add_torrent(source, save_path, torrent_config))
        # Start-up objects (modules, plugins, parsed torrents) are long-lived: out of the collector's sight,
        # gen-2 collections no longer walk them during the download (gc was ~3% of the event loop's CPU).
        gc.freeze()
        streamer = gevent.spawn(_stream, handles[0]) if save_path == "-" else None
        handlers = install_stop_handlers(session.stop_all)  # SIGINT 130, SIGTERM 143, SIGHUP 129: a clean stop
        try:
            for handle in handles:
                handle.join()
            if streamer is not None:
                streamer.join()
        finally:
            for handler in handlers:
                handler.cancel()
    finally:
        session.close()
    for handle in handles:
        if handle.error:
            prefix = f"{handle.name}: " if len(handles) > 1 else ""
            print(f"torrentcore: error: {prefix}{handle.error}", file=sys.stderr)
    return max((h.exit_code if h.exit_code is not None else EXIT_RUNTIME) for h in handles)


def _stream(handle) -> None:
    """``run --storage memory -o -``: the file to standard output, in order, through a streaming reader."""
    from .reader_source import run_streaming

    torrent = handle.torrent
    code = run_streaming(torrent, sys.stdout.buffer)
    if code != EXIT_OK and torrent.exit_code == EXIT_OK:
        torrent.exit_code = code  # the data did not all reach standard output


def _check_magnet(link: str) -> str:
    from .magnet import parse_magnet

    parse_magnet(link)  # a malformed link is bad input (exit 2) before anything starts
    return link


def cmd_run(args, pm) -> int:
    """``torrentcore run``."""
    # "-o -": the data goes to standard output (memory storage, single-file torrents; checked below).
    save_path = "-" if args.output == "-" else os.path.abspath(args.output)
    return _run_torrents(args, pm, args.torrent, save_path, seed_only=False)


def cmd_seed(args, pm) -> int:
    """``torrentcore seed``."""
    return _run_torrents(args, pm, args.torrent, os.path.abspath(args.data), seed_only=True)


def _hashes_text(meta) -> str:
    """``info-hash X`` (v1), ``info-hash X, v2 info-hash Y`` (hybrid) or ``v2 info-hash Y``."""
    if meta.hybrid:
        return f"info-hash {meta.info_hash_hex}, v2 info-hash {meta.info_hash_v2_hex}"
    if meta.v2_only:
        return f"v2 info-hash {meta.info_hash_v2_hex}"
    return f"info-hash {meta.info_hash_hex}"


def cmd_create(args) -> int:
    """``torrentcore create``: refuses to overwrite without ``--force`` (checked before hashing), warns when
    no tracker is given, never packs the output file or torrentcore's own files."""
    from .create import DEFAULT_KIND, create_torrent, torrent_name

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
    print(f"created {out}: {meta.name}, {_human(meta.data_length)}, {meta.num_pieces} pieces of "
          f"{_human(meta.piece_length)}, {_hashes_text(meta)}")
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
        if args.command == "daemon":
            from .daemon.command import cmd_daemon

            return cmd_daemon(args)
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
