"""Transmission RPC method dispatch: RPC version 17 (Transmission 4.0 names, ``{"method", "arguments",
"tag"}``), and Transmission 4.1's JSON-RPC 2.0 form (``{"jsonrpc": "2.0", "method": "torrent_get",
"params", "id"}``, snake_case names), which is translated to and from the 4.0 names.

Every method answers ``result: "success"`` or a one-line error text, never an exception: a malformed
torrent is ``"invalid or corrupt torrent file"``-style text (the HTTP status stays 200).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from .. import __version__
from ..config import DAEMON_SESSION_DEFAULTS
from ..errors import TorrentcoreError
from ..statefile import UnsafePath
from .app import DuplicateTorrent
from .fields import FIELDS, torrent_fields
from .torrent_url import TorrentUrlError, fetch_torrent, is_url

if TYPE_CHECKING:  # pragma: no cover
    from .app import Daemon
    from .entry import TorrentEntry

log = structlog.get_logger(__name__)

RPC_VERSION = 17
RPC_VERSION_MINIMUM = 14
RPC_VERSION_SEMVER = "5.3.0"
#: The Transmission release whose RPC (17) we speak, first in session-get's "version": front-ends such as
#: Sonarr/Radarr read the leading number and refuse versions below 2.40.
TRANSMISSION_LEVEL = "4.0.0"
#: torrent-get's answer for the ids of ``"recently-active"``: torrents removed within this many seconds.
RECENTLY_REMOVED = 60


class RpcError(Exception):
    """A request that cannot be done: its text becomes the ``result``."""


#: session-get keys the daemon answers, beside the stored settings.
def _session_info(daemon: Daemon, session_id: str) -> dict[str, Any]:
    s = daemon.settings
    info = dict(s)
    info.update({
        "rpc-version": RPC_VERSION, "rpc-version-minimum": RPC_VERSION_MINIMUM,
        "rpc-version-semver": RPC_VERSION_SEMVER, "version": f"{TRANSMISSION_LEVEL} (torrentcore {__version__})",
        "config-dir": daemon.options.config_dir, "session-id": session_id,
        "download-dir-free-space": _free(s["download-dir"]), "blocklist-enabled": False, "blocklist-size": 0,
        "blocklist-url": "", "cache-size-mb": 4, "incomplete-dir": "", "incomplete-dir-enabled": False,
        "lpd-enabled": False, "port-forwarding-enabled": False, "peer-port-random-on-start": False,
        "utp-enabled": False, "tcp-enabled": True, "trash-original-torrent-files": False,
        "alt-speed-time-enabled": False, "alt-speed-time-begin": 540, "alt-speed-time-end": 1020,
        "alt-speed-time-day": 127, "script-torrent-done-enabled": False, "script-torrent-done-filename": "",
        "script-torrent-added-enabled": False, "script-torrent-added-filename": "",
        "script-torrent-done-seeding-enabled": False, "script-torrent-done-seeding-filename": "",
        "default-trackers": "", "anti-brute-force-enabled": False, "anti-brute-force-threshold": 100,
        "units": {"speed-units": ["kB/s", "MB/s", "GB/s", "TB/s"], "speed-bytes": 1000,
                  "size-units": ["kB", "MB", "GB", "TB"], "size-bytes": 1000,
                  "memory-units": ["KiB", "MiB", "GiB", "TiB"], "memory-bytes": 1024},
    })
    if daemon.session is not None and daemon.session.port:
        info["peer-port"] = daemon.session.port
    if daemon.options.no_dht:
        info["dht-enabled"] = False
    if daemon.session is not None:
        info["utp-enabled"] = "utp" in getattr(daemon.session.config, "transports", ())
    return info


def _free(path: str) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize


class Rpc:
    """Answers RPC requests for one daemon (``session_id``: the current X-Transmission-Session-Id)."""

    def __init__(self, daemon: Daemon, session_id: str) -> None:
        self.daemon = daemon
        self.session_id = session_id
        self.methods: dict[str, Callable[[dict], dict | None]] = {
            "torrent-start": lambda a: self.daemon.start(self._ids(a)),
            "torrent-start-now": lambda a: self.daemon.start(self._ids(a), now=True),
            "torrent-stop": lambda a: self.daemon.stop_torrents(self._ids(a)),
            "torrent-verify": lambda a: self.daemon.verify(self._ids(a)),
            "torrent-reannounce": lambda a: self.daemon.reannounce(self._ids(a)),
            "torrent-set": self.torrent_set,
            "torrent-get": self.torrent_get,
            "torrent-add": self.torrent_add,
            "torrent-remove": lambda a: self.daemon.remove(self._ids(a), bool(a.get("delete-local-data"))),
            "torrent-set-location": self.torrent_set_location,
            "torrent-rename-path": self.torrent_rename_path,
            "session-get": self.session_get,
            "session-set": self.session_set,
            "session-stats": self.session_stats,
            "session-close": self.session_close,
            "blocklist-update": lambda a: {"blocklist-size": 0},
            "port-test": self.port_test,
            "queue-move-top": lambda a: self.daemon.move_queue(self._ids(a), "top"),
            "queue-move-up": lambda a: self.daemon.move_queue(self._ids(a), "up"),
            "queue-move-down": lambda a: self.daemon.move_queue(self._ids(a), "down"),
            "queue-move-bottom": lambda a: self.daemon.move_queue(self._ids(a), "bottom"),
            "free-space": self.free_space,
            "group-get": lambda a: {"group": []},
        }

    # --- envelope ---------------------------------------------------------------------------------

    def handle(self, request: Any) -> dict | None:
        """The response object for one decoded JSON request (None: a JSON-RPC notification)."""
        if isinstance(request, dict) and request.get("jsonrpc") == "2.0":
            return self._jsonrpc(request)
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return {"result": "request is not a JSON object with a method", "arguments": {}}
        response: dict[str, Any] = {}
        if "tag" in request:
            response["tag"] = request["tag"]
        result, arguments = self.call(request["method"], request.get("arguments"))
        response["result"] = result
        response["arguments"] = arguments
        return response

    def call(self, method: str, arguments: Any) -> tuple[str, dict]:
        """(result text, arguments) of one method."""
        fn = self.methods.get(method)
        if fn is None:
            return "method name not recognized", {}
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return "arguments must be an object", {}
        try:
            out = fn(arguments)
        except RpcError as exc:
            return str(exc), {}
        except TorrentcoreError as exc:
            return str(exc), {}
        except (ValueError, TypeError, OSError, UnsafePath) as exc:
            return f"{method}: {getattr(exc, 'strerror', None) or exc}", {}
        return "success", out or {}

    def _jsonrpc(self, request: dict) -> dict | None:
        rid = request.get("id")
        method = request.get("method")
        params = request.get("params", {})
        if not isinstance(method, str) or not isinstance(params, (dict, type(None))):
            return {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": rid}
        legacy = method.replace("_", "-")
        if legacy not in self.methods:
            return {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": rid}
        result, arguments = self.call(legacy, _from_snake(params or {}))
        if "id" not in request:
            return None
        if result != "success":
            return {"jsonrpc": "2.0", "id": rid,
                    "error": {"code": 1, "message": result, "data": {"error_string": result}}}
        result_args = _to_snake(arguments)
        rows = result_args.get("torrents")
        if rows and isinstance(rows[0], list):  # format "table": the first row holds the field names
            rows[0] = [_snake(n) for n in rows[0]]
        return {"jsonrpc": "2.0", "result": result_args, "id": rid}

    def _ids(self, arguments: dict) -> list[TorrentEntry]:
        return self.daemon.select(arguments.get("ids"))

    # --- torrents -----------------------------------------------------------------------------------

    def torrent_get(self, a: dict) -> dict:
        names = a.get("fields")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RpcError("no fields given: torrent-get needs a \"fields\" list")
        entries = self._ids(a)
        after = self.daemon.stalled_after()
        if a.get("format") == "table":
            known = [n for n in names if n in FIELDS]
            rows: list[list[Any]] = [known]
            for e in entries:
                values = torrent_fields(e, known, after)
                rows.append([values[n] for n in known])
            out: dict[str, Any] = {"torrents": rows}
        else:
            out = {"torrents": [torrent_fields(e, names, after) for e in entries]}
        if a.get("ids") == "recently-active":
            import time

            cutoff = time.time() - RECENTLY_REMOVED
            out["removed"] = [i for i, when in self.daemon.removed if when >= cutoff]
        return out

    def torrent_add(self, a: dict) -> dict:
        source: str | bytes
        if a.get("metainfo"):
            try:
                source = base64.b64decode(str(a["metainfo"]), validate=False)
            except (binascii.Error, ValueError):
                raise RpcError("invalid or corrupt torrent file (metainfo is not base64)") from None
        elif isinstance(a.get("filename"), str) and a["filename"]:
            source = a["filename"]
            if is_url(source):  # a .torrent to download (transmission-remote -a URL): fetched, bounded
                try:
                    source = fetch_torrent(source, cookies=_text(a.get("cookies")))
                except TorrentUrlError as exc:
                    log.info("torrent-add refused", reason=str(exc))
                    raise RpcError(str(exc)) from None
        else:
            raise RpcError("no filename or metainfo given")
        prio: dict[int, int] = {}
        for key, value in (("priority-low", -1), ("priority-normal", 0), ("priority-high", 1)):
            for i in _indices(a.get(key)):
                prio[i] = value
        labels = a.get("labels")
        try:
            entry = self.daemon.add(source, download_dir=_text(a.get("download-dir")),
                                    paused=_flag(a.get("paused")), unwanted=_indices(a.get("files-unwanted")),
                                    wanted=_indices(a.get("files-wanted")), priorities=prio,
                                    labels=[str(x) for x in labels] if isinstance(labels, list) else None,
                                    peer_limit=_number(a.get("peer-limit")))
        except DuplicateTorrent as dup:
            return {"torrent-duplicate": self._brief(dup.entry)}
        except TorrentcoreError as exc:
            log.info("torrent-add refused", reason=str(exc))
            raise RpcError(f"invalid or corrupt torrent file: {exc}") from None
        return {"torrent-added": self._brief(entry)}

    def _brief(self, entry: TorrentEntry) -> dict:
        return {"id": entry.id, "name": entry.row.name, "hashString": entry.row.info_hash}

    def torrent_set(self, a: dict) -> None:
        entries = self._ids(a)
        d = self.daemon
        for e in entries:
            st = e.row.settings
            for key in ("downloadLimit", "uploadLimit", "seedIdleLimit", "peer-limit", "bandwidthPriority",
                        "seedRatioMode", "seedIdleMode"):
                if key in a:
                    st[key] = int(_require_number(a[key], key))
            if "seedRatioLimit" in a:
                st["seedRatioLimit"] = float(_require_number(a["seedRatioLimit"], "seedRatioLimit"))
            for key in ("downloadLimited", "uploadLimited", "honorsSessionLimits"):
                if key in a:
                    st[key] = bool(a[key])
            if "labels" in a:
                if not isinstance(a["labels"], list):
                    raise RpcError("labels must be a list of strings")
                st["labels"] = [str(x) for x in a["labels"]]
            prio: dict[int, int] = {}
            for key, value in (("priority-low", -1), ("priority-normal", 0), ("priority-high", 1)):
                for i in _all_or(a.get(key), e.file_count()):
                    prio[i] = value
            if "files-wanted" in a or "files-unwanted" in a or prio:
                d.set_files(e, wanted=_all_or(a.get("files-wanted"), e.file_count()),
                            unwanted=_all_or(a.get("files-unwanted"), e.file_count()), priority=prio)
            if "location" in a and isinstance(a["location"], str):
                d.set_location([e], a["location"], move=False)
            if "trackerAdd" in a and isinstance(a["trackerAdd"], list):
                e.handle.merge_trackers([[str(u)] for u in a["trackerAdd"]])
            e.dirty = True
            d.apply_torrent_settings(e)
        if "queuePosition" in a and entries:
            pos = int(_require_number(a["queuePosition"], "queuePosition"))
            order = [x for x in sorted(d.entries.values(), key=lambda x: x.row.queue_position) if x not in entries]
            pos = max(0, min(pos, len(order)))
            d.set_positions(order[:pos] + entries + order[pos:])
        d.save()

    def torrent_set_location(self, a: dict) -> None:
        location = _text(a.get("location"))
        if not location:
            raise RpcError("no location given")
        self.daemon.set_location(self._ids(a), location, move=bool(a.get("move")))

    def torrent_rename_path(self, a: dict) -> dict:
        entries = self._ids(a)
        if len(entries) != 1:
            raise RpcError("torrent-rename-path takes exactly one torrent")
        path, name = _text(a.get("path")), _text(a.get("name"))
        if not path or not name:
            raise RpcError("torrent-rename-path needs a path and a name")
        try:
            path, name = self.daemon.rename_path(entries[0], path, name)
        except (ValueError, OSError, UnsafePath) as exc:
            raise RpcError(f"cannot rename {path!r}: {exc}") from None
        return {"path": path, "name": name, "id": entries[0].id}

    # --- session ----------------------------------------------------------------------------------

    def session_get(self, a: dict) -> dict:
        info = _session_info(self.daemon, self.session_id)
        names = a.get("fields")
        if isinstance(names, list) and names:
            return {k: v for k, v in info.items() if k in names}
        return info

    def session_set(self, a: dict) -> None:
        values: dict[str, Any] = {}
        for key, value in a.items():
            if key not in DAEMON_SESSION_DEFAULTS:
                continue  # read-only or unknown keys are ignored, as Transmission does
            default = DAEMON_SESSION_DEFAULTS[key]
            if isinstance(default, bool):
                value = bool(value)
            elif isinstance(default, (int, float)):
                value = _require_number(value, key)
                if value < 0:
                    raise RpcError(f"{key} must not be negative")
                value = type(default)(value)
            elif not isinstance(value, str):
                raise RpcError(f"{key} must be a string")
            if key == "encryption" and value not in ("required", "preferred", "tolerated"):
                raise RpcError("encryption must be required, preferred or tolerated")
            if key == "download-dir":
                value = os.path.abspath(value)
            values[key] = value
        self.daemon.set_session(values)

    def session_stats(self, a: dict) -> dict:
        d = self.daemon
        statuses = [(e, e.handle.status()) for e in d.entries.values()]
        active = sum(1 for e, s in statuses if not e.row.stopped and s.state in ("downloading", "seeding", "checking"))
        down = sum(e.totals()[0] for e, _ in statuses)
        up = sum(e.totals()[1] for e, _ in statuses)
        import time

        seconds = int(time.time() - d.started)
        current = {"uploadedBytes": up, "downloadedBytes": down, "filesAdded": d.stats["filesAdded"],
                   "sessionCount": 1, "secondsActive": seconds}
        return {"activeTorrentCount": active, "pausedTorrentCount": len(statuses) - active,
                "torrentCount": len(statuses), "downloadSpeed": int(sum(s.download_rate for _, s in statuses)),
                "uploadSpeed": int(sum(s.upload_rate for _, s in statuses)),
                "cumulative-stats": dict(current), "current-stats": current}

    def session_close(self, a: dict) -> None:
        import gevent

        gevent.spawn_later(0.2, self.daemon.stop)

    def port_test(self, a: dict) -> dict:
        # A local answer only: whether our peer port accepts connections here; never probe from outside.
        session = self.daemon.session
        open_ = bool(session is not None and session.port)
        return {"port-is-open": open_, "ip_protocol": "ipv4"}

    def free_space(self, a: dict) -> dict:
        path = _text(a.get("path"))
        if not path:
            raise RpcError("no path given")
        free, total = self.daemon.free_space(path)
        return {"path": path, "size-bytes": free, "total_size": total}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _number(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _require_number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RpcError(f"{key} must be a number")
    return value


def _indices(value: Any) -> list[int]:
    if not isinstance(value, list):
        return []
    return [int(i) for i in value if isinstance(i, int) and not isinstance(i, bool)]


def _all_or(value: Any, count: int) -> list[int]:
    """A file-index list; an empty list means every file (Transmission's convention)."""
    if isinstance(value, list) and not value:
        return list(range(count))
    return _indices(value)


# --- JSON-RPC 2.0 names -------------------------------------------------------------------------------

def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).replace("-", "_").lower()


_KNOWN = set(FIELDS) | set(DAEMON_SESSION_DEFAULTS) | {
    "ids", "fields", "format", "download-dir", "filename", "metainfo", "paused", "files-wanted", "files-unwanted",
    "priority-high", "priority-normal", "priority-low", "labels", "peer-limit", "bandwidthPriority",
    "delete-local-data", "location", "move", "path", "name", "downloadLimit", "downloadLimited", "uploadLimit",
    "uploadLimited", "seedRatioLimit", "seedRatioMode", "seedIdleLimit", "seedIdleMode", "queuePosition",
    "honorsSessionLimits", "trackerAdd", "cookies", "rpc-version", "rpc-version-minimum", "rpc-version-semver",
    "version", "config-dir", "session-id", "download-dir-free-space", "blocklist-enabled", "blocklist-size",
    "blocklist-url", "cache-size-mb", "incomplete-dir", "incomplete-dir-enabled", "lpd-enabled",
    "port-forwarding-enabled", "peer-port-random-on-start", "utp-enabled", "tcp-enabled",
    "trash-original-torrent-files", "alt-speed-time-enabled", "alt-speed-time-begin", "alt-speed-time-end",
    "alt-speed-time-day", "default-trackers", "units"}
_FROM_SNAKE = {_snake(k): k for k in _KNOWN}


def _from_snake(params: dict) -> dict:
    out = {}
    for key, value in params.items():
        name = _FROM_SNAKE.get(key, key)
        if name == "fields" and isinstance(value, list):
            value = [_FROM_SNAKE.get(v, v) if isinstance(v, str) else v for v in value]
        if name == "ids" and value == "recently_active":
            value = "recently-active"
        out[name] = value
    return out


def _to_snake(value: Any) -> Any:
    if isinstance(value, dict):
        return {_snake(k): _to_snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_snake(v) for v in value]
    return value


__all__ = ["Rpc", "RpcError", "RPC_VERSION"]
