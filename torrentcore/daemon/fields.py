"""``torrent-get`` fields: one function per Transmission RPC 17 field name, over a :class:`TorrentView`.

A view computes the torrent's status (and, when a field needs them, its per-file progress and peers)
once per request, however many fields ask: ``torrent-get`` of every field for 100 torrents stays a
few milliseconds (benchmarks/rpc.py).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:  # pragma: no cover
    from .entry import TorrentEntry

# Transmission's status numbers (tr_torrent_activity).
STOPPED, CHECK_WAIT, CHECK, DOWNLOAD_WAIT, DOWNLOAD, SEED_WAIT, SEED = range(7)
#: Transmission's error numbers: none, tracker warning, tracker error, local error.
ERROR_NONE, ERROR_TRACKER_WARNING, ERROR_TRACKER, ERROR_LOCAL = range(4)


class TorrentView:
    """What the fields of one torrent read, computed lazily and at most once (``stalled_after``: seconds
    without data moving after which a running torrent is stalled, None: never)."""

    def __init__(self, entry: TorrentEntry, stalled_after: float | None) -> None:
        self.entry = entry
        self.handle = entry.handle
        self.row = entry.row
        self.stalled_after = stalled_after

    @cached_property
    def status(self):
        return self.handle.status()

    @cached_property
    def meta(self):
        return self.handle.meta

    @cached_property
    def static(self) -> dict[str, Any]:
        """Values that change only with the metainfo or the trackers (kept on the entry between requests)."""
        tiers = self.handle.trackers()
        key = (id(self.meta), sum(len(t) for t in tiers))
        cache = self.entry.cache
        if cache.get("key") != key:
            cache.clear()
            cache["key"] = key
            cache["tiers"] = tiers
            cache["trackers"] = _tracker_list(tiers)
            cache["magnet"] = self.magnet_link(tiers)
            cache["files"] = _file_layout(self.meta) if self.meta is not None else []
        return cache

    @cached_property
    def failures(self) -> dict[str, str]:
        return self.handle.tracker_failures()

    @cached_property
    def file_done(self) -> list[int]:
        return self.handle.file_progress()

    @cached_property
    def peers(self) -> list:
        return self.handle.peer_infos()

    @cached_property
    def running(self) -> bool:
        st = self.status.state
        return not self.row.stopped and not self.entry.queued and st not in ("paused", "done", "error")

    @cached_property
    def code(self) -> int:
        return activity(self.entry, self.status)

    @cached_property
    def stalled(self) -> bool:
        if self.stalled_after is None or not self.running:
            return False
        last = max(self.entry.started, self.entry.last_active)
        return time.monotonic() - last >= self.stalled_after

    @cached_property
    def left(self) -> int:
        s = self.status
        return max(0, s.wanted_bytes - round(s.progress * s.wanted_bytes)) if s.num_pieces else 0

    def magnet_link(self, tiers: list[list[str]]) -> str:
        ih = self.row.info_hash
        link = f"magnet:?xt=urn:btih:{ih}&dn={quote(self.status.name)}"
        for tier in tiers:
            for url in tier:
                link += f"&tr={quote(url, safe='')}"
        return link


def activity(entry: TorrentEntry, status) -> int:
    """Transmission's status number (``tr_torrent_activity``) of ``entry``, whose handle's status is ``status``."""
    st = status.state
    if entry.row.stopped or st in ("done", "error"):
        return STOPPED
    if entry.queued:
        return SEED_WAIT if status.num_pieces and status.progress >= 1 else DOWNLOAD_WAIT
    if st == "checking":
        return CHECK
    if st == "queued":
        return CHECK_WAIT
    if st == "seeding":
        return SEED
    if st == "paused":
        return STOPPED
    return DOWNLOAD


def _file_layout(meta) -> list[dict]:
    plen = meta.piece_length
    return [{"length": f.length, "name": "/".join(f.path), "beginPiece": f.offset // plen,
             "endPiece": (f.offset + f.length + plen - 1) // plen if f.length else f.offset // plen}
            for f in meta.data_files]


def _files(v: TorrentView) -> list[dict]:
    layout = v.static["files"]
    if not layout:
        return []
    done = v.file_done
    return [{"bytesCompleted": done[i], **f} for i, f in enumerate(layout)]


def _file_stats(v: TorrentView) -> list[dict]:
    if v.meta is None:
        return []
    done, wanted, prio = v.file_done, v.entry.wanted(), v.entry.priorities()
    return [{"bytesCompleted": done[i], "wanted": bool(wanted[i]), "priority": prio[i]} for i in range(len(done))]


def _peer(p) -> dict:
    flags = ("E" if p.encrypted else "") + ("I" if p.incoming else "") + \
        ("D" if p.am_interested and not p.peer_choking else "d" if p.am_interested else "") + \
        ("U" if p.peer_interested and not p.am_choking else "u" if p.peer_interested else "")
    return {"address": p.address[0], "port": p.address[1], "clientName": p.client, "clientIsChoked": p.am_choking,
            "clientIsInterested": p.am_interested, "flagStr": flags, "isDownloadingFrom": p.download_rate > 0,
            "isEncrypted": p.encrypted, "isIncoming": p.incoming, "isUploadingTo": p.upload_rate > 0,
            "isUTP": False, "peerIsChoked": p.peer_choking, "peerIsInterested": p.peer_interested,
            "progress": p.progress, "rateToClient": int(p.download_rate), "rateToPeer": int(p.upload_rate)}


def _peers_from(v: TorrentView) -> dict:
    out = {"fromCache": 0, "fromDht": 0, "fromIncoming": 0, "fromLpd": 0, "fromLtep": 0, "fromPex": 0,
           "fromTracker": 0}
    names = {"dht": "fromDht", "incoming": "fromIncoming", "pex": "fromPex", "tracker": "fromTracker"}
    for p in v.peers:
        key = names.get(p.source, "fromCache")
        out[key] += 1
    return out


def _trackers(v: TorrentView) -> list[dict]:
    return v.static["trackers"]


def _tracker_list(tiers: list[list[str]]) -> list[dict]:
    out = []
    for tier, urls in enumerate(tiers):
        for url in urls:
            host = urlsplit(url).hostname or ""
            out.append({"announce": url, "id": len(out), "scrape": _scrape_url(url), "sitename": _sitename(host),
                        "tier": tier})
    return out


def _scrape_url(url: str) -> str:
    head, _, tail = url.rpartition("/")
    return f"{head}/scrape{tail[len('announce'):]}" if tail.startswith("announce") else ""


def _sitename(host: str) -> str:
    parts = host.split(".")
    return parts[-2] if len(parts) >= 2 and not host.replace(".", "").isdigit() else host


def _tracker_stats(v: TorrentView) -> list[dict]:
    failures = v.failures
    out = []
    for t in _trackers(v):
        error = failures.get(t["announce"])
        out.append({**t, "host": urlsplit(t["announce"]).netloc, "announceState": 1 if v.running else 0,
                    # The engine keeps no announce times or counts: "not announced yet" unless it failed.
                    "downloadCount": -1, "hasAnnounced": error is not None, "hasScraped": False, "isBackup": False,
                    "lastAnnouncePeerCount": 0, "lastAnnounceResult": error or "",
                    "lastAnnounceStartTime": 0, "lastAnnounceSucceeded": False,
                    "lastAnnounceTime": 0, "lastAnnounceTimedOut": False, "lastScrapeResult": "",
                    "lastScrapeStartTime": 0, "lastScrapeSucceeded": False, "lastScrapeTime": 0,
                    "lastScrapeTimedOut": False, "leecherCount": -1, "nextAnnounceTime": 0, "nextScrapeTime": 0,
                    "scrapeState": 0, "seederCount": -1})
    return out


def _error(v: TorrentView) -> int:
    if v.status.error:
        return ERROR_LOCAL
    return ERROR_TRACKER_WARNING if v.failures else ERROR_NONE


def _error_string(v: TorrentView) -> str:
    if v.status.error:
        return v.status.error
    failures = v.failures
    return next(iter(failures.values()), "") if failures else ""


def _ratio(v: TorrentView) -> float:
    down, up = v.entry.totals()
    base = down or (v.status.total_bytes if v.status.progress >= 1 else 0)
    return round(up / base, 4) if base else (-1.0 if not up else -2.0)


def _eta(v: TorrentView) -> int:
    s = v.status
    if not v.running or not v.left:
        return -1
    if s.eta is None:
        return -2 if v.left else -1  # -2: unknown, -1: not available
    return int(s.eta)


def _pieces(v: TorrentView) -> str:
    return base64.b64encode(v.handle.pieces()).decode("ascii")


def _percent_done(v: TorrentView) -> float:
    s = v.status
    return round(s.progress, 4) if s.num_pieces else 0.0


def _percent_complete(v: TorrentView) -> float:
    s = v.status
    return round(s.have_bytes / s.total_bytes, 4) if s.total_bytes else 0.0


def _torrent_file(v: TorrentView) -> str:
    return ""  # the metainfo lives in the database, not in a file a client could read


def _int(x: Any) -> int:
    return int(x or 0)


#: Every torrent-get field the daemon answers, by its RPC 17 name.
FIELDS: dict[str, Callable[[TorrentView], Any]] = {
    "activityDate": lambda v: v.row.activity_date,
    "addedDate": lambda v: v.row.added_date,
    "availability": lambda v: v.handle.availability(),
    "bandwidthPriority": lambda v: v.entry.setting("bandwidthPriority"),
    "comment": lambda v: (v.meta.comment or "") if v.meta else "",
    "corruptEver": lambda v: v.entry.corrupt_ever(),
    "creator": lambda v: (v.meta.created_by or "") if v.meta else "",
    "dateCreated": lambda v: _int(v.meta.creation_date) if v.meta else 0,
    "desiredAvailable": lambda v: v.left,
    "doneDate": lambda v: v.row.done_date,
    "downloadDir": lambda v: v.row.download_dir,
    "downloadedEver": lambda v: v.entry.totals()[0],
    "downloadLimit": lambda v: v.entry.setting("downloadLimit"),
    "downloadLimited": lambda v: v.entry.setting("downloadLimited"),
    "editDate": lambda v: 0,
    "error": _error,
    "errorString": _error_string,
    "eta": _eta,
    "etaIdle": lambda v: -1,
    "file-count": lambda v: len(v.static["files"]),
    "files": _files,
    "fileStats": _file_stats,
    "group": lambda v: "",
    "hashString": lambda v: v.row.info_hash,
    "haveUnchecked": lambda v: 0,
    "haveValid": lambda v: v.status.have_bytes,
    "honorsSessionLimits": lambda v: v.entry.setting("honorsSessionLimits"),
    "id": lambda v: v.row.id,
    "isFinished": lambda v: v.code == STOPPED and bool(v.row.settings.get("seedingDone")),
    "isPrivate": lambda v: bool(v.meta.private) if v.meta else False,
    "isStalled": lambda v: v.stalled,
    "labels": lambda v: list(v.entry.setting("labels")),
    "leftUntilDone": lambda v: v.left,
    "magnetLink": lambda v: v.static["magnet"],
    "manualAnnounceTime": lambda v: -1,
    "maxConnectedPeers": lambda v: v.entry.setting("peer-limit"),
    "metadataPercentComplete": lambda v: 1.0 if v.meta is not None else 0.0,
    "name": lambda v: v.status.name,
    "peer-limit": lambda v: v.entry.setting("peer-limit"),
    "peers": lambda v: [_peer(p) for p in v.peers],
    "peersConnected": lambda v: v.status.peers,
    "peersFrom": _peers_from,
    "peersGettingFromUs": lambda v: sum(1 for p in v.peers if p.upload_rate > 0),
    "peersSendingToUs": lambda v: sum(1 for p in v.peers if p.download_rate > 0),
    "percentComplete": _percent_complete,
    "percentDone": _percent_done,
    "pieceCount": lambda v: v.status.num_pieces,
    "pieceSize": lambda v: v.meta.piece_length if v.meta else 0,
    "pieces": _pieces,
    "primary-mime-type": lambda v: "application/octet-stream",
    "priorities": lambda v: v.entry.priorities(),
    "queuePosition": lambda v: v.row.queue_position,
    "rateDownload": lambda v: int(v.status.download_rate) if v.running else 0,
    "rateUpload": lambda v: int(v.status.upload_rate) if v.running else 0,
    "recheckProgress": lambda v: round(v.handle.check_progress(), 4),
    "secondsDownloading": lambda v: int(v.entry.seconds[0]),
    "secondsSeeding": lambda v: int(v.entry.seconds[1]),
    "seedIdleLimit": lambda v: v.entry.setting("seedIdleLimit"),
    "seedIdleMode": lambda v: v.entry.setting("seedIdleMode"),
    "seedRatioLimit": lambda v: v.entry.setting("seedRatioLimit"),
    "seedRatioMode": lambda v: v.entry.setting("seedRatioMode"),
    "sequentialDownload": lambda v: False,
    "sizeWhenDone": lambda v: v.status.wanted_bytes if v.status.num_pieces else 0,
    "startDate": lambda v: v.entry.start_date,
    "status": lambda v: v.code,
    "torrentFile": _torrent_file,
    "totalSize": lambda v: v.status.total_bytes,
    "trackerList": lambda v: "\n\n".join("\n".join(t) for t in v.static["tiers"]),
    "trackers": _trackers,
    "trackerStats": _tracker_stats,
    "uploadedEver": lambda v: v.entry.totals()[1],
    "uploadLimit": lambda v: v.entry.setting("uploadLimit"),
    "uploadLimited": lambda v: v.entry.setting("uploadLimited"),
    "uploadRatio": _ratio,
    "wanted": lambda v: v.entry.wanted(),
    "webseeds": lambda v: list(v.meta.url_list) if v.meta else [],
    "webseedsSendingToUs": lambda v: 0,
}


def torrent_fields(entry: TorrentEntry, names: list[str], stalled_after: float | None) -> dict[str, Any]:
    """The values of the known ``names`` for one torrent (unknown names are left out, as Transmission does)."""
    view = TorrentView(entry, stalled_after)
    return {name: FIELDS[name](view) for name in names if name in FIELDS}


def is_stalled(entry: TorrentEntry, stalled_after: float | None) -> bool:
    """Whether a running torrent has moved no data for ``stalled_after`` seconds (the queue asks)."""
    return TorrentView(entry, stalled_after).stalled


__all__ = ["FIELDS", "TorrentView", "torrent_fields", "is_stalled", "activity", "STOPPED", "DOWNLOAD", "SEED"]
