"""Property tests (Hypothesis) for everything that parses bytes from strangers.

``bencode``, ``metainfo`` and the peer-wire framing get arbitrary, structured and mutated input;
each may return a value or raise its one error type, never anything else, never allocate far more
than the input, and every path a parsed torrent produces stays inside the download folder.

Deterministic by default (``derandomize``, a fixed number of examples, no example database), so
CI sees the same inputs on every run. For a longer, randomised run::

    TORRENTCORE_FUZZ_EXAMPLES=100000 python -m pytest -q -p no:cacheprovider tests/test_fuzz_properties.py
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import sys
import tracemalloc

import pytest
from conftest import SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torrentcore import bencode
from torrentcore.errors import BencodeError, ProtocolError
from torrentcore.peer import messages as msg
from torrentcore.peer.connection import MAX_MESSAGE

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "fuzz"))
import harness  # noqa: E402

#: Set to run many more (random) examples than CI does.
FUZZ_EXAMPLES = int(os.environ.get("TORRENTCORE_FUZZ_EXAMPLES", "0") or 0)


def fuzz(examples: int):
    """Hypothesis settings: ``examples`` fixed examples in CI, ``TORRENTCORE_FUZZ_EXAMPLES`` random ones on demand."""
    return settings(
        max_examples=FUZZ_EXAMPLES or examples,
        derandomize=not FUZZ_EXAMPLES,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


@contextlib.contextmanager
def bounded_memory(input_size: int):
    """Fail if the block allocates more than 1 MiB plus 200 bytes per input byte at its peak."""
    limit = 1024 * 1024 + 200 * input_size
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= limit, f"{peak} bytes allocated for {input_size} bytes of input"


# --- strategies ----------------------------------------------------------------------------------

INT64 = st.integers(-(2**63), 2**63 - 1)
bencodable = st.recursive(
    INT64 | st.binary(max_size=24),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.binary(max_size=8), inner, max_size=5),
    max_leaves=25,
)


@st.composite
def mutated(draw, base: bytes, max_mutations: int = 4) -> bytes:
    """``base`` with a few bytes flipped, inserted, deleted, duplicated or cut off."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, max_mutations))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from(b"0123456789:ilde-\x00\xff"))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from([b"e", b"l", b"d", b"i1e", b"0:", b"1:", b"9", b"-", b"ie"]))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        elif op == "splice" and data:
            end = min(len(data), pos + draw(st.integers(1, 32)))
            data[pos:pos] = data[pos:end]
    return bytes(data)


def _mutations_of(values: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return values.flatmap(lambda base: mutated(base))


# --- bencode -------------------------------------------------------------------------------------


@fuzz(300)
@given(bencodable)
def test_encode_decode_round_trip_with_sorted_keys(value):
    data = bencode.encode(value)
    # Keys come out sorted: the strict decoder (which refuses unsorted keys) accepts the encoding.
    assert bencode.decode(data, strict_order=True) == value
    assert bencode.encode(bencode.decode(data)) == data


@fuzz(60)
@given(st.dictionaries(st.text(max_size=6), bencodable, max_size=6))
def test_str_keys_encode_as_utf8_in_byte_order(value):
    data = bencode.encode(value)
    decoded = bencode.decode(data, strict_order=True)
    assert decoded == {k.encode("utf-8"): v for k, v in value.items()}
    assert list(decoded) == sorted(decoded)


@fuzz(400)
@given(st.binary(max_size=300))
def test_decode_arbitrary_bytes_raises_only_bencode_error(data):
    with bounded_memory(len(data)):
        harness.check_bencode(data)


@fuzz(400)
@given(_mutations_of(bencodable.map(bencode.encode)))
def test_decode_mutated_encodings(data):
    with bounded_memory(len(data)):
        harness.check_bencode(data)


@fuzz(200)
@given(bencodable, st.binary(max_size=40))
def test_decode_prefix_stops_where_the_value_ends(value, rest):
    data = bencode.encode(value)
    assert bencode.decode_prefix(data + rest) == (value, len(data))


@fuzz(100)
@given(st.dictionaries(st.binary(max_size=8), bencodable, min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_decode_dict_with_spans_returns_the_raw_bytes_of_each_value(value, rnd):
    # Write the keys in a random order (real files are not always sorted); each span is the value's bytes.
    keys = list(value)
    rnd.shuffle(keys)
    data = b"d" + b"".join(bencode.encode(k) + bencode.encode(value[k]) for k in keys) + b"e"
    top, raw = bencode.decode_dict_with_spans(data)
    assert top == value and list(top) == keys
    assert raw == {k: bencode.encode(v) for k, v in value.items()}
    for k in keys:
        assert raw[k] in data


@fuzz(100)
@given(st.integers(1, 3 * bencode.MAX_DEPTH), st.sampled_from([b"l", b"d1:k"]))
def test_nesting_is_refused_exactly_past_the_depth_limit(depth, opener):
    data = opener * depth + b"i1e" + b"e" * depth
    if depth <= bencode.MAX_DEPTH:
        bencode.decode(data)
    else:
        with pytest.raises(BencodeError, match="nested deeper"):
            bencode.decode(data)


@fuzz(200)
@given(st.integers(-(2**70), 2**70))
def test_integers_outside_64_bits_are_refused(n):
    data = b"i%de" % n
    if -(2**63) <= n < 2**63:
        assert bencode.decode(data) == n
    else:
        with pytest.raises(BencodeError):
            bencode.decode(data)


@fuzz(50)
@given(st.integers(1, 50), st.sampled_from([b"le", b"i0e", b"0:", b"de"]))
def test_token_limit(count, token):
    data = b"l" + token * count + b"e"
    limit = 20
    if count + 1 <= limit:
        assert len(bencode.decode(data, max_tokens=limit)) == count
    else:
        with pytest.raises(BencodeError, match="more than 20 values"):
            bencode.decode(data, max_tokens=limit)


# --- metainfo ------------------------------------------------------------------------------------

HOSTILE_COMPONENTS = [
    b"..", b".", b"", b"/", b"\\", b"../..", b"..\\..", b"/etc/passwd", b"C:", b"c:\\windows", b"C:x",
    b"\\\\server\\share", b"CON", b"con", b"nul.txt", b"Com1", b"LPT1.tar.gz", b"aux ", b"CONIN$", b"prn.",
    b"a.", b"a ", b"a. .", b"...", b"a\x00b", b"\x01\x1f", b"\x7f", b"\xff\xfe", b"a/b", b"a:b", b"a*b?",
    b"x" * 300, b"y" * 237 + b".txt", "\u00e9".encode() * 130, b"file", b"File", b"FILE.", b"dup", b"dup.1",
    "e\u0301".encode(), "\u00e9".encode(),
]
component = st.sampled_from(HOSTILE_COMPONENTS) | st.binary(max_size=10)
sizes = st.sampled_from([0, 1, 16383, 16384, 16385, 2**48 - 1, 2**48, 2**62, 2**63 - 1]) | st.integers(0, 70_000)
piece_lengths = st.sampled_from([16384, 32768, 1, 3, 0, -16384, 2**29, 2**29 + 1]) | st.integers(1, 2**17)
wrong_type = st.sampled_from([b"x", -1, 0, [], {}, [b"a"], {b"a": 1}])


@st.composite
def torrents(draw, hostile_types: bool = True) -> dict:
    """A metainfo dictionary with hostile names; ``hostile_types`` also gives sizes and types that are wrong."""
    piece_length = draw(piece_lengths if hostile_types else st.sampled_from([16384, 32768, 3, 2**17]))
    size = sizes if hostile_types else st.integers(0, 70_000)
    info: dict = {b"name": draw(component), b"piece length": piece_length}
    if draw(st.booleans()):
        info[b"length"] = draw(size)
        lengths = [info[b"length"]]
    else:
        files = []
        for _ in range(draw(st.integers(1 if not hostile_types else 0, 8))):
            entry: dict = {b"length": draw(size), b"path": draw(st.lists(component, max_size=4))}
            attr = draw(st.sampled_from([None, b"l", b"p", b"x", b"h", b"lxh"]))
            if attr is not None:
                entry[b"attr"] = attr
            if attr and b"l" in attr:
                entry[b"symlink path"] = draw(st.lists(component, max_size=3))
            if draw(st.booleans()):
                entry[b"path.utf-8"] = draw(st.lists(component, max_size=4))
            files.append(entry)
        info[b"files"] = files
        lengths = [0 if b"l" in f.get(b"attr", b"") else f[b"length"] for f in files]
    total = sum(lengths)
    if total > 0 and piece_length > 0 and math.ceil(total / piece_length) <= 64 and draw(st.integers(0, 9)):
        count = -(-total // piece_length)
    else:
        count = draw(st.integers(0, 8))
    info[b"pieces"] = draw(st.binary(min_size=20, max_size=20)) * count
    top: dict = {b"announce": b"http://127.0.0.1:1/announce", b"info": info}
    if hostile_types and draw(st.integers(0, 3)) == 0:
        # One field of the wrong type somewhere.
        target = draw(st.sampled_from([top, info, *info.get(b"files", [])]))
        if target:
            target[draw(st.sampled_from(sorted(target)))] = draw(wrong_type)
    return top


@fuzz(300)
@given(torrents())
def test_metainfo_hostile_torrents_parse_or_raise_metainfo_error(top):
    data = bencode.encode(top)
    with bounded_memory(len(data)):
        harness.check_metainfo(data)


@fuzz(200)
@given(torrents(hostile_types=False))
def test_well_formed_torrents_with_hostile_names_load_and_stay_inside(top):
    # Hostile names are made safe, never a reason to refuse a torrent whose structure is valid.
    info = top[b"info"]
    total = sum(0 if b"l" in f.get(b"attr", b"") else f[b"length"] for f in info.get(b"files", [info]))
    assert_loads = total > 0 and len(info[b"pieces"]) == 20 * -(-total // info[b"piece length"])
    meta = harness.check_metainfo(bencode.encode(top))
    assert (meta is not None) == assert_loads
    if meta is not None:
        assert meta.num_pieces == len(info[b"pieces"]) // 20


CORPUS = sorted(glob.glob(os.path.join(SHARED, "conformance", "*", "*.torrent")))
SMALL_CORPUS = [open(p, "rb").read() for p in CORPUS if os.path.getsize(p) < 64 * 1024]


@pytest.mark.skipif(not SMALL_CORPUS, reason="shared/conformance is missing: set TORRENTCORE_SHARED")
@fuzz(300)
@given(st.data())
def test_metainfo_mutated_corpus(data):
    base = data.draw(st.sampled_from(SMALL_CORPUS))
    blob = data.draw(mutated(base, max_mutations=6))
    with bounded_memory(len(blob)):
        harness.check_metainfo(blob)


@fuzz(200)
@given(st.binary(max_size=200))
def test_metainfo_arbitrary_bytes(data):
    harness.check_metainfo(b"d" + data)


# --- peer wire messages --------------------------------------------------------------------------

U32 = st.integers(0, 2**32 - 1)
wire_messages = st.one_of(
    st.tuples(st.just(-1), st.just(None)),
    st.tuples(st.sampled_from([msg.CHOKE, msg.UNCHOKE, msg.INTERESTED, msg.NOT_INTERESTED]), st.just(b"")),
    st.tuples(st.sampled_from([msg.HAVE, msg.SUGGEST, msg.ALLOWED_FAST]), U32),
    st.tuples(st.sampled_from([msg.REQUEST, msg.CANCEL, msg.REJECT]), st.tuples(U32, U32, U32)),
    st.tuples(st.sampled_from([msg.HAVE_ALL, msg.HAVE_NONE]), st.just(b"")),
    st.tuples(st.just(msg.BITFIELD), st.binary(max_size=40)),
    st.tuples(st.just(msg.PIECE), st.tuples(U32, U32, st.binary(max_size=3000))),
    st.tuples(st.just(msg.EXTENDED), st.tuples(st.integers(1, 255), st.binary(max_size=40))),
    st.tuples(st.just(msg.EXTENDED), st.dictionaries(st.binary(max_size=4), INT64 | st.binary(max_size=8), max_size=4)),
    st.tuples(st.integers(21, 255), st.binary(max_size=20)),
)


def _encode_message(msg_id: int, value) -> tuple[bytes, object]:
    """Wire bytes built with messages.py and the parsed value ``harness.read_messages`` must give back."""
    if msg_id == -1:
        return msg.KEEPALIVE, None
    if msg_id in (msg.HAVE, msg.SUGGEST, msg.ALLOWED_FAST):
        build = {msg.HAVE: msg.have, msg.SUGGEST: msg.suggest, msg.ALLOWED_FAST: msg.allowed_fast}[msg_id]
        return build(value), value
    if msg_id in (msg.REQUEST, msg.CANCEL, msg.REJECT):
        build = {msg.REQUEST: msg.request, msg.CANCEL: msg.cancel, msg.REJECT: msg.reject}[msg_id]
        return build(*value), value
    if msg_id in (msg.HAVE_ALL, msg.HAVE_NONE):
        return msg.simple(msg_id), b""
    if msg_id == msg.BITFIELD:
        # Spare bits clear: the first byte's low bits give how many there are.
        spare = value[0] & 7 if value else 0
        bits = bytearray(value)
        if bits:
            bits[-1] &= ~((1 << spare) - 1) & 0xFF
        return msg.bitfield(bytes(bits)), bin(int.from_bytes(bits, "big")).count("1")
    if msg_id == msg.PIECE:
        index, begin, block = value
        return msg.piece_header(index, begin, len(block)) + block, value
    if msg_id == msg.EXTENDED:
        if isinstance(value, dict):
            return msg.extended(0, bencode.encode(value)), value
        return msg.extended(*value), bytes([value[0]]) + value[1]
    if msg_id < msg.HAVE:
        return msg.simple(msg_id), b""
    return harness.frame(msg_id, value), value


@fuzz(150)
@given(st.lists(wire_messages, max_size=12), st.integers(1, 100), st.booleans())
def test_messages_built_by_messages_py_parse_back(specs, chunk, with_handshake):
    stream = b"".join(_encode_message(i, v)[0] for i, v in specs)
    expected = [(i, _encode_message(i, v)[1]) for i, v in specs]
    if with_handshake:
        hs = (msg.reserved_bytes(msg.RESERVED_EXTENSIONS), b"\x11" * 20, b"-TC0001-" + b"\x22" * 12)
        stream = msg.handshake(hs[1], hs[2], hs[0]) + stream
        expected.insert(0, (-2, hs))
    assert list(harness.read_messages(stream, chunk, with_handshake)) == expected


@fuzz(500)
@given(st.binary(max_size=600))
def test_messages_on_arbitrary_bytes_yield_messages_or_protocol_error(data):
    with bounded_memory(len(data)):
        harness.check_messages(data)


@fuzz(300)
@given(_mutations_of(st.lists(wire_messages, max_size=6).map(
    lambda specs: b"\x41" + b"".join(_encode_message(i, v)[0] for i, v in specs))))
def test_messages_mutated_streams(data):
    harness.check_messages(data)


@fuzz(100)
@given(st.integers(MAX_MESSAGE + 1, 2**32 - 1), st.integers(0, 255))
def test_a_length_prefix_over_the_limit_is_refused_before_reading_it(length, msg_id):
    stream = length.to_bytes(4, "big") + bytes([msg_id])
    with pytest.raises(ProtocolError, match="larger than"):
        list(harness.read_messages(stream))


# --- MSE/PE handshake ----------------------------------------------------------------------------


@fuzz(150)
@given(st.sampled_from(harness.mse_seeds()).flatmap(mutated))
def test_mse_mutated_handshakes_finish_or_raise_encryption_error(data):
    with bounded_memory(len(data)):
        harness.check_mse(data)


@fuzz(150)
@given(st.binary(min_size=2, max_size=1200))
def test_mse_arbitrary_bytes_finish_or_raise_encryption_error(data):
    harness.check_mse(data)
