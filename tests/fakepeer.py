"""Scripted fake BitTorrent peers for protocol edge cases, and the swarm they stand beside.

A fake listens on 127.0.0.1 (a gevent ``StreamServer`` in the test process) and torrentcore dials it
(``--peer``). :class:`FakePeerServer` owns the server's life and the accounting every fake shares
(connections accepted, connections the *other* side closed, errors); a subclass writes only the
conversation, :meth:`FakePeerServer._script`, with the wire helpers here. The wire format is written
out here, not taken from torrentcore, so the fakes check the engine rather than agree with it.

:func:`honest_swarm` is the company the fakes keep: a payload, its .torrent (no tracker) and an honest,
rate-limited libtorrent seeder, so that a download lasts long enough for a fake to matter.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent.server
import pytest
from realpeers import LOCALHOST, RealPeers, assert_same_tree, info_hash_of, make_payload, make_torrent
from torrentcore_cli import TorrentcoreProcess

PROTOCOL = b"BitTorrent protocol"
CHOKE, UNCHOKE, INTERESTED, NOT_INTERESTED, HAVE, BITFIELD, REQUEST, PIECE, CANCEL = range(9)


def handshake(info_hash: bytes, peer_id: bytes, reserved: bytes = bytes(8)) -> bytes:
    """A BEP 3 handshake (68 bytes)."""
    return bytes([len(PROTOCOL)]) + PROTOCOL + reserved + info_hash + peer_id


def message(msg_id: int, payload: bytes = b"") -> bytes:
    """One length-prefixed message."""
    return struct.pack(">IB", 1 + len(payload), msg_id) + payload


def full_bitfield(num_pieces: int) -> bytes:
    """A BITFIELD payload with all ``num_pieces`` bits set (spare bits clear)."""
    bits = bytearray((num_pieces + 7) // 8)
    for i in range(num_pieces):
        bits[i >> 3] |= 0x80 >> (i & 7)
    return bytes(bits)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes; :class:`EOFError` if the other side closes first."""
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("closed by the other side")
        data += chunk
    return bytes(data)


def read_message(sock: socket.socket) -> tuple[int, bytes]:
    """One message: ``(id, payload)``; ``(-1, b"")`` for a keep-alive."""
    (length,) = struct.unpack(">I", recv_exact(sock, 4))
    if not length:
        return -1, b""
    body = recv_exact(sock, length)
    return body[0], body[1:]


class FakePeerServer:
    """A scripted peer listening on 127.0.0.1; each accepted connection runs :meth:`_script`.

    Counters (read by the tests): ``accepted``, ``closed_by_them`` (the script ended with EOF or a
    connection error: torrentcore closed it) and ``errors`` (any other socket error, or what the script
    noted). A connection stays open until the other side closes it or :meth:`stop`, so a peer that
    torrentcore does not drop shows up as not closed. A subclass sets up its own state before it calls
    ``super().__init__()``, which starts listening; it reports its own counters with :meth:`counters`.
    """

    def __init__(self, behaviour: str, info_hash: bytes, payload: Path) -> None:
        self.behaviour = behaviour
        self.info_hash = info_hash
        self.payload = payload.read_bytes()
        self.peer_id = b"-FK0001-" + behaviour.encode()[:12].ljust(12, b"x")
        self.accepted = 0
        self.refused_mse = 0
        self.closed_by_them = 0
        self.errors: list[str] = []
        self.server = gevent.server.StreamServer((LOCALHOST, 0), self._serve)
        self.server.start()

    @property
    def endpoint(self) -> tuple[str, int]:
        """``(host, port)`` to give torrentcore as ``--peer``."""
        return (LOCALHOST, self.server.server_port)

    @property
    def address(self) -> str:
        """``host:port`` as torrentcore's logs write it."""
        return f"{LOCALHOST}:{self.server.server_port}"

    def counters(self) -> dict[str, Any]:
        """The subclass's own counters, for :meth:`__repr__`."""
        return {}

    def __repr__(self) -> str:
        extra = "".join(f" {key}={value}" for key, value in self.counters().items())
        return (f"<{type(self).__name__} {self.behaviour} {self.address} accepted={self.accepted} "
                f"closed_by_them={self.closed_by_them}{extra} errors={self.errors[-3:]}>")

    def stop(self) -> None:
        """Stop listening and close every connection."""
        self.server.stop(timeout=1)

    def _serve(self, sock: socket.socket, address: Any) -> None:
        sock.settimeout(60)
        if not _plaintext_start(sock):
            # An MSE/PE (encrypted) handshake: refused by closing, as a plaintext-only client does; torrentcore
            # (--encryption prefer) then connects again in plaintext. Not counted as a connection.
            self.refused_mse += 1
            sock.close()
            return
        self.accepted += 1
        try:
            self._script(sock)
        except (EOFError, ConnectionError):
            self.closed_by_them += 1
        except OSError as exc:
            self.errors.append(repr(exc))
        finally:
            sock.close()

    def _script(self, sock: socket.socket) -> None:
        """The conversation on one connection (written by the subclass)."""
        raise NotImplementedError

    def _drain(self, sock: socket.socket) -> None:
        """Read and ignore everything until the other side closes (raises EOFError then)."""
        while True:
            if not sock.recv(65536):
                raise EOFError("closed by the other side")


def _plaintext_start(sock: socket.socket) -> bool:
    """Whether the connection starts with ``\\x13BitTorrent protocol`` (peeked, not consumed; bounded wait)."""
    want = 1 + len(PROTOCOL)
    with contextlib.suppress(OSError):
        for _ in range(500):
            seen = sock.recv(want, socket.MSG_PEEK)
            if not seen or len(seen) >= want or seen != bytes([len(PROTOCOL)]) + PROTOCOL[: len(seen) - 1]:
                return seen == bytes([len(PROTOCOL)]) + PROTOCOL
            gevent.sleep(0.01)
    return False


@pytest.fixture(name="fakes")
def fakes_fixture() -> Iterator[list[FakePeerServer]]:
    """The fakes a test started (it appends them); printed and stopped at teardown."""
    started: list[FakePeerServer] = []
    yield started
    for fake in started:
        print(fake)
        fake.stop()


@contextlib.contextmanager
def honest_swarm(tmp_path: Path, size: int, *, seed: int, name: str, piece_length: int,
                 rate: int) -> Iterator[dict]:
    """A payload ``tmp_path/seed/name``, its .torrent (no tracker) and an honest libtorrent seeder whose
    upload is capped at ``rate`` bytes/s. Yields ``root``, ``torrent``, ``seeder``, ``pool`` and
    ``info_hash``; the pool is described (printed) and stopped on the way out."""
    root = Path(make_payload(tmp_path / "seed", size, seed=seed, name=name))
    torrent = tmp_path / f"{Path(name).stem}.torrent"
    make_torrent(root, [], piece_length=piece_length, out=torrent)
    with RealPeers(tmp_path / "peers") as pool:
        seeder = pool.libtorrent("honest", ignore_limits_on_local_network=False, upload_rate_limit=rate)
        seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
        yield {"root": root, "torrent": torrent, "seeder": seeder, "pool": pool, "info_hash": info_hash_of(torrent)}
        print(pool.describe())


def assert_clean_finish(run: TorrentcoreProcess, swarm: dict, out_file: Path, about: str, timeout: float) -> str:
    """Wait (at most ``timeout`` s) for ``run`` and assert that it ended well despite the fakes: exit code 0,
    no traceback, no ``internal error`` log event, and ``out_file`` byte for byte equal to the swarm's
    payload. Returns the context the messages use (the run, ``about``, the swarm's peers), for more."""
    rc = run.wait(timeout)
    context = f"{run.describe()}\n{about}\n{swarm['pool'].describe()}"
    assert rc == 0, context
    assert "Traceback" not in run.stderr, context
    assert not [e for e in run.logs() if str(e.get("event", "")).startswith("internal error")], context
    assert_same_tree(swarm["root"], out_file, context)
    return context
