"""A fixed-size bit set in the BitTorrent wire order (piece 0 is the high bit of byte 0)."""

from __future__ import annotations

from collections.abc import Iterator

from .errors import ProtocolError

# The set bits of every byte value, as offsets 0-7 from the byte's first piece (wire order: high bit first).
_OFFSETS = tuple(tuple(bit for bit in range(8) if value & (0x80 >> bit)) for value in range(256))


def _popcount(data: bytes | bytearray) -> int:
    """Set bits in ``data`` (one C-level pass)."""
    return int.from_bytes(data, "big").bit_count() if data else 0


class Bitfield:
    """Which of ``size`` pieces are present. ``count`` is kept up to date incrementally."""

    __slots__ = ("size", "_bits", "count")

    def __init__(self, size: int, data: bytes | None = None) -> None:
        self.size = size
        nbytes = (size + 7) // 8
        if data is None:
            self._bits = bytearray(nbytes)
            self.count = 0
        else:
            if len(data) != nbytes:
                raise ProtocolError(f"bitfield of {len(data)} bytes for {size} pieces (expected {nbytes})")
            spare = (8 - size % 8) % 8
            if spare and data[-1] & ((1 << spare) - 1):
                raise ProtocolError("bitfield has spare bits set")
            self._bits = bytearray(data)
            self.count = _popcount(self._bits)

    @classmethod
    def full(cls, size: int) -> Bitfield:
        """A bitfield with every piece set (built a byte string at a time, not bit by bit)."""
        bf = cls(size)
        nbytes = len(bf._bits)
        if nbytes:
            bf._bits[:] = b"\xff" * nbytes
            spare = (8 - size % 8) % 8
            bf._bits[-1] = (0xFF << spare) & 0xFF
        bf.count = size
        return bf

    def __getitem__(self, index: int) -> bool:
        return bool(self._bits[index >> 3] & (0x80 >> (index & 7)))

    def __len__(self) -> int:
        return self.size

    def set(self, index: int) -> bool:
        """Set bit ``index``; return True if it was not set before."""
        if not 0 <= index < self.size:
            raise IndexError(index)
        mask = 0x80 >> (index & 7)
        byte = self._bits[index >> 3]
        if byte & mask:
            return False
        self._bits[index >> 3] = byte | mask
        self.count += 1
        return True

    def clear(self, index: int) -> bool:
        """Clear bit ``index``; return True if it was set before."""
        mask = 0x80 >> (index & 7)
        byte = self._bits[index >> 3]
        if not byte & mask:
            return False
        self._bits[index >> 3] = byte & ~mask & 0xFF
        self.count -= 1
        return True

    @property
    def complete(self) -> bool:
        """True when every piece is set."""
        return self.count == self.size

    def indices(self) -> Iterator[int]:
        """Indices of the set bits, ascending (a range when every bit is set)."""
        if self.count == self.size:
            yield from range(self.size)
            return
        if not self.count:
            return
        offsets = _OFFSETS
        for byte_index, byte in enumerate(self._bits):
            if byte:
                base = byte_index << 3
                for bit in offsets[byte]:
                    yield base + bit

    def added_by(self, update: Bitfield) -> list[int]:
        """Indices set in ``update`` (a bitfield of the same size) and not in this one, ascending.

        One C-level pass over the bytes, then a Python step per new index only: a bitfield that repeats what is
        known costs no Python loop over its pieces.
        """
        nbytes = len(self._bits)
        if not nbytes:
            return []
        new = (int.from_bytes(update._bits, "big") & ~int.from_bytes(self._bits, "big")).to_bytes(nbytes, "big")
        offsets = _OFFSETS
        return [(byte_index << 3) + bit for byte_index, byte in enumerate(new) if byte for bit in offsets[byte]]

    def to_bytes(self) -> bytes:
        """The wire form of the bitfield."""
        return bytes(self._bits)

    def __repr__(self) -> str:
        return f"Bitfield({self.count}/{self.size})"
