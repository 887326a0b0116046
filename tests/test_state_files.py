"""torrentcore's own files against hostile file systems (issue 13): links, FIFOs, garbage, planted folders.

Resume records and the DHT state live in the state folder (``TORRENTCORE_STATE_DIR``), never beside the
user's data. Whatever is planted at a path we read or write there (a symlink to a victim file, a FIFO, 5,000
levels of JSON nesting) costs one warning and a re-check, never a write through the link, a hang or a
crash; a symlink planted inside the download folder is refused before anything is created beyond it.
Transfers come from a real libtorrent seeder on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gevent
import pytest
from realpeers import (
    LOCALHOST,
    assert_same_tree,
    free_port,
    make_payload,
    make_torrent,
    peers_fixture,  # noqa: F401  (fixture "peers")
)
from torrentcore_cli import resume_record, run_cli, torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore import metainfo
from torrentcore.dht import DHTNode

RUN_TIMEOUT = 60
PIECE_LENGTH = 64 * 1024
SIZE = (3 << 20) + 4321
VICTIM = b"precious bytes that are not torrentcore's\n"


def _warnings(run, text: str) -> list[dict]:
    """The warning logs of ``run`` whose event or fields mention ``text``."""
    return [e for e in run.logs() if e.get("level") == "warning" and text in json.dumps(e)]


def _victim(path: Path) -> Path:
    path.write_bytes(VICTIM)
    return path


def _seeded(tmp_path: Path, peers, spec=SIZE, name: str = "data.bin"):
    """A payload, its torrent (v1) and a libtorrent seeder serving it: ``(root, torrent, meta, seeder)``."""
    root = Path(make_payload(tmp_path / "seed", spec, seed=13, name=name))
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=PIECE_LENGTH, out=torrent)
    seeder = peers.libtorrent("seeder")
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    return root, torrent, metainfo.load(str(torrent)), seeder


def _dht_args() -> list[str]:
    """DHT on, bootstrapping from a port where nobody listens (loopback only: never the public DHT)."""
    return ["--dht-bootstrap", f"{LOCALHOST}:{free_port()}"]


# -- links and FIFOs planted where we read and write our own state ----------------------------------


def test_symlinks_at_every_state_path_are_replaced_never_written_through(tmp_path, peers, torrentcore):
    root, torrent, meta, seeder = _seeded(tmp_path, peers)
    out = tmp_path / "out"
    state = torrentcore.state_dir
    record = resume_record(state, out, meta)
    record.parent.mkdir(parents=True)
    dht_state = state / "dht.json"
    victims = {}
    for n, planted in enumerate([record, Path(f"{record}.tmp"), dht_state, Path(f"{dht_state}.tmp"),
                                 out / f".torrentcore-{meta.info_hash_hex}.resume",  # where records used to be
                                 out / f".torrentcore-{meta.info_hash_hex}.resume.tmp"]):
        planted.parent.mkdir(parents=True, exist_ok=True)
        victims[planted] = _victim(tmp_path / f"victim-{n}")
        os.symlink(victims[planted], planted)

    run = torrentcore.run(torrent, out, *_dht_args(), peers=[seeder.endpoint], dht=True, state_dir=state)
    assert run.wait(RUN_TIMEOUT) == 0, run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    assert_same_tree(root, out / "data.bin", run.describe())
    for planted, victim in victims.items():
        assert victim.read_bytes() == VICTIM, f"written through the link at {planted}"
    assert len(_warnings(run, str(record))) == 1, run.describe()
    assert len(_warnings(run, "dht state")) == 1, run.describe()
    # Our files are now regular files of our own, in place of the links.
    assert not record.is_symlink() and record.is_file(), run.describe()
    assert not dht_state.is_symlink() and json.loads(dht_state.read_text())["version"] == 1
    again = torrentcore.run(torrent, out, "--no-dht", peers=[seeder.endpoint], state_dir=state)
    assert again.wait(RUN_TIMEOUT) == 0, again.describe()
    assert again.events("resume record trusted"), again.describe()


def test_fifos_at_the_record_and_the_dht_state_neither_hang_nor_stop_the_run(tmp_path, peers, torrentcore):
    root, torrent, meta, seeder = _seeded(tmp_path, peers)
    out = tmp_path / "out"
    state = torrentcore.state_dir
    record = resume_record(state, out, meta)
    record.parent.mkdir(parents=True)
    os.mkfifo(record)
    os.mkfifo(state / "dht.json")

    run = torrentcore.run(torrent, out, *_dht_args(), peers=[seeder.endpoint], dht=True, state_dir=state)
    assert run.wait(RUN_TIMEOUT) == 0, run.describe()  # a plain open() of a FIFO blocks for ever
    assert_same_tree(root, out / "data.bin", run.describe())
    assert len(_warnings(run, "FIFO")) == 2, run.describe()
    assert record.is_file() and (state / "dht.json").is_file(), "replaced by regular files"


def test_dht_lock_that_is_a_link_or_a_fifo_is_refused_in_place(tmp_path):
    for kind in ("link", "fifo"):
        folder = tmp_path / kind
        folder.mkdir()
        victim = _victim(tmp_path / f"victim-{kind}")
        lock = folder / "dht.json.lock"
        os.symlink(victim, lock) if kind == "link" else os.mkfifo(lock)
        with gevent.Timeout(10):
            node = DHTNode(0, bootstrap=[], state_path=str(folder / "dht.json"), host=LOCALHOST)
        assert node.state_path is None, kind  # this node neither loads nor saves a state file
        node.stop()
        assert victim.read_bytes() == VICTIM
        assert sorted(p.name for p in folder.iterdir()) == ["dht.json.lock"], kind


def test_garbage_dht_state_is_ignored(tmp_path):
    for n, raw in enumerate([b"[" * 5000, b'{"node_id": 5, "nodes": "x"}', b'{"node_id": "00", "nodes": []}',
                             b'{"node_id": "' + b"ab" * 20 + b'", "nodes": [[1, 2, 3]]}', b"\xff\xfe",
                             b'{"node_id": "' + b"ab" * 20 + b'", "nodes": [["127.0.0.1", ' + b"9" * 5000 + b"]]}"]):
        path = tmp_path / f"dht-{n}.json"
        path.write_bytes(raw)
        node = DHTNode(0, bootstrap=[], state_path=str(path), host=LOCALHOST)
        assert node.saved_nodes == [] and len(node.node_id) == 20, raw[:40]
        node.stop()


# -- malformed state never crashes a start ------------------------------------------------------------


@pytest.mark.parametrize("record_bytes", [
    b"[" * 5000,  # 'internal error: RecursionError' on every start before
    b'{"version": 2, "info_hash": 5, "files": {}, "pieces": null}',
    b'{"version": 2, "info_hash": "%s", "save_path": "%s", "files": [[1e400, "x"]], "pieces": "zz"}',
    b'{"version": 2, "info_hash": "%s", "save_path": "%s", "files": [[' + b"9" * 100_000 + b', 0]], "pieces": ""}',
    b"\x00" * 300,
], ids=["nested-5000", "wrong-types", "wrong-values", "huge-number", "binary"])
def test_malformed_resume_record_and_dht_state_mean_one_warning_and_a_recheck(tmp_path, torrentcore, record_bytes):
    root = Path(make_payload(tmp_path / "data", SIZE, seed=5, name="data.bin"))
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=PIECE_LENGTH, out=torrent)
    meta = metainfo.load(str(torrent))
    out = tmp_path / "data"
    record = resume_record(torrentcore.state_dir, out, meta)
    record.parent.mkdir(parents=True)
    if b"%s" in record_bytes:
        record_bytes = record_bytes % (meta.info_hash_hex.encode(), str(out).encode())
    record.write_bytes(record_bytes)
    (torrentcore.state_dir / "dht.json").write_bytes(b"{" * 5000)

    run = torrentcore.run(torrent, out, *_dht_args(), dht=True, state_dir=torrentcore.state_dir)
    assert run.wait(RUN_TIMEOUT) == 0, run.describe()
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr, run.describe()
    assert len(_warnings(run, "ignoring the resume record")) == 1, run.describe()
    assert len(_warnings(run, "ignoring unreadable dht state file")) == 1, run.describe()
    checked = run.events("checking existing data")
    assert checked and checked[0]["candidates"] == meta.num_pieces, run.describe()  # the data was re-checked
    assert run.summary()["pieces_done"] == meta.num_pieces, run.describe()


# -- folders planted inside the download folder --------------------------------------------------------


@pytest.mark.parametrize("planted", ["t", "t/sub"])
def test_symlinked_folder_inside_the_download_folder_creates_nothing_outside(tmp_path, peers, torrentcore, planted):
    spec = {"sub/deeper/f.bin": 200_000, "a.bin": 70_000}
    root = Path(make_payload(tmp_path / "seed", spec, seed=2, name="t"))
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=PIECE_LENGTH, out=torrent)
    seeder = peers.libtorrent("seeder")
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    (out / planted).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, out / planted)

    run = torrentcore.run(torrent, out, peers=[seeder.endpoint])
    assert run.wait(RUN_TIMEOUT) == 1, run.describe()
    errors = [line for line in run.stderr.splitlines() if line.startswith("torrentcore: error:")]
    assert len(errors) == 1 and f"{planted} is a symlink" in errors[0], run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    assert list(outside.iterdir()) == [], "nothing may be created through the planted link"


# -- resume records out of the user's data (issue 11) ----------------------------------------------------


def test_nothing_of_ours_in_the_data_folder_and_create_packs_only_user_files(tmp_path, peers, torrentcore):
    spec = {"a.bin": 300_000, "docs/b.txt": 5_000}
    root = Path(make_payload(tmp_path / "seed", spec, seed=4, name="share"))
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=PIECE_LENGTH, out=torrent)
    seeder = peers.libtorrent("seeder")
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    out = tmp_path / "out"
    run = torrentcore.run(torrent, out, peers=[seeder.endpoint])
    assert run.wait(RUN_TIMEOUT) == 0, run.describe()
    meta = metainfo.load(str(torrent))
    assert resume_record(torrentcore.state_dir, out, meta).is_file()
    assert os.listdir(out) == ["share"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["share", "share/a.bin", "share/docs",
                                                                       "share/docs/b.txt"]
    # A seeded folder made into a new torrent holds the user's files and nothing of ours.
    made = tmp_path / "again.torrent"
    created = run_cli(["create", str(out / "share"), "-o", str(made), "--no-date"])
    assert created.returncode == 0, created.stderr
    assert sorted(f.relpath for f in metainfo.load(str(made)).data_files) == ["share/a.bin", "share/docs/b.txt"]


def test_failed_seed_leaves_nothing_in_the_data_folder(tmp_path, torrentcore):
    root = Path(make_payload(tmp_path / "data", SIZE, seed=8, name="data.bin"))
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=PIECE_LENGTH, out=torrent)
    with open(root, "r+b") as fh:  # one piece damaged: seed refuses incomplete data
        fh.seek(PIECE_LENGTH * 3)
        fh.write(b"\0" * 100)
    before = sorted(os.listdir(tmp_path / "data"))
    seed = torrentcore.seed(torrent, tmp_path / "data")
    assert seed.wait(RUN_TIMEOUT) == 1, seed.describe()
    assert "incomplete" in seed.stderr, seed.describe()
    assert sorted(os.listdir(tmp_path / "data")) == before == ["data.bin"]
