"""Every .torrent of ``shared/conformance`` is loaded or rejected as its manifest says."""

from __future__ import annotations

import csv
import json
import os
import posixpath

import pytest
from conftest import SHARED

from torrentcore import metainfo
from torrentcore.errors import TorrentcoreError

CORPORA = ["libtorrent_test_torrents", "real_torrents"]


def _rows():
    for corpus in CORPORA:
        folder = os.path.join(SHARED, "conformance", corpus)
        manifest = os.path.join(folder, "MANIFEST.tsv")
        if not os.path.exists(manifest):
            continue
        with open(manifest, newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                name = row.get("file") or row.get("File")
                yield pytest.param(folder, name, row, id=f"{corpus}/{name}")


ROWS = list(_rows())


def test_corpus_present():
    assert len(ROWS) >= 100, "shared/conformance is missing: set TORRENTCORE_SHARED"


def test_every_corpus_file_is_in_the_manifest():
    for corpus in CORPORA:
        folder = os.path.join(SHARED, "conformance", corpus)
        listed = {p.values[1] for p in ROWS if p.values[0] == folder}
        on_disk = {f for f in os.listdir(folder) if f.endswith(".torrent")}
        assert on_disk == listed


def _assert_safe(m: metainfo.Metainfo) -> None:
    seen = set()
    for f in m.data_files:
        rel = f.relpath
        assert not posixpath.isabs(rel)
        norm = posixpath.normpath(rel)
        assert not norm.startswith(".."), rel
        assert all(c not in ("", ".", "..") for c in f.path), rel
        assert all("/" not in c and "\\" not in c and "\x00" not in c for c in f.path), rel
        assert all(len(c.encode()) <= 255 for c in f.path), rel
        assert rel not in seen, f"two files share {rel}"
        seen.add(rel)
    # No file may sit where another file needs a folder.
    dirs = {"/".join(f.path[:i]) for f in m.data_files for i in range(1, len(f.path))}
    assert not dirs & seen


def _expected(row: dict) -> str:
    """What torrentcore must do: libtorrent's verdict wherever the manifest gives it for v2 readers."""
    return row.get("with_v2_support") or row["torrentcore_expected"]


@pytest.mark.parametrize("folder,name,row", ROWS)
def test_conformance(folder, name, row):
    expected = _expected(row)
    path = os.path.join(folder, name)
    if expected == "load":
        m = metainfo.load(path)
        if row["info_hash_v1"]:
            assert m.info_hash.hex() == row["info_hash_v1"]
            assert not m.v2_only
        else:
            assert m.v2_only and m.info_hash == m.info_hash_v2[:20]
        if row.get("info_hash_v2"):
            assert m.info_hash_v2_hex == row["info_hash_v2"]
        else:
            assert m.info_hash_v2 is None
        assert len(m.data_files) == int(row["files_without_pad"])
        assert m.data_length == int(row["bytes_without_pad"])
        _assert_safe(m)
        lt_paths = json.loads(row["first_paths_as_libtorrent_sanitizes_them"])
        ours = [f.relpath for f in m.data_files[: len(lt_paths)]]
        # Where libtorrent keeps a path unchanged (no sanitizing needed) we must agree exactly.
        for lt_path, our_path in zip(lt_paths, ours):
            if "_" not in lt_path and "...." not in lt_path and len(lt_path) < 200:
                assert our_path == lt_path
    elif expected.startswith("reject, or load"):
        try:
            m = metainfo.load(path)
        except TorrentcoreError:
            return
        _assert_safe(m)
    else:
        assert expected.startswith("reject"), expected
        with pytest.raises(TorrentcoreError) as info:
            metainfo.load(path)
        message = str(info.value)
        assert message and "\n" not in message
