"""Message Stream Encryption / Protocol Encryption (MSE/PE), as libtorrent, Transmission and aria2 speak it.

The handshake runs before the BitTorrent handshake, on the bare TCP stream. A is the side that connects
(the initiator), B the side that accepts (the responder); S is their Diffie-Hellman shared secret (768-bit
group, generator 2) and SKEY the torrent's info-hash::

    1  A -> B  Ya, PadA
    2  B -> A  Yb, PadB
    3  A -> B  HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
               ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
    4  B -> A  ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload stream)
    5  A -> B  ENCRYPT2(payload stream)

HASH is SHA-1, VC eight zero bytes, ENCRYPT RC4 keyed with HASH('keyA', S, SKEY) for what A sends and
HASH('keyB', S, SKEY) for what B sends, the first 1024 bytes of each keystream discarded. ENCRYPT2 is the
same RC4 stream when ``crypto_select`` is :data:`CRYPTO_RC4`, nothing (plaintext) for
:data:`CRYPTO_PLAINTEXT`. The initial payload IA carries A's BitTorrent handshake.

Pieces:

* :class:`Initiator` and :class:`Responder`: the handshake as a state machine without I/O. Feed what
  the peer sent to :meth:`~MSEHandshake.receive`, send what :meth:`~MSEHandshake.outgoing` returns;
  :attr:`~MSEHandshake.result` is a :class:`Negotiated` once done. Hostile input raises
  :class:`EncryptionError`; every buffer is bounded (a sync pattern is searched in at most 512 bytes
  of padding plus the pattern, :data:`MAX_HANDSHAKE_BYTES` in all).
* :func:`negotiate`: runs a state machine over a socket under one ``gevent.Timeout``.
* :class:`RC4Socket`: a socket-like wrapper that decrypts in place what it receives into the caller's
  buffer and encrypts what it sends, so :class:`~torrentcore.peer.connection.Connection` runs over it
  unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import socket
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import gevent

from ..errors import ProtocolError
from .send_all import sender_for

#: The 768-bit prime of the MSE specification (the Oakley group 1 prime) and its generator.
P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563",
    16,
)
G = 2
#: Length of a public key and of the shared secret on the wire (big-endian, zero-padded).
KEY_BYTES = 96
#: Bits of a private key (the specification asks for at least 128; 160 is common practice).
PRIVATE_KEY_BITS = 160
#: The verification constant.
VC = bytes(8)
#: ``crypto_provide`` / ``crypto_select`` bits.
CRYPTO_PLAINTEXT = 0x01
CRYPTO_RC4 = 0x02
#: Most bytes of PadA, PadB, PadC and PadD.
MAX_PAD = 512
#: RC4 keystream bytes thrown away before use.
DISCARD = 1024
#: Most bytes received before the handshake is done (all pads at their maximum and the largest IA).
MAX_HANDSHAKE_BYTES = KEY_BYTES + MAX_PAD + 20 + 20 + 14 + MAX_PAD + 2 + 0xFFFF
#: What the ``encryption`` setting may be. The responder's choice (:func:`select_method`), as libtorrent makes
#: it with its defaults (``allowed_enc_level`` both, ``prefer_rc4`` false; bt_peer_connection.cpp keeps the
#: lowest bit of ``crypto_provide & allowed``):
#:
#: * ``prefer``: we accept RC4 and plaintext; a peer offering both gets **plaintext** after the MSE header
#:   (the handshake is still obfuscated, the payload costs no cipher: aria2c offers both and took 0.47x of
#:   a libtorrent seeder's speed from us under RC4, 0.65x in plaintext), a peer offering RC4 only gets RC4.
#:   As initiator we offer both, so libtorrent, aria2c and Transmission answering us choose the same way.
#: * ``require``: RC4 only, both ways (the way to have every payload byte encrypted).
#: * ``disable``: no MSE at all.
POLICIES = ("prefer", "require", "disable")
#: Bytes read per ``recv`` while negotiating.
RECV_CHUNK = 4096

_HEADER = b"\x13BitTorrent protocol"


class EncryptionError(ProtocolError):
    """The peer broke the MSE handshake (or offered nothing we accept)."""


# --- primitives ----------------------------------------------------------------------------------


@functools.cache
def _arc4_algorithm() -> type:
    """The ARC4 class of ``cryptography``: its ``decrepit`` module if present, else the old location.

    Imported on the first RC4 stream (MSE handshake), not with this module: a run with ``--encryption disable``
    does not import ``cryptography`` (10-15 ms of start-up here).
    """
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
    except ImportError:  # pragma: no cover - cryptography < 43
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from cryptography.hazmat.primitives.ciphers.algorithms import ARC4
    return ARC4


def rc4(key: bytes) -> Any:
    """An RC4 stream for ``key`` (a ``cryptography`` cipher context), its first 1024 bytes discarded."""
    from cryptography.hazmat.primitives.ciphers import Cipher

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # older releases warn when ARC4 is used from its old home
        context = Cipher(_arc4_algorithm()(key), mode=None).encryptor()
    context.update(bytes(DISCARD))
    return context


#: Handshake RC4 streams that run in Python (:class:`HandshakeRC4`) before ``cryptography`` is imported for
#: one: 8, the first 4 connections. A stream costs 0.46 ms of CPU in Python here (key schedule, 1024 bytes
#: discarded, 700 bytes used), importing ``cryptography`` 11-15 ms (then 0.03 ms a stream): a run with a few
#: MSE peers that choose plaintext, as libtorrent does when we offer both, never imports it.
PYTHON_HANDSHAKE_STREAMS = 8
#: Keystream bytes (after the discarded ones) a :class:`HandshakeRC4` makes in Python; beyond them it goes
#: on with ``cryptography``'s cipher. A handshake uses 0.1-1.6 KiB (pads of at most 512 bytes, IA).
PYTHON_KEYSTREAM_BYTES = 2048
_python_streams_left = PYTHON_HANDSHAKE_STREAMS


class HandshakeRC4:
    """The RC4 stream of an MSE handshake, in Python while it is short, else ``cryptography``'s cipher.

    ``update`` as a ``cryptography`` cipher context; :meth:`cipher` is ``cryptography``'s context at the
    same point of the stream (the payload stream, when the peers chose RC4, goes on with it).
    """

    __slots__ = ("_key", "_state", "_i", "_j", "_used", "_context")

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._used = 0
        self._context: Any = None
        state = list(range(256))
        j = 0
        for i in range(256):
            j = (j + state[i] + key[i % len(key)]) & 255
            state[i], state[j] = state[j], state[i]
        self._state, self._i, self._j = state, 0, 0
        self._keystream(DISCARD)

    def _keystream(self, n: int) -> bytearray:
        state, i, j = self._state, self._i, self._j
        out = bytearray(n)
        for k in range(n):
            i = (i + 1) & 255
            si = state[i]
            j = (j + si) & 255
            sj = state[j]
            state[i], state[j] = sj, si
            out[k] = state[(si + sj) & 255]
        self._i, self._j = i, j
        return out

    def update(self, data: Any) -> bytes:
        """``data`` encrypted (or decrypted: the same) with the next ``len(data)`` keystream bytes."""
        if self._context is None and self._used + len(data) <= PYTHON_KEYSTREAM_BYTES:
            n = len(data)
            self._used += n
            return (int.from_bytes(data, "big") ^ int.from_bytes(self._keystream(n), "big")).to_bytes(n, "big")
        return self.cipher().update(data)

    def update_into(self, data: Any, buf: Any) -> int:
        """As the ``cryptography`` context's ``update_into``."""
        return self.cipher().update_into(data, buf)

    def cipher(self) -> Any:
        """``cryptography``'s RC4 context for the same key, at the same point of the stream (from now on used
        by :meth:`update` too)."""
        if self._context is None:
            self._context = rc4(self._key)
            if self._used:
                self._context.update(bytes(self._used))
        return self._context


def handshake_rc4(key: bytes) -> Any:
    """The RC4 stream (first 1024 bytes discarded) for a handshake: a :class:`HandshakeRC4` for the first
    :data:`PYTHON_HANDSHAKE_STREAMS` while ``cryptography`` is not imported for one, else :func:`rc4`'s."""
    global _python_streams_left
    if _python_streams_left > 0 and not _arc4_algorithm.cache_info().currsize:
        _python_streams_left -= 1
        return HandshakeRC4(key)
    return rc4(key)


def _cipher_of(stream: Any) -> Any:
    """``cryptography``'s context of a handshake's stream (the stream itself when it is one already)."""
    return stream.cipher() if isinstance(stream, HandshakeRC4) else stream


def sha1(*parts: bytes) -> bytes:
    """SHA-1 of the concatenation of ``parts`` (the specification's HASH)."""
    digest = hashlib.sha1()
    for part in parts:
        digest.update(part)
    return digest.digest()


def keypair(rng: Callable[[int], bytes] = os.urandom) -> tuple[int, bytes]:
    """A private key and its public key ``G**x mod P`` as :data:`KEY_BYTES` big-endian bytes."""
    x = int.from_bytes(rng(PRIVATE_KEY_BITS // 8), "big") | 1 << (PRIVATE_KEY_BITS - 1)
    return x, pow(G, x, P).to_bytes(KEY_BYTES, "big")


def shared_secret(private: int, their_public: bytes) -> bytes:
    """S from our private key and the peer's public key; :class:`EncryptionError` for a key out of range."""
    y = int.from_bytes(their_public, "big")
    if not 1 < y < P - 1:
        raise EncryptionError("the peer's Diffie-Hellman key is out of range")
    return pow(y, private, P).to_bytes(KEY_BYTES, "big")


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def _padding(rng: Callable[[int], bytes], zeros: bool = False) -> bytes:
    n = random.randint(0, MAX_PAD)
    return bytes(n) if zeros else rng(n)


def is_plaintext_start(first: bytes) -> bool:
    """True if ``first`` (the first 20 bytes of a connection) start a plaintext BitTorrent handshake."""
    return bytes(first[: len(_HEADER)]) == _HEADER


# --- the handshake state machines ----------------------------------------------------------------


@dataclass
class Negotiated:
    """The outcome of a handshake.

    ``method`` is :data:`CRYPTO_RC4` or :data:`CRYPTO_PLAINTEXT`; ``info_hash`` the SKEY; for the
    responder ``initial_payload`` is the IA the initiator sent (decrypted). ``rest`` holds bytes of the
    payload stream that arrived with the end of the handshake, already decrypted. ``encryptor`` and
    ``decryptor`` continue the RC4 streams (``cryptography`` cipher contexts when ``method`` is
    :data:`CRYPTO_RC4`).
    """

    method: int
    info_hash: bytes
    initial_payload: bytes
    rest: bytes
    encryptor: Any
    decryptor: Any

    @property
    def encrypted(self) -> bool:
        """True when the payload stream is RC4-encrypted."""
        return self.method == CRYPTO_RC4


class MSEHandshake:
    """Common part of :class:`Initiator` and :class:`Responder`: buffers, bounds, output queue."""

    def __init__(self, rng: Callable[[int], bytes] = os.urandom) -> None:
        self._rng = rng
        self._in = bytearray()
        self._out: list[bytes] = []
        self._received = 0
        self._private, self.public_key = keypair(rng)
        self._state: Callable[[], bool] = self._read_key
        self._enc: Any = None
        self._dec: Any = None
        self.result: Negotiated | None = None

    def outgoing(self) -> bytes:
        """Bytes to send to the peer now (and forget)."""
        data, self._out = b"".join(self._out), []
        return data

    def receive(self, data: bytes) -> None:
        """Take bytes the peer sent; raise :class:`EncryptionError` when they break the handshake."""
        if self.result is not None:
            raise EncryptionError("data after the end of the encryption handshake")  # the caller's bug
        self._received += len(data)
        self._in += data
        while self.result is None and self._state():
            pass
        if self.result is None and self._received > MAX_HANDSHAKE_BYTES:
            raise EncryptionError("encryption handshake too long")

    def _take(self, n: int) -> bytes | None:
        """The next ``n`` buffered bytes (removed), or None if fewer are buffered."""
        if len(self._in) < n:
            return None
        data = bytes(self._in[:n])
        del self._in[:n]
        return data

    def _sync(self, pattern: bytes, what: str) -> bool:
        """Drop bytes up to and including ``pattern`` if it starts within :data:`MAX_PAD` bytes."""
        limit = MAX_PAD + len(pattern)
        at = self._in.find(pattern, 0, limit)
        if at < 0:
            if len(self._in) >= limit:
                raise EncryptionError(f"no {what} within {MAX_PAD} bytes of padding")
            return False
        del self._in[: at + len(pattern)]
        return True

    def _read_key(self) -> bool:
        raise NotImplementedError

    def _keys(self, secret: bytes, skey: bytes) -> tuple[bytes, bytes]:
        """(keyA, keyB) for this secret and info-hash."""
        return sha1(b"keyA", secret, skey), sha1(b"keyB", secret, skey)

    def _finish(self, method: int, info_hash: bytes, initial_payload: bytes) -> None:
        rest = bytes(self._in)
        self._in.clear()
        if method == CRYPTO_RC4:  # the payload stream: cryptography's cipher from here on
            self._enc, self._dec = _cipher_of(self._enc), _cipher_of(self._dec)
            if rest:
                rest = self._dec.update(rest)
        self.result = Negotiated(method, info_hash, initial_payload, rest, self._enc, self._dec)


class Initiator(MSEHandshake):
    """The connecting side (A). ``initial_payload`` (our BitTorrent handshake) travels as IA.

    ``provide``: the ``crypto_provide`` bits to offer; the peer must select exactly one of them.
    """

    def __init__(self, info_hash: bytes, initial_payload: bytes = b"", provide: int = CRYPTO_RC4,
                 rng: Callable[[int], bytes] = os.urandom) -> None:
        super().__init__(rng)
        if not provide or provide & ~(CRYPTO_RC4 | CRYPTO_PLAINTEXT):
            raise ValueError(f"bad crypto_provide {provide:#x}")
        if len(initial_payload) > 0xFFFF:
            raise ValueError("initial payload too long")
        self.info_hash = info_hash
        self.provide = provide
        self._ia = initial_payload
        self._vc_pattern = b""
        self._pad_d = 0
        self._method = 0
        self._out.append(self.public_key + _padding(rng))

    def _read_key(self) -> bool:
        if len(self._in) >= len(_HEADER) and is_plaintext_start(self._in):
            # A plaintext-only peer that answered our key with its handshake: no need to wait for more.
            raise EncryptionError("the peer answered with a plaintext handshake")
        their = self._take(KEY_BYTES)
        if their is None:
            return False
        secret = shared_secret(self._private, their)
        key_a, key_b = self._keys(secret, self.info_hash)
        self._enc, self._dec = handshake_rc4(key_a), handshake_rc4(key_b)
        self._vc_pattern = self._dec.update(VC)  # what B's encrypted VC looks like
        pad_c = _padding(self._rng, zeros=True)
        header = VC + self.provide.to_bytes(4, "big") + len(pad_c).to_bytes(2, "big") + pad_c
        header += len(self._ia).to_bytes(2, "big") + self._ia
        self._out.append(sha1(b"req1", secret) + _xor(sha1(b"req2", self.info_hash), sha1(b"req3", secret))
                         + self._enc.update(header))
        self._state = self._find_vc
        return True

    def _find_vc(self) -> bool:
        if not self._sync(self._vc_pattern, "verification constant"):
            return False
        self._state = self._read_select
        return True

    def _read_select(self) -> bool:
        raw = self._take(6)
        if raw is None:
            return False
        plain = self._dec.update(raw)
        select = int.from_bytes(plain[:4], "big")
        if select not in (CRYPTO_RC4, CRYPTO_PLAINTEXT) or not select & self.provide:
            raise EncryptionError(f"the peer selected crypto method {select:#x}, offered {self.provide:#x}")
        self._method = select
        self._pad_d = int.from_bytes(plain[4:], "big")
        if self._pad_d > MAX_PAD:
            raise EncryptionError(f"PadD of {self._pad_d} bytes (at most {MAX_PAD})")
        self._state = self._skip_pad_d
        return True

    def _skip_pad_d(self) -> bool:
        pad = self._take(self._pad_d)
        if pad is None:
            return False
        self._dec.update(pad)
        self._finish(self._method, self.info_hash, b"")
        return True


class Responder(MSEHandshake):
    """The accepting side (B).

    ``info_hashes()`` gives every info-hash we serve (SKEY is found among them by req2 xor req3);
    ``allowed``: the ``crypto_provide`` bits we accept; of those the peer offers, :func:`select_method`
    chooses: plaintext when both are possible, unless ``prefer_rc4`` (libtorrent's setting of that name).
    """

    def __init__(self, info_hashes: Callable[[], Iterable[bytes]], allowed: int = CRYPTO_RC4 | CRYPTO_PLAINTEXT,
                 rng: Callable[[int], bytes] = os.urandom, prefer_rc4: bool = False) -> None:
        super().__init__(rng)
        self._info_hashes = info_hashes
        self.allowed = allowed
        self.prefer_rc4 = prefer_rc4
        self._secret = b""
        self._req1 = b""
        self._info_hash = b""
        self._provide = 0
        self._pad_c = 0
        self._ia_len = 0

    def _read_key(self) -> bool:
        their = self._take(KEY_BYTES)
        if their is None:
            return False
        self._secret = shared_secret(self._private, their)
        self._req1 = sha1(b"req1", self._secret)
        self._out.append(self.public_key + _padding(self._rng))
        self._state = self._find_req1
        return True

    def _find_req1(self) -> bool:
        if not self._sync(self._req1, "HASH('req1', S)"):
            return False
        self._state = self._read_skey
        return True

    def _read_skey(self) -> bool:
        raw = self._take(20)
        if raw is None:
            return False
        wanted = _xor(raw, sha1(b"req3", self._secret))
        for info_hash in self._info_hashes():
            if sha1(b"req2", info_hash) == wanted:
                self._info_hash = bytes(info_hash)
                break
        else:
            raise EncryptionError("encrypted handshake for a torrent we do not serve")
        key_a, key_b = self._keys(self._secret, self._info_hash)
        self._enc, self._dec = handshake_rc4(key_b), handshake_rc4(key_a)
        self._state = self._read_provide
        return True

    def _read_provide(self) -> bool:
        raw = self._take(14)
        if raw is None:
            return False
        plain = self._dec.update(raw)
        if plain[:8] != VC:
            raise EncryptionError("bad verification constant")
        self._provide = int.from_bytes(plain[8:12], "big")
        self._pad_c = int.from_bytes(plain[12:14], "big")
        if self._pad_c > MAX_PAD:
            raise EncryptionError(f"PadC of {self._pad_c} bytes (at most {MAX_PAD})")
        self._state = self._read_pad_c
        return True

    def _read_pad_c(self) -> bool:
        raw = self._take(self._pad_c + 2)
        if raw is None:
            return False
        self._ia_len = int.from_bytes(self._dec.update(raw)[-2:], "big")
        self._state = self._read_ia
        return True

    def _read_ia(self) -> bool:
        raw = self._take(self._ia_len)
        if raw is None:
            return False
        initial_payload = self._dec.update(raw) if raw else b""
        method = select_method(self._provide, self.allowed, self.prefer_rc4)
        if not method:
            raise EncryptionError(f"the peer offers crypto methods {self._provide:#x}, we accept {self.allowed:#x}")
        pad_d = _padding(self._rng, zeros=True)
        self._out.append(self._enc.update(VC + method.to_bytes(4, "big") + len(pad_d).to_bytes(2, "big") + pad_d))
        self._finish(method, self._info_hash, initial_payload)
        return True


# --- over a socket -------------------------------------------------------------------------------


def negotiate(sock: socket.socket, machine: MSEHandshake, timeout: float, received: bytes = b"") -> Negotiated:
    """Run ``machine`` over ``sock`` (``received``: bytes already read from it) within ``timeout`` seconds.

    Raises :class:`EncryptionError` (a broken or too slow handshake), ``ConnectionError`` (the peer
    closed) or ``OSError``. The loop is bounded: every turn consumes at least one byte and the machine
    gives up after :data:`MAX_HANDSHAKE_BYTES`.
    """
    with gevent.Timeout(timeout, EncryptionError(f"no encryption handshake within {timeout:g} s")):
        if received:
            machine.receive(received)
        out = machine.outgoing()
        if out:
            sock.sendall(out)
        while machine.result is None:
            data = sock.recv(RECV_CHUNK)
            if not data:
                raise ConnectionError("connection closed during the encryption handshake")
            machine.receive(data)
            out = machine.outgoing()
            if out:
                sock.sendall(out)
    result = machine.result
    if result is None:  # pragma: no cover - the loop ends only with a result
        raise EncryptionError("encryption handshake ended without a result")
    return result


class RC4Socket:
    """A socket whose stream is RC4-encrypted both ways: what :meth:`recv_into` returns is decrypted in
    place in the caller's buffer, what :meth:`sendall` sends is encrypted. Other calls go to the socket.

    One reader and one writer at a time (as :class:`~torrentcore.peer.connection.Connection` uses it).
    """

    __slots__ = ("sock", "_send", "_encrypt_into", "_encrypt", "_decrypt_into", "_decrypt")

    def __init__(self, sock: socket.socket, encryptor: Any, decryptor: Any) -> None:
        self.sock = sock
        self._send = sender_for(sock)
        self._encrypt = encryptor.update
        self._encrypt_into = encryptor.update_into
        self._decrypt = decryptor.update
        self._decrypt_into = decryptor.update_into

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Receive into ``buffer`` and decrypt those bytes in place."""
        n = self.sock.recv_into(buffer, nbytes, flags)
        if n:
            view = memoryview(buffer)[:n] if n != len(buffer) else buffer
            self._decrypt_into(view, view)
        return n

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Receive at most ``bufsize`` bytes, decrypted."""
        data = self.sock.recv(bufsize, flags)
        return self._decrypt(data) if data else data

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Encrypt ``data`` and send all of it."""
        if flags:
            self.sock.sendall(self._encrypt(data), flags)
        else:
            self._send(self._encrypt(data))

    def settimeout(self, timeout: float | None) -> None:
        """As ``socket.settimeout``."""
        self.sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        """As ``socket.gettimeout``."""
        return self.sock.gettimeout()

    def setsockopt(self, *args: Any) -> None:
        """As ``socket.setsockopt``."""
        self.sock.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        """As ``socket.getsockopt``."""
        return self.sock.getsockopt(*args)

    def shutdown(self, how: int) -> None:
        """As ``socket.shutdown``."""
        self.sock.shutdown(how)

    def close(self) -> None:
        """As ``socket.close``."""
        self.sock.close()

    def fileno(self) -> int:
        """As ``socket.fileno``."""
        return self.sock.fileno()

    def getpeername(self) -> Any:
        """As ``socket.getpeername``."""
        return self.sock.getpeername()

    def getsockname(self) -> Any:
        """As ``socket.getsockname``."""
        return self.sock.getsockname()


def select_method(provide: int, allowed: int, prefer_rc4: bool = False) -> int:
    """The responder's ``crypto_select`` for the initiator's ``provide`` bits: of the methods both allow, the
    lowest bit (plaintext before RC4), or the highest with ``prefer_rc4``; 0 when none is common.

    libtorrent's rule (``prefer_rc4`` defaults to false there too), so a peer offering both gets from us what
    it gets from libtorrent.
    """
    common = provide & allowed & (CRYPTO_RC4 | CRYPTO_PLAINTEXT)
    if not common:
        return 0
    if prefer_rc4:
        return CRYPTO_RC4 if common & CRYPTO_RC4 else CRYPTO_PLAINTEXT
    return CRYPTO_PLAINTEXT if common & CRYPTO_PLAINTEXT else CRYPTO_RC4


def allowed_methods(policy: str) -> int:
    """``crypto_provide`` bits we offer or accept under an ``encryption`` policy (0 for ``disable``)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown encryption policy {policy!r} (one of {', '.join(POLICIES)})")
    return {"prefer": CRYPTO_RC4 | CRYPTO_PLAINTEXT, "require": CRYPTO_RC4, "disable": 0}[policy]


__all__ = [
    "CRYPTO_PLAINTEXT", "CRYPTO_RC4", "EncryptionError", "HandshakeRC4", "Initiator", "MAX_PAD", "Negotiated",
    "POLICIES", "RC4Socket", "Responder", "allowed_methods", "handshake_rc4", "is_plaintext_start", "keypair",
    "negotiate", "rc4",
    "select_method", "shared_secret", "sha1",
]
