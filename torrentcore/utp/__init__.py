"""uTP, the micro transport protocol (BEP 29): BitTorrent streams over UDP, as libtorrent speaks it.

* :mod:`.packet` parses and builds the 20-byte header and its extensions (strict bounds);
* :mod:`.ledbat` is the delay-based congestion controller (100 ms target);
* :mod:`.connection` is one connection's state machine (no I/O: it is given packets and the time,
  and hands packets to a ``send`` callback);
* :mod:`.socket` wraps a connection in a blocking, socket-like object for the peer wire code;
* :mod:`.multiplexer` owns one UDP socket: one greenlet reads it and dispatches by connection id
  (other datagrams, the DHT's, go to a fallback), one ticker drives every connection's timers.
"""

from .multiplexer import Multiplexer, is_utp_datagram
from .socket import UTPSocket

__all__ = ["Multiplexer", "UTPSocket", "is_utp_datagram"]
