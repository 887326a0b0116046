"""MSE/PE (torrentcore/peer/encryption.py, peer/handshake.py): the state machines against each other, the
RC4 socket wrapper, and hostile peers against both seams (``accept`` for incoming, ``dial`` for outgoing).

Hostile peers here are hand-written sockets on 127.0.0.1 speaking just enough MSE to reach the point they
break. Each must be dropped within a bound (a ``gevent.Timeout`` the test fails on, never a measured
time) with a :class:`ProtocolError` or ``ConnectionError``, never anything else, and buffers stay bounded.
The end-to-end test sends them to a real ``torrentcore seed`` process, which must log no traceback and
still serve an RC4 libtorrent leecher afterwards.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable, Iterator

import gevent
import libtorrent as lt
import pytest
from realpeers import LOCALHOST, assert_same_tree, make_payload, make_torrent, peers_fixture  # noqa: F401
from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore.errors import ProtocolError
from torrentcore.peer import encryption as mse
from torrentcore.peer import handshake
from torrentcore.peer import messages as msg

INFO_HASH = bytes(range(20))
OTHER_HASH = b"\x55" * 20
OUR_ID = b"-TC0001-ourpeerid000"
THEIR_ID = b"-XX0001-theirpeerid0"
#: Bound on every hostile exchange (the test fails past it; nothing measures how long it took).
BOUND = 20.0
#: Handshake timeout given to the seams in hostile tests.
SHORT = 2.0
DROPPED = (ProtocolError, ConnectionError, OSError)


def _pair() -> tuple[mse.Initiator, mse.Responder]:
    ia = msg.handshake(INFO_HASH, THEIR_ID, bytes(8))
    return mse.Initiator(INFO_HASH, ia), mse.Responder(lambda: [OTHER_HASH, INFO_HASH])


def _run_in_memory(a: mse.MSEHandshake, b: mse.MSEHandshake, chunk: int) -> None:
    """Shuttle bytes between two machines in ``chunk``-byte pieces until both are done (bounded)."""
    for _ in range(10):
        for src, dst in ((a, b), (b, a)):
            data = src.outgoing()
            for i in range(0, len(data), chunk):
                dst.receive(data[i : i + chunk])
        if a.result and b.result:
            return
    raise AssertionError("handshake did not finish")


# --------------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------------


def test_rc4_known_answer_and_discard():
    """RFC 6229 (key 0102030405) keystream bytes 0-15; :func:`rc4` starts at keystream byte 1024."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
    from cryptography.hazmat.primitives.ciphers import Cipher

    raw = Cipher(ARC4(bytes([1, 2, 3, 4, 5])), mode=None).encryptor().update(bytes(1040))
    assert raw[:16].hex() == "b2396305f03dc027ccc3524a0a1118a8"
    assert mse.rc4(bytes([1, 2, 3, 4, 5])).update(bytes(16)) == raw[1024:]


def test_handshake_rc4_in_python_is_the_same_stream():
    """:class:`HandshakeRC4` (Python while short) gives :func:`rc4`'s keystream, through the hand-over to
    ``cryptography`` past :data:`PYTHON_KEYSTREAM_BYTES` and through :meth:`HandshakeRC4.cipher`."""
    rng = random.Random(17)
    for key in (bytes([1, 2, 3, 4, 5]), rng.randbytes(20), rng.randbytes(20)):
        ours, reference = mse.HandshakeRC4(key), mse.rc4(key)
        used = 0
        while used < mse.PYTHON_KEYSTREAM_BYTES + 1000:
            data = rng.randbytes(rng.choice([0, 1, 6, 14, 300, 512]))
            assert ours.update(data) == reference.update(data)
            used += len(data)
        data = rng.randbytes(100)
        assert ours.cipher().update(data) == reference.update(data)
        into, expected = bytearray(64), bytearray(64)
        ours.update_into(data[:64], into)
        reference.update_into(data[:64], expected)
        assert into == expected


#: Handshakes offering both methods, as a run's outgoing connections under ``prefer`` (both sides in this
#: process: 4 RC4 streams each); prints whether ``cryptography`` got imported.
PLAINTEXT_HANDSHAKES = """
import sys
from torrentcore.peer import encryption as mse
for _ in range(mse.PYTHON_HANDSHAKE_STREAMS // 4):
    both = mse.CRYPTO_PLAINTEXT | mse.CRYPTO_RC4
    a = mse.Initiator(bytes(20), b"ia" * 34, provide=both)
    b = mse.Responder(lambda: [bytes(20)])
    for _ in range(5):
        for src, dst in ((a, b), (b, a)):
            data = src.outgoing()
            if data:
                dst.receive(data)
    assert a.result.method == b.result.method == mse.CRYPTO_PLAINTEXT and b.result.initial_payload == b"ia" * 34
print("cryptography" in sys.modules)
"""


def test_plaintext_handshakes_do_not_import_cryptography():
    """Start-up: MSE handshakes that end in plaintext (libtorrent's choice when offered both, our ``prefer``)
    run their RC4 in Python; ``cryptography`` (11-15 ms to import) is imported for an RC4 payload stream."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", PLAINTEXT_HANDSHAKES], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_rc4_payload_streams_are_cryptography_contexts():
    a, b = _pair()
    _run_in_memory(a, b, 4096)
    assert a.result.method == b.result.method == mse.CRYPTO_RC4
    for stream in (a.result.encryptor, a.result.decryptor, b.result.encryptor, b.result.decryptor):
        assert not isinstance(stream, mse.HandshakeRC4) and hasattr(stream, "update_into")


def test_dh_shared_secret_agrees_and_rejects_degenerate_keys():
    xa, ya = mse.keypair()
    xb, yb = mse.keypair()
    assert len(ya) == len(yb) == mse.KEY_BYTES
    assert mse.shared_secret(xa, yb) == mse.shared_secret(xb, ya)
    for bad in (0, 1, mse.P - 1, mse.P, (1 << 768) - 1):
        with pytest.raises(mse.EncryptionError):
            mse.shared_secret(xa, bad.to_bytes(96, "big"))


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_state_machines_agree_whatever_the_chunking(chunk):
    a, b = _pair()
    _run_in_memory(a, b, chunk)
    assert a.result.method == b.result.method == mse.CRYPTO_RC4
    assert b.result.info_hash == INFO_HASH
    assert b.result.initial_payload == msg.handshake(INFO_HASH, THEIR_ID, bytes(8))
    # The payload streams continue where the handshake left them, both ways.
    assert a.result.decryptor.update(b.result.encryptor.update(b"from B")) == b"from B"
    assert b.result.decryptor.update(a.result.encryptor.update(b"from A")) == b"from A"


def test_plaintext_after_the_header_when_only_plaintext_is_offered():
    a = mse.Initiator(INFO_HASH, b"", provide=mse.CRYPTO_PLAINTEXT)
    b = mse.Responder(lambda: [INFO_HASH])
    _run_in_memory(a, b, 100)
    assert a.result.method == b.result.method == mse.CRYPTO_PLAINTEXT
    assert not a.result.encrypted and b.result.initial_payload == b""


def test_responder_chooses_as_libtorrent_and_require_refuses_plaintext_only():
    """Offered both, the responder keeps plaintext after the header (libtorrent's default, prefer_rc4 false);
    with prefer_rc4, or offered RC4 only, RC4. tests/test_encryption_interop.py proves it against
    libtorrent (as responder) and aria2c (dialling our seeder)."""
    both = mse.CRYPTO_PLAINTEXT | mse.CRYPTO_RC4
    for provide, prefer_rc4, expected in ((both, False, mse.CRYPTO_PLAINTEXT), (both, True, mse.CRYPTO_RC4),
                                          (mse.CRYPTO_RC4, False, mse.CRYPTO_RC4)):
        a = mse.Initiator(INFO_HASH, b"", provide=provide)
        b = mse.Responder(lambda: [INFO_HASH], prefer_rc4=prefer_rc4)
        _run_in_memory(a, b, 4096)
        assert a.result.method == b.result.method == expected, (provide, prefer_rc4)
    assert mse.select_method(both, mse.allowed_methods("require")) == mse.CRYPTO_RC4
    assert mse.select_method(mse.CRYPTO_PLAINTEXT, mse.allowed_methods("require")) == 0
    assert mse.select_method(0x80 | both, both) == mse.CRYPTO_PLAINTEXT  # unknown bits are never chosen
    a = mse.Initiator(INFO_HASH, b"", provide=mse.CRYPTO_PLAINTEXT)
    b = mse.Responder(lambda: [INFO_HASH], allowed=mse.allowed_methods("require"))
    with pytest.raises(mse.EncryptionError, match="we accept"):
        _run_in_memory(a, b, 4096)


def test_unknown_torrent_is_refused():
    a = mse.Initiator(INFO_HASH, b"")
    b = mse.Responder(lambda: [OTHER_HASH])
    with pytest.raises(mse.EncryptionError, match="do not serve"):
        _run_in_memory(a, b, 4096)


def test_dial_order_follows_policy_and_what_the_peer_said():
    assert handshake.dial_order("require") == [True]
    assert handshake.dial_order("disable") == [False]
    assert handshake.dial_order("prefer") == [True, False]
    assert handshake.dial_order("prefer", True) == [True, False]
    assert handshake.dial_order("prefer", False) == [False, True]
    with pytest.raises(ValueError):
        handshake.dial_order("sometimes")


@pytest.mark.parametrize("junk", [os.urandom(96) + os.urandom(4000), b"\xff" * 96])
def test_garbage_costs_bounded_memory(junk):
    """A responder fed an endless stream gives up within one chunk past the 512-byte search window."""
    b = mse.Responder(lambda: [INFO_HASH])
    fed = 0
    with pytest.raises(mse.EncryptionError):
        for _ in range(1000):
            b.receive(junk[:1024] if fed else junk)
            fed += len(junk[:1024]) if fed else len(junk)
    assert fed <= len(junk) + 1024
    assert len(b._in) <= mse.MAX_PAD + 20 + 4096


# --------------------------------------------------------------------------------------------------
# The RC4 socket wrapper
# --------------------------------------------------------------------------------------------------


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as server:
        server.bind((LOCALHOST, 0))
        server.listen(1)
        left = socket.create_connection(server.getsockname())
        right, _ = server.accept()
    return left, right


def test_rc4_socket_round_trip_in_place():
    left, right = _tcp_pair()
    key_a, key_b = os.urandom(20), os.urandom(20)
    a = mse.RC4Socket(left, mse.rc4(key_a), mse.rc4(key_b))
    b = mse.RC4Socket(right, mse.rc4(key_b), mse.rc4(key_a))
    data = os.urandom(100_000)
    sender = gevent.spawn(a.sendall, data)
    got = bytearray(len(data))
    view = memoryview(got)
    pos = 0
    with gevent.Timeout(BOUND):
        while pos < len(data):
            pos += b.recv_into(view[pos:])
    sender.get()
    assert bytes(got) == data
    b.sendall(b"pong")
    assert a.recv(4) == b"pong"
    a.settimeout(3.0)
    assert a.gettimeout() == 3.0 and a.fileno() == left.fileno()
    a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    a.shutdown(socket.SHUT_RDWR)
    a.close()
    b.close()


# --------------------------------------------------------------------------------------------------
# The seams over loopback, honest and hostile
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind((LOCALHOST, 0))
    sock.listen(8)
    yield sock
    sock.close()


def _identity(info_hash: bytes) -> handshake.Identity | None:
    return handshake.Identity(INFO_HASH, OUR_ID, bytes(8)) if info_hash == INFO_HASH else None


def _accept_one(listener: socket.socket, policy: str = "prefer", timeout: float = SHORT) -> gevent.Greenlet:
    """Our accept() seam on the next incoming connection, in a greenlet (its value or exception is the outcome)."""

    def serve():
        sock, address = listener.accept()
        try:
            return handshake.accept(sock, address, _identity, encryption=policy, info_hashes=lambda: [INFO_HASH],
                                    handshake_timeout=timeout)
        except DROPPED as exc:  # returned, not raised: gevent would print a traceback for the test's greenlet
            return exc

    return gevent.spawn(serve)


def _outcome(greenlet: gevent.Greenlet) -> object:
    with gevent.Timeout(BOUND, AssertionError("not dropped within the bound")):
        return greenlet.get()


@pytest.mark.parametrize("policy", ["prefer", "require"])
def test_dial_and_accept_over_loopback_encrypted(listener, policy):
    server = _accept_one(listener, policy)
    done = handshake.dial(listener.getsockname(), handshake.Identity(INFO_HASH, THEIR_ID, bytes(8)),
                          encryption=policy, handshake_timeout=SHORT)
    theirs = _outcome(server)
    assert isinstance(theirs, handshake.Handshaken), theirs
    # prefer offers both and, answering, chooses plaintext after the header; require has RC4 only.
    rc4 = policy == "require"
    assert done.obfuscated and theirs.obfuscated
    assert done.encrypted is theirs.encrypted is done.conn.encrypted is rc4
    assert (done.peer_id, theirs.peer_id) == (OUR_ID, THEIR_ID)
    theirs.conn.sock.sendall(msg.have(7))
    assert done.conn.read_message() == (msg.HAVE, b"\x00\x00\x00\x07")
    done.conn.close()
    theirs.conn.close()


def test_prefer_falls_back_to_plaintext_when_the_peer_refuses_mse(listener):
    refused = _accept_one(listener, "disable")
    plain = gevent.spawn(lambda: (refused.join(), _accept_one(listener, "disable").get())[1])  # the retry
    done = handshake.dial(listener.getsockname(), handshake.Identity(INFO_HASH, THEIR_ID, bytes(8)),
                          handshake_timeout=SHORT)
    assert isinstance(_outcome(refused), ProtocolError)
    theirs = _outcome(plain)
    assert not done.encrypted and not done.obfuscated and not theirs.encrypted
    done.conn.close()
    theirs.conn.close()


def test_accept_policies_by_first_bytes(listener):
    # require: a plaintext handshake gets the connection closed, not one byte back.
    server = _accept_one(listener, "require")
    with socket.create_connection(listener.getsockname()) as sock:
        sock.sendall(msg.handshake(INFO_HASH, THEIR_ID, bytes(8)))
        assert _until_closed(sock) == b""
    assert isinstance(_outcome(server), ProtocolError)
    # disable: an MSE public key gets the connection closed, not one byte back.
    server = _accept_one(listener, "disable")
    with socket.create_connection(listener.getsockname()) as sock:
        sock.sendall(mse.keypair()[1])
        assert _until_closed(sock) == b""
    assert isinstance(_outcome(server), ProtocolError)


def _until_closed(sock: socket.socket) -> bytes:
    """What the other side sent before closing (or resetting) the connection; fails past the bound."""
    data = b""
    with gevent.Timeout(BOUND, AssertionError("the connection was not closed")):
        while len(data) < 1 << 16:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return data


# --- hostile initiators (against accept) ---------------------------------------------------------


def _hostile_initiator(sock: socket.socket, *, pad_c: int = 0, provide: int = mse.CRYPTO_RC4,
                       send_req1: bool = True, padding: int = 0) -> None:
    """Speak MSE as an initiator up to step 3, with the given defects."""
    x, ya = mse.keypair()
    sock.sendall(ya + os.urandom(padding))
    yb = _recv_exactly(sock, 96)
    secret = mse.shared_secret(x, yb)
    enc = mse.rc4(mse.sha1(b"keyA", secret, INFO_HASH))
    req = mse.sha1(b"req1", secret) if send_req1 else os.urandom(20)
    xored = bytes(p ^ q for p, q in zip(mse.sha1(b"req2", INFO_HASH), mse.sha1(b"req3", secret)))
    header = mse.VC + provide.to_bytes(4, "big") + pad_c.to_bytes(2, "big") + bytes(min(pad_c, 600)) + b"\x00\x00"
    sock.sendall(req + xored + enc.update(header))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    with gevent.Timeout(BOUND):
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "closed"
            data += chunk
    return data


def _against_accept(listener, talk: Callable[[socket.socket], None], policy: str = "prefer") -> object:
    server = _accept_one(listener, policy)
    with socket.create_connection(listener.getsockname()) as sock:
        try:
            talk(sock)
        except (OSError, AssertionError):
            pass  # the seam may close on us mid-way: that is the point
        outcome = _outcome(server)
    return outcome


def test_accept_drops_garbage_instead_of_a_dh_key(listener):
    out = _against_accept(listener, lambda s: s.sendall(b"\xff" * 96 + os.urandom(200)))
    assert isinstance(out, ProtocolError) and "out of range" in str(out), out
    out = _against_accept(listener, lambda s: s.sendall(os.urandom(96 + 2000)))
    assert isinstance(out, ProtocolError) and "within 512 bytes" in str(out), out


def test_accept_drops_a_peer_that_never_sends_the_sync_pattern(listener):
    # Padding past 512 bytes: HASH('req1', S) cannot be found where it may be.
    out = _against_accept(listener, lambda s: _hostile_initiator(s, padding=600))
    assert isinstance(out, ProtocolError), out
    # A key, then silence: the handshake timeout ends it.
    out = _against_accept(listener, lambda s: (s.sendall(mse.keypair()[1]), gevent.sleep(SHORT * 3)))
    assert isinstance(out, ProtocolError), out


def test_accept_drops_padding_over_512(listener):
    out = _against_accept(listener, lambda s: _hostile_initiator(s, pad_c=513))
    assert isinstance(out, ProtocolError) and "PadC of 513" in str(out), out


def test_accept_drops_an_initiator_offering_nothing_we_accept(listener):
    out = _against_accept(listener, lambda s: _hostile_initiator(s, provide=mse.CRYPTO_PLAINTEXT), policy="require")
    assert isinstance(out, ProtocolError) and "we accept" in str(out), out
    out = _against_accept(listener, lambda s: _hostile_initiator(s, provide=0x10))
    assert isinstance(out, ProtocolError), out


def test_accept_drops_a_slow_trickle_and_takes_a_fast_one(listener):
    def trickle(delay: float) -> Callable[[socket.socket], None]:
        def talk(sock: socket.socket) -> None:
            machine = mse.Initiator(INFO_HASH, msg.handshake(INFO_HASH, THEIR_ID, bytes(8)))
            sock.settimeout(BOUND)
            for _ in range(4):  # steps 1 and 3, byte by byte
                for byte in machine.outgoing():
                    sock.sendall(bytes([byte]))
                    gevent.sleep(delay)
                if machine.result is not None:
                    return
                data = sock.recv(4096)
                if not data:
                    return
                machine.receive(data)
        return talk

    out = _against_accept(listener, trickle(0.05))  # a byte every 50 ms: over the 2 s bound
    assert isinstance(out, ProtocolError), out
    out = _against_accept(listener, trickle(0))
    assert isinstance(out, handshake.Handshaken) and out.encrypted, out
    out.conn.close()


# --- hostile responders (against dial) -----------------------------------------------------------


def _hostile_responder(listener, *, select: int = mse.CRYPTO_RC4, pad_d: int = 0, send_vc: bool = True,
                       key: bytes | None = None) -> gevent.Greenlet:
    def serve():
        sock, _ = listener.accept()
        with sock:
            try:
                ya = _recv_exactly(sock, 96)
                x, yb = mse.keypair()
                if key is not None:
                    sock.sendall(key)
                    gevent.sleep(BOUND)
                    return
                sock.sendall(yb)
                secret = mse.shared_secret(x, ya)
                enc = mse.rc4(mse.sha1(b"keyB", secret, INFO_HASH))
                if not send_vc:
                    for _ in range(1000):
                        sock.sendall(os.urandom(64))
                        gevent.sleep(0.01)
                    return
                sock.sendall(enc.update(mse.VC + select.to_bytes(4, "big") + pad_d.to_bytes(2, "big")))
                gevent.sleep(BOUND)
            except (OSError, AssertionError):
                return
    return gevent.spawn(serve)


def _dial_outcome(listener) -> object:
    try:
        with gevent.Timeout(BOUND, AssertionError("not dropped within the bound")):
            return handshake.dial(listener.getsockname(), handshake.Identity(INFO_HASH, OUR_ID, bytes(8)),
                                  encryption="require", handshake_timeout=SHORT)
    except DROPPED as exc:
        return exc


def test_dial_drops_garbage_instead_of_a_dh_key(listener):
    fake = _hostile_responder(listener, key=b"\x00" * 96)
    out = _dial_outcome(listener)
    fake.kill()
    assert isinstance(out, ProtocolError) and "out of range" in str(out), out


def test_dial_drops_a_peer_that_never_sends_the_sync_pattern(listener):
    fake = _hostile_responder(listener, send_vc=False)
    out = _dial_outcome(listener)
    fake.kill()
    assert isinstance(out, ProtocolError) and "verification constant" in str(out), out


def test_dial_drops_padding_over_512(listener):
    fake = _hostile_responder(listener, pad_d=0xFFFF)
    out = _dial_outcome(listener)
    fake.kill()
    assert isinstance(out, ProtocolError) and "PadD of 65535" in str(out), out


@pytest.mark.parametrize("select", [mse.CRYPTO_PLAINTEXT, mse.CRYPTO_PLAINTEXT | mse.CRYPTO_RC4, 0, 0x80])
def test_dial_drops_a_crypto_select_that_was_not_offered(listener, select):
    fake = _hostile_responder(listener, select=select)
    out = _dial_outcome(listener)
    fake.kill()
    assert isinstance(out, ProtocolError) and "selected crypto method" in str(out), out


def test_fuzzed_streams_never_raise_anything_else():
    """A few thousand random mutations of honest handshakes: only EncryptionError ever escapes."""
    rng = random.Random(5)
    a, b = _pair()
    step1 = a.outgoing()
    b.receive(step1)
    step2 = b.outgoing()
    a.receive(step2)
    step3 = a.outgoing()
    for _ in range(300):
        for target, honest in ((lambda: mse.Responder(lambda: [INFO_HASH]), step1 + step3),
                               (lambda: mse.Initiator(INFO_HASH, b""), step2)):
            data = bytearray(honest)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            machine = target()
            try:
                machine.receive(bytes(data[: rng.randrange(len(data) + 1)]))
                machine.receive(bytes(data))
            except mse.EncryptionError:
                pass


# --------------------------------------------------------------------------------------------------
# End to end: a real torrentcore seeder takes hostile handshakes, logs no traceback, keeps serving
# --------------------------------------------------------------------------------------------------


def test_seeder_survives_hostile_handshakes(tmp_path, peers, torrentcore):
    root = make_payload(tmp_path / "seed", 1 << 20, seed=70, name="data.bin")
    torrent = tmp_path / "t.torrent"
    _, info_hash = make_torrent(root, [], piece_length=64 * 1024, out=torrent)
    seeder = torrentcore.seed(torrent, tmp_path / "seed", "--seed-ratio", "0", "--seed-time", "5", name="seeder")
    address = (LOCALHOST, seeder.wait_listening())
    hostile = [
        lambda s: s.sendall(b"\xff" * 96),
        lambda s: s.sendall(os.urandom(96 + 2000)),
        lambda s: s.sendall(mse.keypair()[1] + os.urandom(700)),
    ]
    for talk in hostile:
        with socket.create_connection(address, timeout=5) as sock:
            talk(sock)
            with gevent.Timeout(BOUND, AssertionError("seeder kept a hostile connection")):
                try:
                    while sock.recv(4096):
                        pass
                except ConnectionResetError:
                    pass
    leecher = peers.libtorrent("forced", out_enc_policy=int(lt.enc_policy.pe_forced),
                               in_enc_policy=int(lt.enc_policy.pe_forced), allowed_enc_level=int(lt.enc_level.rc4))
    leecher.add_torrent(torrent, tmp_path / "leech")
    leecher.connect_peer(*address)
    assert leecher.wait_finished(timeout=30), peers.describe() + seeder.describe()
    assert_same_tree(root, tmp_path / "leech" / "data.bin", seeder.describe())
    assert "Traceback" not in seeder.stderr and seeder.returncode is None, seeder.describe()
    assert info_hash
