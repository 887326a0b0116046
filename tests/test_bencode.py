"""The bencode adapter: canonical encoding, strict decoding, raw info spans, hostile inputs."""

from __future__ import annotations

import hashlib

import bencodepy
import pytest

from torrentcore import bencode
from torrentcore.errors import BencodeError


def test_bencodepy_itself_does_not_sort_keys():
    # The fact this adapter exists for: if bencodepy ever sorts, this test tells us.
    assert bencodepy.encode({b"b": 1, b"a": 2}) == b"d1:bi1e1:ai2ee"


def test_encode_sorts_keys_by_raw_bytes():
    assert bencode.encode({b"b": 1, b"a": 2}) == b"d1:ai2e1:bi1ee"
    assert bencode.encode({"b": {"z": 1, "y": [1, "x"]}, "a": b""}) == b"d1:a0:1:bd1:yli1e1:xe1:zi1eee"
    # byte order, not Unicode collation: uppercase sorts before lowercase
    assert bencode.encode({"a": 1, "B": 2}) == b"d1:Bi2e1:ai1ee"


@pytest.mark.parametrize(
    "value",
    [0, -1, 2**63 - 1, -(2**63), b"", b"spam", [], {}, [1, [2, [3]]], {b"k": {b"n": [b"x", 7]}}],
)
def test_round_trip(value):
    assert bencode.decode(bencode.encode(value)) == value


def test_encode_rejects_unencodable():
    for bad in (1.5, None, True, {1: 2}, {"a": 1, b"a": 2}):
        with pytest.raises(BencodeError):
            bencode.encode(bad)


@pytest.mark.parametrize(
    "data,why",
    [
        (b"i03e", "leading zero"),
        (b"i-0e", "negative zero"),
        (b"i-03e", "leading zero"),
        (b"ie", "empty integer"),
        (b"i1x2e", "junk in integer"),
        (b"i99999999999999999999e", "integer over 64 bits"),
        (b"03:abc", "leading zero in length"),
        (b"5:ab", "truncated string"),
        (b"d1:ai1e1:ai2ee", "duplicate key"),
        (b"di1ei2ee", "non-string key"),
        (b"d1:ae", "key without value"),
        (b"i1ei2e", "trailing data"),
        (b"le", None),
        (b"l", "truncated list"),
        (b"", "empty"),
        (b"x", "invalid token"),
        (b"-1:a", "negative length"),
    ],
)
def test_strict_decoding(data, why):
    if why is None:
        assert bencode.decode(data) == []
        return
    with pytest.raises(BencodeError):
        bencode.decode(data)


def test_unsorted_keys_are_accepted_unless_strict():
    assert bencode.decode(b"d1:bi1e1:ai2ee") == {b"b": 1, b"a": 2}
    with pytest.raises(BencodeError):
        bencode.decode(b"d1:bi1e1:ai2ee", strict_order=True)


def test_info_hash_uses_raw_bytes_not_a_reencoding():
    # An info dict with unsorted keys: re-encoding would sort them and change the hash.
    raw_info = b"d4:name1:x6:lengthi1e12:piece lengthi16384e6:pieces20:" + b"\x00" * 20 + b"e"
    data = b"d8:announce3:foo4:info" + raw_info + b"e"
    value, raw = bencode.decode_dict_with_spans(data)
    assert raw[b"info"] == raw_info
    assert hashlib.sha1(raw[b"info"]).digest() != hashlib.sha1(bencode.encode(value[b"info"])).digest()


def test_deep_nesting_is_refused_without_recursion_error():
    for opener in (b"l", b"d1:a"):
        data = opener * 100_000 + b"i1e" + b"e" * 100_000
        with pytest.raises(BencodeError, match="nested deeper"):
            bencode.decode(data)


def test_size_limit():
    with pytest.raises(BencodeError, match="limit"):
        bencode.decode(b"4:spam", max_size=3)


def test_huge_declared_string_length_does_not_allocate():
    with pytest.raises(BencodeError, match="past the end"):
        bencode.decode(b"99999999999:x")


def test_decode_prefix_returns_consumed_length():
    value, used = bencode.decode_prefix(b"d8:msg_typei1e5:piecei0eeRAWDATA")
    assert value == {b"msg_type": 1, b"piece": 0}
    assert used == len(b"d8:msg_typei1e5:piecei0ee")
