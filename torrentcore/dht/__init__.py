"""The BitTorrent DHT (BEP 5, IPv4): find peers for an info-hash without a tracker.

Modules: :mod:`.krpc` (messages, strict validation, compact encodings), :mod:`.routing`
(160-bit ids, XOR distance, k-buckets), :mod:`.lookup` (the iterative lookup), :mod:`.state`
(the state file and its lock) and :mod:`.node` (the UDP node: server, queries, abuse limits).

API for the engine (one node per process; every call blocks only the calling greenlet and is
bounded in time; the program must have monkey-patched gevent, or at least run in a gevent hub)::

    from torrentcore.dht import DHTNode, default_state_path

    node = DHTNode(port=6881,                      # UDP port; 0 = any (taken -> any free port)
                   bootstrap=[("127.0.0.1", 7000)],  # None = the public routers (DEFAULT_BOOTSTRAP)
                   state_path=default_state_path(),  # node id + table kept between runs; None = no file
                   host="0.0.0.0")
    node.start()                                   # bind, serve, bootstrap in the background
    peers = node.get_peers(info_hash, timeout=30)  # -> [(host, port), ...] (IPv4), may be []
    peers = node.get_peers(info_hash, timeout=30, announce_port=6881)  # look up and announce at once
    accepted = node.announce(info_hash, 6881)      # -> number of nodes that stored us
    node.stop()                                    # stop serving, save the state file

``node.port`` is the UDP port actually bound; ``node.stats`` counts answered/dropped messages;
``node.table`` is the :class:`~torrentcore.dht.routing.RoutingTable`. State file location:
``$TORRENTCORE_STATE_DIR/dht.json``, else ``$XDG_STATE_HOME/torrentcore/dht.json``, else
``~/.local/state/torrentcore/dht.json``; written atomically; an unreadable one is ignored with a warning.
Private torrents (BEP 27) must never be looked up or announced: that is the caller's rule.
"""

from __future__ import annotations

from .node import DEFAULT_BOOTSTRAP, DHTNode, PeerStore, RateLimiter, Tokens
from .routing import RoutingTable, distance
from .state import default_state_path

__all__ = ["DHTNode", "DEFAULT_BOOTSTRAP", "default_state_path", "PeerStore", "RateLimiter", "Tokens",
           "RoutingTable", "distance"]
