"""A magnet link's torrent: its metadata fetched (or found on disk) in the background, then the torrent made.

:class:`MagnetFetch` runs in its own greenlet for a handle whose source is a ``magnet:`` link: it looks for
the .torrent a first run saved in the download folder, else fetches the info dictionary from the link's
peers, its trackers and the DHT (:class:`~torrentcore.metadata.MetadataFetcher`, BEP 9) and saves it there;
then it has the session make the torrent, gives it the peers it met, keeps a v2 link's piece layers in the
saved .torrent once they arrive, and hands the torrent to the handle. A fetch that fails or is stopped ends
the handle with its exit code and one line.

It sees the handle and the session only through :class:`FetchCalls` (callbacks) and :class:`FetchSession`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import gevent
import structlog

from . import metainfo
from .errors import BadInputError, TorrentcoreError

if TYPE_CHECKING:  # pragma: no cover
    from .config import TorrentConfig
    from .magnet import Magnet
    from .metainfo import Metainfo
    from .torrent import Torrent

log = structlog.get_logger(__name__)


class FetchSession(Protocol):
    """What a metadata fetch needs of its session (the :class:`~torrentcore.Session` provides it)."""

    peer_id: bytes
    port: int
    encryption: str
    dialer: Any  #: :class:`~torrentcore.transport.Dialer` (``connect`` opens uTP or TCP streams)

    def dht_node(self) -> Any: ...


@dataclass(frozen=True)
class FetchCalls:
    """What a metadata fetch needs of its handle, as callbacks (read when used: they may change meanwhile)."""

    #: The download folder ("-": in memory, nothing saved).
    save_path: Callable[[], str]
    #: The torrent's settings (``peers``, ``metadata_timeout``).
    config: Callable[[], TorrentConfig]
    #: The exit code the handle was stopped with, None while it runs.
    exit_code: Callable[[], int | None]
    #: The session's torrent for this metainfo, in ``save_path`` with ``config``.
    make_torrent: Callable[[Metainfo], Torrent]
    #: The fetch ended without a torrent: this exit code, this error (None: stopped).
    end: Callable[[int, str | None], None]
    #: The torrent is made: give it to the handle and start it.
    attach: Callable[[Torrent], None]


class MagnetFetch:
    """The background fetch of one magnet link's metadata (see the module docstring)."""

    def __init__(self, session: FetchSession, calls: FetchCalls, magnet: Magnet) -> None:
        self._session = session
        self._calls = calls
        self._magnet = magnet
        self._fetcher: Any = None
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        """Fetch in the background (returns at once)."""
        self._greenlet = gevent.spawn(self._fetch, self._magnet)

    def stop(self) -> bool:
        """Stop fetching: a fetch under way ends (and reports the stop itself); True when it had not begun and
        its greenlet was killed (the caller then ends the handle)."""
        if self._fetcher is not None:
            self._fetcher.stop()
        elif self._greenlet is not None:
            self._greenlet.kill(block=False)
            return True
        return False

    def _fetch(self, magnet: Magnet) -> None:
        from .metadata import (
            MetadataError,
            MetadataFetcher,
            find_saved_torrent,
            save_torrent_file,
            torrent_file,
            tracker_source,
        )

        session, calls = self._session, self._calls
        try:
            saved = find_saved_torrent(calls.save_path(), magnet.info_hash) if calls.save_path() != "-" else None
            if saved is not None:  # a second run on the same folder: the metadata is already here
                log.info("metadata found on disk", path=saved, info_hash=magnet.info_hash_hex)
                meta = metainfo.load(saved)
                peers = list(magnet.peers)
            else:
                port = session.port or 6881
                sources = [tracker_source(magnet.trackers, session.peer_id, port)] if magnet.trackers else []
                dht = session.dht_node()
                if dht is not None:
                    sources.append(lambda info_hash: dht.get_peers(info_hash, timeout=30.0))
                given = [*magnet.peers, *calls.config().peers]
                if not sources and not given:
                    raise BadInputError("the magnet link names no tracker (tr=) and no peer (x.pe=), no --peer was "
                                        "given and the DHT is off: there is nowhere to fetch its metadata from")
                # own_port: the port trackers are told, so that they listing us is not a peer.
                self._fetcher = MetadataFetcher(magnet.info_hash, session.peer_id, given, sources,
                                                own_port=port, encryption=session.encryption,
                                                connect=session.dialer.connect, info_hash_v2=magnet.info_hash_v2)
                result = self._fetcher.fetch(timeout=calls.config().metadata_timeout)
                data = torrent_file(result.raw_info, magnet.trackers, url_list=magnet.web_seeds)
                meta = metainfo.parse(data)
                if calls.save_path() != "-":
                    path = save_torrent_file(calls.save_path(), meta.name, data)
                    log.info("metadata saved", path=path, info_hash=meta.info_hash_hex)
                peers = [*result.peers, *(p for p in magnet.peers if p not in self._fetcher.bad_peers())]
        except MetadataError as exc:
            stopped = calls.exit_code() is not None
            calls.end(calls.exit_code() if stopped else exc.exit_code,
                      "interrupted while fetching the metadata" if stopped else str(exc))
            return
        except TorrentcoreError as exc:
            calls.end(exc.exit_code, str(exc))
            return
        if calls.exit_code() is not None:
            calls.end(calls.exit_code(), None)
            return
        meta.url_list.extend(u for u in magnet.web_seeds if u not in meta.url_list)  # BEP 19 ws= of the link
        try:
            torrent = calls.make_torrent(meta)
        except TorrentcoreError as exc:  # e.g. --only matching no file of the metadata: one line, its exit code
            calls.end(exc.exit_code, str(exc))
            return
        torrent.add_peers(peers, source="magnet")
        if meta.missing_layers() and calls.save_path() != "-":
            # A v2 link's piece layers come from peers: keep them in the saved .torrent once they have.
            def save_layers(meta=meta, trackers=magnet.trackers) -> None:
                path = save_torrent_file(calls.save_path(), meta.name, torrent_file(meta.raw_info, trackers,
                                                                                    meta.piece_layers, meta.url_list))
                log.info("metadata saved with its piece layers", path=path)
            torrent.on_layers_complete = save_layers
        calls.attach(torrent)


__all__ = ["FetchCalls", "FetchSession", "MagnetFetch"]
