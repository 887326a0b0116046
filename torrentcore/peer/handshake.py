"""Opening a peer connection: connect (or accept), exchange BitTorrent handshakes, say for which torrent.

The one place that turns a TCP socket into a handshaken :class:`~torrentcore.peer.connection.Connection`,
for the swarm's dialler, the listener that serves every torrent of a session, and the magnet metadata
fetcher alike. Encryption (MSE/PE) negotiates here, before the BitTorrent handshake, so callers never
see the difference beyond :attr:`Handshaken.encrypted`.

* :func:`dial` connects to a peer for one info-hash and checks that it answers for that torrent.
* :func:`accept` reads an incoming peer's handshake first, asks ``lookup`` whether the info-hash is
  one we serve (``None``: the connection is closed), and answers with that torrent's identity.

Every wait is bounded (``connect_timeout``, ``handshake_timeout``). Failures raise
:class:`~torrentcore.errors.ProtocolError` (bad or foreign handshake) or ``OSError`` (network); the
connection is closed before either leaves.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ProtocolError
from .connection import CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT, Connection


@dataclass(frozen=True)
class Identity:
    """What we send in our handshake for one torrent: its info-hash, our peer id and reserved bits."""

    info_hash: bytes
    peer_id: bytes
    reserved: bytes


@dataclass
class Handshaken:
    """A connection whose handshakes are done; the peer's side of them."""

    conn: Connection
    info_hash: bytes
    reserved: bytes
    peer_id: bytes
    encrypted: bool = False


#: ``lookup(info_hash) -> Identity | None``: the identity to answer with, or None for a torrent we do not serve.
Lookup = Callable[[bytes], "Identity | None"]


def dial(address: tuple[str, int], identity: Identity, *, connect_timeout: float = CONNECT_TIMEOUT,
         handshake_timeout: float = HANDSHAKE_TIMEOUT) -> Handshaken:
    """Connect to ``address`` and handshake for ``identity.info_hash``.

    Raises ``OSError`` when the connection fails and :class:`ProtocolError` when the handshake does
    (including a peer that answers for another torrent).
    """
    conn = Connection.connect(address, timeout=connect_timeout)
    try:
        conn.send_handshake(identity.info_hash, identity.peer_id, identity.reserved)
        reserved, info_hash, peer_id = conn.read_handshake(timeout=handshake_timeout)
        if info_hash != identity.info_hash:
            raise ProtocolError("peer answered for another torrent")
    except BaseException as exc:
        conn.close(str(exc) or type(exc).__name__)
        raise
    return Handshaken(conn, info_hash, reserved, peer_id)


def accept(sock: socket.socket, address: tuple[str, int], lookup: Lookup, *,
           handshake_timeout: float = HANDSHAKE_TIMEOUT) -> Handshaken:
    """Read an incoming peer's handshake, find its torrent with ``lookup`` and answer for it.

    Raises :class:`ProtocolError` for a bad handshake or an info-hash ``lookup`` does not know.
    """
    conn = Connection(sock, address)
    try:
        reserved, info_hash, peer_id = conn.read_handshake(timeout=handshake_timeout)
        identity = lookup(info_hash)
        if identity is None:
            raise ProtocolError("handshake for a torrent we do not serve")
        conn.send_handshake(identity.info_hash, identity.peer_id, identity.reserved)
    except BaseException as exc:
        conn.close(str(exc) or type(exc).__name__)
        raise
    return Handshaken(conn, info_hash, reserved, peer_id)


__all__ = ["Identity", "Handshaken", "Lookup", "dial", "accept"]
