"""The seeding path's candidates in isolation: CPU of the sending side per GiB of PIECE messages on loopback.

    python benchmarks/upload_paths.py --size 256M --rounds 3

A file (in the page cache) is sent as 16 KiB PIECE messages to a reader in another process that discards
them, from a gevent greenlet on a patched socket, in the ways the seeder could send:

* ``block``: per block, a storage-like ``preadv`` into a fresh buffer, ``bytes()``, header + data, ``sendall``
  (torrentcore before batching);
* ``batch``: per run of 16 blocks, one ``preadv``, ``bytes()``, one join with the 16 headers, one ``sendall``
  (torrentcore's writer now: torrentcore/peer/upload.py);
* ``sendfile``: per block, the header with ``MSG_MORE`` then ``os.sendfile`` of the block (zero copy from the
  page cache; what plaintext TCP connections could do if the storage exposed its file descriptors).

Reported: the sender's CPU seconds (user+sys of this process, the reader excluded) per GiB, median of the
rounds, and the ratio to ``block``; the modes rotate between rounds.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import gevent  # noqa: E402
import gevent.socket  # noqa: E402
from download import parse_size  # noqa: E402

BLOCK = 16384
RUN = 16
HDR = struct.Struct(">IBII")
READER = "import socket,sys\ns=socket.create_connection(('127.0.0.1',int(sys.argv[1])))\nb=bytearray(1<<20)\n" \
         "while s.recv_into(b):\n    pass\n"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _send_block(sock, fd: int, size: int) -> None:
    for off in range(0, size, BLOCK):
        buf = bytearray(BLOCK)
        os.preadv(fd, [memoryview(buf)], off)
        sock.sendall(HDR.pack(9 + BLOCK, 7, off // (256 * 1024), off % (256 * 1024)) + bytes(buf))


def _send_batch(sock, fd: int, size: int) -> None:
    step = BLOCK * RUN
    for off in range(0, size, step):
        buf = bytearray(step)
        os.preadv(fd, [memoryview(buf)], off)
        data = memoryview(bytes(buf))
        parts = []
        for i in range(RUN):
            at = off + i * BLOCK
            parts.append(HDR.pack(9 + BLOCK, 7, at // (256 * 1024), at % (256 * 1024)))
            parts.append(data[i * BLOCK : (i + 1) * BLOCK])
        sock.sendall(b"".join(parts))


def _send_sendfile(sock, fd: int, size: int) -> None:
    out = sock.fileno()
    for off in range(0, size, BLOCK):
        header = HDR.pack(9 + BLOCK, 7, off // (256 * 1024), off % (256 * 1024))
        sent = 0
        while sent < len(header):
            try:
                sent += socket.socket.send(sock, header[sent:], socket.MSG_MORE)
            except BlockingIOError:
                gevent.socket.wait_write(out)
        done = 0
        while done < BLOCK:
            try:
                n = os.sendfile(out, fd, off + done, BLOCK - done)
            except BlockingIOError:
                gevent.socket.wait_write(out)
                continue
            if not n:
                raise OSError("sendfile sent nothing")
            done += n


MODES = {"block": _send_block, "batch": _send_batch, "sendfile": _send_sendfile}


def run_once(mode: str, path: str, size: int) -> float:
    """CPU seconds of this process to send the file once in ``mode``."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(server.getsockname()[1])])
    try:
        with gevent.Timeout(300):
            sock, _ = server.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = os.open(path, os.O_RDONLY)
        try:
            cpu0 = _cpu()
            with gevent.Timeout(300):
                MODES[mode](sock, fd, size)
            cpu = _cpu() - cpu0
        finally:
            os.close(fd)
            sock.close()
        reader.wait(60)
        return cpu
    finally:
        server.close()
        if reader.poll() is None:
            reader.kill()
            reader.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=parse_size("256M"))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    size = args.size // (BLOCK * RUN) * (BLOCK * RUN)
    with tempfile.NamedTemporaryFile(prefix="tc-upload-paths-") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(chunk[: size % len(chunk)])
        f.flush()
        per_gib: dict[str, list[float]] = {m: [] for m in MODES}
        modes = list(MODES)
        for r in range(args.rounds):
            for mode in modes[r % len(modes):] + modes[: r % len(modes)]:
                per_gib[mode].append(run_once(mode, f.name, size) / (size / 2**30))
    base = statistics.median(per_gib["block"])
    for mode, values in per_gib.items():
        median = statistics.median(values)
        print(f"{mode:9s} {median:.2f} CPU s per GiB sent (ratio to block {median / base:.2f}; rounds "
              f"{', '.join(f'{v:.2f}' for v in values)})")
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
