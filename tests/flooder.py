"""A hostile crowd on 127.0.0.1, run as its own process by the flood tests and ``benchmarks/flood.py``.

``python tests/flooder.py --port P --seconds S [--idle N] [--slow N] [--greedy N --info-hash HEX
--pieces N --piece-length N --length N]`` keeps, for ``S`` seconds:

* ``--idle N`` connections that never send a byte;
* ``--slow N`` connections that send a plaintext BitTorrent handshake one byte a second;
* ``--handshaken N`` peers that complete a plaintext handshake for the torrent and then say nothing more;
* ``--greedy N`` peers that handshake for the torrent, declare interest, and then send REQUESTs without end,
  whether choked or not (up to ``--burst`` a round every 20 ms), reading and dropping whatever comes.

A connection the other side closes is opened again after ``--reconnect`` seconds (the crowd stays the same
size). A first JSON line on stdout says the whole crowd has tried to connect; at the end (or on SIGTERM) one
more: connections tried, opened, closed by the other side, bytes received.
Every loop is bounded by the deadline; the process exits by itself.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

PROTOCOL = b"\x13BitTorrent protocol"
RESERVED = bytes(8)
stats = {"tried": 0, "opened": 0, "closed_by_peer": 0, "refused": 0, "received": 0, "requests": 0}


def handshake(info_hash: bytes) -> bytes:
    return PROTOCOL + RESERVED + info_hash + b"-XX0001-" + os.urandom(12)


def _connect(port: int) -> socket.socket | None:
    stats["tried"] += 1
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        stats["refused"] += 1
        return None
    stats["opened"] += 1
    return sock


def _drain(sock: socket.socket, deadline: float) -> None:
    """Read and drop until the other side closes or the deadline passes."""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                stats["closed_by_peer"] += 1
                return
            stats["received"] += len(data)
    except OSError:
        if time.monotonic() < deadline:
            stats["closed_by_peer"] += 1


def idle(port: int, deadline: float, reconnect: float) -> None:
    while time.monotonic() < deadline:
        sock = _connect(port)
        if sock is not None:
            _drain(sock, deadline)
            sock.close()
        gevent.sleep(reconnect)


def slow(port: int, deadline: float, reconnect: float, info_hash: bytes) -> None:
    data = handshake(info_hash)
    while time.monotonic() < deadline:
        sock = _connect(port)
        if sock is not None:
            reader = gevent.spawn(_drain, sock, deadline)
            try:
                for i in range(len(data)):
                    if reader.dead or time.monotonic() >= deadline:
                        break
                    sock.sendall(data[i:i + 1])
                    gevent.sleep(1.0)
            except OSError:
                pass
            reader.join(max(0.0, deadline - time.monotonic()))
            reader.kill()
            sock.close()
        gevent.sleep(reconnect)


def handshaken(port: int, deadline: float, reconnect: float, info_hash: bytes) -> None:
    while time.monotonic() < deadline:
        sock = _connect(port)
        if sock is not None:
            try:
                sock.sendall(handshake(info_hash))
                _drain(sock, deadline)
            except OSError:
                pass
            sock.close()
        gevent.sleep(reconnect)


def greedy(port: int, deadline: float, reconnect: float, info_hash: bytes, pieces: int, piece_length: int,
           length: int, burst: int) -> None:
    while time.monotonic() < deadline:
        sock = _connect(port)
        if sock is not None:
            reader = gevent.spawn(_drain, sock, deadline)
            try:
                sock.sendall(handshake(info_hash) + struct.pack(">IB", 1, 2))  # INTERESTED
                while not reader.dead and time.monotonic() < deadline:
                    out = []
                    for _ in range(burst):
                        index = random.randrange(pieces)
                        size = min(piece_length, length - index * piece_length)
                        begin = random.randrange(0, size, 16384)
                        out.append(struct.pack(">IBIII", 13, 6, index, begin, min(16384, size - begin)))
                    sock.sendall(b"".join(out))
                    stats["requests"] += burst
                    gevent.sleep(0.02)
            except OSError:
                pass
            reader.join(max(0.0, deadline - time.monotonic()))
            reader.kill()
            sock.close()
        gevent.sleep(reconnect)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--idle", type=int, default=0)
    ap.add_argument("--slow", type=int, default=0)
    ap.add_argument("--handshaken", type=int, default=0)
    ap.add_argument("--greedy", type=int, default=0)
    ap.add_argument("--info-hash", default="00" * 20)
    ap.add_argument("--pieces", type=int, default=1)
    ap.add_argument("--piece-length", type=int, default=16384)
    ap.add_argument("--length", type=int, default=16384)
    ap.add_argument("--burst", type=int, default=16)
    ap.add_argument("--reconnect", type=float, default=0.2)
    ap.add_argument("--nice", type=int, default=10,
                    help="lower our priority: on a 2-core machine the crowd's own CPU would otherwise be what slows "
                         "the honest transfer (a real crowd runs elsewhere)")
    args = ap.parse_args()
    os.nice(args.nice)
    deadline = time.monotonic() + args.seconds

    def report_and_exit() -> None:  # SIGTERM: the test is done with us
        print(json.dumps({"event": "done", **stats}), flush=True)
        os._exit(0)

    gevent.signal_handler(signal.SIGTERM, report_and_exit)
    info_hash = bytes.fromhex(args.info_hash)
    jobs = [gevent.spawn(idle, args.port, deadline, args.reconnect) for _ in range(args.idle)]
    jobs += [gevent.spawn(slow, args.port, deadline, args.reconnect, info_hash) for _ in range(args.slow)]
    jobs += [gevent.spawn(handshaken, args.port, deadline, args.reconnect, info_hash) for _ in range(args.handshaken)]
    jobs += [gevent.spawn(greedy, args.port, deadline, args.reconnect, info_hash, args.pieces, args.piece_length,
                          args.length, args.burst) for _ in range(args.greedy)]
    # "flooding" once every member of the crowd has had a connection accepted by the kernel (bounded wait): on a
    # loaded machine a connect can wait seconds in the listen backlog, and a crowd that has only *tried* is not
    # yet there.
    settle = time.monotonic() + 30
    while (stats["tried"] < len(jobs) or stats["opened"] < len(jobs)) and time.monotonic() < settle:
        gevent.sleep(0.05)
    print(json.dumps({"event": "flooding", **stats}), flush=True)
    gevent.joinall(jobs, timeout=args.seconds + 10)
    gevent.killall(jobs, timeout=2)
    print(json.dumps({"event": "done", **stats}), flush=True)


if __name__ == "__main__":
    main()
