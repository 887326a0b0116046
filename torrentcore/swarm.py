"""The connected peers of one torrent: admitting them, dialling new ones, and what they share.

:class:`Swarm` owns the torrent's peer connections (one greenlet each, in a pool bounded by the
torrent's ``max_peers``) and, through :class:`ConnectionSlots`, a share of the session's global cap. It
admits a handshaken connection (not ourselves, not banned, not a duplicate, room left), runs its
:class:`~torrentcore.peer.peer.Peer` to the end, and cleans up after it. Its connect loop dials
candidates from the :class:`~torrentcore.peer_list.PeerList` while there is room. Both incoming
connections (routed here by the session's listener) and outgoing ones end in :meth:`Swarm.run_peer`.

Incoming and outgoing peers are counted apart: each direction may hold all of ``max_peers`` but the other's
reserved share (:func:`torrentcore.slots.direction_limit`), so strangers connecting to us never stop us from
dialling. When the torrent is full, a newcomer takes the place of the least useful peer (no data either way,
not interested, choking us: :func:`torrentcore.slots.least_useful`); else it is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import gevent
import gevent.event
import gevent.pool
import structlog

from .errors import ProtocolError
from .peer import handshake
from .peer import messages as msg
from .peer.connection import format_address
from .peer.peer import Peer
from .slots import DIAL_DEADLINE, ConnectionSlots, Slot, direction_limit, least_useful

if TYPE_CHECKING:  # pragma: no cover
    from .events import Reporter
    from .peer.extensions import ExtensionRegistry
    from .peer.ports import TorrentPort
    from .peer_list import Candidate, PeerList

log = structlog.get_logger(__name__)

Address = tuple[str, int]

#: Seconds between connect rounds when nothing wakes the loop earlier.
CONNECT_INTERVAL = 1.0
#: Seconds without any peer, while candidates were tried, before saying that every peer hangs up on us.
ALL_CLOSED_WARNING = 60.0
#: ...and how many handshakes must have been closed by the peer by then.
ALL_CLOSED_MIN = 3


class Swarm:
    """Peer connections of one torrent (see the module docstring)."""

    def __init__(self, port: TorrentPort, peer_list: PeerList, identity: handshake.Identity, max_peers: int,
                 slots: ConnectionSlots, reporter: Reporter, complete: Callable[[], bool],
                 may_connect: Callable[[], bool], name: str = "",
                 dial: Callable[..., handshake.Handshaken] | None = None, encryption: str = "prefer") -> None:
        self.port = port
        self.peers: dict[Address, Peer] = port.peers  # type: ignore[assignment]
        self.peer_list = peer_list
        self.identity = identity
        #: Another identity to dial with while ``use_alt()`` says so: a hybrid that needs piece layers dials
        #: with its v2 hash (see :class:`~torrentcore.torrent.Torrent`); a peer that failed such a dial after
        #: answering it (a v1-only client) is dialled with ``identity`` from then on.
        self.alt_identity: handshake.Identity | None = None
        self.use_alt: Callable[[], bool] = lambda: False
        self._alt_refused: set[Address] = set()
        self.max_peers = max(1, max_peers)
        self.pool = gevent.pool.Pool(self.max_peers)
        self.slots = slots
        self.reporter = reporter
        self._complete = complete
        self._may_connect = may_connect
        self._dial_fn = dial or handshake.dial
        self.encryption = encryption
        self.extensions: ExtensionRegistry | None = None
        self.connect_now = gevent.event.Event()
        #: Seconds the connect loop sleeps when nothing wakes it; None: only ``connect_now`` wakes it (the
        #: torrent's tick sets it while there are candidates: no timer per torrent).
        self.connect_interval: float | None = CONNECT_INTERVAL
        self.log = log.bind(torrent=name)
        self.closed_by_peer = 0  # handshakes the peer closed at once (encryption/uTP-only peers do that)
        self.ever_connected = False
        self.on_peer_lost: Callable[[Peer], None] = lambda peer: None
        self._since: dict[Address, float] = {}  # when each peer connected (eviction grace)
        self._slot_of: dict[Address, Slot] = {}
        #: Peers closed to make room for newcomers.
        self.evicted = 0
        #: Connected peers that were not seeds when listed (broadcast_have); None: list them again.
        self._leechers: list[Peer] | None = None

    # --- the view the choker and PEX get ------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """Every wanted piece is verified (we seed)."""
        return self._complete()

    @property
    def candidates(self) -> dict:
        """Addresses we may dial (the peer list's), by address."""
        return self.peer_list.candidates

    def add_peers(self, addresses: Iterable[Address], source: str = "tracker") -> int:
        """Learn addresses to dial."""
        return self.peer_list.add(addresses, source)

    # --- peers together ------------------------------------------------------------------------------

    def wake_requesters(self) -> None:
        """Blocks became free: let idle peers that may request take them."""
        for peer in list(self.peers.values()):
            if peer.may_request and len(peer.outstanding) < 4:
                peer.fill_requests()

    def broadcast_have(self, index: int) -> None:
        """Tell every peer that is not a seed about a new piece (a seed requests nothing; libtorrent agrees:
        on loopback one small send per piece and seed was the event loop's largest cost, 28%, py-spy). The peers that
        are not seeds are listed once, not looked up among all peers per piece (50 seeds: 50 tests per piece)."""
        leechers = self._leechers
        if leechers is None:
            leechers = self._leechers = [p for p in self.peers.values() if not p.has.complete]
        for peer in leechers:
            if peer.has.complete:
                self._leechers = None  # it became a seed: left out from the next piece on
            else:
                peer.send_have(index)

    def drop_seeds(self) -> None:
        """We completed: hang up on the seeds (both sides are seeds), remembering them."""
        for peer in list(self.peers.values()):
            if peer.has.complete:
                self.peer_list.mark_seed(peer.address)
                peer.conn.close("both sides are seeds")

    def ban(self, address: Address, reason: str) -> None:
        """Never talk to this peer again; close its connection if it has one."""
        peer = self.peers.get(address)
        if not self.peer_list.ban(address, peer.peer_id if peer else None, peer.listen_port if peer else None):
            return
        self.log.warning("peer banned", peer=format_address(address), reason=reason)
        if peer is not None:
            peer.conn.close(f"banned: {reason}")

    def close_all(self, reason: str) -> None:
        """Close every connection (their greenlets then end)."""
        for peer in list(self.peers.values()):
            peer.conn.close(reason)

    def stop(self) -> None:
        """Close every connection and wait (bounded) for their greenlets."""
        self.close_all("shutting down")
        self.pool.kill(block=True, timeout=2)

    # --- dialling ------------------------------------------------------------------------------------

    def connect_loop(self) -> None:
        """Dial candidates while there is room (until killed)."""
        while True:
            self.connect_now.wait(self.connect_interval)
            self.connect_now.clear()
            if not self._may_connect():
                continue
            # Outgoing peers and dials in progress against the outgoing share (full torrents evict at admission).
            room = min(direction_limit(self.max_peers) - self.peer_list.dialing(), self.slots.dial_room,
                       self.pool.free_count())
            if room <= 0 or not self.slots.room(incoming=False):
                continue
            for cand in self.peer_list.ready(room, self._connected_to, we_are_seed=self.complete,
                                             ip_room=self.slots.room_to):
                if not self.slots.open_to(cand.address[0]):  # (ready kept within it: never, unless raced)
                    self.peer_list.released(cand)
                    continue
                if not self.slots.start_dial():
                    self.slots.closed_to(cand.address[0])
                    self.peer_list.released(cand)
                    break
                self._spawn_dial(cand)

    def _spawn_dial(self, cand: Candidate) -> None:
        """Run :meth:`_dial` in the pool. What the connect loop counted for it before (a dial slot, the per-IP
        count, the candidate marked as dialled) ``_dial`` gives back once it runs; a greenlet killed before its
        first run (the torrent stopping, the session closing) never runs it, so its link gives them back."""
        ran: list[bool] = []

        def run() -> None:
            ran.append(True)
            self._dial(cand)

        self.pool.spawn(run).link(lambda _g: ran or self._dial_never_ran(cand))

    def _dial_never_ran(self, cand: Candidate) -> None:
        self.slots.dial_done()
        self.slots.closed_to(cand.address[0])
        self.peer_list.released(cand)

    def _connected_to(self, address: Address) -> bool:
        return address in self.peers

    def _dial(self, cand: Candidate) -> None:
        """Dial a candidate and run it as a peer; its per-IP count (``slots.open_to``) ends with it."""
        try:
            try:
                with gevent.Timeout(DIAL_DEADLINE, ProtocolError("dial took too long")):
                    alt = self.alt_identity
                    if alt is not None and (cand.address in self._alt_refused or not self.use_alt()):
                        alt = None
                    done = self._dial_fn(cand.address, alt or self.identity, encryption=self.encryption,
                                         peer_encryption=cand.encryption, peer_utp=cand.utp)
            except (ProtocolError, OSError, ConnectionError) as exc:
                if alt is not None and not isinstance(exc, ConnectionRefusedError):
                    self._alt_refused.add(cand.address)
                if "closed" in str(exc) or isinstance(exc, ConnectionResetError):
                    self.closed_by_peer += 1
                self.peer_list.failed(cand)
                self.log.debug("dial failed", peer=format_address(cand.address), reason=str(exc))
                return
            except gevent.GreenletExit:  # killed while dialling (the torrent paused): dialled again on resume
                self.peer_list.released(cand)
                raise
            finally:
                self.slots.dial_done()
            cand.encryption = done.obfuscated  # prefer: next time try first what worked
            self.run_peer(done, incoming=False, cand=cand)
        finally:
            self.slots.closed_to(cand.address[0])

    # --- one connection ------------------------------------------------------------------------------

    def _count(self, incoming: bool) -> int:
        return sum(1 for p in self.peers.values() if p.incoming == incoming)

    def _make_room(self, incoming: bool) -> bool:
        """Whether a peer of this direction fits, closing the least useful one to make room if need be.

        Each direction is capped at :func:`direction_limit`, so while the torrent is full a newcomer's
        direction holds at least its reserve, and only peers of no use make way (of its own direction when
        that is at its cap)."""
        own_cap = self._count(incoming) >= direction_limit(self.max_peers)
        if not own_cap and len(self.peers) < self.max_peers:
            return True
        now = time.monotonic()
        pool = [p for p in self.peers.values() if p.incoming == incoming] if own_cap else list(self.peers.values())
        victim = least_useful(pool, now, lambda p: self._since.get(p.address, now))
        if victim is None:
            return False
        self._evict(victim)
        return True

    def _evict(self, victim: Peer) -> None:
        self.evicted += 1
        self.log.debug("peer evicted for a newcomer", peer=format_address(victim.address))
        victim.conn.close("evicted for a more useful peer")
        # Its place is taken now: the greenlet ends later, and its slot is given back at once.
        self.peers.pop(victim.address, None)
        self._leechers = None
        slot = self._slot_of.pop(victim.address, None)
        if slot is not None:
            slot.release()

    def _take_slot(self, incoming: bool) -> Slot | None:
        """A session slot of this direction; when the session is full, one of our useless peers makes way."""
        slot = self.slots.acquire(incoming)
        if slot is None:
            victim = least_useful([p for p in self.peers.values() if p.incoming == incoming], None,
                                  lambda p: self._since.get(p.address, time.monotonic()))
            if victim is not None and victim.address in self._slot_of:
                self._evict(victim)
                slot = self.slots.acquire(incoming)
        return slot

    def _admit(self, done: handshake.Handshaken, cand: Candidate | None, incoming: bool) -> str | Slot:
        """The slot this connection takes, or why it is refused."""
        addr, peer_id = done.conn.address, done.peer_id
        if peer_id == self.identity.peer_id:
            self.peer_list.found_self(addr)
            return "connected to ourselves"
        if self.peer_list.is_banned(addr, peer_id):
            return "banned"
        if addr in self.peers or any(p.peer_id == peer_id for p in self.peers.values()):
            if cand is not None:
                self.peer_list.released(cand)
            return "already connected"
        if not self._make_room(incoming):
            return "too many peers"
        slot = self._take_slot(incoming)
        if slot is None:
            return "too many peers in the session"
        return slot

    def run_peer(self, done: handshake.Handshaken, incoming: bool, cand: Candidate | None = None) -> None:
        """Run a handshaken connection as a peer of this torrent until it ends (in the calling greenlet)."""
        slot = self._admit(done, cand, incoming)
        if isinstance(slot, str):
            if cand is not None and slot.startswith("too many"):
                self.peer_list.released(cand)
            done.conn.close(slot)
            return
        conn = done.conn
        addr = conn.address
        reserved = done.reserved
        if self.port.meta.hybrid:
            # A hybrid asks for piece layers (BEP 52 hash requests) only on a connection made with its v2 hash:
            # on a v1 one, libtorrent takes them only from a peer that opened it in plaintext with the v2 bit,
            # and hangs up on any other ("invalid message", measured with MSE and with incoming connections).
            v2, bit = done.info_hash != self.identity.info_hash, msg.reserved_bytes(msg.RESERVED_V2)
            reserved = bytes((a | b) if v2 else (a & ~b) for a, b in zip(reserved, bit))
        peer = Peer(self.port, conn, done.peer_id, reserved, incoming,
                    source=cand.source if cand is not None else "incoming", extensions=self.extensions,
                    encrypted=done.encrypted)
        self.peers[addr] = peer
        self._leechers = None
        self._since[addr] = time.monotonic()
        self._slot_of[addr] = slot
        self.ever_connected = True
        if cand is not None:
            self.peer_list.succeeded(cand)
        self.log.info("peer connected", peer=format_address(addr), source=peer.source, client=peer.client,
                      incoming=incoming, fast=peer.fast, encrypted=done.encrypted, obfuscated=done.obfuscated,
                      transport=done.transport)
        self.reporter.emit("peer_connected", peer=peer.info())
        reason = "closed"
        try:
            reason = peer.run()
        except Exception as exc:  # noqa: BLE001 - a bug must cost one connection, not the download
            self.log.debug("internal error in peer loop", exc_info=True)
            self.log.warning("internal error in peer loop", error=repr(exc))
            reason = f"internal error: {exc!r}"
        finally:
            conn.close(reason)
            slot.release()
            self._peer_gone(peer, reason, cand)

    def _peer_gone(self, peer: Peer, reason: str, cand: Candidate | None) -> None:
        if self.peers.get(peer.address) is peer:
            self.peers.pop(peer.address, None)
            self._leechers = None
            self._since.pop(peer.address, None)
            self._slot_of.pop(peer.address, None)
        peer.requests.drop(send_cancel=False)
        self.port.manager.remove_peer_pieces(peer.has)
        if peer.has.complete:
            self.peer_list.mark_seed(peer.address)
        self.on_peer_lost(peer)
        if peer.incoming and peer.misbehaved:  # its reconnects are held back (torrentcore.reconnect_throttle)
            self.slots.reconnects.dropped(peer.address[0], peer.peer_id)
        if cand is not None:
            self.peer_list.failed(cand, max_exponent=5)
        elif peer.incoming and peer.listen_port and peer.address[0]:
            # Remember an incoming peer's listening address so we can dial it back later.
            back_address = (peer.address[0], peer.listen_port)
            self.peer_list.add([back_address], source="incoming")
            self.peer_list.mark_seed(back_address, peer.has.complete)
            back = self.peer_list.candidates.get(back_address)
            if back is not None and back.encryption is None:
                back.encryption = peer.encryption_hint
        self.log.debug("peer lost", peer=format_address(peer.address), reason=reason)
        self.reporter.emit("peer_lost", peer=peer.info(), reason=reason)
        self.wake_requesters()
        self.connect_now.set()

    def everyone_hangs_up(self, since: float, now: float | None = None) -> bool:
        """Whether, for :data:`ALL_CLOSED_WARNING` seconds since ``since``, no peer stayed and several closed
        the connection right after our handshake (the sign of encryption-only or uTP-only peers)."""
        now = time.monotonic() if now is None else now
        return (not self.ever_connected and self.closed_by_peer >= ALL_CLOSED_MIN
                and now - since >= ALL_CLOSED_WARNING)




__all__ = ["Swarm", "ConnectionSlots"]
