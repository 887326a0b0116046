"""Opening a peer connection: connect (or accept), exchange BitTorrent handshakes, say for which torrent.

The one place that turns a TCP socket into a handshaken :class:`~torrentcore.peer.connection.Connection`,
for the swarm's dialler, the listener that serves every torrent of a session, and the magnet metadata
fetcher alike. Encryption (MSE/PE) negotiates here, before the BitTorrent handshake, so callers never
see the difference beyond :attr:`Handshaken.encrypted`.

* :func:`dial` connects to a peer for one info-hash and checks that it answers for that torrent.
* :func:`accept` reads an incoming peer's handshake first, asks ``lookup`` whether the info-hash is
  one we serve (``None``: the connection is closed), and answers with that torrent's identity.

The ``encryption`` policy (:data:`~torrentcore.peer.encryption.POLICIES`):

* ``prefer`` (the default): dial with MSE offering RC4, and when the peer refuses (closes, or never
  completes the MSE handshake) connect again in plaintext; a peer known to have refused before
  (``peer_encryption=False``) is tried in plaintext first, then with MSE. Incoming: both; a peer whose MSE
  handshake offers RC4 and plaintext gets plaintext after the header, one offering RC4 only gets RC4
  (libtorrent's rule: :func:`~torrentcore.peer.encryption.select_method`).
* ``require``: MSE with RC4 only, both ways; a plaintext handshake is refused (the connection is closed
  without a byte sent back).
* ``disable``: plaintext only; an incoming MSE handshake is refused.

An incoming connection's first 20 bytes tell which it is: ``\x13BitTorrent protocol`` starts a plaintext
handshake, anything else an MSE one, whose torrent is found by req2 xor req3 among ``info_hashes()``.

Every wait is bounded (``connect_timeout``, ``handshake_timeout``). Failures raise
:class:`~torrentcore.errors.ProtocolError` (bad or foreign handshake) or ``OSError`` (network); the
connection is closed before either leaves.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import gevent

from ..errors import ProtocolError
from . import encryption as mse
from . import messages as msg
from .connection import CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT, Connection


@dataclass(frozen=True)
class Identity:
    """What we send in our handshake for one torrent: its info-hash, our peer id and reserved bits."""

    info_hash: bytes
    peer_id: bytes
    reserved: bytes


@dataclass
class Handshaken:
    """A connection whose handshakes are done; the peer's side of them.

    ``encrypted``: the stream is RC4-encrypted; ``obfuscated``: the MSE handshake was used (RC4, or
    plaintext after an MSE header).
    """

    conn: Connection
    info_hash: bytes
    reserved: bytes
    peer_id: bytes
    encrypted: bool = False
    obfuscated: bool = False
    #: The transport under the stream: ``tcp`` or ``utp`` (BEP 29).
    transport: str = "tcp"


#: ``connect(address, timeout) -> socket``: opens the stream :func:`dial` handshakes on (TCP by default).
#: ``connect(address, timeout)``, or ``connect(address, timeout, True)`` for a peer that said it speaks uTP.
Connect = Callable[..., socket.socket]

#: ``lookup(info_hash) -> Identity | None``: the identity to answer with, or None for a torrent we do not serve.
Lookup = Callable[[bytes], "Identity | None"]
#: ``info_hashes() -> iterable of 20-byte info-hashes``: every torrent served (for incoming MSE handshakes).
InfoHashes = Callable[[], Iterable[bytes]]


class _Retry(Exception):
    """An attempt failed before the peer's handshake arrived: another way of connecting may work."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause


def dial_order(encryption: str, peer_encryption: bool | None = None) -> list[bool]:
    """The attempts :func:`dial` makes, in order: True for MSE/RC4, False for plaintext."""
    mse.allowed_methods(encryption)  # validates the policy
    if encryption == "require":
        return [True]
    if encryption == "disable":
        return [False]
    return [False, True] if peer_encryption is False else [True, False]


def dial(address: tuple[str, int], identity: Identity, *, encryption: str = "prefer",
         peer_encryption: bool | None = None, connect_timeout: float = CONNECT_TIMEOUT,
         handshake_timeout: float = HANDSHAKE_TIMEOUT, connect: Connect | None = None,
         peer_utp: bool | None = None) -> Handshaken:
    """Connect to ``address`` and handshake for ``identity.info_hash`` under the ``encryption`` policy.

    ``connect`` opens the stream (default: a TCP connection; the session passes one that may use uTP).

    ``peer_encryption``: what we know of the peer (True: it said it prefers encryption, or MSE worked
    before; False: it refused MSE before; None: nothing). Raises ``OSError`` when the connection
    fails and :class:`ProtocolError` when the handshake does (including a peer that answers for
    another torrent); with ``prefer`` that is after both attempts failed.

    ``peer_utp``: True when the peer said it speaks uTP (PEX flag 0x04); then it is passed on to
    ``connect`` as a third argument (the session's dialer tries uTP first); otherwise ``connect`` gets two.
    """
    attempts = dial_order(encryption, peer_encryption)
    for number, encrypted in enumerate(attempts, 1):
        if connect is None:
            sock = socket.create_connection(address, timeout=connect_timeout)
        else:
            sock = connect(address, connect_timeout, True) if peer_utp else connect(address, connect_timeout)
        try:
            return _dial_on(sock, address, identity, mse.allowed_methods(encryption) if encrypted else 0,
                            handshake_timeout)
        except _Retry as exc:
            if number == len(attempts):
                raise exc.cause from None
    raise AssertionError("unreachable")  # pragma: no cover


def _dial_on(sock: socket.socket, address: tuple[str, int], identity: Identity, provide: int,
             timeout: float) -> Handshaken:
    """One attempt on a connected socket (closed if it fails). ``provide``: the MSE ``crypto_provide`` bits
    (0: a plaintext handshake). ``prefer`` offers RC4 and plaintext and lets the peer choose, as
    Transmission and libtorrent do: libtorrent's default then keeps the payload plaintext after the
    obfuscated header (full speed), a peer that prefers or requires RC4 gets it."""
    conn = None
    encrypted = bool(provide)
    try:
        try:
            if encrypted:
                ours = msg.handshake(identity.info_hash, identity.peer_id, identity.reserved)
                machine = mse.Initiator(identity.info_hash, ours, provide=provide)
                done = mse.negotiate(sock, machine, timeout)
                conn = _connection(sock, address, done)
                conn.feed(done.rest)
            else:
                conn = Connection(sock, address)
                conn.send_handshake(identity.info_hash, identity.peer_id, identity.reserved)
            reserved, info_hash, peer_id = conn.read_handshake(timeout=timeout)
        except (ProtocolError, OSError, ConnectionError) as exc:
            raise _Retry(exc) from None
        if info_hash != identity.info_hash:
            raise ProtocolError("peer answered for another torrent")
    except BaseException as exc:
        _close(conn, sock, exc)
        raise
    return _done(conn, sock, info_hash, reserved, peer_id, encrypted)


def accept(sock: socket.socket, address: tuple[str, int], lookup: Lookup, *, encryption: str = "prefer",
           info_hashes: InfoHashes | None = None, handshake_timeout: float = HANDSHAKE_TIMEOUT,
           refuse: Callable[[bytes], bool] | None = None) -> Handshaken:
    """Read an incoming peer's handshake (plaintext or MSE), find its torrent with ``lookup`` and answer.

    ``info_hashes`` enumerates the served torrents for MSE (without it every MSE handshake is refused).
    ``refuse(peer_id)``: True refuses the peer once its handshake is read, before ours is sent.
    Raises :class:`ProtocolError` for a bad handshake, one the policy refuses, a refused peer, or an info-hash
    ``lookup`` does not know.
    """
    allowed = mse.allowed_methods(encryption)
    conn = None
    try:
        with gevent.Timeout(handshake_timeout, ProtocolError("no handshake from peer")):
            first = _recv_exactly(sock, len(msg.PROTOCOL) + 1)
        obfuscated = not mse.is_plaintext_start(first)
        if obfuscated:
            if not allowed:
                raise ProtocolError("encrypted handshake refused (encryption disabled)")
            machine = mse.Responder(info_hashes or tuple, allowed=allowed)
            done = mse.negotiate(sock, machine, handshake_timeout, received=first)
            conn = _connection(sock, address, done)
            conn.feed(done.initial_payload + done.rest)
        else:
            if encryption == "require":
                raise ProtocolError("plaintext handshake refused (encryption required)")
            conn = Connection(sock, address)
            conn.feed(first)
        reserved, info_hash, peer_id = conn.read_handshake(timeout=handshake_timeout)
        if obfuscated and info_hash != done.info_hash:
            raise ProtocolError("handshake for another torrent than the encryption handshake's")
        if refuse is not None and refuse(peer_id):
            raise ProtocolError("peer refused for a while: dropped for misbehaving lately")
        identity = lookup(info_hash)
        if identity is None:
            raise ProtocolError("handshake for a torrent we do not serve")
        conn.send_handshake(identity.info_hash, identity.peer_id, identity.reserved)
    except BaseException as exc:
        _close(conn, sock, exc)
        raise
    return _done(conn, sock, info_hash, reserved, peer_id, obfuscated)


def _done(conn: Connection, sock, info_hash: bytes, reserved: bytes, peer_id: bytes, obfuscated: bool) -> Handshaken:
    transport = getattr(sock, "transport", "tcp")
    conn.transport = transport  # type: ignore[attr-defined]  # read by Peer.info (getattr, default tcp)
    return Handshaken(conn, info_hash, reserved, peer_id, encrypted=conn.encrypted, obfuscated=obfuscated,
                      transport=transport)


def _connection(sock: socket.socket, address: tuple[str, int], done: mse.Negotiated) -> Connection:
    """A Connection over ``sock`` (RC4-wrapped if negotiated) holding the payload bytes already received."""
    if done.encrypted:
        conn = Connection(mse.RC4Socket(sock, done.encryptor, done.decryptor), address)  # type: ignore[arg-type]
        conn.encrypted = True
    else:
        conn = Connection(sock, address)
    return conn


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Read exactly ``n`` bytes (bounded: at most ``n`` turns)."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed before the handshake")
        data += chunk
    return data


def _close(conn: Connection | None, sock: socket.socket, exc: BaseException) -> None:
    if conn is not None:
        conn.close(str(exc) or type(exc).__name__)
        return
    try:
        sock.close()
    except OSError:
        pass


__all__ = ["Identity", "Handshaken", "Connect", "Lookup", "InfoHashes", "dial", "dial_order", "accept"]
