"""KRPC messages of the BitTorrent DHT (BEP 5): strict parsing, building, compact encodings.

Every datagram is one bencoded dictionary with a transaction id ``t`` and a type ``y``:
a query (``q`` name + ``a`` arguments), a response (``r``) or an error (``e`` = [code, message]).
:func:`decode` validates the envelope and everything this node reads (types, required keys,
lengths) and raises :class:`KRPCError` with the error code a reply should carry (203 protocol
error, 204 method unknown); nothing malformed reaches the node's logic. Only IPv4 is spoken:
compact node info is 26 bytes (id, IPv4, port), a compact peer 6 bytes.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from .. import bencode
from ..errors import BencodeError

#: BEP 5 error codes.
GENERIC_ERROR = 201
SERVER_ERROR = 202
PROTOCOL_ERROR = 203
METHOD_UNKNOWN = 204

#: Largest datagram we read or accept (bigger ones are dropped unread).
MAX_DATAGRAM = 1500
#: Longest transaction id accepted (libtorrent uses 2 bytes, others 4; 16 is generous).
MAX_TID = 16
#: Longest token accepted in responses and announce_peer queries.
MAX_TOKEN = 64
#: Longest error message / query name accepted.
MAX_TEXT = 256
#: Most compact nodes read from one response (BEP 5 says 8; extra ones are ignored).
MAX_NODES_READ = 16
#: Most peer values read from one response.
MAX_VALUES_READ = 200

NODE_ID_LEN = 20
COMPACT_NODE_LEN = 26
COMPACT_PEER_LEN = 6
#: An IPv6 compact peer (BEP 32): accepted in ``values`` but ignored (this node speaks IPv4 only).
COMPACT_PEER6_LEN = 18

#: The queries this node answers.
QUERIES = ("ping", "find_node", "get_peers", "announce_peer")


class KRPCError(Exception):
    """A datagram that is not a valid KRPC message; ``code`` is the BEP 5 error code to answer with.

    ``tid`` is the transaction id when it could be read (an error reply is only sent for queries
    whose id is known).
    """

    def __init__(self, message: str, code: int = PROTOCOL_ERROR, tid: bytes | None = None,
                 is_query: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.tid = tid
        self.is_query = is_query


@dataclass
class Message:
    """A validated KRPC message.

    ``kind`` is ``"q"``, ``"r"`` or ``"e"``. Queries have ``query`` (the name) and ``args``;
    responses have ``args`` (the ``r`` dictionary); errors have ``error`` ``(code, text)``.
    ``sender_id`` is the 20-byte id in ``a``/``r`` (``None`` for errors).
    """

    kind: str
    tid: bytes
    query: str = ""
    args: dict[bytes, Any] = field(default_factory=dict)
    error: tuple[int, str] | None = None
    sender_id: bytes | None = None
    version: bytes | None = None


def _bytes(d: dict, key: bytes, what: str, max_len: int, exact: int | None = None) -> bytes:
    value = d.get(key)
    if not isinstance(value, bytes):
        raise KRPCError(f"{what}: missing or not a string")
    if exact is not None and len(value) != exact:
        raise KRPCError(f"{what}: {len(value)} bytes, expected {exact}")
    if len(value) > max_len:
        raise KRPCError(f"{what}: {len(value)} bytes, more than {max_len}")
    return value


def decode(data: bytes) -> Message:
    """Parse and validate one datagram; raise :class:`KRPCError` (never anything else)."""
    if len(data) > MAX_DATAGRAM:
        raise KRPCError(f"datagram of {len(data)} bytes is too big")
    try:
        top = bencode.decode(data, max_size=MAX_DATAGRAM, max_depth=8)
    except BencodeError as exc:
        raise KRPCError(f"not bencoding: {exc}") from None
    if not isinstance(top, dict):
        raise KRPCError("message is not a dictionary")
    tid = top.get(b"t")
    if not isinstance(tid, bytes) or not 0 < len(tid) <= MAX_TID:
        raise KRPCError("bad or missing transaction id")
    kind = top.get(b"y")
    version = top.get(b"v") if isinstance(top.get(b"v"), bytes) and len(top[b"v"]) <= 16 else None
    if kind == b"q":
        return _decode_query(top, tid, version)
    if kind == b"r":
        r = top.get(b"r")
        if not isinstance(r, dict):
            raise KRPCError("response without an 'r' dictionary", tid=tid)
        sender = _bytes(r, b"id", "response id", NODE_ID_LEN, NODE_ID_LEN)
        return Message("r", tid, args=r, sender_id=sender, version=version)
    if kind == b"e":
        e = top.get(b"e")
        if (not isinstance(e, list) or len(e) < 2 or not isinstance(e[0], int) or not isinstance(e[1], bytes)
                or len(e[1]) > MAX_TEXT):
            raise KRPCError("malformed error message", tid=tid)
        return Message("e", tid, error=(e[0], e[1].decode("utf-8", "replace")), version=version)
    raise KRPCError("bad or missing message type 'y'", tid=tid)


def _decode_query(top: dict, tid: bytes, version: bytes | None) -> Message:
    name = top.get(b"q")
    if not isinstance(name, bytes) or not name or len(name) > MAX_TEXT:
        raise KRPCError("query without a name", tid=tid, is_query=True)
    args = top.get(b"a")
    if not isinstance(args, dict):
        raise KRPCError("query without an 'a' dictionary", tid=tid, is_query=True)
    try:
        sender = _bytes(args, b"id", "node id", NODE_ID_LEN, NODE_ID_LEN)
        text = name.decode("ascii")
        if text == "find_node":
            _bytes(args, b"target", "target", NODE_ID_LEN, NODE_ID_LEN)
        elif text == "get_peers":
            _bytes(args, b"info_hash", "info_hash", NODE_ID_LEN, NODE_ID_LEN)
        elif text == "announce_peer":
            _bytes(args, b"info_hash", "info_hash", NODE_ID_LEN, NODE_ID_LEN)
            _bytes(args, b"token", "token", MAX_TOKEN)
            implied = args.get(b"implied_port", 0)
            if not isinstance(implied, int) or implied not in (0, 1):
                raise KRPCError("implied_port must be 0 or 1")
            port = args.get(b"port")
            if not implied and (not isinstance(port, int) or not 0 < port < 65536):
                raise KRPCError("announce_peer without a valid port")
        elif text != "ping":
            raise KRPCError(f"unknown method {text[:40]!r}", METHOD_UNKNOWN)
    except UnicodeDecodeError:
        raise KRPCError("unknown method", METHOD_UNKNOWN, tid=tid, is_query=True) from None
    except KRPCError as exc:
        raise KRPCError(str(exc), exc.code, tid=tid, is_query=True) from None
    return Message("q", tid, query=text, args=args, sender_id=sender, version=version)


# --- compact encodings ------------------------------------------------------------------------------


def encode_peer(host: str, port: int) -> bytes:
    """``(host, port)`` -> 6 bytes (IPv4 only)."""
    return socket.inet_aton(host) + struct.pack("!H", port)


def decode_peer(data: bytes) -> tuple[str, int] | None:
    """6 bytes -> ``(host, port)``; ``None`` for port 0 or an unspecified/multicast address."""
    if len(data) != COMPACT_PEER_LEN:
        return None
    host = socket.inet_ntoa(data[:4])
    port = struct.unpack("!H", data[4:])[0]
    if not usable_address(host, port):
        return None
    return host, port


def usable_address(host: str, port: int) -> bool:
    """Whether ``host:port`` can be a DHT node or peer (not port 0, not 0.0.0.0, multicast, broadcast)."""
    if not 0 < port < 65536:
        return False
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return not (ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"))


def encode_nodes(nodes) -> bytes:
    """``[(node_id, host, port), ...]`` -> compact node info (26 bytes each)."""
    return b"".join(nid + encode_peer(host, port) for nid, host, port in nodes)


def decode_nodes(data: bytes) -> list[tuple[bytes, str, int]]:
    """Compact node info -> ``[(node_id, host, port)]``; raises :class:`KRPCError` unless 26*n bytes.

    At most :data:`MAX_NODES_READ` are returned; entries with unusable addresses are skipped.
    """
    if len(data) % COMPACT_NODE_LEN:
        raise KRPCError(f"compact node info of {len(data)} bytes is not a multiple of {COMPACT_NODE_LEN}")
    out = []
    for i in range(0, min(len(data), MAX_NODES_READ * COMPACT_NODE_LEN), COMPACT_NODE_LEN):
        peer = decode_peer(data[i + NODE_ID_LEN : i + COMPACT_NODE_LEN])
        if peer is not None:
            out.append((data[i : i + NODE_ID_LEN], peer[0], peer[1]))
    return out


def response_nodes(msg: Message) -> list[tuple[bytes, str, int]]:
    """The ``nodes`` of a response (empty when absent); raises :class:`KRPCError` when malformed."""
    nodes = msg.args.get(b"nodes")
    if nodes is None:
        return []
    if not isinstance(nodes, bytes):
        raise KRPCError("'nodes' is not a string")
    return decode_nodes(nodes)


def response_values(msg: Message) -> list[tuple[str, int]]:
    """The ``values`` of a get_peers response (IPv4 peers); raises :class:`KRPCError` when malformed."""
    values = msg.args.get(b"values")
    if values is None:
        return []
    if not isinstance(values, list):
        raise KRPCError("'values' is not a list")
    out = []
    for v in values[:MAX_VALUES_READ]:
        if not isinstance(v, bytes) or len(v) not in (COMPACT_PEER_LEN, COMPACT_PEER6_LEN):
            raise KRPCError("a value is not a compact peer")
        peer = decode_peer(v) if len(v) == COMPACT_PEER_LEN else None
        if peer is not None:
            out.append(peer)
    return out


def response_token(msg: Message) -> bytes | None:
    """The ``token`` of a get_peers response, or ``None`` when absent or unusable."""
    token = msg.args.get(b"token")
    if isinstance(token, bytes) and 0 < len(token) <= MAX_TOKEN:
        return token
    return None


# --- building -----------------------------------------------------------------------------------------

#: Our client version in the ``v`` key (BEP 20 style: two letters, two bytes of version).
VERSION = b"TC\x01\x00"


def query(tid: bytes, name: str, args: dict) -> bytes:
    """A bencoded query."""
    return bencode.encode({"t": tid, "y": "q", "q": name, "a": args, "v": VERSION})


def response(tid: bytes, values: dict) -> bytes:
    """A bencoded response."""
    return bencode.encode({"t": tid, "y": "r", "r": values, "v": VERSION})


def error(tid: bytes, code: int, text: str) -> bytes:
    """A bencoded error message."""
    return bencode.encode({"t": tid, "y": "e", "e": [code, text[:MAX_TEXT]], "v": VERSION})


__all__ = [
    "KRPCError", "Message", "decode", "query", "response", "error", "encode_peer", "decode_peer",
    "encode_nodes", "decode_nodes", "response_nodes", "response_values", "response_token", "usable_address",
    "GENERIC_ERROR", "SERVER_ERROR", "PROTOCOL_ERROR", "METHOD_UNKNOWN", "QUERIES",
]
