"""``corruptEver`` and ``startDate`` of ``torrentcore daemon``, read by Debian's ``transmission-remote``.

A fake peer (announced to a real opentracker beside a real, rate-limited libtorrent seeder) sends one
corrupt block, then honest data: after the download ``corruptEver`` is that one piece's size, and stays
so over a daemon restart (kept in the database). ``startDate`` is when the torrent last started running:
later after a stop and start, and again after a restart; ``addedDate`` never moves.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest
import requests
from daemon_harness import DaemonProcess, require_transmission_remote
from fakepeer import (
    BITFIELD,
    PIECE,
    PROTOCOL,
    REQUEST,
    UNCHOKE,
    FakePeerServer,
    full_bitfield,
    handshake,
    message,
    recv_exact,
)
from opentracker_fixture import OpenTracker, opentracker_available
from realpeers import LibtorrentPeer, assert_same_tree, make_payload, make_torrent, wait_until

pytestmark = pytest.mark.timeout(180)

PIECE_LENGTH = 32768
SIZE = 32 * PIECE_LENGTH  # whole pieces: every piece is PIECE_LENGTH long
#: The honest seeder's upload cap (bytes/s): the download lasts long enough for the fake to be asked.
SEED_RATE = 200_000


class CorruptOnce(FakePeerServer):
    """A full seeder that flips a byte of the first piece-starting block it sends, and only that one."""

    def __init__(self, info_hash, payload) -> None:
        self.corrupted = 0
        self.blocks_sent = 0
        super().__init__("corrupt-once", info_hash, payload)

    def counters(self) -> dict:
        return {"corrupted": self.corrupted, "blocks_sent": self.blocks_sent}

    def _script(self, sock: socket.socket) -> None:
        theirs = recv_exact(sock, 68)
        if theirs[1:20] != PROTOCOL or theirs[28:48] != self.info_hash:
            self.errors.append(f"unexpected handshake {theirs!r}")
        sock.sendall(handshake(self.info_hash, self.peer_id))
        sock.sendall(message(BITFIELD, full_bitfield(SIZE // PIECE_LENGTH)) + message(UNCHOKE))
        while True:
            (length,) = struct.unpack(">I", recv_exact(sock, 4))
            body = recv_exact(sock, length) if length else b""
            if not body or body[0] != REQUEST:
                continue
            index, begin, size = struct.unpack(">III", body[1:13])
            start = index * PIECE_LENGTH + begin
            block = bytearray(self.payload[start : start + size])
            if begin == 0 and not self.corrupted:
                block[0] ^= 0xFF
                self.corrupted += 1
            sock.sendall(message(PIECE, struct.pack(">II", index, begin) + bytes(block)))
            self.blocks_sent += 1


def _announce(tracker: OpenTracker, info_hash: bytes, port: int) -> None:
    """Announce the fake (a seeder on 127.0.0.1:``port``) to the tracker."""
    query = (f"info_hash={quote_from_bytes(info_hash, safe='')}&peer_id=-FK0001-corruptonce1"
             f"&port={port}&uploaded=0&downloaded=0&left=0&compact=1&event=started")
    body = requests.get(f"{tracker.http_url}?{query}", timeout=5).content
    assert b"interval" in body, body


def _wait_next_second(after: int) -> None:
    """Until the wall clock's whole second is past ``after`` (so a new date can differ; bounded)."""
    assert wait_until(lambda: int(time.time()) > after, 5)


def test_corrupt_ever_and_start_date(tmp_path):
    require_transmission_remote()
    if not opentracker_available():
        pytest.skip("opentracker is not installed")
    seeds = tmp_path / "seeds"
    payload = make_payload(seeds, SIZE, seed=5, name="corrupted.bin")
    tracker = OpenTracker(tmp_path / "tracker").start()
    seeder = fake = daemon = None
    try:
        torrent = tmp_path / "corrupted.torrent"
        data, ih = make_torrent(payload, trackers=[tracker.http_url], piece_length=PIECE_LENGTH, out=torrent)
        tracker.add(ih)
        fake = CorruptOnce(ih, Path(payload))
        _announce(tracker, ih, fake.endpoint[1])
        seeder = LibtorrentPeer(name="seeder", upload_rate_limit=SEED_RATE, ignore_limits_on_local_network=False)
        seeder.add_torrent(data, seeds, seed=True)
        daemon = DaemonProcess(tmp_path / "d")
        daemon.remote("-a", str(torrent))
        (tid,) = [t["id"] for t in daemon.rpc("torrent-get", fields=["id"])["torrents"]]
        fields = ("percentDone", "status", "corruptEver", "addedDate", "startDate")
        t = daemon.wait_torrent(tid, lambda t: t["percentDone"] == 1 and t["status"] == 6, 90, *fields)
        assert_same_tree(payload, daemon.download_dir / "corrupted.bin")
        assert fake.corrupted == 1, fake
        assert t["corruptEver"] == PIECE_LENGTH, (t, fake)
        added, started = t["addedDate"], t["startDate"]
        assert 0 < added <= started <= time.time(), t
        info = daemon.remote("-t", str(tid), "-i")
        assert re.search(r"Corrupt DL: 32\.77 kB", info), info
        assert "Date started:" in info, info

        # torrent-stop, torrent-start: a new startDate.
        daemon.remote("-t", str(tid), "-S")
        daemon.wait_torrent(tid, lambda t: t["status"] == 0, 20, "status")
        _wait_next_second(started)
        daemon.remote("-t", str(tid), "-s")
        t = daemon.wait_torrent(tid, lambda t: t["status"] == 6, 30, *fields)
        assert t["startDate"] > started and t["addedDate"] == added, t
        assert t["corruptEver"] == PIECE_LENGTH, t
        started = t["startDate"]

        # A daemon restart: corruptEver kept in the database, a new startDate.
        assert daemon.terminate() == 0, daemon.stderr()[-2000:]
        _wait_next_second(started)
        daemon.start()
        t = daemon.wait_torrent(tid, lambda t: t["status"] == 6, 30, *fields)
        assert t["corruptEver"] == PIECE_LENGTH and t["addedDate"] == added, t
        assert t["startDate"] > started, t
        info = daemon.remote("-t", str(tid), "-i")
        assert re.search(r"Corrupt DL: 32\.77 kB", info), info
    finally:
        for part in (daemon, seeder):
            if part is not None:
                part.close()
        if fake is not None:
            print(fake)
            fake.stop()
        tracker.stop()
