"""The ``torrentcore`` command: its argument parser, and the dispatch to ``info``, ``run``, ``seed``,
``create``, ``daemon`` and ``plugins`` (each in a module of its own: :mod:`torrentcore.commands`,
:mod:`torrentcore.daemon.command`).

This is the program's entry point, so it is the one place that patches the
standard library for gevent (before anything imports ``socket``) and the one
place that configures structlog.

Exit codes: 0 success, 1 runtime failure, 2 bad input, 130 interrupted (Ctrl-C).

Only the chosen command's module is imported, and only its options are built (:func:`chosen_command`), so
that a command pays at start-up for what it uses.
"""

import sys
import types

from gevent import monkey

from .entry_points import installed as _installed_entry_points


def _patch_all() -> None:
    """``monkey.patch_all()``, with gevent's plugin look-ups answered from one scan of the entry points.

    gevent looks up its plugin entry points (``importlib.metadata.entry_points(group=...)``) for every module
    it patches, 25 times, and each look-up read every installed distribution's metadata: 0.1-0.25 s of every
    start-up here. They are answered from the shared scan (:mod:`torrentcore.entry_points`, which the plugin
    manager uses next), each group filtered once (gevent asks for 4 groups; filtering them all each time cost
    3-5 ms). While gevent patches, a stand-in for ``importlib.metadata`` with only that function answers its
    ``from importlib import metadata`` (when nothing imported the real module yet: importing it cost 15-20 ms
    of every start-up, and a run needs nothing else from it); the stand-in then leaves ``sys.modules``, so
    that any later ``import importlib.metadata`` is the real one.
    """
    everything = _installed_entry_points()
    groups: dict = {}

    def entry_points(**params):
        if params.keys() != {"group"}:
            return everything.select(**params)
        if params["group"] not in groups:
            groups[params["group"]] = everything.select(**params)
        return groups[params["group"]]

    real = sys.modules.get("importlib.metadata")
    if real is None:
        stand_in = types.ModuleType("importlib.metadata", "gevent's plugin look-ups while it patches (cli)")
        stand_in.entry_points = entry_points  # type: ignore[attr-defined]
        sys.modules["importlib.metadata"] = stand_in
        try:
            monkey.patch_all()
        finally:
            if sys.modules.get("importlib.metadata") is stand_in:
                del sys.modules["importlib.metadata"]
        return
    scan = real.entry_points
    real.entry_points = entry_points  # type: ignore[assignment]
    try:
        monkey.patch_all()
    finally:
        real.entry_points = scan


_patch_all()

import gevent  # noqa: E402

# Ctrl-C that lands while the hub runs is handled by main() (exit 130), not printed by the hub.
gevent.get_hub().NOT_ERROR += (KeyboardInterrupt,)

import argparse  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import ipaddress  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import traceback  # noqa: E402


class _ImportedOnFirstUse(types.ModuleType):
    """Stands in for a module that is imported only when one of its attributes is first read."""

    def __getattr__(self, name: str):
        return getattr(importlib.import_module(self.__name__), name)


def _import_structlog_without_rich() -> None:
    """Import structlog with ``rich`` hidden from it and ``asyncio`` deferred (when nothing has imported
    structlog, rich or asyncio yet).

    structlog's ``dev`` and ``tracebacks`` modules import rich (and with it pygments) whenever it is
    installed, only to offer rich tracebacks: 0.07-0.1 s of every start-up here. Our console and JSON chains
    (:func:`configure_logging`) turn ``exc_info`` into text with ``format_exc_info`` before the renderer, so
    the renderer never uses rich and the output is the same. rich stays importable for anything else.

    structlog's ``stdlib`` and ``_native`` modules import asyncio (25 modules, 15-25 ms of CPU at every
    start-up here) for their ``async`` log methods only (``await log.ainfo(...)``), which the engine never
    calls. They get a stand-in that imports asyncio when one of its attributes is first read, so those
    methods work as before; the stand-in leaves ``sys.modules`` as soon as structlog is imported, so that
    any other ``import asyncio`` is the real one.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    deferred = None
    if "asyncio" not in sys.modules:
        deferred = sys.modules["asyncio"] = _ImportedOnFirstUse("asyncio")
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError meanwhile
    try:
        import structlog  # noqa: F401
    finally:
        if sys.modules.get("rich", 0) is None:
            del sys.modules["rich"]
        if deferred is not None and sys.modules.get("asyncio") is deferred:
            del sys.modules["asyncio"]


_import_structlog_without_rich()

import structlog  # noqa: E402

from . import __version__  # noqa: E402
from .errors import (  # noqa: E402
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    TorrentcoreError,
)
from .process import printing  # noqa: E402

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


#: The sub-commands, in the order ``torrentcore --help`` lists them, with their line there.
COMMANDS = {
    "info": "show what a .torrent file or magnet link contains",
    "run": "download torrents (then seed them for a while)",
    "seed": "seed data that is already on disk",
    "create": "make a .torrent file from a file or folder",
    "daemon": "run in the foreground with Transmission-compatible remote control (RPC)",
    "plugins": "list installed plugins, strategies, storage backends and settings",
}


class _NoCommand(Exception):
    """The top-level options are wrong: the full parser says why."""


class _CommandFinder(argparse.ArgumentParser):
    """A parser that raises instead of printing an error and exiting."""

    def error(self, message: str):
        raise _NoCommand(message)


def chosen_command(argv: list[str]) -> str | None:
    """The sub-command ``argv`` names, as the full parser finds it (its top-level options are the same; the
    sub-commands' options are skipped); ``None`` if it names none or the top-level options are wrong."""
    parser = _CommandFinder(add_help=False, exit_on_error=False)
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command")
    for name in COMMANDS:
        sub.add_parser(name, add_help=False)
    try:
        known, _ = parser.parse_known_args(argv)
    except (argparse.ArgumentError, _NoCommand):
        return None
    return known.command


def build_parser(pm=None, command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``pm`` adds plugin options to ``run`` and ``seed``.

    ``command``: only that sub-command gets its options (the others only their line in ``--help``), so that
    ``run`` does not import the daemon's module for its options; ``None``: every sub-command, in full.
    """
    parser = argparse.ArgumentParser(
        prog="torrentcore",
        description="A BitTorrent engine: download, seed and inspect torrents.",
    )
    parser.add_argument("--version", action="version", version=f"torrentcore {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command_parser(name: str) -> argparse.ArgumentParser | None:
        p = sub.add_parser(name, help=COMMANDS[name])
        if command is not None and name != command:
            return None
        _common(p, top=False)
        return p

    p = command_parser("info")
    if p is not None:
        p.add_argument("torrent", help=".torrent file or magnet link")
        p.add_argument("--json", action="store_true", help="print JSON for machines")

    p = command_parser("run")
    if p is not None:
        p.add_argument("torrent", nargs="+", help=".torrent file(s) or magnet link(s), all run in one session")
        p.add_argument("-o", "--output", default=".", metavar="DIR",
                       help="download folder (default: .); '-' with --storage memory writes a single-file "
                            "torrent's data to standard output, in order, as it arrives")
        p.add_argument("--no-seed", action="store_true", help="exit as soon as the download is complete")
        p.add_argument("--metadata-timeout", type=float, default=_default_metadata_timeout(), metavar="SECONDS",
                       help="magnet links: give up if no peer sends the metadata within this time "
                            "(default: %(default)s)")
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

    p = command_parser("seed")
    if p is not None:
        p.add_argument("torrent", nargs="+", help=".torrent file(s), all seeded on one port")
        p.add_argument("-d", "--data", required=True, metavar="DIR",
                       help="folder holding the data (the torrent's files or folder inside it)")
        _network_options(p)
        _plugin_options(p)
        if pm is not None:
            pm.hook.torrentcore_add_options(parser=p)

    p = command_parser("create")
    if p is not None:
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

    p = command_parser("daemon")
    if p is not None:
        from .daemon.command import add_arguments as add_daemon_arguments

        add_daemon_arguments(p)

    p = command_parser("plugins")
    if p is not None:
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



def _parse_transports(text: str) -> tuple[str, ...]:
    """``utp,tcp`` -> ("utp", "tcp") (argparse type of ``--transports``)."""
    from .config import TRANSPORT_CHOICES

    names = tuple(t.strip().lower() for t in text.split(",") if t.strip())
    if not names or any(n not in TRANSPORT_CHOICES for n in names) or len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"expected utp, tcp or both (comma-separated), not {text!r}")
    return names



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
        parser = build_parser(pm, chosen_command(argv))
        args = parser.parse_args(argv)
        debug = args.debug
        configure_logging("debug" if debug else args.log_level, args.log_format or "console")
        # Only the chosen command's module is imported (what the others import is not paid for).
        if args.command not in ("run", "seed"):
            gc.enable()  # off during start-up (__main__.entry); run and seed turn it on after theirs
        if args.command == "info":
            from .commands.info import cmd_info

            return printing(cmd_info, args)  # stdout closed or unwritable: one line, exit 1
        if args.command == "create":
            from .commands.create import cmd_create

            return cmd_create(args)
        if args.command == "daemon":
            from .daemon.command import cmd_daemon

            return cmd_daemon(args)
        if pm is None:
            pm = _make_pm(args)
        args.plugin_settings = _plugin_settings(args, pm)  # what plugins read: options.plugin_settings
        if args.command == "run":
            from .commands.run import cmd_run

            return cmd_run(args, pm)
        if args.command == "seed":
            from .commands.seed import cmd_seed

            return cmd_seed(args, pm)
        from .commands.plugins import cmd_plugins

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
