"""The steps of moving and renaming a torrent's data (torrentcore.data_move), on real files in tmp_path.

The whole operations through the daemon (transmission-remote --move, torrent-rename-path, a move that
fails half way) are in test_daemon_remote.py; these pin down each step on its own.
"""

from __future__ import annotations

import os

import pytest
from realpeers import make_torrent

from torrentcore import metainfo
from torrentcore.data_move import move_files, rename_on_disk, rename_target, renamed
from torrentcore.statefile import UnsafePath


def _multi(tmp_path):
    src = tmp_path / "src" / "multi"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"a" * 40000)
    (src / "sub" / "b.bin").write_bytes(b"b" * 30000)
    data, _ = make_torrent(src, trackers=[], piece_length=16384)
    return metainfo.parse(data), tmp_path / "src"


def _tree(root) -> dict[str, bytes]:
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(root) for f in files}


def test_move_files_moves_the_layout_and_puts_everything_back_when_one_cannot_move(tmp_path):
    meta, old = _multi(tmp_path)
    before = _tree(old)
    new = tmp_path / "new"
    move_files(meta, str(old), str(new))
    assert _tree(new) == before and _tree(old) == {}
    blocked = tmp_path / "blocked"
    (blocked / "multi" / "sub").mkdir(parents=True)
    (blocked / "multi" / "sub" / "b.bin").write_bytes(b"the user's")  # the last file cannot go there
    with pytest.raises(OSError, match="already exists"):
        move_files(meta, str(new), str(blocked))
    assert _tree(new) == before  # a.bin went over and came back
    assert _tree(blocked) == {os.path.join("multi", "sub", "b.bin"): b"the user's"}


def test_move_files_refuses_a_link_planted_in_the_new_place(tmp_path):
    meta, old = _multi(tmp_path)
    before = _tree(old)
    new, elsewhere = tmp_path / "new", tmp_path / "elsewhere"
    (new / "multi").mkdir(parents=True)
    elsewhere.mkdir()
    os.symlink(elsewhere, new / "multi" / "sub")
    with pytest.raises(UnsafePath):
        move_files(meta, str(old), str(new))
    assert _tree(old) == before and list(elsewhere.iterdir()) == []


def test_rename_target_refuses_what_transmission_refuses(tmp_path):
    meta, _ = _multi(tmp_path)
    assert rename_target(meta, "multi/sub", "renamed") == (("multi", "sub"), ("multi", "renamed"))
    assert rename_target(meta, "/multi/a.bin/", "a.bin") == (("multi", "a.bin"), ("multi", "a.bin"))
    for name in ("", ".", "..", "x/y", "bad\x01"):
        with pytest.raises(ValueError, match="not a plain"):
            rename_target(meta, "multi/a.bin", name)
    with pytest.raises(ValueError, match="has no file or folder"):
        rename_target(meta, "multi/nope", "x")
    with pytest.raises(ValueError, match="already has"):
        rename_target(meta, "multi/a.bin", "sub")


def test_renamed_meta_keeps_the_info_hash_and_renames_the_torrent_with_its_top_folder(tmp_path):
    meta, _ = _multi(tmp_path)
    inner = renamed(meta, ("multi", "sub"), ("multi", "renamed"))
    assert sorted(f.path for f in inner.data_files) == [("multi", "a.bin"), ("multi", "renamed", "b.bin")]
    assert inner.name == "multi" and inner.info_hash == meta.info_hash
    top = renamed(meta, ("multi",), ("top",))
    assert top.name == "top" and {f.path[0] for f in top.data_files} == {"top"}


def test_rename_on_disk_renames_in_place_and_never_through_a_link(tmp_path):
    _, root = _multi(tmp_path)
    rename_on_disk(str(root), ("multi", "sub"), "renamed")
    assert (root / "multi" / "renamed" / "b.bin").read_bytes() == b"b" * 30000
    rename_on_disk(str(root), ("multi", "missing"), "other")  # not on disk yet: nothing to do
    with pytest.raises(FileExistsError):
        rename_on_disk(str(root), ("multi", "a.bin"), "renamed")
    os.symlink(root / "multi" / "a.bin", root / "multi" / "link")
    with pytest.raises(UnsafePath):
        rename_on_disk(str(root), ("multi", "link"), "b")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "inner").mkdir(parents=True)
    os.symlink(elsewhere, root / "multi" / "via")
    with pytest.raises(UnsafePath):
        rename_on_disk(str(root), ("multi", "via", "inner"), "moved")
    assert (elsewhere / "inner").is_dir()
