"""A v2 torrent's piece layers on the wire (BEP 52 hash request 21, hashes 22, hash reject 23).

A .torrent carries ``piece layers``; a magnet link (``xt=urn:btmh:``) gives only the info dictionary,
whose ``pieces root`` per file is all that is known. :class:`PieceLayers` both

* **serves** the layers it knows: a request for ``count`` hashes of a file's piece layer from ``index``
  is answered with them and the *uncle* hashes (siblings of the subtree's ancestors, lowest first) that
  let the asker climb to the file's root, as libtorrent asks (``proof layers``: layers above the base);
  a request for the *block* layer (base 0: the 16 KiB leaves, which libtorrent asks for a piece that
  failed its check, to find the bad block) is answered from the data on disk, for a range within one
  piece we have (see :meth:`PieceLayers.answer`); anything else (unknown roots, misaligned ranges,
  pieces we lack) gets a hash reject; and
* **fetches** the missing ones: chunks of at most :data:`CHUNK` piece hashes (libtorrent's 512), each
  checked against the file's root with its proof before it is kept. A wrong proof is the peer's fault
  (the caller drops it); a file's layer is added to the :class:`~torrentcore.metainfo.Metainfo` once
  every chunk arrived, so its pieces can then be checked.

A v2-only download does not wait for every layer: a file's pieces may be requested (:meth:`PieceLayers.ready`,
:meth:`PieceLayers.requestable`) as soon as its own layer is known (at once for files of at most one piece,
whose pieces root is their hash). When a layer arrives, :attr:`PieceLayers.on_file_layer` is told (the torrent
then checks what was held unverified: :mod:`torrentcore.layer_recheck`), and the file becomes ready only when
that check calls :meth:`PieceLayers.file_ready`.

Layers are numbered from the leaves (16 KiB blocks) as in BEP 52: the piece layer is
``log2(piece length / 16 KiB)``.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import merkle
from .bitfield import Bitfield

if TYPE_CHECKING:  # pragma: no cover
    from .metainfo import FileEntry, Metainfo

#: Piece hashes asked for in one request (libtorrent asks 512 and serves at most 8192).
CHUNK = 512
#: Most hashes we answer in one reply (libtorrent's ``validate_hash_request`` bound).
MAX_SERVED = 8192
#: Seconds before a chunk asked of a peer that did not answer may be asked of another.
REQUEST_TIMEOUT = 5.0
#: Seconds after which a chunk still unanswered may be asked of one more peer (each such period, one more,
#: within REQUEST_TIMEOUT: at most 5 asks in all): a peer that sits on hash requests, or left, must not hold
#: them while a seed that joined could answer (libtorrent here answers in milliseconds; a chunk is at most
#: 16 KiB of hashes, so a second ask costs little).
SECOND_ASK_AFTER = 1.0
_HEADER = struct.Struct(">32sIIII")
HEADER_SIZE = _HEADER.size  # 48


@dataclass(frozen=True)
class HashRequest:
    """The common header of the three messages."""

    root: bytes
    base: int
    index: int
    count: int
    proof_layers: int

    def pack(self) -> bytes:
        """The 48 bytes on the wire."""
        return _HEADER.pack(self.root, self.base, self.index, self.count, self.proof_layers)

    @classmethod
    def unpack(cls, payload: bytes) -> HashRequest:
        """Parse the header (``payload`` at least 48 bytes; raises ValueError otherwise)."""
        if len(payload) < HEADER_SIZE:
            raise ValueError(f"hash message of {len(payload)} bytes is shorter than its 48-byte header")
        return cls(*_HEADER.unpack_from(payload))


@dataclass
class _Missing:
    """A file whose piece layer is being fetched."""

    entry: FileEntry
    pieces: int
    layers: int  # layers above the piece layer up to the root
    hashes: list[bytes | None]
    asked: dict[int, float] = field(default_factory=dict)  # chunk start -> when
    askers: dict[int, list[object]] = field(default_factory=dict)  # chunk start -> who was asked since then
    last_ask: dict[int, float] = field(default_factory=dict)  # chunk start -> when it was last asked of a peer


class PieceLayers:
    """Serving and fetching the piece layers of one v2 (or hybrid) torrent (see the module docstring)."""

    def __init__(self, meta: Metainfo) -> None:
        self.meta = meta
        self.piece_layer = (meta.piece_length // merkle.BLOCK).bit_length() - 1
        self._pad = merkle.pad_hash(self.piece_layer)
        self._files = {f.root: f for f in meta.files if f.root and f.length > meta.piece_length}
        self._all_files = {f.root: f for f in meta.files if f.root}
        self._trees: dict[bytes, list[list[bytes]]] = {}
        self._missing: dict[bytes, _Missing] = {}
        for f in meta.missing_layers():
            pieces = -(-f.length // meta.piece_length)
            width = merkle.next_pow2(pieces)
            self._missing[f.root] = _Missing(f, pieces, width.bit_length() - 1, [None] * pieces)
        #: Files whose pieces cannot be checked yet: layer missing, or arrived and its held pieces being checked.
        self._unready: dict[bytes, FileEntry] = {root: m.entry for root, m in self._missing.items()}
        self._ready_bits: Bitfield | None = None  # pieces of ready files (cached; rebuilt when one gets ready)
        #: Told of each file whose layer just arrived (fetched and proved); it calls :meth:`file_ready` when
        #: the pieces held unverified are checked. None: a file is ready as soon as its layer arrives.
        self.on_file_layer: Callable[[FileEntry], None] | None = None
        #: Greet new peers without the pieces not checked with their Merkle hash (:meth:`advertised`): set while
        #: a download complete on SHA-1 waits for its layers (torrentcore.layer_recheck), cleared if it gives up.
        self.withhold = False

    @property
    def complete(self) -> bool:
        """Every piece layer is known."""
        return not self._missing

    @property
    def blocking(self) -> bool:
        """Some pieces cannot be checked yet: a v2-only torrent misses a layer (a hybrid checks SHA-1 meanwhile).
        Only the :meth:`requestable` pieces may then be asked for."""
        return bool(self._unready) and self.meta.v2_only

    def file_pieces(self, f: FileEntry) -> range:
        """The pieces of file ``f`` (v2 files start on a piece boundary)."""
        plen = self.meta.piece_length
        return range(f.offset // plen, (f.offset + f.length - 1) // plen + 1)

    def ready(self, index: int) -> bool:
        """Piece ``index`` can be checked now (its file's layer is known, or it needs none, or a hybrid's SHA-1)."""
        if not self.blocking:
            return True
        return self._ready()[index]

    def _ready(self) -> Bitfield:
        bits = self._ready_bits
        if bits is None:
            bits = Bitfield.full(self.meta.num_pieces)
            for f in self._unready.values():
                for i in self.file_pieces(f):
                    bits.clear(i)
            self._ready_bits = bits
        return bits

    def requestable(self, has: Bitfield) -> Bitfield:
        """The pieces of ``has`` that are :meth:`ready` (a new bitfield; ``has`` itself when all are)."""
        if not self.blocking:
            return has
        n = len(has.to_bytes())
        mask = int.from_bytes(has.to_bytes(), "big") & int.from_bytes(self._ready().to_bytes(), "big")
        return Bitfield(has.size, mask.to_bytes(n, "big"))

    def advertised(self, have: Bitfield) -> Bitfield:
        """What we tell a new peer we have: while :attr:`withhold`, ``have`` less a hybrid's pieces not checked
        with their Merkle hash yet (their file's layer missing or being checked); otherwise ``have`` itself.

        A hybrid complete on SHA-1 that waits for its layers would otherwise greet as a seed, and a libtorrent
        seed closes a connection between two seeds at once (``upload_upload_connection``): the layers it could
        give would never come (measured: it reconnected every 3 s and was dropped every time)."""
        if not self.withhold or not self._unready or not have.count:
            return have
        n = len(have.to_bytes())
        mask = int.from_bytes(have.to_bytes(), "big") & int.from_bytes(self._ready().to_bytes(), "big")
        return Bitfield(have.size, mask.to_bytes(n, "big"))

    def file_ready(self, root: bytes) -> None:
        """The pieces of a file whose layer arrived were checked: they may be requested from now on."""
        if self._unready.pop(root, None) is not None:
            self._ready_bits = None

    # --- serving ---------------------------------------------------------------------------------

    def _tree(self, root: bytes) -> list[list[bytes]] | None:
        """The layers from the piece layer (padded) up to the root, for a file whose layer we know."""
        tree = self._trees.get(root)
        if tree is None:
            layer = self.meta.piece_layers.get(root)
            if layer is None:
                return None
            nodes = merkle.split(layer)
            nodes += [self._pad] * (merkle.next_pow2(len(nodes)) - len(nodes))
            tree = [nodes]
            while len(nodes) > 1:
                nodes = [merkle.sha256(nodes[i] + nodes[i + 1]) for i in range(0, len(nodes), 2)]
                tree.append(nodes)
            self._trees[root] = tree
        return tree

    def answer(self, req: HashRequest, read_piece: Callable[[int], bytes | None] | None = None) -> list[bytes] | None:
        """The hashes (base then uncles) answering ``req``, or None for a hash reject.

        ``read_piece(index)``: the bytes of a piece we have (None if we do not); needed for block-layer
        requests only (without it they are rejected).
        """
        if req.base == 0 and req.base != self.piece_layer:
            return None if read_piece is None else self._answer_blocks(req, read_piece)
        tree = self._tree(req.root)
        if tree is None or req.base != self.piece_layer:
            return None
        width = len(tree[0])
        span = merkle.next_pow2(req.count)
        # As libtorrent's validate_hash_request: the range inside the layer, the proof below the root.
        if (not 2 <= req.count <= MAX_SERVED or req.index % span or req.index + req.count > width
                or req.proof_layers >= len(tree) - 1):
            return None
        out = list(tree[0][req.index : req.index + req.count])
        below = span.bit_length() - 2  # layers above the base that the base hashes give, less one
        idx = req.index
        for i in range(req.proof_layers):
            idx >>= 1  # the ancestor at layer i + 1 above the base
            if i >= below:
                out.append(tree[i + 1][idx ^ 1])
        return out

    def _answer_blocks(self, req: HashRequest, read_piece: Callable[[int], bytes | None]) -> list[bytes] | None:
        """A block-layer request: leaf hashes of at most one piece, computed from its data, with the uncles.

        Bounds as for the piece layer (``count`` from 2 to one piece's blocks, aligned to its power of two,
        inside the file, ``proof layers`` below the root); the piece must be one we have. Uncles below the
        piece layer come from the piece's own blocks, those above from the file's piece-layer tree.
        """
        f = self._all_files.get(req.root)
        if f is None:
            return None
        plen = self.meta.piece_length
        per_piece = plen // merkle.BLOCK
        nblocks = -(-f.length // merkle.BLOCK)
        large = f.length > plen
        tree = self._tree(req.root) if large else None
        if large and tree is None:
            return None  # its piece layer is not known: the uncles above the piece cannot be given
        width = len(tree[0]) * per_piece if tree is not None else merkle.next_pow2(nblocks)
        region = per_piece if large else width  # the leaves one read gives: a piece, or a small file
        span = merkle.next_pow2(req.count)
        levels = width.bit_length() - 1
        if (not 2 <= req.count <= region or req.index % span or req.index >= nblocks
                or req.index + req.count > width or req.proof_layers >= levels):
            return None
        k = req.index // region  # the piece within the file
        data = read_piece(f.offset // plen + k)
        if data is None:
            return None
        n = min(plen, f.length - k * plen)
        leaves = merkle.block_hashes(memoryview(data)[:n])
        leaves += [merkle.ZERO] * (region - len(leaves))
        local = [leaves]  # the region's layers, from the leaves up to its root
        while len(local[-1]) > 1:
            nodes = local[-1]
            local.append([merkle.sha256(nodes[i] + nodes[i + 1]) for i in range(0, len(nodes), 2)])
        start = req.index - k * region
        out = leaves[start : start + req.count]
        below = span.bit_length() - 2
        idx = req.index
        region_levels = region.bit_length() - 1
        for i in range(req.proof_layers):
            idx >>= 1  # the ancestor at layer i + 1 above the leaves
            if i < below:
                continue
            level = i + 1
            if level < region_levels:
                out.append(local[level][(idx ^ 1) - ((k * region) >> level)])
            else:
                assert tree is not None  # a small file's region is its whole tree: proof_layers < levels
                out.append(tree[level - self.piece_layer][idx ^ 1])
        return out

    # --- fetching --------------------------------------------------------------------------------

    def next_request(self, now: float | None = None, asker: object = None) -> HashRequest | None:
        """A chunk of a missing layer to ask for (not asked within :data:`REQUEST_TIMEOUT`), or None.

        ``asker`` (its :class:`~torrentcore.peer.hash_exchange.HashExchange`) may also get a chunk another peer
        was asked over :data:`SECOND_ASK_AFTER` ago and has not answered."""
        now = time.monotonic() if now is None else now
        for root, m in self._missing.items():
            for start in range(0, m.pieces, CHUNK):
                if m.hashes[start] is not None:
                    continue
                if now - m.asked.get(start, -1e9) < REQUEST_TIMEOUT:
                    whom = m.askers.get(start, [])
                    if asker is None or asker in whom or now - m.last_ask.get(start, now) < SECOND_ASK_AFTER:
                        continue
                    whom.append(asker)  # those asked are slow (or gone): one more may answer first
                else:
                    m.asked[start] = now
                    m.askers[start] = [asker]
                m.last_ask[start] = now
                count = min(CHUNK, merkle.next_pow2(m.pieces - start))
                # Proof up to the layer below the root: the asker climbs to the root itself.
                return HashRequest(root, self.piece_layer, start, count, m.layers - 1)
        return None

    def rejected(self, req: HashRequest) -> None:
        """A peer refused ``req``: the chunk may be asked of another peer at once."""
        m = self._missing.get(req.root)
        if m is not None:
            m.asked.pop(req.index, None)
            m.askers.pop(req.index, None)

    def received(self, req: HashRequest, hashes: list[bytes]) -> bool:
        """Check a hashes reply against the file's root; keep it if right. False: a wrong or unasked reply.

        Returns True also for a reply no longer needed (another peer answered first) when it is right.
        """
        m = self._missing.get(req.root)
        if m is None:
            return req.root in self._files  # already complete: nothing to check against but harmless
        if req.base != self.piece_layer or req.index % CHUNK or req.index >= m.pieces:
            return False
        span = merkle.next_pow2(req.count)
        k = span.bit_length() - 1
        uncles = max(0, req.proof_layers - k + 1)
        if span != req.count or len(hashes) != req.count + uncles or req.index % span:
            return False
        if k + uncles != m.layers:
            return False  # not a proof up to the root
        node = merkle.root_of(hashes[: req.count], req.count)
        if merkle.proof_root(node, req.index >> k, hashes[req.count :]) != m.entry.root:
            return False
        real = min(req.count, m.pieces - req.index)
        m.hashes[req.index : req.index + real] = hashes[:real]
        m.asked.pop(req.index, None)
        m.askers.pop(req.index, None)
        if all(h is not None for h in m.hashes):
            layer = b"".join(m.hashes)  # type: ignore[arg-type]
            if merkle.layer_root(merkle.split(layer), self.meta.piece_length) != m.entry.root:
                m.hashes = [None] * m.pieces  # cannot happen after the proofs; start over rather than trust
                return False
            self.meta.piece_layers[req.root] = layer
            del self._missing[req.root]
            if self.on_file_layer is None:
                self.file_ready(req.root)
            else:
                self.on_file_layer(m.entry)
        return True


__all__ = ["PieceLayers", "HashRequest", "CHUNK", "MAX_SERVED", "HEADER_SIZE", "REQUEST_TIMEOUT", "SECOND_ASK_AFTER"]
