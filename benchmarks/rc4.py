"""The receive path's cost of MSE/PE RC4: a gevent socket on 127.0.0.1 read with ``recv_into`` into a
256 KiB buffer, plain and through :class:`torrentcore.peer.encryption.RC4Socket`, and RC4 alone.

    python benchmarks/rc4.py --size 256M

The sender is a thread of this process sending precomputed bytes (ciphertext for the RC4 case) with a plain
blocking socket, so the receiving greenlet's CPU is what is compared. Prints MB/s and CPU seconds per GiB of
the receiving thread for each case, and the wrapper's cost over RC4 alone.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir))

from torrentcore.peer import encryption as mse  # noqa: E402

CHUNK = 256 * 1024
_real_socket = monkey.get_original("socket", "socket")
_start_thread = monkey.get_original("_thread", "start_new_thread")


def _sender(port: int, data: bytes, rounds: int) -> None:
    with _real_socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.connect(("127.0.0.1", port))
        for _ in range(rounds):
            sock.sendall(data)


def _receive(total: int, data: bytes, rc4_key: bytes | None) -> tuple[float, float]:
    """(wall seconds, thread CPU seconds) to receive ``total`` bytes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    _start_thread(_sender, (server.getsockname()[1], data, total // len(data)))
    conn, _ = server.accept()
    sock = mse.RC4Socket(conn, mse.rc4(b"\0" * 20), mse.rc4(rc4_key)) if rc4_key else conn
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    got = 0
    t0, c0 = time.perf_counter(), time.thread_time()
    while got < total:
        n = sock.recv_into(view)
        if not n:
            break
        got += n
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    conn.close()
    server.close()
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="256M", help="bytes per case (k, M, G suffixes)")
    args = ap.parse_args()
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(args.size[-1].lower(), 1)
    total = int(float(args.size.rstrip("kKmMgG")) * scale)
    block = os.urandom(4 << 20)
    key = os.urandom(20)
    cipher = mse.rc4(key).update(block * (total // len(block)))
    gib = total / (1 << 30)
    plain_wall, plain_cpu = _receive(total, block, None)
    rc4_wall, rc4_cpu = _receive(total, cipher, key)
    context, buf = mse.rc4(key), bytearray(CHUNK)
    view = memoryview(buf)
    c0 = time.thread_time()
    for _ in range(total // CHUNK):
        context.update_into(view, view)
    alone = time.thread_time() - c0
    print(f"plain recv_into:       {total / 1e6 / plain_wall:7.0f} MB/s  {plain_cpu / gib:5.2f} CPU s/GiB")
    print(f"RC4Socket.recv_into:   {total / 1e6 / rc4_wall:7.0f} MB/s  {rc4_cpu / gib:5.2f} CPU s/GiB")
    print(f"RC4 alone (in place):  {total / 1e6 / alone:7.0f} MB/s  {alone / gib:5.2f} CPU s/GiB")
    print(f"wrapper overhead beyond RC4: {(rc4_cpu - plain_cpu - alone) / gib:+.2f} CPU s/GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
