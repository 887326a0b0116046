"""torrentcore: a gevent-based, plugin-extensible BitTorrent engine.

The public API (see docs/api.md)::

    import torrentcore
    torrentcore.patch()                      # first thing: the engine runs on gevent-patched sockets
    from torrentcore import Session, SessionConfig, TorrentConfig

    with Session(SessionConfig(listen_port=0)) as session:
        handle = session.add_torrent("file.torrent", save_path="dl", config=TorrentConfig(seed=False))
        handle.wait_until_complete()

Names are imported on first use, so ``import torrentcore`` stays cheap and patches nothing by itself.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "Session": "session",
    "SessionConfig": "config",
    "TorrentConfig": "config",
    "TorrentHandle": "handle",
    "TorrentStatus": "handle",
    "SessionStatus": "handle",
    "TorrentFailed": "handle",
    "TorrentcoreError": "errors",
    "BadInputError": "errors",
    "events": None,
}


def patch() -> None:
    """Patch the standard library for gevent (sockets, threads, time.sleep), once, before anything else.

    The engine runs one greenlet per peer on blocking sockets; patching makes them cooperative. Call it
    first thing in the program, before importing modules that use sockets or threads (``requests``,
    ``urllib3``, ``threading``): patching later is unsafe. Calling it again does nothing.
    """
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all()


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'torrentcore' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(f".{_EXPORTS[name] or name}", __name__)
    value = module if _EXPORTS[name] is None else getattr(module, name)
    globals()[name] = value
    return value


__all__ = ["patch", "__version__", *_EXPORTS]
