"""``torrentcore run``: download torrents (then seed them for a while), all in one
:class:`~torrentcore.session.Session`; also the machinery ``seed`` shares (:func:`run_torrents`)."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import EXIT_OK, EXIT_RUNTIME, BadInputError
from ..process import install_stop_handlers
from .sources import check_magnet, load_torrent

#: Configuration fields -> the option that sets them (named in the one line a bad value gets).
_OPTION_OF = {"listen_port": "--port", "dht_port": "--dht-port", "max_connections": "--max-connections",
              "max_connections_per_ip": "--max-connections-per-ip",
              "max_peers": "--max-peers", "upload_slots": "--upload-slots", "seed_ratio": "--seed-ratio",
              "seed_time": "--seed-time", "seed_idle": "--seed-idle", "metadata_timeout": "--metadata-timeout",
              "max_download_rate": "--max-download-rate", "max_upload_rate": "--max-upload-rate"}


def _session_config(args, pm):
    """The SessionConfig of ``run``/``seed`` from the parsed options (a bad value: ValueError)."""
    from ..config import SessionConfig

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
    from ..config import TorrentConfig

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


def run_torrents(args, pm, sources: list[str], save_path: str, seed_only: bool) -> int:
    """Run every torrent of ``sources`` in one Session (one port, one DHT); return the worst exit code."""
    import gc

    import gevent

    from ..magnet import is_magnet
    from ..session import Session

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
    loaded = [load_torrent(s) if seed_only or not is_magnet(s) else check_magnet(s) for s in sources]
    if save_path == "-" and (loaded[0].multi_file or args.only or args.skip):
        raise BadInputError("-o - (the data to standard output) works for single-file torrents only")
    if seed_only and args.storage == "filesystem":
        from ..datafolder import describe_missing_data

        for meta in loaded:
            missing = describe_missing_data(meta, save_path)
            if missing:  # the folder missing, a file, or no file of the torrent in it: say why (exit 2)
                raise BadInputError(missing)
    # The stop signals are handled from before the session exists (it logs "listening" as it starts): a
    # signal during start-up stops every torrent added so far, and those added after it, cleanly.
    stops: list[int] = []
    session: Session | None = None

    def stop(code: int) -> None:
        stops.append(code)
        if session is not None:
            session.stop_all(code)

    handlers = install_stop_handlers(stop)  # SIGINT 130, SIGTERM 143, SIGHUP 129: a clean stop
    try:
        session = Session(session_config, plugin_manager=pm)
    except BaseException:
        for handler in handlers:
            handler.cancel()
        raise
    handles = []
    try:
        for source in loaded:
            handles.append(session.add_torrent(source, save_path, torrent_config))
        if stops:
            session.stop_all(stops[0])
        # Start-up objects (modules, plugins, parsed torrents) are long-lived: out of the collector's sight,
        # gen-2 collections no longer walk them during the download (gc was ~3% of the event loop's CPU).
        # The collector was off until now (torrentcore.__main__.entry): start-up is over. Its cyclic garbage
        # (about 1,300 objects for one torrent) is frozen with the rest: cheaper than a full collection.
        gc.freeze()
        gc.enable()
        streamer = gevent.spawn(_stream, handles[0]) if save_path == "-" else None
        for handle in handles:
            handle.join()
        if streamer is not None:
            streamer.join()
    finally:
        for handler in handlers:  # a second Ctrl-C during the close below interrupts it, as before
            handler.cancel()
        session.close()
    for handle in handles:
        if handle.error:
            prefix = f"{handle.name}: " if len(handles) > 1 else ""
            print(f"torrentcore: error: {prefix}{handle.error}", file=sys.stderr)
    return max((h.exit_code if h.exit_code is not None else EXIT_RUNTIME) for h in handles)


def _stream(handle) -> None:
    """``run --storage memory -o -``: the file to standard output, in order, through a streaming reader."""
    from ..reader_source import run_streaming

    torrent = handle.torrent
    code = run_streaming(torrent, sys.stdout.buffer)
    if code != EXIT_OK and torrent.exit_code == EXIT_OK:
        torrent.exit_code = code  # the data did not all reach standard output


def cmd_run(args, pm) -> int:
    """``torrentcore run``."""
    # "-o -": the data goes to standard output (memory storage, single-file torrents; checked below).
    save_path = "-" if args.output == "-" else os.path.abspath(args.output)
    return run_torrents(args, pm, args.torrent, save_path, seed_only=False)

