"""The engine's configuration: :class:`SessionConfig` (process-wide) and :class:`TorrentConfig` (per torrent).

Both are frozen dataclasses, validated when built: a bad value raises ``ValueError`` with a one-line
reason naming the field (the CLI turns it into exit code 2). Every default is defined here, once, and
the command line's defaults are read from these classes, never written again.

Change one field of a configuration with :func:`dataclasses.replace`, which validates again::

    from dataclasses import replace
    slow = replace(TorrentConfig(), max_download_rate=500_000)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

#: The MSE/PE policies (issue: encryption); ``prefer`` tries encryption first and falls back.
ENCRYPTION_CHOICES = ("prefer", "require", "disable")
#: Peer transports (issue 15): uTP (BEP 29, over the session's UDP socket) and TCP.
TRANSPORT_CHOICES = ("utp", "tcp")

Address = tuple[str, int]

#: Threads that read and hash pieces in ``torrentcore create`` (``--threads``); None: one per CPU this process
#: may use (:func:`usable_cpus`). On 2 cores (benchmarks/create_hashing.py, 512 MiB v1, load 2-3) the hashing
#: phase ran at 1243 MB/s on 1.71 cores against 776 MB/s on 0.99 for the former single reading greenlet.
CREATE_THREADS: int | None = None


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (``taskset``, a cgroup cpuset), else all; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)


def _check_port(name: str, value: int | None, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"{name} must be a port number from 0 to 65535, not {value!r}")


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, not {value!r}")


def _check_amount(name: str, value: float | None, allow_none: bool = True) -> None:
    """A non-negative finite number (rates in bytes/s, minutes, ratios)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number of at least 0, not {value!r}")


def _check_addresses(name: str, value: tuple) -> None:
    for item in value:
        if (not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[0], str) or not item[0]):
            raise ValueError(f"{name} must hold (host, port) pairs, not {item!r}")
        _check_port(f"{name} port", item[1], allow_none=False)
        if item[1] == 0:
            raise ValueError(f"{name} port must be from 1 to 65535, not 0")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def _check_name(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty name, not {value!r}")


def _check_settings(name: str, value: Mapping) -> None:
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise ValueError(f"{name} must map plugin names to {{key: value}} mappings")


@dataclass(frozen=True)
class SessionConfig:
    """What one :class:`~torrentcore.Session` shares between all its torrents."""

    #: TCP port peers connect to, for every torrent. None: the first free one of 6881-6889, else any free
    #: port. 0: any free port. Any other number must be free (else the session refuses to start).
    listen_port: int | None = None
    #: Addresses to listen on. ``0.0.0.0`` alone also listens on ``::`` where the host has IPv6 (BEP 7).
    listen_hosts: tuple[str, ...] = ("0.0.0.0",)
    #: Run one DHT node (BEP 5) for all public torrents; private ones (BEP 27) never use it.
    dht: bool = True
    #: UDP port of the DHT node. None: the listen port's number (6881 if that is 0); taken: any free one.
    dht_port: int | None = None
    #: DHT bootstrap nodes; empty: the well-known public routers.
    dht_bootstrap: tuple[Address, ...] = ()
    #: Exchange peer lists with peers (BEP 11); always off for private torrents.
    pex: bool = True
    #: Encrypted connections (MSE/PE): prefer, require or disable.
    encryption: str = "prefer"
    #: Transports for outgoing connections, in order of preference (uTP first, then TCP on failure);
    #: incoming connections are accepted on each one listed.
    transports: tuple[str, ...] = ("utp", "tcp")
    #: Global rate limits in bytes per second for all torrents together (0: unlimited).
    max_download_rate: int = 0
    max_upload_rate: int = 0
    #: Most peer connections of all torrents together (each torrent also has its own cap).
    max_connections: int = 500
    #: Most incoming connections (handshaking or established) from one IP address, and most outgoing ones
    #: (dialling or established) to one, loopback included. libtorrent allows one per address and torrent by
    #: default; 8 lets a few torrents or clients behind one NAT connect, holds one host to 8 of our slots,
    #: and a tracker reply naming one victim on many ports to 8 dials at once. Tests with many peers on
    #: 127.0.0.1 raise it.
    max_connections_per_ip: int = 8
    #: Worker threads that hash and write pieces, shared by every torrent (two per core keep both busy).
    hash_threads: int = 4
    #: Plugins not to load (entry-point names). The console reporter prints, so a library session leaves
    #: it out; the command line loads it.
    disabled_plugins: tuple[str, ...] = ("console",)
    #: More plugins to load: opt-in entry points or importable module names.
    plugins: tuple[str, ...] = ()
    #: Plugin settings ``{plugin: {key: value}}`` over their declared defaults (validated by the session).
    plugin_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Folder for resume records and the DHT state. None: ``$TORRENTCORE_STATE_DIR``, else the XDG state dir.
    state_dir: str | None = None

    def __post_init__(self) -> None:
        _check_port("listen_port", self.listen_port)
        _check_port("dht_port", self.dht_port)
        if not isinstance(self.listen_hosts, tuple) or not all(isinstance(h, str) and h for h in self.listen_hosts):
            raise ValueError(f"listen_hosts must be a tuple of addresses, not {self.listen_hosts!r}")
        _check_addresses("dht_bootstrap", self.dht_bootstrap)
        _check_choice("encryption", self.encryption, ENCRYPTION_CHOICES)
        tr = self.transports
        if not isinstance(tr, tuple) or not tr or any(t not in TRANSPORT_CHOICES for t in tr) or len(set(tr)) < len(tr):
            raise ValueError(f"transports must be a non-empty tuple of {', '.join(TRANSPORT_CHOICES)}, "
                             f"not {self.transports!r}")
        _check_amount("max_download_rate", self.max_download_rate, allow_none=False)
        _check_amount("max_upload_rate", self.max_upload_rate, allow_none=False)
        _check_count("max_connections", self.max_connections, 1)
        _check_count("max_connections_per_ip", self.max_connections_per_ip, 1)
        _check_count("hash_threads", self.hash_threads, 1)
        for name in ("disabled_plugins", "plugins"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"{name} must be a tuple of plugin names, not {value!r}")
        _check_settings("plugin_settings", self.plugin_settings)


@dataclass(frozen=True)
class TorrentConfig:
    """How one torrent runs. The defaults are ``torrentcore run``'s: download, then seed for a while.

    Seeding stops at the first of ``seed_ratio``, ``seed_time`` and ``seed_idle`` (None or 0: no such
    limit); :meth:`seeding_forever` gives ``torrentcore seed``'s choice, no limit at all.
    """

    #: After completing, seed (until a limit below). False: stop as soon as the download is complete.
    seed: bool = True
    #: Never download: the data must already be complete (``torrentcore seed``); incomplete data is an error.
    seed_only: bool = False
    #: Seed until uploaded/downloaded reaches this ratio.
    seed_ratio: float | None = 1.0
    #: ...or for this many minutes after completing.
    seed_time: float | None = 30.0
    #: ...or until no peer has wanted data for this many minutes.
    seed_idle: float | None = 2.0
    #: Most connected peers of this torrent.
    max_peers: int = 50
    #: Regular unchoke slots (plus one optimistic).
    upload_slots: int = 4
    #: This torrent's rate limits in bytes per second (0: unlimited), beside the session's.
    max_download_rate: int = 0
    max_upload_rate: int = 0
    #: Piece selection strategy and storage backend, by the names plugins register.
    strategy: str = "rarest-first"
    storage: str = "filesystem"
    #: Peers to connect to beside those trackers, the DHT and PEX find.
    peers: tuple[Address, ...] = ()
    #: Indices into the torrent's data files to download (None: all of them, or as ``only``/``skip`` say).
    selected_files: tuple[int, ...] | None = None
    #: File selection by pattern, applied once the metadata is known (``run --only/--skip``): file numbers
    #: or globs; ``skip`` applies after ``only``. A pattern matching nothing is an error.
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    #: Fetch pieces from the torrent's web seeds (BEP 19 ``url-list``, BEP 17 ``httpseeds``) beside peers.
    web_seeds: bool = True
    #: Magnet links: give up when no peer sent the metadata within this many seconds.
    metadata_timeout: float = 120.0
    #: Start paused: nothing is checked or connected until ``resume()``.
    paused: bool = False
    #: Plugin settings for this torrent only, over the session's ``plugin_settings``; the session hands
    #: plugins the merged values here (``config.plugin_settings[NAME][KEY]`` always exists).
    plugin_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Values of command-line options that plugins added (``torrentcore_add_options``), by ``dest`` name.
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("seed_ratio", "seed_time", "seed_idle"):
            _check_amount(name, getattr(self, name))
        _check_count("max_peers", self.max_peers, 1)
        _check_count("upload_slots", self.upload_slots, 0)
        _check_amount("max_download_rate", self.max_download_rate, allow_none=False)
        _check_amount("max_upload_rate", self.max_upload_rate, allow_none=False)
        _check_name("strategy", self.strategy)
        _check_name("storage", self.storage)
        _check_addresses("peers", self.peers)
        if self.selected_files is not None and (
            not isinstance(self.selected_files, tuple)
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.selected_files)
        ):
            raise ValueError(f"selected_files must be None or a tuple of file indices, not {self.selected_files!r}")
        for name in ("only", "skip"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"{name} must be a tuple of file numbers or globs, not {value!r}")
        _check_amount("metadata_timeout", self.metadata_timeout, allow_none=False)
        if self.metadata_timeout == 0:
            raise ValueError("metadata_timeout must be more than 0 seconds")
        _check_settings("plugin_settings", self.plugin_settings)
        if not isinstance(self.extra, Mapping):
            raise ValueError("extra must be a mapping of option names to values")

    @classmethod
    def seeding_forever(cls, **changes: Any) -> TorrentConfig:
        """``torrentcore seed``'s configuration: data must be complete, seed with no limit."""
        return cls(**{"seed_only": True, "seed_ratio": None, "seed_time": None, "seed_idle": None, **changes})

    def seed_limits(self) -> tuple[float | None, float | None, float | None]:
        """(ratio, minutes, idle minutes), each None when there is no such limit."""
        return tuple(v if v else None for v in (self.seed_ratio, self.seed_time, self.seed_idle))  # type: ignore


#: The daemon's session settings (``torrentcore daemon``), by their Transmission RPC 17 names, with
#: Transmission 4.0's defaults (``session-set`` changes them; the daemon keeps them in its database).
#: Speeds are in kB/s (1000 bytes) as Transmission's ``units`` say; minutes for the idle and stall times.
DAEMON_SESSION_DEFAULTS: dict[str, Any] = {
    "download-dir": "",  # empty: $XDG_DOWNLOAD_DIR, else ~/Downloads (the daemon fills it in)
    "start-added-torrents": True,
    "download-queue-enabled": True,
    "download-queue-size": 5,
    "seed-queue-enabled": False,
    "seed-queue-size": 10,
    "queue-stalled-enabled": True,
    "queue-stalled-minutes": 30,
    "seedRatioLimited": False,
    "seedRatioLimit": 2.0,
    "idle-seeding-limit-enabled": False,
    "idle-seeding-limit": 30,
    "speed-limit-down-enabled": False,
    "speed-limit-down": 100,
    "speed-limit-up-enabled": False,
    "speed-limit-up": 100,
    "alt-speed-enabled": False,
    "alt-speed-down": 50,
    "alt-speed-up": 50,
    "peer-limit-global": 200,
    "peer-limit-per-torrent": 50,
    "encryption": "preferred",
    "peer-port": 51413,
    "dht-enabled": True,
    "pex-enabled": True,
    "rename-partial-files": False,
}
#: The daemon's RPC endpoint: address, port, and the client addresses allowed when none is given.
DAEMON_RPC_HOST = "127.0.0.1"
DAEMON_RPC_PORT = 9091
DAEMON_RPC_WHITELIST = ("127.0.0.1", "::1")


def default_of(cls: type, name: str) -> Any:
    """The default of field ``name`` of a configuration class (for the command line's help texts)."""
    for f in fields(cls):
        if f.name == name:
            return f.default
    raise KeyError(name)


__all__ = ["SessionConfig", "TorrentConfig", "ENCRYPTION_CHOICES", "default_of", "DAEMON_SESSION_DEFAULTS",
           "DAEMON_RPC_HOST", "DAEMON_RPC_PORT", "DAEMON_RPC_WHITELIST"]
