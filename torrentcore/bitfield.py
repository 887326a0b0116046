"""A fixed-size bit set in the BitTorrent wire order (piece 0 is the high bit of byte 0)."""

from __future__ import annotations

from collections.abc import Iterator

from .errors import ProtocolError

# Number of set bits for every byte value.
_POPCOUNT = bytes(bin(i).count("1") for i in range(256))


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
            self.count = sum(_POPCOUNT[b] for b in self._bits)

    @classmethod
    def full(cls, size: int) -> Bitfield:
        """A bitfield with every piece set."""
        bf = cls(size)
        for i in range(size):
            bf.set(i)
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
        """Indices of the set bits, ascending."""
        for byte_index, byte in enumerate(self._bits):
            if byte:
                base = byte_index << 3
                for bit in range(8):
                    if byte & (0x80 >> bit):
                        yield base + bit

    def to_bytes(self) -> bytes:
        """The wire form of the bitfield."""
        return bytes(self._bits)

    def __repr__(self) -> str:
        return f"Bitfield({self.count}/{self.size})"
