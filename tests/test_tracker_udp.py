"""UDP tracker client (BEP 15) against a scripted UDP tracker on 127.0.0.1."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from torrentcore.errors import TrackerError
from torrentcore.tracker import AnnounceRequest, UDPTracker, announce, tracker_for_url
from torrentcore.tracker.udp import PROTOCOL_ID

INFO_HASH = bytes(range(20))
PEER_ID = b"-TC0001-udptest00001"


def request(**kw: object) -> AnnounceRequest:
    fields: dict = {"info_hash": INFO_HASH, "peer_id": PEER_ID, "port": 6881}
    fields.update(kw)
    return AnnounceRequest(**fields)


def compact(*peers: tuple[str, int]) -> bytes:
    return b"".join(socket.inet_aton(ip) + struct.pack(">H", port) for ip, port in peers)


class FakeUDPTracker:
    """A scripted BEP 15 tracker on a loopback UDP socket, served by a background thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.05)
        port = self.sock.getsockname()[1]
        self.url = f"udp://[{host}]:{port}" if family == socket.AF_INET6 else f"udp://{host}:{port}"
        self.conn_id = 0x1122334455667788
        self.interval, self.leechers, self.seeders = 1800, 4, 2
        self.peers = compact(("10.0.0.1", 6881), ("10.0.0.2", 6882))
        self.raw_announce_reply: bytes | None = None  # whole payload after the 8-byte header
        self.error: str | None = None  # answer announces with this error
        self.drop_connects = 0
        self.drop_announces = 0
        self.wrong_tid_first = False
        self.spoof_first = False
        self.connects = 0
        self.announce_packets: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self._handle(data, addr)

    def _reply(self, addr: tuple, action: int, tid: int, payload: bytes) -> None:
        if self.wrong_tid_first:
            self.wrong_tid_first = False
            self.sock.sendto(struct.pack(">II", action, tid ^ 0xFFFF) + payload, addr)
        if self.spoof_first:
            self.spoof_first = False
            with socket.socket(self.sock.family, socket.SOCK_DGRAM) as other:
                other.sendto(struct.pack(">II", action, tid) + payload, addr)
        self.sock.sendto(struct.pack(">II", action, tid) + payload, addr)

    def _handle(self, data: bytes, addr: tuple) -> None:
        if len(data) == 16:
            proto, action, tid = struct.unpack(">QII", data)
            if proto != PROTOCOL_ID or action != 0:
                return
            self.connects += 1
            if self.drop_connects:
                self.drop_connects -= 1
                return
            self._reply(addr, 0, tid, struct.pack(">Q", self.conn_id))
        elif len(data) >= 98:
            conn_id, action, tid = struct.unpack_from(">QII", data)
            if action != 1:
                return
            self.announce_packets.append(data)
            if self.drop_announces:
                self.drop_announces -= 1
                return
            if conn_id != self.conn_id:
                self._reply(addr, 3, tid, b"Connection ID missmatch.\0")
            elif self.error is not None:
                self._reply(addr, 3, tid, self.error.encode())
            elif self.raw_announce_reply is not None:
                self._reply(addr, 1, tid, self.raw_announce_reply)
            else:
                header = struct.pack(">iii", self.interval, self.leechers, self.seeders)
                self._reply(addr, 1, tid, header + self.peers)


@pytest.fixture
def fake() -> Iterator[FakeUDPTracker]:
    tracker = FakeUDPTracker()
    yield tracker
    tracker.close()


def unpack_announce(packet: bytes) -> dict:
    names = ("conn_id", "action", "tid", "info_hash", "peer_id", "downloaded", "left", "uploaded",
             "event", "ip", "key", "numwant", "port")
    fields = dict(zip(names, struct.unpack_from(">QII20s20sQQQIIIiH", packet)))
    fields["options"] = packet[98:]
    return fields


def test_announce_fields_and_reply(fake: FakeUDPTracker) -> None:
    resp = UDPTracker(fake.url + "/announce?pk=1").announce(
        request(uploaded=11, downloaded=22, left=33, event="started", numwant=7, key=0xCAFEBABE)
    )
    assert resp.peers == [("10.0.0.1", 6881), ("10.0.0.2", 6882)]
    assert (resp.interval, resp.incomplete, resp.complete) == (1800, 4, 2)
    assert resp.min_interval is None and resp.tracker_id is None
    assert resp.url == fake.url + "/announce?pk=1"
    sent = unpack_announce(fake.announce_packets[0])
    assert sent["conn_id"] == fake.conn_id
    assert (sent["info_hash"], sent["peer_id"], sent["port"]) == (INFO_HASH, PEER_ID, 6881)
    assert (sent["downloaded"], sent["left"], sent["uploaded"]) == (22, 33, 11)
    assert (sent["event"], sent["ip"], sent["key"], sent["numwant"]) == (2, 0, 0xCAFEBABE, 7)
    path = b"/announce?pk=1"
    assert sent["options"] == bytes((2, len(path))) + path  # BEP 41 URLData


def test_event_codes_and_no_url_data_without_path(fake: FakeUDPTracker) -> None:
    tracker = UDPTracker(fake.url)
    for event in ("", "completed", "started", "stopped"):
        tracker.announce(request(event=event))
    sent = [unpack_announce(p) for p in fake.announce_packets]
    assert [s["event"] for s in sent] == [0, 1, 2, 3]
    assert all(s["options"] == b"" for s in sent)


def test_error_action_raises_with_message(fake: FakeUDPTracker) -> None:
    fake.error = "torrent not registered"
    with pytest.raises(TrackerError, match="torrent not registered") as info:
        UDPTracker(fake.url).announce(request(), timeout=5)
    assert fake.url in str(info.value)


def test_wrong_transaction_id_is_ignored(fake: FakeUDPTracker) -> None:
    fake.wrong_tid_first = True
    resp = UDPTracker(fake.url, base_timeout=5).announce(request(), timeout=5)
    assert resp.interval == 1800
    assert fake.connects == 1 and len(fake.announce_packets) == 1  # answered without retransmitting


def test_datagram_from_another_address_is_ignored(fake: FakeUDPTracker) -> None:
    fake.spoof_first = True
    resp = UDPTracker(fake.url, base_timeout=5).announce(request(), timeout=5)
    assert resp.peers[0] == ("10.0.0.1", 6881)
    assert fake.connects == 1


def test_retransmits_after_dropped_announce(fake: FakeUDPTracker) -> None:
    fake.drop_announces = 1
    resp = UDPTracker(fake.url, base_timeout=0.2, max_retries=2).announce(request(), timeout=10)
    assert resp.interval == 1800
    assert len(fake.announce_packets) == 2
    assert fake.announce_packets[0] == fake.announce_packets[1]  # same transaction id


def test_retransmits_after_dropped_connect(fake: FakeUDPTracker) -> None:
    fake.drop_connects = 2
    resp = UDPTracker(fake.url, base_timeout=0.1, max_retries=2).announce(request(), timeout=10)
    assert resp.interval == 1800
    assert fake.connects == 3


def test_gives_up_after_max_retries(fake: FakeUDPTracker) -> None:
    fake.drop_announces = 100
    with pytest.raises(TrackerError, match="no announce reply") as info:
        UDPTracker(fake.url, base_timeout=0.05, max_retries=1).announce(request(), timeout=10)
    assert "2 attempts" in str(info.value)
    assert len(fake.announce_packets) == 2


def test_overall_timeout_caps_the_exchange(fake: FakeUDPTracker) -> None:
    fake.drop_connects = 100
    with pytest.raises(TrackerError, match="no connect reply"):
        UDPTracker(fake.url, base_timeout=15, max_retries=8).announce(request(), timeout=0.3)
    assert fake.connects == 1


def test_connection_id_reused_within_60_seconds(fake: FakeUDPTracker) -> None:
    now = [1000.0]
    tracker = UDPTracker(fake.url, clock=lambda: now[0])
    assert tracker.connection_id is None
    tracker.announce(request(event="started"))
    assert tracker.connection_id == fake.conn_id
    now[0] += 59
    tracker.announce(request())
    assert fake.connects == 1
    now[0] += 2  # 61 s after the connect: the id has expired
    tracker.announce(request())
    assert fake.connects == 2
    assert len(fake.announce_packets) == 3


def test_rejected_cached_connection_id_reconnects_once(fake: FakeUDPTracker) -> None:
    tracker = UDPTracker(fake.url)
    tracker.announce(request())
    fake.conn_id = 0xDEADBEEF  # the tracker restarted
    resp = tracker.announce(request())
    assert resp.interval == 1800
    assert fake.connects == 2


def test_truncated_peer_list_is_garbage(fake: FakeUDPTracker) -> None:
    fake.raw_announce_reply = struct.pack(">iii", 60, 1, 1) + b"\x7f\x00\x00\x01\x1a"
    with pytest.raises(TrackerError, match="multiple of 6"):
        UDPTracker(fake.url).announce(request(), timeout=5)


def test_short_announce_reply_is_garbage(fake: FakeUDPTracker) -> None:
    fake.raw_announce_reply = b""  # what opentracker sends for a hash it does not serve
    with pytest.raises(TrackerError, match="too short"):
        UDPTracker(fake.url).announce(request(), timeout=5)


def test_invalid_interval_is_garbage(fake: FakeUDPTracker) -> None:
    fake.interval = 0
    with pytest.raises(TrackerError, match="interval"):
        UDPTracker(fake.url).announce(request(), timeout=5)


def test_port_zero_and_duplicates_dropped(fake: FakeUDPTracker) -> None:
    fake.peers = compact(("10.0.0.9", 1), ("10.0.0.9", 1), ("10.0.0.8", 0))
    assert UDPTracker(fake.url).announce(request(), timeout=5).peers == [("10.0.0.9", 1)]


def test_closed_port_fails_fast() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TrackerError) as info:
        UDPTracker(f"udp://127.0.0.1:{port}", base_timeout=0.2, max_retries=1).announce(request(), timeout=2)
    assert f"127.0.0.1:{port}" in str(info.value)


def test_ipv6_tracker_uses_18_byte_peers() -> None:
    try:
        tracker = FakeUDPTracker("::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        tracker.peers = socket.inet_pton(socket.AF_INET6, "2001:db8::7") + struct.pack(">H", 7000)
        resp = UDPTracker(tracker.url).announce(request(), timeout=5)
        assert resp.peers == [("2001:db8::7", 7000)]
    finally:
        tracker.close()


def test_bad_urls() -> None:
    for url in ("udp://tracker.example", "udp://:6969", "http://x:1/announce", "udp://x:99999"):
        with pytest.raises(TrackerError):
            UDPTracker(url)


def test_module_announce_uses_shared_client(fake: FakeUDPTracker) -> None:
    client = tracker_for_url(fake.url)
    assert isinstance(client, UDPTracker)
    announce(fake.url, request())
    announce(fake.url, request())
    assert fake.connects == 1
