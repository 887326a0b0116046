"""A torrentcore reporter plugin: one JSON object per event, one per line (JSON lines).

Events (the ``event`` key): ``start``, ``progress`` (at most one per
``jsonl.progress_interval`` seconds, and on every state change), ``piece_verified``,
``piece_failed``, ``peer_connected``, ``peer_lost``, ``completed``, ``error``,
``finish``. Every line also has ``time`` (Unix seconds), ``torrent`` (its name)
and ``info_hash`` (hex).

Settings (``--plugin-opt jsonl.KEY=VALUE`` or a ``[jsonl]`` section in the
config file):

* ``path``: where to write; ``-`` (the default) is standard output, which
  together with ``--quiet`` makes stdout a pure JSON-lines stream. A file is
  appended to, and flushed after every line.
* ``progress_interval``: seconds between ``progress`` lines (0: every snapshot,
  about one a second).

It uses only :mod:`torrentcore.hookspec`, like any third-party plugin.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from torrentcore.hookspec import Metainfo, PeerInfo, ProgressSnapshot, Setting, hookimpl

__version__ = "0.1.0"

#: The settings namespace: the plugin's entry-point name.
NAME = "jsonl"


class JsonLines:
    """Writes events for one run to ``stream`` (closed at the end unless it is stdout)."""

    def __init__(self, stream: IO[str], close: bool, progress_interval: float) -> None:
        self.stream = stream
        self.close_at_end = close
        self.progress_interval = progress_interval
        self._last_progress = float("-inf")
        self._last_state = ""

    def emit(self, event: str, torrent: Metainfo | None, **fields: Any) -> None:
        """Write one line: ``{"event", "time", "torrent", "info_hash", **fields}``."""
        record = {"event": event, "time": round(time.time(), 3)}
        if torrent is not None:
            record["torrent"] = torrent.name
            record["info_hash"] = torrent.info_hash_hex
        record.update(fields)
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.stream.flush()

    def progress_due(self, snapshot: ProgressSnapshot) -> bool:
        """True when a progress line is due (interval elapsed, or the state changed)."""
        now = time.monotonic()
        if snapshot.state != self._last_state or now - self._last_progress >= self.progress_interval:
            self._last_state = snapshot.state
            self._last_progress = now
            return True
        return False

    def close(self) -> None:
        """Close the file (standard output stays open)."""
        if self.close_at_end:
            self.stream.close()


_out: JsonLines | None = None


def _address(peer: PeerInfo) -> str:
    host, port = peer.address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _numbers(s: ProgressSnapshot) -> dict[str, Any]:
    return {
        "state": s.state, "have_bytes": s.have_bytes, "total_bytes": s.total_bytes,
        "pieces_done": s.pieces_done, "num_pieces": s.num_pieces, "downloaded": s.downloaded,
        "uploaded": s.uploaded, "download_rate": round(s.download_rate), "upload_rate": round(s.upload_rate),
        "peers": s.peers, "seeds": s.seeds, "eta": s.eta, "elapsed": round(s.elapsed, 3),
    }


@hookimpl
def torrentcore_plugin_settings() -> dict[str, dict[str, Setting]]:
    """``jsonl.path`` and ``jsonl.progress_interval``."""
    return {NAME: {
        "path": Setting(str, "-", "file to append JSON lines to ('-': standard output)"),
        "progress_interval": Setting(float, 1.0, "seconds between progress lines (0: every snapshot)"),
    }}


@hookimpl
def torrentcore_on_start(torrent: Metainfo, save_path: str, options) -> None:
    """Open the output and write ``start``."""
    global _out
    settings = getattr(options, "plugin_settings", {}).get(NAME, {})
    path = settings.get("path", "-")
    interval = max(0.0, float(settings.get("progress_interval", 1.0)))
    if path == "-":
        _out = JsonLines(sys.stdout, close=False, progress_interval=interval)
    else:
        _out = JsonLines(open(path, "a", encoding="utf-8"), close=True, progress_interval=interval)
    _out.emit("start", torrent, save_path=save_path, total_bytes=torrent.data_length,
              num_pieces=torrent.num_pieces, piece_length=torrent.piece_length, files=len(torrent.data_files))


@hookimpl
def torrentcore_on_progress(torrent: Metainfo, snapshot: ProgressSnapshot) -> None:
    """``progress``, throttled."""
    if _out is not None and _out.progress_due(snapshot):
        _out.emit("progress", torrent, **_numbers(snapshot))


@hookimpl
def torrentcore_on_piece_verified(torrent: Metainfo, index: int) -> None:
    """``piece_verified``."""
    if _out is not None:
        _out.emit("piece_verified", torrent, index=index)


@hookimpl
def torrentcore_on_piece_failed(torrent: Metainfo, index: int, peers) -> None:
    """``piece_failed`` with the addresses that sent its blocks."""
    if _out is not None:
        _out.emit("piece_failed", torrent, index=index, peers=[f"{h}:{p}" for h, p in peers])


@hookimpl
def torrentcore_on_peer_connected(torrent: Metainfo, peer: PeerInfo) -> None:
    """``peer_connected``."""
    if _out is not None:
        _out.emit("peer_connected", torrent, peer=_address(peer), client=peer.client, incoming=peer.incoming)


@hookimpl
def torrentcore_on_peer_lost(torrent: Metainfo, peer: PeerInfo, reason: str) -> None:
    """``peer_lost`` with the reason."""
    if _out is not None:
        _out.emit("peer_lost", torrent, peer=_address(peer), reason=reason,
                  downloaded=peer.downloaded, uploaded=peer.uploaded)


@hookimpl
def torrentcore_on_completed(torrent: Metainfo, snapshot: ProgressSnapshot) -> None:
    """``completed``."""
    if _out is not None:
        _out.emit("completed", torrent, **_numbers(snapshot))


@hookimpl
def torrentcore_on_error(torrent: Metainfo | None, message: str, fatal: bool) -> None:
    """``error`` (``fatal`` false: a warning, the run goes on)."""
    if _out is not None:
        _out.emit("error", torrent, message=message, fatal=fatal)


@hookimpl
def torrentcore_on_finish(torrent: Metainfo, snapshot: ProgressSnapshot, exit_code: int) -> None:
    """``finish`` (the last line of the run), then close the file."""
    global _out
    if _out is not None:
        _out.emit("finish", torrent, exit_code=exit_code, **_numbers(snapshot))
        _out.close()
        _out = None
