"""Bencoding (BEP 3) as an adapter over ``bencodepy``.

``bencodepy`` does the actual encoding and decoding; this module supplies what
it lacks and a BitTorrent engine needs:

* ``encode`` always writes dictionary keys in sorted (raw byte) order, as BEP 3
  requires. ``bencodepy.encode`` keeps insertion order.
* ``decode`` first runs a strict, iterative scan of the input that rejects
  leading zeros, ``-0``, integers longer than 64-bit, non-string and duplicate
  dictionary keys, trailing data, truncated input, and inputs larger than
  ``max_size``, nested deeper than ``max_depth`` or made of more than
  ``max_tokens`` values. Only input that passes is handed to ``bencodepy``
  (whose recursive parser accepts all of the above, and would build millions
  of Python objects from a few megabytes of ``le``).
* ``decode_dict_with_spans`` also reports where each top-level value sits in
  the input, so the info-hash is the SHA-1 of the ``info`` bytes exactly as
  they appear in the file, never of a re-encoding.

Every failure is a :class:`~torrentcore.errors.BencodeError`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Union

import bencodepy

from .errors import BencodeError

__all__ = ["BencodeError", "decode", "decode_prefix", "decode_dict_with_spans", "encode", "check_sorted"]

#: Default upper bound for one bencoded document (a .torrent, a tracker reply).
MAX_SIZE = 64 * 1024 * 1024
#: Default upper bound for list/dict nesting. libtorrent uses 100 too.
MAX_DEPTH = 100
#: Default upper bound for the number of values (each key, string, integer, list and dict counts
#: one), which bounds the memory of the decoded result: a Python value costs at most about 140 bytes
#: at the peak of decoding (an empty dict; a list about 80), so at most about 280 MB, enough for
#: 250,000 files in one torrent.
#: libtorrent's ``max_decode_tokens`` is 3,000,000 (8 bytes each); its dump_torrent tool uses 2,000,000.
MAX_TOKENS = 2_000_000
#: Integers are limited to what fits a signed 64-bit value (libtorrent does the same).
_MAX_INT_DIGITS = 19

_DIGITS = b"0123456789"

Bencodable = Union[int, bytes, str, list, tuple, dict]


def _scan(
    data: bytes, start: int, max_depth: int, strict_order: bool, spans: dict | None, max_tokens: int = MAX_TOKENS
) -> int:
    """Validate one bencoded value starting at ``start``; return the index after it.

    Iterative (no recursion), so hostile nesting cannot exhaust the Python stack.
    When ``spans`` is a dict and the value is a dictionary, the byte range of
    each of its direct values is recorded as ``spans[key] = (begin, end)``.
    """
    n = len(data)
    # Each stack frame: [kind, last_key, keys_seen, pending_key_for_span, value_start]
    stack: list[list] = []
    i = start
    tokens = 0
    while True:
        if i >= n:
            raise BencodeError(f"truncated bencoding at byte {i}")
        c = data[i]
        if c != 0x65:  # anything but 'e' starts a value (or a key)
            tokens += 1
            if tokens > max_tokens:
                raise BencodeError(f"bencoding has more than {max_tokens} values")
        top = stack[-1] if stack else None
        # Closing a container.
        if c == 0x65 and top is not None and (top[0] == "l" or (top[0] == "d" and top[3] is None)):  # 'e'
            stack.pop()
            i += 1
        elif top is not None and top[0] == "d" and top[3] is None:
            # Expecting a key: must be a string.
            if c not in _DIGITS:
                raise BencodeError(f"dictionary key is not a string at byte {i}")
            key, i = _scan_string(data, i)
            if key in top[2]:
                raise BencodeError(f"duplicate dictionary key {key[:40]!r} at byte {i}")
            if top[1] is not None and key < top[1] and strict_order:
                raise BencodeError(f"dictionary keys out of order at byte {i}")
            top[2].add(key)
            top[1] = key
            top[3] = key
            top[4] = i
            continue
        elif c == 0x69:  # 'i'
            i = _scan_int(data, i)
        elif c in _DIGITS:
            _, i = _scan_string(data, i)
        elif c == 0x6C or c == 0x64:  # 'l' or 'd'
            if len(stack) >= max_depth:
                raise BencodeError(f"bencoding nested deeper than {max_depth} levels")
            stack.append(["l" if c == 0x6C else "d", None, set(), None, 0])
            i += 1
            continue
        else:
            raise BencodeError(f"invalid bencoding byte {chr(c)!r} at byte {i}")
        # A complete value (scalar, or a container just closed) ends here.
        if not stack:
            return i
        parent = stack[-1]
        if parent[0] == "d" and parent[3] is not None:
            if spans is not None and len(stack) == 1:
                spans[parent[3]] = (parent[4], i)
            parent[3] = None


def _scan_int(data: bytes, i: int) -> int:
    end = data.find(b"e", i + 1, i + 3 + _MAX_INT_DIGITS)
    if end < 0:
        raise BencodeError(f"unterminated or overlong integer at byte {i}")
    body = data[i + 1 : end]
    digits = body[1:] if body[:1] == b"-" else body
    if not digits or any(d not in _DIGITS for d in digits):
        raise BencodeError(f"invalid integer at byte {i}")
    if len(digits) > 1 and digits[:1] == b"0":
        raise BencodeError(f"integer with leading zero at byte {i}")
    if body == b"-0":
        raise BencodeError(f"negative zero at byte {i}")
    if len(digits) > _MAX_INT_DIGITS or not -(2**63) <= int(body) < 2**63:
        raise BencodeError(f"integer out of 64-bit range at byte {i}")
    return end + 1


def _scan_string(data: bytes, i: int) -> tuple[bytes, int]:
    colon = data.find(b":", i, i + 12)
    if colon < 0:
        raise BencodeError(f"invalid string length at byte {i}")
    length_txt = data[i:colon]
    if any(d not in _DIGITS for d in length_txt):
        raise BencodeError(f"invalid string length at byte {i}")
    if len(length_txt) > 1 and length_txt[:1] == b"0":
        raise BencodeError(f"string length with leading zero at byte {i}")
    length = int(length_txt)
    end = colon + 1 + length
    if end > len(data):
        raise BencodeError(f"string at byte {i} runs past the end of the data")
    return data[colon + 1 : end], end


def _check_size(data: bytes, max_size: int) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BencodeError(f"bencoded data must be bytes, not {type(data).__name__}")
    if len(data) > max_size:
        raise BencodeError(f"bencoded data is {len(data)} bytes, more than the limit of {max_size}")
    if not data:
        raise BencodeError("empty input is not bencoding")


def _bencodepy_decode(data: bytes) -> Any:
    try:
        value = bencodepy.decode(bytes(data))
    except (bencodepy.DecodingError, ValueError, RecursionError) as exc:  # pragma: no cover - scan catches these first
        raise BencodeError(f"invalid bencoding: {exc}") from None
    # bencodepy wraps top-level scalars in a tuple.
    if isinstance(value, tuple):
        value = value[0]
    return _plain(value)


def _plain(value: Any) -> Any:
    """Turn bencodepy's OrderedDicts into plain dicts (insertion order kept).

    Containers are converted in place, child by child, so each OrderedDict is freed as soon as its
    plain copy exists: the peak stays near one decoded structure instead of two.
    """
    if isinstance(value, dict):
        for k in value:
            value[k] = _plain(value[k])
        return dict(value)
    if isinstance(value, list):
        for i, v in enumerate(value):
            value[i] = _plain(v)
        return value
    return value


def decode(
    data: bytes,
    *,
    max_size: int = MAX_SIZE,
    max_depth: int = MAX_DEPTH,
    strict_order: bool = False,
    max_tokens: int = MAX_TOKENS,
) -> Any:
    """Decode exactly one bencoded value that fills ``data``.

    Strings come back as ``bytes``, dictionaries as ``dict`` with ``bytes`` keys.
    Unsorted dictionary keys are accepted unless ``strict_order`` (real-world
    .torrent files have them and libtorrent loads them); everything else that
    BEP 3 forbids raises :class:`BencodeError`.
    """
    _check_size(data, max_size)
    end = _scan(data, 0, max_depth, strict_order, None, max_tokens)
    if end != len(data):
        raise BencodeError(f"trailing data after bencoded value at byte {end}")
    return _bencodepy_decode(data)


def check_sorted(data: bytes, *, max_depth: int = MAX_DEPTH, max_tokens: int = MAX_TOKENS) -> None:
    """Raise :class:`BencodeError` unless every dictionary in ``data`` has its keys in sorted order
    (what BEP 52 requires of a v2 info dictionary; libtorrent refuses an unsorted one)."""
    _scan(data, 0, max_depth, True, None, max_tokens)


def decode_prefix(
    data: bytes, *, max_size: int = MAX_SIZE, max_depth: int = MAX_DEPTH, max_tokens: int = MAX_TOKENS
) -> tuple[Any, int]:
    """Decode one bencoded value at the start of ``data``; return it and its length.

    For messages that carry raw bytes after a bencoded header (BEP 9 metadata).
    """
    _check_size(data, max_size)
    end = _scan(data, 0, max_depth, False, None, max_tokens)
    return _bencodepy_decode(data[:end]), end


def decode_dict_with_spans(
    data: bytes, *, max_size: int = MAX_SIZE, max_depth: int = MAX_DEPTH, max_tokens: int = MAX_TOKENS
) -> tuple[dict, dict[bytes, bytes]]:
    """Decode a bencoded dictionary and return it with the raw bytes of each top-level value.

    ``raw[b"info"]`` is exactly the ``info`` value as it appears in ``data``;
    its SHA-1 is the v1 info-hash.
    """
    _check_size(data, max_size)
    if data[:1] != b"d":
        raise BencodeError("expected a bencoded dictionary")
    spans: dict[bytes, tuple[int, int]] = {}
    end = _scan(data, 0, max_depth, False, spans, max_tokens)
    if end != len(data):
        raise BencodeError(f"trailing data after bencoded value at byte {end}")
    raw = {key: bytes(data[a:b]) for key, (a, b) in spans.items()}
    return _bencodepy_decode(data), raw


def _canonical(obj: Any, depth: int = 0) -> Any:
    """Prepare ``obj`` for bencodepy: dicts as OrderedDicts sorted by raw key bytes."""
    if depth > MAX_DEPTH:
        raise BencodeError(f"value nested deeper than {MAX_DEPTH} levels")
    if isinstance(obj, bool):
        raise BencodeError("booleans have no bencoding; use 0 or 1")
    if isinstance(obj, (bytes, int)):
        return obj
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    if isinstance(obj, str):
        return obj.encode("utf-8")
    if isinstance(obj, (list, tuple)):
        return [_canonical(v, depth + 1) for v in obj]
    if isinstance(obj, dict):
        items: dict[bytes, Any] = {}
        for key, value in obj.items():
            if isinstance(key, str):
                key = key.encode("utf-8")
            if not isinstance(key, bytes):
                raise BencodeError(f"dictionary key {key!r} is not a string")
            if key in items:
                raise BencodeError(f"duplicate dictionary key {key!r}")
            items[key] = _canonical(value, depth + 1)
        return OrderedDict(sorted(items.items()))
    raise BencodeError(f"cannot bencode a value of type {type(obj).__name__}")


def encode(obj: Bencodable) -> bytes:
    """Bencode ``obj`` with dictionary keys in sorted order (BEP 3).

    Accepts ``int``, ``bytes``, ``str`` (as UTF-8), lists/tuples and dicts with
    ``bytes`` or ``str`` keys.
    """
    try:
        return bencodepy.encode(_canonical(obj))
    except bencodepy.EncodingError as exc:  # pragma: no cover - _canonical rejects first
        raise BencodeError(f"cannot bencode: {exc}") from None
