"""Hostile .torrent files: every limit of metainfo.py / bencode.py, through the real CLI.

A torrent past a limit (wrong types, absurd sizes, too many pieces, files or values, nesting, a
string past the end, paths too long) makes ``torrentcore info`` and ``torrentcore run`` exit 2 with
exactly one line, no traceback, and create nothing; every truncation of a torrent is refused.
Hostile names (``..``, absolute paths, drive letters, control characters, device names, trailing
dots, duplicates, symlinks) are made safe instead: a real libtorrent seeder serves such a torrent
and ``torrentcore run`` writes every byte inside its download folder and nothing anywhere else.
Windows' rules are checked in-process with the flag ``metainfo._WINDOWS_NAMES`` switched on.

The conformance corpus (tests/test_conformance.py) and the basic malformed files of
tests/test_download.py and tests/test_plugins_and_cli.py are not repeated here.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from realpeers import LibtorrentPeer, RealPeers
from torrentcore_cli import run_cli, torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore import bencode, metainfo
from torrentcore.errors import BencodeError, MetainfoError

PIECE = 16384


def _torrent(info: dict, **top) -> bytes:
    return bencode.encode({b"announce": b"http://127.0.0.1:1/announce", b"info": info, **top})


def _single(length: int = 100, pieces: int | None = None, **info) -> dict:
    count = -(-length // PIECE) if pieces is None else pieces
    return {b"name": b"x", b"piece length": PIECE, b"length": length, b"pieces": b"\x01" * 20 * count, **info}


def _multi(files: list[dict], pieces: int | None = None, name: bytes = b"evil") -> dict:
    total = sum(f.get(b"length", 0) for f in files)
    count = -(-total // PIECE) if pieces is None else pieces
    return {b"name": name, b"piece length": PIECE, b"files": files, b"pieces": b"\x01" * 20 * count}


def _file(*path: bytes, length: int = 10) -> dict:
    return {b"length": length, b"path": list(path)}


VALID = _torrent(_multi([_file(b"a", length=20_000), _file(b"b", b"c", length=30_000)]))


def _nested(depth: int) -> bytes:
    """A torrent whose containers nest ``depth`` deep (the top dictionary, then lists in 'comment')."""
    lists = depth - 1
    return b"d8:announce3:x:y7:comment" + b"l" * lists + b"e" * lists + b"4:info" + bencode.encode(_single()) + b"e"


def _many_files(count: int) -> bytes:
    """A torrent of ``count`` one-byte files, written directly (bencode.encode takes seconds for this)."""
    entries = b"".join(b"d6:lengthi1e4:pathl%d:%bee" % (len(b"%d" % i), b"%d" % i) for i in range(count))
    pieces = b"\x01" * 20 * -(-count // PIECE)
    info = b"d5:filesl" + entries + b"e4:name4:evil12:piece lengthi%de6:pieces%d:" % (PIECE, len(pieces)) + pieces
    return b"d4:info" + info + b"ee"


# name -> (function building the torrent's bytes, part of the expected error line)
REJECTED = {
    "name-is-an-integer": (lambda: _torrent({**_single(), b"name": 7}), "invalid 'name'"),
    "files-is-a-dict": (lambda: _torrent({**_multi([_file(b"a")]), b"files": {b"a": 1}}), "invalid 'files'"),
    "path-is-a-string": (lambda: _torrent(_multi([{b"length": 1, b"path": b"a/b"}])), "invalid or missing 'path'"),
    "piece-length-is-a-string": (lambda: _torrent({**_single(), b"piece length": b"16384"}), "'piece length'"),
    "negative-length": (
        lambda: _torrent(_multi([_file(b"a", length=-5)], pieces=1)), "invalid or missing 'length'"),
    "length-over-2^63": (
        lambda: _torrent(_single()).replace(b"6:lengthi100e", b"6:lengthi9223372036854775808e"), "64-bit range"),
    "length-over-256TiB": (lambda: _torrent(_single(2**48, pieces=1)), "larger than the supported"),
    "total-size-overflow": (
        lambda: _torrent(_multi([_file(b"a", length=2**63 - 1), _file(b"b", length=2**63 - 1)], pieces=1)),
        "larger than the supported"),
    "one-hash-missing": (lambda: _torrent(_single(5 * PIECE, pieces=4)), "piece count mismatch"),
    "one-hash-too-many": (lambda: _torrent(_single(5 * PIECE, pieces=6)), "piece count mismatch"),
    "more-pieces-than-the-limit": (
        lambda: _torrent(_single(PIECE * (metainfo.MAX_PIECES + 1))), f"the limit is {metainfo.MAX_PIECES}"),
    "nested-101-deep": (lambda: _nested(101), "nested deeper than 100"),
    "two-million-values": (
        lambda: b"d7:comment" + b"l" + b"le" * bencode.MAX_TOKENS + b"e4:info" + bencode.encode(_single()) + b"e",
        f"more than {bencode.MAX_TOKENS} values"),
    "string-length-past-the-end": (lambda: b"d4:info99999999999:" + b"x" * 100 + b"e", "runs past the end"),
    "path-over-4096-bytes": (
        lambda: _torrent(_multi([_file(*[b"d" * 200] * 21)])), f"longer than the supported {metainfo.MAX_PATH_BYTES}"),
    "too-many-files": (lambda: _many_files(metainfo.MAX_FILES + 1), "too many files"),
    "file-over-64MiB": (None, "too large for a .torrent file"),
}


def test_a_nesting_of_100_is_still_accepted():
    assert metainfo.parse(_nested(100)).name == "x"


@pytest.mark.parametrize("command", ["info", "run"])
@pytest.mark.parametrize("case", sorted(REJECTED))
def test_rejected_through_the_cli_with_one_line_and_exit_2(tmp_path, case, command):
    build, reason = REJECTED[case]
    torrent = tmp_path / "hostile.torrent"
    if build is None:  # a sparse file one byte over the size limit
        with open(torrent, "wb") as fh:
            fh.truncate(bencode.MAX_SIZE + 1)
    else:
        torrent.write_bytes(build())
    out = tmp_path / "out"
    args = ["info", str(torrent)] if command == "info" else ["run", str(torrent), "-o", str(out), "--no-seed"]
    res = run_cli(args, timeout=90, cwd=str(tmp_path))
    context = f"rc={res.returncode}\nstdout: {res.stdout[-2000:]}\nstderr: {res.stderr[-2000:]}"
    assert res.returncode == 2, context
    lines = [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("torrentcore: error: "), context
    assert reason in lines[0] and "Traceback" not in res.stderr, context
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.torrent"], "created files"


def test_every_truncation_of_a_torrent_is_an_error():
    for end in range(len(VALID)):
        with pytest.raises((MetainfoError, BencodeError)):
            metainfo.parse(VALID[:end])
    assert metainfo.parse(VALID).total_length == 50_000
    assert metainfo.parse(VALID + b"\r\n").total_length == 50_000  # a trailing newline is tolerated


def test_file_count_limit_is_exact(monkeypatch):
    monkeypatch.setattr(metainfo, "MAX_FILES", 50)
    assert len(metainfo.parse(_many_files(50)).files) == 50
    with pytest.raises(MetainfoError, match="too many files"):
        metainfo.parse(_many_files(51))


def test_piece_count_limit_is_exact():
    meta = metainfo.parse(_torrent(_single(PIECE * metainfo.MAX_PIECES)))
    assert meta.num_pieces == metainfo.MAX_PIECES


def test_largest_supported_torrent_loads_and_one_byte_more_does_not():
    piece_length = 2**29
    size = metainfo.MAX_TOTAL_SIZE
    info = {**_single(size, pieces=-(-size // piece_length)), b"piece length": piece_length}
    assert metainfo.parse(_torrent(info)).total_length == size
    info[b"length"] = size + 1
    with pytest.raises(MetainfoError, match="larger than the supported"):
        metainfo.parse(_torrent(info))


def test_deep_paths_up_to_the_length_limit_load():
    # 2,000 folders: the deepest path that fits in MAX_PATH_BYTES; clashes deep down are still resolved.
    deep = [b"d"] * 2000
    files = [_file(*deep, b"f"), _file(*deep, b"f"), _file(*deep, b"f", b"g"), _file(*deep, b"%d" % 7)]
    meta = metainfo.parse(_torrent(_multi(files)))
    assert [f.path[-1] for f in meta.files] == ["f", "f.1", "g", "7"]
    assert meta.files[2].path[-2] == "f.2"
    assert len(meta.files[0].path) == 2002


# --- names: made safe, never a reason to refuse ---------------------------------------------------

WINDOWS_NAMES = [
    (b"C:", "C_"),
    (b"c:\\windows", "c__windows"),
    (b"x:y", "x_y"),
    (b"a<b>c|d?e*f\"g", "a_b_c_d_e_f_g"),
    (b"CON", "CON_"),
    (b"con", "con_"),
    (b"nul.txt", "nul_.txt"),
    (b"LPT1.tar.gz", "LPT1_.tar.gz"),
    (b"com9", "com9_"),
    ("COM\u00b9".encode(), "COM\u00b9_"),
    (b"CONIN$", "CONIN$_"),
    (b"aux .txt", "aux _.txt"),
    (b"prn.", "prn_"),
    (b"trailing.", "trailing"),
    (b"trailing . . ", "trailing"),
    (b"...", "_"),
    (b"console", "console"),
    (b"com10", "com10"),
    (b"file.con", "file.con"),
]


@pytest.mark.parametrize("raw,expected", WINDOWS_NAMES, ids=[n.decode("utf-8") for n, _ in WINDOWS_NAMES])
def test_windows_name_rules(monkeypatch, raw, expected):
    monkeypatch.setattr(metainfo, "_WINDOWS_NAMES", True)
    meta = metainfo.parse(_torrent(_multi([_file(raw)])))
    assert meta.files[0].path == ("evil", expected)


def test_windows_rules_are_off_on_posix():
    if metainfo._WINDOWS_NAMES:
        pytest.skip("running on Windows")
    meta = metainfo.parse(_torrent(_multi([_file(b"CON"), _file(b"a:b"), _file(b"dot.")])))
    assert [f.relpath for f in meta.files] == ["evil/CON", "evil/a:b", "evil/dot."]


def test_names_equal_after_windows_rules_are_deduplicated(monkeypatch):
    monkeypatch.setattr(metainfo, "_WINDOWS_NAMES", True)
    monkeypatch.setattr(metainfo, "_CASE_INSENSITIVE_FS", True)
    files = [_file(b"a."), _file(b"A"), _file(b"a "), _file(b"a", b"x"), _file("\u00e9".encode()),
             _file("e\u0301".encode())]
    meta = metainfo.parse(_torrent(_multi(files)))
    assert [f.relpath for f in meta.files] == [
        "evil/a", "evil/A.1", "evil/a.2", "evil/a.3/x", "evil/\u00e9", "evil/e\u0301.1"]


def test_a_file_where_a_folder_is_needed_and_duplicates():
    meta = metainfo.parse(_torrent(_multi([_file(b"d"), _file(b"d", b"f"), _file(b"d", b"f"), _file(b"D")])))
    assert [f.relpath for f in meta.files] == ["evil/d", "evil/d.1/f", "evil/d.1/f.1", "evil/D"]


def test_too_many_duplicates_is_an_error():
    with pytest.raises(MetainfoError, match="duplicate"):
        metainfo.parse(_torrent(_multi([_file(b"same")] * (metainfo.MAX_DUPLICATES + 2))))


def _hostile_files(tmp_path: Path) -> list[dict]:
    sizes = iter([20_001, 1, 16_384, 5_000, 33_333, 777, 2, 3, 4, 12_345, 9_999, 6, 40_000])
    paths = [
        [b"..", b"..", b"escaped-dotdot"],
        [os.fsencode(tmp_path / "escaped-abs")],
        [b"/", *os.fsencode(tmp_path / "escaped-split").split(b"/")[1:]],
        [b"a\\..\\..\\..\\escaped-backslash"],
        [b"C:", b"drive"],
        [b"CON"],
        [b"nul.txt"],
        [b"trailing."],
        [b"ctl\x01\x1fname\x00end"],
        [b"dup"],
        [b"dup"],
        [b"", b".", b"empty-and-dot"],
    ]
    files = [_file(*p, length=next(sizes)) for p in paths]
    # A symlink pointing out of the download folder: metainfo keeps it (length 0), storage never creates it.
    files.insert(3, {b"length": 0, b"attr": b"l", b"path": [b"link"], b"symlink path": [b"..", b"..", b"..", b"etc"]})
    return files


def _real_torrent(files: list[dict], payload: bytes) -> bytes:
    pieces = b"".join(hashlib.sha1(payload[i : i + PIECE]).digest() for i in range(0, len(payload), PIECE))
    return _torrent({b"name": b"evil", b"piece length": PIECE, b"files": files, b"pieces": pieces})


def _tree(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        if any(path == s or s in path.parents for s in skip):
            continue
        mode = path.lstat().st_mode
        key = str(path.relative_to(root))
        out[key] = "symlink" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode) else path.read_bytes()
    return out


@pytest.mark.filterwarnings("ignore:files\\(\\) is deprecated:DeprecationWarning")
def test_run_downloads_a_hostile_torrent_from_libtorrent_inside_the_folder(tmp_path, torrentcore):
    files = _hostile_files(tmp_path)
    payload = hashlib.shake_256(b"hostile names").digest(sum(f[b"length"] for f in files))
    data = _real_torrent(files, payload)
    torrent = tmp_path / "evil.torrent"
    torrent.write_bytes(data)

    # The seeder's data at libtorrent's own (sanitized) paths.
    import libtorrent as lt

    seed = tmp_path / "seed"
    # files(), not layout(): only the storage view has the duplicates renamed (deprecated, still the one).
    fs = lt.torrent_info(lt.bdecode(data)).files()
    for i in range(fs.num_files()):
        if fs.file_flags(i) & lt.file_storage.flag_symlink:
            continue
        target = seed / fs.file_path(i)
        assert seed in target.resolve().parents
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload[fs.file_offset(i) : fs.file_offset(i) + fs.file_size(i)])

    expected = metainfo.parse(data)
    with RealPeers(tmp_path / "peers") as peers:
        seeder: LibtorrentPeer = peers.libtorrent("seeder")
        seeder.add_torrent(data, seed, seed=True)
        out = tmp_path / "out"
        ignore = (seed, out, tmp_path / "peers", tmp_path / "torrentcore")
        before = _tree(tmp_path, ignore)
        run = torrentcore.run(torrent, out, peers=[seeder.endpoint])
        rc = run.wait(60)
        context = f"{run.describe()}\n{peers.describe()}"
        assert rc == 0, context
        assert "Traceback" not in run.stderr, context

    # Nothing appeared or changed outside the download folder (nor at the absolute paths named).
    assert _tree(tmp_path, ignore) == before
    for name in ("escaped-dotdot", "escaped-abs", "escaped-split", "escaped-backslash"):
        assert not (tmp_path / name).exists() and not (out / name).exists()
    # Inside: exactly the torrent's files at metainfo's safe paths, with the right bytes; no symlink.
    got = _tree(out)
    assert "symlink" not in got.values()
    wanted = {
        f.relpath: payload[f.offset : f.offset + f.length] for f in expected.files if not f.symlink and not f.pad
    }
    got_files = {k: v for k, v in got.items() if isinstance(v, bytes) and not k.startswith(".torrentcore-")}
    assert got_files == wanted
    assert "evil/_/_/escaped-dotdot" in wanted and "evil/dup.1" in wanted
