"""Web seeds: pieces fetched over HTTP beside the peers (BEP 19 ``url-list`` and BEP 17 ``httpseeds``).

Each web seed (:class:`WebSeed`) has its own ``requests.Session`` with a bounded connection pool
(:data:`CONNECTIONS` keep-alive connections), and as many worker greenlets. A worker asks the piece
strategy for a run of consecutive pieces (``web_seed_run``, :class:`~torrentcore.hookspec.WebSeedRuns`;
strategies without it get the lowest-numbered run), claims their blocks in the piece manager
(:meth:`~torrentcore.piecemanager.PieceManager.take_pieces`), and fetches them: one Range request per
file the run touches (BEP 19, :mod:`torrentcore.webseed_urls`), or one request per piece (BEP 17). Bytes
are cut into blocks and handed to the piece manager exactly as a peer's blocks are, so a complete piece
goes through the same hash-then-store path (:mod:`torrentcore.verifier`), and each block's sender is the
:class:`WebSeed` (smart ban then blames it, never a peer, for its bad data). Blocks not delivered go back
to the manager; peers may also take them in endgame.

Failures, each reported as one warning line (the download goes on from peers and other seeds):

* HTTP errors (404, 503, ...), refused connections, time-outs, short bodies: the seed backs off,
  exponentially from :data:`BACKOFF_FIRST` to :data:`BACKOFF_MAX` seconds, honouring ``Retry-After`` (and
  BEP 17's 503 body) within those bounds; the first failure is shown, later ones are logged;
* broken servers, dropped at once: a redirect to another scheme, more than :data:`MAX_REDIRECTS`
  redirects (a loop), a body longer than the range asked for, another range than asked, a Range request
  answered with the whole file at an offset;
* data that fails the hash check: dropped by smart ban (:mod:`torrentcore.smart_ban`) after
  ``BAN_STRIKES`` pieces it alone sent failed, or when a block it sent differs from the good piece.

Every request runs under a ``gevent.Timeout`` (:data:`REQUEST_TIMEOUT` plus the run's bytes at
:data:`MIN_RATE`), and every loop ends when the torrent completes or its network stops (the greenlets are
killed; claimed blocks are given back).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urljoin

import gevent
import structlog

from . import __version__
from .hookspec import BLOCK_SIZE
from .webseed_urls import UrlMap, bep17_url, usable

if TYPE_CHECKING:  # pragma: no cover
    import requests  # imported where used: 0.1 s of every start-up otherwise, and most torrents have no web seed

    from .metainfo import Metainfo
    from .piecemanager import Piece, PieceManager

log = structlog.get_logger(__name__)

#: Keep-alive connections (and worker greenlets) per web seed. Two keep one request in flight while the
#: previous one's last bytes are hashed; mirrors throttle clients that open many.
CONNECTIONS = 2
#: Bytes asked for in one run (rounded to whole pieces, at least one, at most RUN_MAX_PIECES): large
#: enough that the request's round trip is negligible, small enough that peers still get pieces.
RUN_BYTES = 4 * 1024 * 1024
RUN_MAX_PIECES = 64
#: Most web seeds used per torrent (a torrent may list thousands of mirrors).
MAX_WEB_SEEDS = 8
#: Seconds a request may take, plus one second per MIN_RATE bytes asked for (gevent.Timeout).
REQUEST_TIMEOUT = 30.0
MIN_RATE = 64 * 1024
#: requests' own connect and per-read time-outs (seconds), inside the gevent.Timeout.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 20.0
#: Redirects followed for one request; more is a loop.
MAX_REDIRECTS = 5
#: Back-off after a failure: the first wait, doubled per failure in a row, at most BACKOFF_MAX seconds.
BACKOFF_FIRST = 2.0
BACKOFF_MAX = 300.0
#: Seconds a worker waits when the strategy has no run for it (every wanted piece is claimed).
IDLE_WAIT = 0.5
#: Bytes read from the HTTP body at a time.
READ_CHUNK = 256 * 1024

#: A pattern, compiled (and cached by ``re``) when first used, not at import.
_CONTENT_RANGE = r"(?i)^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$"
_RETRY_STATUSES = frozenset({404, 408, 410, 425, 429, 500, 502, 503, 504})


class WebSeedPort(Protocol):
    """What web seeds need of their torrent (the torrent's peer port satisfies it)."""

    meta: Metainfo
    manager: PieceManager
    peers: Mapping[Any, Any]
    download_limit: Any

    def block_arrived(self, n: int) -> None:
        """``n`` payload bytes were received."""

    def stats_wasted(self, n: int) -> None:
        """``n`` bytes arrived that could not be used."""

    def verify_piece(self, piece: Piece) -> None:
        """A piece has all its blocks: hash it, then store it (may make the caller wait)."""


class _Retry(Exception):
    """A failure worth retrying later; ``delay`` is the server's wish (Retry-After), if any."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class _Broken(Exception):
    """The server breaks the protocol: drop this web seed."""


class _Dropped(Exception):
    """The seed was dropped while a request ran."""


def default_run(swarm: PieceManager, max_pieces: int, ready: Callable[[int], bool] | None = None) -> list[int]:
    """The run a strategy without ``web_seed_run`` gets: the first unstarted wanted pieces, in index order
    (only those ``ready`` allows, if given: a v2 piece whose file's layer is not known yet cannot be checked)."""
    n, partial = swarm.num_pieces, swarm.partial
    wanted = swarm.wanted if ready is None else (lambda i: swarm.wanted(i) and ready(i))
    for i in range(n):
        if i not in partial and wanted(i):
            run, nxt = [i], i + 1
            while len(run) < max_pieces and nxt < n and nxt not in partial and wanted(nxt):
                run.append(nxt)
                nxt += 1
            return run
    return []


def _left_over(swarm: PieceManager, index: int) -> bool:
    """Started, but with free blocks and nobody asked for any: what a failed request left behind."""
    piece = swarm.partial.get(index)
    return piece is not None and piece.free > 0 and not piece.requesters


def left_over_run(swarm: PieceManager, max_pieces: int) -> list[int]:
    """Pieces a failed web seed request left half done (no peer is asked for them): the engine's own run
    when the strategy has none, so that a download from web seeds alone always finishes."""
    for i in sorted(i for i in swarm.partial if _left_over(swarm, i)):
        run = [i]
        while len(run) < max_pieces and _left_over(swarm, run[-1] + 1):
            run.append(run[-1] + 1)
        return run
    return []


def _valid_run(swarm: PieceManager, run: Iterable[int], max_pieces: int,
               ready: Callable[[int], bool] | None = None) -> list[int]:
    """The strategy's answer cut to what may be claimed: consecutive, wanted, unstarted (or left over) pieces
    (and ``ready``, if given)."""
    out: list[int] = []
    for i in run:
        if len(out) >= max_pieces or (out and i != out[-1] + 1):
            break
        if not (isinstance(i, int) and 0 <= i < swarm.num_pieces) or not swarm.wanted(i) or (
                i in swarm.partial and not _left_over(swarm, i)) or (ready is not None and not ready(i)):
            break
        out.append(i)
    return out


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value.strip()) if value else None
    except ValueError:
        return None  # an HTTP date: the exponential back-off applies


class WebSeed:
    """One web seed URL: its HTTP session, its back-off, and the pieces it fetches (used as a block sender)."""

    def __init__(self, url: str, kind: str, meta: Metainfo) -> None:
        self.url = url
        self.kind = kind  #: ``"url-list"`` (BEP 19) or ``"httpseeds"`` (BEP 17)
        self.urls = UrlMap(url, meta) if kind == "url-list" else None
        import requests.adapters

        self.http = requests.Session()
        self.http.trust_env = False  # no proxies or .netrc from the environment: the URL is asked as given
        self.http.headers.update({"User-Agent": f"torrentcore/{__version__}", "Accept-Encoding": "identity"})
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=CONNECTIONS, max_retries=0)
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)
        self.downloaded = 0
        self.requests = 0
        self.failures = 0  #: failures in a row (reset by a success)
        self.retry_at = 0.0
        self.dropped: str | None = None
        self.warned = False

    def __repr__(self) -> str:
        return f"WebSeed({self.url!r})"

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    # --- HTTP ------------------------------------------------------------------------------------

    def _get(self, url: str, headers: dict[str, str]) -> requests.Response:
        """GET ``url`` streaming, following at most MAX_REDIRECTS redirects to http(s) URLs."""
        import requests

        for _hop in range(MAX_REDIRECTS + 1):
            if self.dropped:
                raise _Dropped()
            self.requests += 1
            try:
                resp = self.http.get(url, headers=headers, stream=True, allow_redirects=False,
                                     timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
            except requests.exceptions.InvalidURL as exc:
                raise _Broken(f"invalid URL {url!r}") from exc
            except (requests.RequestException, OSError) as exc:
                raise _Retry(_short(exc)) from exc
            location = resp.headers.get("location") if resp.status_code in (301, 302, 303, 307, 308) else None
            if location is None:
                return resp
            resp.close()
            target = urljoin(url, location)
            if not usable(target):
                raise _Broken(f"redirects to another scheme than http(s): {_clip(target)}")
            url = target
        raise _Broken(f"more than {MAX_REDIRECTS} redirects (a redirect loop)")

    def _read(self, resp: requests.Response, length: int, sink: Callable[[memoryview], None], exact: bool) -> None:
        """Feed ``length`` body bytes to ``sink``; ``exact``: a longer body breaks the protocol."""
        import requests

        got = 0
        try:
            for chunk in resp.iter_content(READ_CHUNK):
                if self.dropped:
                    raise _Dropped()
                view = memoryview(chunk)
                if got + len(view) > length:
                    if exact:
                        raise _Broken(f"sent more than the {length} bytes asked for (an endless body?)")
                    view = view[: length - got]
                if view:
                    sink(view)
                    got += len(view)
                if got >= length and not exact:
                    break
        except (requests.RequestException, OSError) as exc:
            raise _Retry(_short(exc)) from exc
        if got < length:
            raise _Retry(f"the body ended after {got} of {length} bytes")

    def fetch_span(self, url: str, offset: int, length: int, sink: Callable[[memoryview], None]) -> None:
        """BEP 19: ``length`` bytes at ``offset`` of the file at ``url``, by a Range request."""
        resp = self._get(url, {"Range": f"bytes={offset}-{offset + length - 1}"})
        try:
            status = resp.status_code
            if status == 206:
                m = re.match(_CONTENT_RANGE, resp.headers.get("content-range", ""))
                if not m or int(m.group(1)) != offset or int(m.group(2)) != offset + length - 1:
                    raise _Broken(f"answered another range than asked ({resp.headers.get('content-range')!r})")
                declared = resp.headers.get("content-length")
                if declared is not None and declared.strip().isdigit() and int(declared) > length:
                    raise _Broken(f"sent more than the {length} bytes asked for ({declared} declared)")
                self._read(resp, length, sink, exact=True)
            elif status == 200:
                if offset:
                    raise _Broken("ignores Range requests (answered 200 with the whole file)")
                self._read(resp, length, sink, exact=False)
            else:
                raise _Retry(f"HTTP {status}", _retry_after(resp.headers.get("retry-after")))
        finally:
            resp.close()

    def fetch_piece_bep17(self, info_hash: bytes, index: int, length: int,
                          sink: Callable[[memoryview], None]) -> None:
        """BEP 17: the whole of piece ``index``; a 503's body is the seconds to wait."""
        resp = self._get(bep17_url(self.url, info_hash, index, length), {})
        try:
            if resp.status_code == 200:
                declared = resp.headers.get("content-length")
                if declared is not None and declared.strip().isdigit() and int(declared) > length:
                    raise _Broken(f"sent more than the {length} bytes asked for ({declared} declared)")
                self._read(resp, length, sink, exact=True)
                return
            delay = _retry_after(resp.headers.get("retry-after"))
            if resp.status_code == 503 and delay is None:
                import requests

                try:
                    delay = _retry_after(next(resp.iter_content(64), b"").decode("ascii", "replace"))
                except (requests.RequestException, OSError):
                    delay = None
            raise _Retry(f"HTTP {resp.status_code}", delay)
        finally:
            resp.close()

    # --- back-off --------------------------------------------------------------------------------

    def backoff(self, delay: float | None) -> float:
        """One more failure in a row: wait (the server's ``delay`` within bounds, else exponential)."""
        self.failures += 1
        wait = BACKOFF_FIRST * 2 ** min(self.failures - 1, 16)
        if delay is not None:
            wait = delay
        wait = max(BACKOFF_FIRST, min(BACKOFF_MAX, wait))
        self.retry_at = max(self.retry_at, time.monotonic() + wait)
        return wait


def _short(exc: BaseException) -> str:
    """A one-line reason for a network error (requests' texts nest the whole cause chain)."""
    import requests

    name = type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection failed" + (" (refused)" if "refused" in text.lower() else "")
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    return f"{name}: {_clip(text, 120)}" if text else name


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class WebSeeds:
    """The web seeds of one torrent and their workers (see the module docstring).

    ``warn(message)`` shows the user one line (the torrent's non-fatal error event).
    """

    def __init__(self, meta: Metainfo, port: WebSeedPort, warn: Callable[[str], None], enabled: bool = True) -> None:
        self.meta = meta
        self.port = port
        self._warn = warn
        self.seeds: list[WebSeed] = []
        self._loops: dict[WebSeed, list[Any]] = {}  # each seed's worker greenlets (start_workers)
        if not enabled:
            return
        seen: set[str] = set()
        for kind, urls in (("url-list", meta.url_list), ("httpseeds", meta.http_seeds)):
            for url in urls:
                if url in seen or len(self.seeds) >= MAX_WEB_SEEDS:
                    continue
                seen.add(url)
                if not usable(url):
                    log.debug("web seed skipped: not an http(s) URL", url=url)
                    continue
                self.seeds.append(WebSeed(url, kind, meta))

    def __len__(self) -> int:
        return len(self.seeds)

    @property
    def active(self) -> list[WebSeed]:
        """Seeds not dropped."""
        return [s for s in self.seeds if not s.dropped]

    def owns(self, who: Hashable) -> bool:
        """Whether a block sender is one of these web seeds (not a peer address)."""
        return isinstance(who, WebSeed) and who in self.seeds

    def drop(self, seed: WebSeed, reason: str) -> None:
        """Stop using ``seed`` for good (one warning line)."""
        if seed.dropped:
            return
        seed.dropped = reason
        log.warning("web seed dropped", url=seed.url, reason=reason)
        self._warn(f"web seed {_clip(seed.url)} dropped: {reason}")

    def workers(self) -> list[Callable[[], None]]:
        """The loops to run (each in its own greenlet) while the torrent downloads."""
        return [lambda s=s: self._work(s) for s in self.active for _ in range(CONNECTIONS)]

    def start_workers(self, spawn: Callable[[Callable[[], None]], Any], fresh: bool = False) -> int:
        """Start (with ``spawn``, which returns a greenlet) the worker loops each active seed lacks: all of
        them when the network starts (``fresh``: the old ones were killed, maybe not dead yet), and again when
        more pieces are wanted (a file selected later) after the loops ended on a complete selection.
        Returns how many were started."""
        if fresh:
            self._loops.clear()
        started = 0
        for seed in self.active:
            alive = [g for g in self._loops.get(seed, ()) if not g.dead]
            while len(alive) < CONNECTIONS:
                alive.append(spawn(lambda s=seed: self._work(s)))
                started += 1
            self._loops[seed] = alive
        return started

    def close(self) -> None:
        """Close every seed's connection pool (log what each one delivered)."""
        for s in self.seeds:
            if s.requests:
                log.info("web seed", url=s.url, downloaded=s.downloaded, requests=s.requests, dropped=s.dropped)
            s.close()

    # --- a worker ----------------------------------------------------------------------------------

    def _max_pieces(self, manager: PieceManager) -> int:
        length = self.meta.piece_length
        pieces = max(1, min(RUN_MAX_PIECES, RUN_BYTES // length))
        room = manager.max_requested - manager.requested_blocks
        return min(pieces, room // max(1, -(-length // BLOCK_SIZE)))

    def _next_run(self, manager: PieceManager) -> list[int]:
        max_pieces = self._max_pieces(manager)
        if max_pieces <= 0:
            return []
        layers = getattr(self.port, "layers", None)
        ready = layers.ready if layers is not None and layers.blocking else None  # v2: files whose layer is known
        pick = getattr(manager.strategy, "web_seed_run", None)
        run = pick(manager, max_pieces) if pick is not None else default_run(manager, max_pieces, ready)
        return (_valid_run(manager, run or (), max_pieces, ready)
                or _valid_run(manager, left_over_run(manager, max_pieces), max_pieces, ready)
                or (default_run(manager, max_pieces, ready) if ready is not None else []))

    def _work(self, seed: WebSeed) -> None:
        while not seed.dropped:
            manager = self.port.manager
            if manager.complete:
                return
            wait = seed.retry_at - time.monotonic()
            if wait > 0:
                gevent.sleep(min(wait, BACKOFF_MAX))
                continue
            run = self._next_run(manager)
            if not run:
                gevent.sleep(IDLE_WAIT)
                continue
            blocks = manager.take_pieces(seed, run)
            log.debug("web seed run", url=seed.url, first=run[0], pieces=len(run), blocks=len(blocks))
            try:
                self._fetch_run(seed, run)
                seed.failures = 0
            except _Retry as exc:
                wait = seed.backoff(exc.delay)
                log.info("web seed failed", url=seed.url, reason=str(exc), retry=wait, failures=seed.failures)
                if not seed.warned:  # one line per seed: a flapping mirror must not flood the console
                    seed.warned = True
                    self._warn(f"web seed {_clip(seed.url)}: {exc}; retrying in {wait:.0f} s "
                               "(later failures are logged, not shown)")
            except _Broken as exc:
                self.drop(seed, str(exc))
            except _Dropped:
                pass
            finally:
                manager.release(seed, blocks)  # what arrived is no longer listed: only the rest goes back
            if manager is not self.port.manager:
                return  # the torrent checked its data again: a new manager, new workers

    def _fetch_run(self, seed: WebSeed, run: Sequence[int]) -> None:
        meta = self.meta
        rate = getattr(self.port.download_limit, "rate", 0) or 0
        assembler = _Assembler(self, seed, run[0] * meta.piece_length,
                               min(meta.total_length, (run[-1] + 1) * meta.piece_length))
        if seed.kind == "url-list":
            assert seed.urls is not None
            for span in seed.urls.spans(run[0], len(run)):
                if span.url is None:
                    assembler.feed(memoryview(bytes(span.length)))  # a pad file: zeros, never fetched
                    continue
                seconds = REQUEST_TIMEOUT + span.length / MIN_RATE + (span.length / rate if rate else 0)
                with gevent.Timeout(seconds, _Retry("timed out")):
                    seed.fetch_span(span.url, span.offset, span.length, assembler.feed)
        else:
            for index in run:
                length = meta.piece_size(index)
                seconds = REQUEST_TIMEOUT + length / MIN_RATE + (length / rate if rate else 0)
                with gevent.Timeout(seconds, _Retry("timed out")):
                    seed.fetch_piece_bep17(meta.info_hash, index, length, assembler.feed)
        assembler.finish()

    def deliver(self, seed: WebSeed, index: int, begin: int, data: bytes | bytearray | memoryview) -> None:
        """One block of piece ``index`` arrived from ``seed``: store it as a peer's block is stored."""
        port = self.port
        manager = port.manager
        length = len(data)
        dest = manager.block_buffer(index, begin, length)
        if dest is None:
            if begin // BLOCK_SIZE not in manager.pad_blocks.get(index, ()):  # pad zeros were never asked for
                port.stats_wasted(length)  # taken meanwhile by a peer (endgame), or the piece is done
            return
        dest[:] = data
        others, piece = manager.block_received(seed, index, begin)
        port.block_arrived(length)
        seed.downloaded += length
        for other in others:
            peer = port.peers.get(other)
            if peer is not None:
                peer.cancel_block(index, begin)
        if piece is not None:
            # Its own greenlet: waiting for a verify slot keeps the back-pressure, and a time-out or kill of
            # this request while it waits cannot lose the piece (it is no longer partial: nobody would fetch it).
            gevent.spawn(port.verify_piece, piece).join()
        limit = port.download_limit
        if getattr(limit, "rate", 0):
            limit.consume(length)


class _Assembler:
    """Cuts a run's byte stream (torrent offsets ``start`` to ``end``) into blocks for :meth:`WebSeeds.deliver`."""

    def __init__(self, seeds: WebSeeds, seed: WebSeed, start: int, end: int) -> None:
        self.seeds = seeds
        self.seed = seed
        self.meta = seeds.meta
        self.pos = start
        self.end = end
        self.pending = bytearray()

    def _next_block(self) -> tuple[int, int, int]:
        meta = self.meta
        index, begin = divmod(self.pos, meta.piece_length)
        return index, begin, min(BLOCK_SIZE, meta.piece_size(index) - begin)

    def feed(self, data: memoryview) -> None:
        """More bytes of the stream, in order. Whole blocks are handed on as slices of ``data`` (no copy);
        only a block split between two reads is gathered in ``pending``."""
        k, size = 0, len(data)
        pending = self.pending
        if pending:  # finish the block the last read began
            _index, _begin, length = self._next_block()
            k = min(size, length - len(pending))
            pending += data[:k]
            if len(pending) < length:
                return
            self._deliver(pending)
            self.pending = bytearray()
        while self.pos < self.end:
            _index, _begin, length = self._next_block()
            if size - k < length:
                break
            self._deliver(data[k : k + length])
            k += length
        if k < size:
            self.pending += data[k:]

    def _deliver(self, block: bytes | bytearray | memoryview) -> None:
        # No yield between block_buffer and block_received (deliver): the bytes are all here.
        index, begin, _length = self._next_block()
        self.seeds.deliver(self.seed, index, begin, block)
        self.pos += len(block)
        if self.seed.dropped:
            raise _Dropped()

    def finish(self) -> None:
        """The run's last bytes arrived (a run ends on a piece boundary, so nothing may be left)."""
        if self.pending or self.pos != self.end:
            raise _Broken(f"the run's bytes do not add up ({len(self.pending)} left over)")


__all__ = ["WebSeed", "WebSeeds", "WebSeedPort", "default_run", "CONNECTIONS", "RUN_BYTES", "MAX_WEB_SEEDS",
           "BACKOFF_FIRST", "BACKOFF_MAX", "MAX_REDIRECTS"]
