"""BitTorrent v2 metainfo and Merkle hashes (BEP 52), and hostile v2 input: one clear line, bounded.

The torrents are made by ``torrentcore create`` (whose info-hashes equal libtorrent's, checked here
too) or by hand, then altered: depth and size bombs in the ``file tree``, piece layers of the wrong
length or content, hash replies with wrong proofs, hybrids whose v1 and v2 hashes disagree.
"""

from __future__ import annotations

import hashlib
import os
import time

import libtorrent as lt
import pytest
from realpeers import make_payload

from torrentcore import bencode, merkle, metainfo, metainfo_v2
from torrentcore.create import create_torrent
from torrentcore.errors import MetainfoError, TorrentcoreError
from torrentcore.piece_layers import CHUNK, HashRequest, PieceLayers

KiB = 1024
MiB = 1024 * KiB
TREE = {"a/x.bin": 70_000, "b.bin": 5, "c/d/e.bin": 16_384, "c/f.bin": 300_000, "z.bin": 1}


def _lt_make(root: str, piece_length: int, kind: str) -> lt.info_hash_t:
    flags = lt.create_torrent.v2_only if kind == "v2" else 0
    ct = lt.create_torrent(lt.list_files(os.path.abspath(root)), piece_length, flags=flags)
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(root)))
    return lt.torrent_info(lt.bencode(ct.generate())).info_hashes()


@pytest.mark.parametrize("kind", ["v2", "hybrid"])
@pytest.mark.parametrize("spec,piece_length", [(TREE, 16 * KiB), (5 * 64 * KiB + 123, 64 * KiB), (1000, 16 * KiB),
                                               ({"only": 50_000}, 32 * KiB)], ids=["tree", "single", "tiny", "one"])
def test_create_matches_libtorrent(tmp_path, kind, spec, piece_length):
    root = make_payload(tmp_path, spec, seed=3)
    data, meta = create_torrent(root, [], piece_length=piece_length, kind=kind)
    theirs = _lt_make(root, piece_length, kind)
    assert meta.info_hash_v2 == theirs.v2.to_bytes()
    if kind == "hybrid":
        assert meta.info_hash == theirs.v1.to_bytes() and meta.hybrid
    else:
        assert meta.v2_only and meta.info_hash == meta.info_hash_v2[:20] and not meta.pieces
    assert meta.missing_layers() == []
    # Every piece of the files checks (both hashes for the hybrid), and a changed byte fails.
    stream = _stream(meta, root)
    for i in range(meta.num_pieces):
        piece = stream[i * piece_length : i * piece_length + meta.piece_size(i)]
        assert meta.piece_ok(i, piece)
        assert not meta.piece_ok(i, bytes([piece[0] ^ 1]) + piece[1:])


def _stream(meta: metainfo.Metainfo, root: str) -> bytes:
    """The torrent's byte stream (pad files as zeros) from the files on disk."""
    out = bytearray()
    for f in meta.files:
        if f.pad:
            out += bytes(f.length)
        elif f.length:
            rel = f.path[1:] if meta.multi_file else ()
            if not rel and os.path.isdir(root):  # a v2 folder of one file reads as a single-file torrent
                rel = f.path[-1:]
            with open(os.path.join(root, *rel), "rb") as fh:
                out += fh.read()
    return bytes(out)


def test_merkle_roots_agree_with_libtorrent_on_odd_sizes(tmp_path):
    for size in (1, 16 * KiB, 16 * KiB + 1, 3 * 16 * KiB, 64 * KiB * 5 + 7):
        root = make_payload(tmp_path / str(size), size, seed=size)
        _, meta = create_torrent(root, [], piece_length=32 * KiB, kind="v2")
        with open(root, "rb") as fh:
            assert merkle.file_root(fh.read(), 32 * KiB) == meta.files[0].root
        assert meta.info_hash_v2 == _lt_make(root, 32 * KiB, "v2").v2.to_bytes()


def test_create_cli_defaults_to_hybrid(tmp_path):
    from torrentcore_cli import run_cli

    root = make_payload(tmp_path, TREE, seed=4)
    for flag, hybrid, v2_only in (([], True, False), (["--v2"], False, True), (["--v1"], False, False)):
        out = tmp_path / f"out{len(flag)}{''.join(flag)}.torrent"
        proc = run_cli(["create", root, "-o", str(out), "--no-date", *flag])
        assert proc.returncode == 0, proc.stderr
        meta = metainfo.load(str(out))
        assert (meta.hybrid, meta.v2_only) == (hybrid, v2_only)
    assert "hybrid" in run_cli(["create", "-h"]).stdout


# --------------------------------------------------------------------------------------------------
# Hostile metainfo
# --------------------------------------------------------------------------------------------------


def _v2_torrent(tree: dict, piece_length: int = 16 * KiB, layers: dict | None = None, **info) -> bytes:
    top = {"info": {"file tree": tree, "meta version": 2, "name": "t", "piece length": piece_length, **info}}
    if layers is not None:
        top["piece layers"] = layers
    return bencode.encode(top)


def _refused(data: bytes, words: str) -> str:
    start = time.monotonic()
    with pytest.raises(TorrentcoreError) as info:
        metainfo.parse(data)
    message = str(info.value)
    assert words in message and "\n" not in message, message
    assert time.monotonic() - start < 10  # bounded (a generous bound: the machine is shared)
    return message


def _leaf(length: int, root: bytes = b"\x01" * 32) -> dict:
    return {"": {"length": length, "pieces root": root}}


def test_file_tree_depth_bomb():
    # Deeper than the decoder's nesting limit: refused while decoding, with one line.
    tree = b"d1:d" * 200 + bencode.encode(_leaf(10)) + b"e" * 200  # (our encoder refuses to write it)
    data = b"d4:infod9:file tree" + tree + b"12:meta versioni2e4:name1:t12:piece lengthi16384eee"
    _refused(data, "nested deeper")
    # The tree walk has its own bound (libtorrent's max_directory_depth), whatever the decoder allows.
    deep: dict = {b"": {b"length": 10, b"pieces root": b"\x01" * 32}}
    for _ in range(metainfo_v2.MAX_TREE_DEPTH + 5):
        deep = {b"d": deep}
    info = {b"file tree": {b"d": deep}}
    with pytest.raises(MetainfoError, match="nested deeper than 100 folders"):
        metainfo_v2.read_file_tree(info, "t", piece_length=16 * KiB, max_files=10, max_total=2**48,
                                   safe=metainfo._safe_component, check_path=metainfo._check_path_length)


def test_file_tree_size_and_count_bombs():
    _refused(_v2_torrent({"f": _leaf(2**62)}), "too large 'length'")
    # Each file under the per-file bound, together over 256 TiB.
    many = {f"f{i}": _leaf(15 * 2**40, bytes([i + 1]) * 32) for i in range(20)}
    _refused(_v2_torrent(many), "larger than the supported")
    wide = {b"f%d" % i: {b"": {b"length": 1, b"pieces root": b"\x01" * 32}} for i in range(20)}
    with pytest.raises(MetainfoError, match="too many files"):
        metainfo_v2.read_file_tree({b"file tree": wide}, "t", piece_length=16 * KiB, max_files=10,
                                   max_total=2**48, safe=metainfo._safe_component,
                                   check_path=metainfo._check_path_length)
    _refused(_v2_torrent({"f": {"": {"length": 5}}}), "no valid 'pieces root'")
    _refused(_v2_torrent({"f": _leaf(5, bytes(32))}), "no valid 'pieces root'")
    _refused(_v2_torrent({"f": {"": {"length": 5, "attr": "p", "pieces root": b"\x01" * 32}}}), "pad attribute")
    _refused(_v2_torrent({"": _leaf(5)}), "empty name")
    _refused(_v2_torrent({}), "no files")
    _refused(_v2_torrent({"f": _leaf(5)}, piece_length=24 * KiB), "power of two")
    _refused(_v2_torrent({"f": _leaf(5)}, **{"meta version": 3}), "unknown 'meta version'")


def test_file_tree_paths_are_made_safe():
    tree = {"..": {"x": _leaf(5, b"\x02" * 32)}, "a\\b": _leaf(7, b"\x03" * 32), "CON": _leaf(1, b"\x04" * 32),
            "ok": {"..": _leaf(3, b"\x05" * 32)}}
    meta = metainfo.parse(_v2_torrent(tree))
    paths = [f.relpath for f in meta.data_files]
    assert paths == ["t/_/x", "t/CON", "t/a_b", "t/ok/_"]  # in the tree's (sorted) order
    assert all(f.offset % meta.piece_length == 0 for f in meta.data_files)  # files aligned to pieces
    assert meta.data_length == 16 and meta.total_length == 4 * 16 * KiB  # pad files after each file


def test_piece_layers_of_the_wrong_length_or_content(tmp_path):
    root = make_payload(tmp_path, 200_000, seed=1)
    data, meta = create_torrent(root, [], piece_length=16 * KiB, kind="v2")
    top = bencode.decode(data)
    (froot, layer), = top[b"piece layers"].items()
    for bad, words in [
        ({froot: layer[:-32]}, "hashes are needed"),
        ({froot: layer + b"x"}, "hashes are needed"),
        ({froot: bytes([layer[0] ^ 1]) + layer[1:]}, "does not hash to"),
        ({b"\x07" * 32: layer}, "belongs to no file"),
        ({froot[:31]: layer}, "not a 32-byte root"),
        (b"not a dict", "not a dictionary"),
    ]:
        top[b"piece layers"] = bad
        _refused(bencode.encode(top), words)
    # Missing layers are allowed (as for magnet links): they are fetched from peers.
    del top[b"piece layers"]
    meta = metainfo.parse(bencode.encode(top))
    assert [f.relpath for f in meta.missing_layers()] == ["payload"]
    assert not meta.piece_ok(0, b"\0" * 16 * KiB)


def test_hybrid_refuses_data_that_passes_one_hash_and_fails_the_other(tmp_path):
    root = make_payload(tmp_path, {"small.bin": 5_000, "big.bin": 40_000}, seed=2)
    data, meta = create_torrent(root, [], piece_length=16 * KiB, kind="hybrid")
    stream = _stream(meta, root)
    small = next(f for f in meta.files if f.relpath.endswith("small.bin"))
    index = small.offset // meta.piece_length
    piece = stream[small.offset : small.offset + meta.piece_length]
    assert meta.piece_ok(index, piece)
    top = bencode.decode(data)
    # The same v1 hashes, another v2 root for the small file: the true data passes SHA-1, fails v2.
    top[b"info"][b"file tree"][b"small.bin"][b""][b"pieces root"] = b"\x09" * 32
    other = metainfo.parse(bencode.encode(top))
    assert hashlib.sha1(piece).digest() == other.piece_hash(index)
    assert not other.piece_ok(index, piece)
    # The same v2 roots, other v1 hashes: passes v2, fails SHA-1.
    top = bencode.decode(data)
    pieces = bytearray(top[b"info"][b"pieces"])
    pieces[index * 20] ^= 1
    top[b"info"][b"pieces"] = bytes(pieces)
    assert not metainfo.parse(bencode.encode(top)).piece_ok(index, piece)
    # Pad bytes that are not zeros fail the v2 check (and the v1 one).
    tail = small.length % meta.piece_length
    assert not meta.piece_ok(index, piece[:tail] + b"\x01" + piece[tail + 1 :])


def test_btmh_magnet_links():
    from torrentcore.magnet import parse_magnet

    v2 = bytes(range(32))
    m = parse_magnet(f"magnet:?xt=urn:btmh:1220{v2.hex()}&dn=x")
    assert m.info_hash_v2 == v2 and m.info_hash == v2[:20]
    m = parse_magnet(f"magnet:?xt=urn:btih:{'ab' * 20}&xt=urn:btmh:1220{v2.hex()}")
    assert m.info_hash == bytes.fromhex("ab" * 20) and m.info_hash_v2 == v2
    for bad in (f"magnet:?xt=urn:btmh:1220{v2.hex()[:-2]}", f"magnet:?xt=urn:btmh:1114{v2.hex()}",
                "magnet:?xt=urn:btmh:1220" + "zz" * 32):
        with pytest.raises(MetainfoError) as info:
            parse_magnet(bad)
        assert "invalid v2 info-hash" in str(info.value) and "pieces" not in str(info.value)


# --------------------------------------------------------------------------------------------------
# Piece layers over the wire: served with proofs, checked against the root
# --------------------------------------------------------------------------------------------------


def _layers_pair(tmp_path, size: int, piece_length: int = 16 * KiB):
    root = make_payload(tmp_path, size, seed=5)
    data, full = create_torrent(root, [], piece_length=piece_length, kind="v2")
    top = bencode.decode(data)
    del top[b"piece layers"]
    bare = metainfo.parse(bencode.encode(top))
    return PieceLayers(full), PieceLayers(bare), full, bare


@pytest.mark.parametrize("pieces", [2, 3, 600, 1100])
def test_layers_fetched_with_proofs(tmp_path, pieces):
    server, client, full, bare = _layers_pair(tmp_path, pieces * 16 * KiB - 100)
    assert not client.complete and client.blocking
    asked = 0
    while (req := client.next_request()) is not None:
        asked += 1
        hashes = server.answer(req)
        assert hashes is not None and req.count <= CHUNK
        assert client.received(req, hashes)
    assert client.complete and asked == -(-pieces // CHUNK)
    assert bare.piece_layers == full.piece_layers


def test_hash_replies_with_wrong_proofs_are_refused(tmp_path):
    server, client, full, _ = _layers_pair(tmp_path, 1100 * 16 * KiB)
    req = client.next_request()
    good = server.answer(req)
    assert len(good) == req.count + 2  # 512 hashes of a 2048-wide layer: two uncles up to the root
    flipped_uncle = good[:-1] + [bytes(32)]
    flipped_base = [bytes([good[0][0] ^ 1]) + good[0][1:]] + good[1:]
    for bad_req, bad in [
        (req, flipped_uncle),
        (req, flipped_base),
        (req, good[:-1]),  # an uncle missing
        (req, good + [bytes(32)]),  # one too many
        (HashRequest(req.root, req.base, req.index, req.count, 0), good[: req.count]),  # no proof to the root
        (HashRequest(req.root, req.base + 1, req.index, req.count, req.proof_layers), good),
        (HashRequest(b"\x05" * 32, req.base, req.index, req.count, req.proof_layers), good),
    ]:
        assert not client.received(bad_req, bad)
    assert not client.complete
    client.rejected(req)
    assert client.next_request() == req  # asked again at once after a reject


def test_hash_requests_we_refuse(tmp_path):
    server, _, full, _ = _layers_pair(tmp_path, 40 * 32 * KiB, piece_length=32 * KiB)
    (froot,) = full.piece_layers
    p = server.piece_layer
    assert p == 1  # 32 KiB pieces: two blocks each
    assert server.answer(HashRequest(froot, p, 0, 64, 5)) is not None  # the whole layer (64 wide), proof to the top
    for req in [
        HashRequest(froot, 0, 0, 64, 0),  # the block layer: not kept here
        HashRequest(froot, p, 0, 1, 0),  # fewer than two hashes
        HashRequest(froot, p, 3, 4, 0),  # not aligned on its size
        HashRequest(froot, p, 0, 128, 0),  # wider than the layer
        HashRequest(froot, p, 0, 64, 6),  # a proof above the root
        HashRequest(b"\x01" * 32, p, 0, 2, 0),  # no such file
        HashRequest(froot, p, 0, 100_000, 0),
    ]:
        assert server.answer(req) is None, req


@pytest.mark.parametrize("kind", ["v2", "hybrid"])
def test_create_progress_counts_every_piece(tmp_path, kind):
    root = make_payload(tmp_path, TREE, seed=6)
    calls: list[tuple[int, int]] = []
    _, meta = create_torrent(root, [], piece_length=16 * KiB, kind=kind, progress=lambda d, t: calls.append((d, t)))
    hashed = sum(-(-f.length // meta.piece_length) for f in meta.data_files)
    assert calls == [(n, hashed) for n in range(1, hashed + 1)]
