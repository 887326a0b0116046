"""torrentcore: a gevent-based, plugin-extensible BitTorrent engine."""

__version__ = "0.1.0"
