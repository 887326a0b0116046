"""``torrentcore daemon``: its options, and running it in the foreground until SIGTERM/SIGINT.

Security defaults: the RPC listens on 127.0.0.1 only and accepts clients from 127.0.0.1 and ::1.
Listening on any other address needs both a username (``--rpc-username``, the password from
``--rpc-password-file`` or ``$TORRENTCORE_RPC_PASSWORD``, never the command line) and an explicit
``--rpc-whitelist``; the daemon refuses to start otherwise.
"""

from __future__ import annotations

import argparse
import ipaddress
import os

import structlog

from ..config import DAEMON_RPC_HOST, DAEMON_RPC_PORT, DAEMON_RPC_WHITELIST
from ..errors import EXIT_OK, BadInputError

log = structlog.get_logger(__name__)

PASSWORD_ENV = "TORRENTCORE_RPC_PASSWORD"
#: Largest password file read.
MAX_PASSWORD_FILE = 4096


def default_config_dir() -> str:
    """``$XDG_CONFIG_HOME/torrentcore``, else ``~/.config/torrentcore``."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "torrentcore")


def add_arguments(p) -> None:
    """The ``daemon`` sub-command's options, added to its parser ``p`` (its line in ``--help``: the CLI's)."""
    p.add_argument("--config-dir", default=None, metavar="DIR",
                   help="folder of the database and lock (default: $XDG_CONFIG_HOME/torrentcore); resume "
                        "records stay in the state folder ($TORRENTCORE_STATE_DIR, else $XDG_STATE_HOME)")
    p.add_argument("--download-dir", default=None, metavar="DIR", help="default download folder")
    p.add_argument("--rpc-bind", default=DAEMON_RPC_HOST, metavar="ADDRESS",
                   help=f"address the RPC and web UI listen on (default {DAEMON_RPC_HOST})")
    p.add_argument("--rpc-port", type=int, default=DAEMON_RPC_PORT, metavar="PORT",
                   help=f"RPC port (default {DAEMON_RPC_PORT}; 0: any free port, printed at start)")
    p.add_argument("--rpc-whitelist", default=None, metavar="LIST",
                   help="comma-separated client addresses allowed, * as wildcard (default 127.0.0.1,::1)")
    p.add_argument("--rpc-host-whitelist", default="", metavar="LIST",
                   help="comma-separated host names allowed in the Host header beside localhost and addresses")
    p.add_argument("--rpc-username", default=None, metavar="NAME", help="require HTTP Basic auth with this user")
    p.add_argument("--rpc-password-file", default=None, metavar="FILE",
                   help=f"file holding the password (else ${PASSWORD_ENV})")
    p.add_argument("--peer-port", type=int, default=None, metavar="PORT",
                   help="port peers connect to (default: the stored peer-port, 51413; 0: any free port)")
    p.add_argument("--watch-dir", default=None, metavar="DIR", help="add .torrent/.magnet files dropped here")
    p.add_argument("--no-dht", action="store_true",
                   default=os.environ.get("TORRENTCORE_NO_DHT", "") not in ("", "0"),
                   help="do not use the DHT (also: TORRENTCORE_NO_DHT=1)")


def _password(args) -> str | None:
    if args.rpc_password_file:
        from ..statefile import UnsafeStateFile, read_state

        try:
            data = read_state(args.rpc_password_file, MAX_PASSWORD_FILE)
        except UnsafeStateFile as exc:
            raise BadInputError(f"cannot read the password file {args.rpc_password_file}: {exc}") from None
        if data is None:
            raise BadInputError(f"the password file {args.rpc_password_file} does not exist")
        return data.decode("utf-8", "replace").rstrip("\r\n")
    return os.environ.get(PASSWORD_ENV)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def options_from(args):
    """DaemonOptions from the parsed command line (BadInputError: unsafe or inconsistent choices)."""
    from .app import DaemonOptions

    password = _password(args)
    if args.rpc_username is not None and not password:
        raise BadInputError(f"--rpc-username needs a password: --rpc-password-file FILE or ${PASSWORD_ENV}")
    whitelist = tuple(x.strip() for x in args.rpc_whitelist.split(",") if x.strip()) if args.rpc_whitelist else None
    if not _is_loopback(args.rpc_bind) and (args.rpc_username is None or whitelist is None):
        raise BadInputError(f"listening on {args.rpc_bind} (not loopback) needs --rpc-username with a password "
                            "and an explicit --rpc-whitelist")
    if not 0 <= args.rpc_port <= 65535:
        raise BadInputError(f"--rpc-port must be from 0 to 65535, not {args.rpc_port}")
    return DaemonOptions(
        config_dir=os.path.abspath(args.config_dir or default_config_dir()), rpc_host=args.rpc_bind,
        rpc_port=args.rpc_port, rpc_whitelist=whitelist or DAEMON_RPC_WHITELIST,
        rpc_host_whitelist=tuple(x.strip() for x in args.rpc_host_whitelist.split(",") if x.strip()),
        username=args.rpc_username, password=password, peer_port=args.peer_port, download_dir=args.download_dir,
        watch_dir=args.watch_dir, no_dht=args.no_dht)


def cmd_daemon(args: argparse.Namespace) -> int:
    """Run the daemon until a stop signal or ``session-close``; exit 0 after a clean stop."""
    import gevent

    from ..process import install_stop_handlers
    from .app import Daemon
    from .rpc import Rpc
    from .server import RpcApp, serve
    from .watchdir import WatchDir

    options = options_from(args)
    daemon = Daemon(options)
    daemon.open()
    server = watch = None
    try:
        app = RpcApp(lambda request: rpc.handle(request), whitelist=options.rpc_whitelist,
                     host_whitelist=options.rpc_host_whitelist, username=options.username, password=options.password)
        rpc = Rpc(daemon, app.session_id)
        try:
            server = serve(app, options.rpc_host, options.rpc_port)
        except OSError as exc:
            raise BadInputError(f"cannot listen for RPC on {options.rpc_host}:{options.rpc_port}: "
                                f"{exc.strerror or exc}") from None
        rpc_port = server.server_port
        if options.watch_dir:
            from .app import DuplicateTorrent

            def add_dropped(source):
                try:
                    daemon.add(source)
                except DuplicateTorrent:
                    from .watchdir import DuplicateIsFine

                    raise DuplicateIsFine() from None

            watch = WatchDir(options.watch_dir, add_dropped)
            watch.start()
        install_stop_handlers(lambda code: daemon.stop(EXIT_OK))
        log.info("daemon ready", rpc=f"http://{_url_host(options.rpc_host)}:{rpc_port}/transmission/rpc",
                 peer_port=daemon.session.port, config_dir=options.config_dir, torrents=len(daemon.entries))
        print(f"torrentcore daemon: RPC on http://{_url_host(options.rpc_host)}:{rpc_port}/ "
              f"(peer port {daemon.session.port})", flush=True)
        daemon.run()
    finally:
        if watch is not None:
            watch.stop()
        if server is not None:
            server.stop(timeout=1)
        with gevent.Timeout(60, False):
            daemon.close()
    return EXIT_OK


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


__all__ = ["add_arguments", "cmd_daemon", "options_from", "default_config_dir"]
