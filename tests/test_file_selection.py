"""``torrentcore run --only/--skip``: choosing files of a multi-file torrent, against a real libtorrent seeder.

The selection is turned into wanted pieces (those overlapping a selected file); only they are requested, the
run is complete when they are verified, trackers hear the right ``left``, and a later run without a selection
completes the rest, reusing what is on disk. Files are numbered as ``torrentcore info`` lists them.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

import gevent.pywsgi
import pytest
from realpeers import (
    LOCALHOST,
    LibtorrentPeer,
    RealPeers,
    assert_same_tree,
    make_payload,
    make_torrent,
    peers_fixture,  # noqa: F401  (fixture "peers")
    wait_until,
)
from torrentcore_cli import run_cli, torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore import bencode, metainfo
from torrentcore.errors import BadInputError
from torrentcore.selection import select_files, wanted_pieces

PIECE = 64 * 1024
#: Sizes that are not multiples of a piece, so neighbours share boundary pieces; d.bin shares none with b.bin.
SPEC = {"a.bin": 200_000, "b.bin": 1_000_003, "c.bin": 150_001, "d/d.bin": 2_000_000, "empty": 0}
RUN_TIMEOUT = 30


def _payload(tmp_path: Path, trackers=()) -> tuple[str, Path, metainfo.Metainfo]:
    root = make_payload(tmp_path / "seed", SPEC, seed=77)
    torrent = tmp_path / "t.torrent"
    make_torrent(root, list(trackers), piece_length=PIECE, out=torrent)
    return root, torrent, metainfo.load(str(torrent))


def _seeder(peers: RealPeers, torrent: Path, data: Path, **settings) -> LibtorrentPeer:
    seeder = peers.libtorrent("seeder", **settings)
    seeder.add_torrent(torrent, data, seed=True)
    return seeder


def _uploaded_to_us(seeder: LibtorrentPeer) -> int:
    return sum(t["uploaded"] for t in seeder.transfers() if t["pid"].startswith(b"-TC"))


def _index(meta: metainfo.Metainfo, inner: str) -> int:
    return next(i for i, f in enumerate(meta.data_files) if f.relpath == f"payload/{inner}")


def _piece_bytes(meta: metainfo.Metainfo, mask) -> int:
    return sum(meta.piece_size(i) for i in mask.indices())


def _assert_selected_only(meta: metainfo.Metainfo, root: str, out: Path, selected: list[int]) -> None:
    """Selected files are byte-identical; an unselected file is absent, or holds only bytes of wanted
    (boundary) pieces, identical to the original there and zero (a hole) everywhere else."""
    mask = wanted_pieces(meta, selected)
    for i, f in enumerate(meta.data_files):
        original = Path(root).parent.joinpath(*f.path).read_bytes()
        path = out.joinpath(*f.path)
        if i in selected:
            assert path.read_bytes() == original, f"{f.relpath} differs"
            continue
        allowed = [p for p in range(f.offset // PIECE, (f.offset + max(f.length, 1) - 1) // PIECE + 1)
                   if f.length and mask[p]]
        if not allowed:
            assert not path.exists(), f"{f.relpath} shares no piece with the selection but was created"
            continue
        if not path.exists():
            continue
        data = path.read_bytes()
        lo = max(0, allowed[0] * PIECE - f.offset)
        hi = min(f.length, (allowed[-1] + 1) * PIECE - f.offset)
        assert len(data) <= hi, f"{f.relpath} has bytes beyond the boundary pieces"
        assert data[lo:] == original[lo:len(data)], f"{f.relpath}: boundary bytes differ"
        assert not any(data[:lo]), f"{f.relpath} holds bytes before the boundary piece"


# --------------------------------------------------------------------------------------------------
# Selection rules (no network)
# --------------------------------------------------------------------------------------------------


def test_globs_indices_skip_and_wanted_pieces(tmp_path):
    _, _, meta = _payload(tmp_path)
    names = [f.relpath for f in meta.data_files]
    b, c, d = (_index(meta, n) for n in ("b.bin", "c.bin", "d/d.bin"))
    assert select_files(meta) is None
    assert select_files(meta, only=["b.bin"]) == [b]  # the path inside the torrent
    assert select_files(meta, only=["payload/b.bin"]) == [b]  # the path as `info` shows it
    assert select_files(meta, only=[str(c), "d/*"]) == sorted([c, d])
    assert select_files(meta, only=["*.bin"], skip=["d/*", str(b)]) == sorted(
        i for i, n in enumerate(names) if n.endswith(".bin") and i not in (b, d))
    assert select_files(meta, skip=["empty"]) == [i for i, n in enumerate(names) if not n.endswith("empty")]
    mask = wanted_pieces(meta, [b])
    f = meta.data_files[b]
    assert list(mask.indices()) == list(range(f.offset // PIECE, (f.offset + f.length - 1) // PIECE + 1))
    assert wanted_pieces(meta, [_index(meta, "empty")]).count == 0
    for only, skip, message in ((["nope*"], [], "matches no file"), (["99"], [], "files 0 to 4"),
                                ([], ["*"], "leaves no file"), (["b.bin"], ["nothing-like-this"], "matches no")):
        with pytest.raises(BadInputError, match=message):
            select_files(meta, only=only, skip=skip)


def test_pad_files_are_not_numbered_and_want_no_piece():
    files = [{b"length": 100, b"path": [b"a"]},
             {b"length": PIECE - 100, b"path": [b".pad", b"x"], b"attr": b"p"},  # BEP 47: b starts a piece
             {b"length": 2 * PIECE, b"path": [b"b"]}]
    info = {b"name": b"t", b"piece length": PIECE, b"pieces": b"\x00" * 60, b"files": files}
    meta = metainfo.parse(bencode.encode({b"info": info}))
    assert [f.relpath for f in meta.data_files] == ["t/a", "t/b"]
    assert select_files(meta, only=["1"]) == [1]
    with pytest.raises(BadInputError):
        select_files(meta, only=["*.pad*"])  # pad files cannot be selected
    assert list(wanted_pieces(meta, [1]).indices()) == [1, 2]
    assert list(wanted_pieces(meta, [0]).indices()) == [0]


def test_info_numbers_files_as_only_and_skip_count_them(tmp_path):
    _, torrent, meta = _payload(tmp_path)
    text = run_cli(["info", str(torrent)])
    assert text.returncode == 0, text.stderr
    for i, f in enumerate(meta.data_files):
        assert any(line.split()[0] == str(i) and line.endswith(f.relpath) for line in text.stdout.splitlines()), \
            text.stdout
    data = json.loads(run_cli(["info", str(torrent), "--json"]).stdout)
    assert [(f["index"], f["path"]) for f in data["files"]] == [(i, f.relpath) for i, f in enumerate(meta.data_files)]


@pytest.mark.parametrize("args", [["--only", "nope*"], ["--only", "17"], ["--skip", "*"], ["--skip", "missing"]])
def test_a_selection_matching_nothing_is_bad_input(tmp_path, args):
    _, torrent, _ = _payload(tmp_path)
    out = tmp_path / "out"
    done = run_cli(["run", str(torrent), "-o", str(out), "--no-seed", "--port", "0", *args])
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torrentcore: error:") and "Traceback" not in done.stderr, lines
    assert not out.exists(), "nothing is created for a refused selection"


# --------------------------------------------------------------------------------------------------
# End to end against libtorrent
# --------------------------------------------------------------------------------------------------


def test_only_downloads_the_selected_file_then_a_full_run_completes_the_rest(tmp_path, peers, torrentcore):
    root, torrent, meta = _payload(tmp_path)
    seeder = _seeder(peers, torrent, tmp_path / "seed")
    out = tmp_path / "out"
    b = _index(meta, "b.bin")
    mask = wanted_pieces(meta, [b])

    first = torrentcore.run(torrent, out, "--only", "b.bin", peers=[seeder.endpoint])
    assert first.wait(RUN_TIMEOUT) == 0, first.describe() + peers.describe()
    summary = first.summary()
    assert summary is not None and summary["verdict"] == "complete (1 of 5 files selected)", first.describe()
    assert summary["pieces_done"] == mask.count, first.describe()
    assert "complete (1 of 5 files selected)" in first.stdout
    _assert_selected_only(meta, root, out, [b])
    sent = _uploaded_to_us(seeder)
    assert sent < meta.total_length // 2, f"the seeder sent {sent} B for a {_piece_bytes(meta, mask)} B selection"

    second = torrentcore.run(torrent, out, peers=[seeder.endpoint])
    assert second.wait(RUN_TIMEOUT) == 0, second.describe() + peers.describe()
    full = second.summary()
    assert full is not None and full["verdict"] == "done" and full["pieces_done"] == meta.num_pieces, second.stdout
    assert_same_tree(root, out / "payload", second.describe())
    trusted = second.events("resume record trusted")
    assert trusted and trusted[0]["pieces"] == mask.count, second.describe()
    assert full["downloaded_max"] <= meta.total_length - _piece_bytes(meta, mask) + 4 * PIECE, second.stdout


def test_skip_a_file_by_glob_and_one_by_index(tmp_path, peers, torrentcore):
    root, torrent, meta = _payload(tmp_path)
    seeder = _seeder(peers, torrent, tmp_path / "seed")
    out = tmp_path / "out"
    skipped = {_index(meta, "d/d.bin"), _index(meta, "a.bin")}
    run = torrentcore.run(torrent, out, "--skip", "d/*", "--skip", str(_index(meta, "a.bin")),
                          peers=[seeder.endpoint])
    assert run.wait(RUN_TIMEOUT) == 0, run.describe() + peers.describe()
    selected = [i for i in range(len(meta.data_files)) if i not in skipped]
    assert run.summary()["verdict"] == f"complete ({len(selected)} of 5 files selected)", run.stdout
    _assert_selected_only(meta, root, out, [i for i in selected if meta.data_files[i].length])


class _RecordingTracker:
    """An HTTP tracker on 127.0.0.1 that records every announce and hands out one peer."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.announces: list[dict[str, str]] = []
        self.peer = peer
        self.server = gevent.pywsgi.WSGIServer((LOCALHOST, 0), self._app, log=None, error_log=None)
        self.server.start()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.server.server_port}/announce"

    def _app(self, environ, start_response):
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        self.announces.append({k: v[0] for k, v in query.items() if k != "info_hash"})
        host, port = self.peer
        compact = bytes(map(int, host.split("."))) + port.to_bytes(2, "big")
        body = bencode.encode({b"interval": 1800, b"peers": compact})
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    def stop(self) -> None:
        self.server.stop(timeout=1)


def test_tracker_hears_left_of_the_selected_pieces(tmp_path, peers, torrentcore):
    seeder = peers.libtorrent("seeder")
    tracker = _RecordingTracker(seeder.endpoint)
    try:
        root, torrent, meta = _payload(tmp_path, trackers=[tracker.url])
        seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
        c = _index(meta, "c.bin")
        run = torrentcore.run(torrent, tmp_path / "out", "--only", "c.bin")
        assert run.wait(RUN_TIMEOUT) == 0, run.describe() + peers.describe()
    finally:
        tracker.stop()
    wanted = _piece_bytes(meta, wanted_pieces(meta, [c]))
    events = [(a.get("event", ""), int(a["left"])) for a in tracker.announces if a["peer_id"].startswith("-TC")]
    assert events[0] == ("started", wanted), events
    assert ("completed", 0) in events, events
    assert all(left <= wanted for _, left in events), events
    assert (tmp_path / "out" / "payload" / "c.bin").read_bytes() == Path(root, "c.bin").read_bytes()
    assert os.path.getsize(tmp_path / "out" / "payload" / "c.bin") == SPEC["c.bin"]


def test_seeding_a_selection_offers_exactly_the_pieces_we_have(tmp_path, peers, torrentcore):
    root, torrent, meta = _payload(tmp_path)
    seeder = _seeder(peers, torrent, tmp_path / "seed")
    b = _index(meta, "b.bin")
    mask = wanted_pieces(meta, [b])
    run = torrentcore.run(torrent, tmp_path / "out", "--only", "b.bin", "--seed-idle", "0", "--seed-ratio", "0",
                          no_seed=False, peers=[seeder.endpoint])
    assert run.wait_event("download complete", RUN_TIMEOUT), run.describe() + peers.describe()
    seeder.close()  # torrentcore is now the only source, holding the selection's pieces
    leecher = peers.libtorrent("leecher")
    leecher.add_torrent(torrent, tmp_path / "leech")
    leecher.connect_peer("127.0.0.1", run.wait_listening())

    def pieces() -> set[int]:
        return {i for i, got in enumerate(leecher.handle.status().pieces) if got}

    assert wait_until(lambda: len(pieces()) >= mask.count, 20), peers.describe() + run.describe()
    assert pieces() == set(mask.indices())
    assert leecher.flush(), peers.describe()  # its pieces may still be in its write queue
    assert Path(tmp_path / "leech" / "payload" / "b.bin").read_bytes() == Path(root, "b.bin").read_bytes()
    assert run.returncode is None and run.stop() == 0, run.describe()  # complete: stopping its seeding is success
    assert run.summary()["uploaded_min"] > 0, run.stdout
