"""Multi-tracker announces (BEP 12) with per-tracker exponential back-off.

The ``announce-list`` is a list of tiers. Each tier is shuffled once, when the
:class:`TrackerTiers` is made. An announce tries the trackers tier by tier, in
order; the first one that answers is moved to the front of its tier and its
answer is returned. A tracker that fails is put in back-off (15 s, doubling up
to 30 min, reset by a success) and is skipped while in back-off, unless every
tracker is, in which case the one whose back-off ends soonest is tried.
URLs with a scheme no client supports are never tried but stay listed with
their error.

A tracker's ``interval`` below :data:`MIN_ANNOUNCE_INTERVAL` is raised to it in
the answer returned (libtorrent does the same with its ``min_announce_interval``
setting): a tracker saying ``interval 1`` cannot make us announce every second.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import structlog

from ..errors import TrackerError
from . import AnnounceRequest, AnnounceResponse, Tracker, make_tracker

__all__ = ["BACKOFF_BASE", "BACKOFF_MAX", "MIN_ANNOUNCE_INTERVAL", "STOPPED_TIMEOUT", "TrackerTiers"]

log = structlog.get_logger(__name__)

#: Shuffles the tiers of every tracker list given no ``rng`` of its own (seeding a ``random.Random()`` costs
#: 32 us, once per torrent otherwise).
_RNG = random.Random()

#: First back-off after a failure, in seconds; it doubles with each further failure.
BACKOFF_BASE = 15.0
#: Longest back-off, in seconds.
BACKOFF_MAX = 30 * 60.0
#: Per-tracker timeout for the "stopped" announce, which nobody waits for.
STOPPED_TIMEOUT = 5.0
#: Shortest announce interval we accept from a tracker, in seconds: a smaller ``interval`` in a reply is
#: raised to this. libtorrent's ``settings_pack::min_announce_interval`` defaults to 5 * 60 seconds too.
MIN_ANNOUNCE_INTERVAL = 5 * 60


class _State:
    """What we know about one tracker URL."""

    __slots__ = ("answered", "client", "error", "failures", "reported", "retry_at", "unusable")

    def __init__(self) -> None:
        self.client: Tracker | None = None
        self.error: str | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.answered = False
        self.unusable = False
        self.reported = False  # its current failure was handed out by unreported_failures()


class TrackerTiers:
    """The trackers of one torrent, grouped in tiers (BEP 12).

    ``rng`` shuffles the tiers (``random.Random()`` if not given); ``clock``
    (monotonic seconds) drives back-off; ``client_factory`` makes the client for
    a URL (default :func:`torrentcore.tracker.make_tracker`). Empty tiers,
    blank URLs and URLs listed twice (the first occurrence counts) are dropped.
    ``min_announce_interval``: answers' ``interval`` is raised to at least this.
    """

    def __init__(
        self,
        tiers: list[list[str]],
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        client_factory: Callable[[str], Tracker] = make_tracker,
        backoff_base: float = BACKOFF_BASE,
        backoff_max: float = BACKOFF_MAX,
        stopped_timeout: float = STOPPED_TIMEOUT,
        min_announce_interval: int = MIN_ANNOUNCE_INTERVAL,
    ) -> None:
        rng = rng if rng is not None else _RNG
        self.min_announce_interval = min_announce_interval
        self._clock = clock
        self._factory = client_factory
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stopped_timeout = stopped_timeout
        self._tiers: list[list[str]] = []
        self._state: dict[str, _State] = {}
        for tier in tiers:
            urls = []
            for url in tier:
                url = url.strip() if isinstance(url, str) else ""
                if url and url not in self._state:
                    self._state[url] = _State()
                    urls.append(url)
            if urls:
                rng.shuffle(urls)
                self._tiers.append(urls)
        self._log = log.bind(trackers=len(self._state))

    def __repr__(self) -> str:
        return f"TrackerTiers({self._tiers!r})"

    @property
    def urls(self) -> list[str]:
        """Every tracker URL in the order they would be tried (tier by tier)."""
        return [url for tier in self._tiers for url in tier]

    @property
    def tiers(self) -> list[list[str]]:
        """A copy of the current tiers (after shuffling and promotions)."""
        return [list(tier) for tier in self._tiers]

    def failures(self) -> dict[str, str]:
        """The last error text of each tracker whose last attempt failed."""
        return {url: st.error for url, st in self._state.items() if st.error is not None}

    def backoff_remaining(self, url: str) -> float:
        """Seconds until ``url`` leaves back-off (0 if it is not in back-off)."""
        return max(0.0, self._state[url].retry_at - self._clock())

    # -- announcing ----------------------------------------------------------------

    def announce(
        self, req: AnnounceRequest, timeout: float = 15.0, *, total_timeout: float | None = None
    ) -> AnnounceResponse:
        """Announce to the first tracker that answers (BEP 12) and return its answer.

        ``timeout`` bounds each tracker; ``total_timeout``, if given, bounds the
        whole call. For ``event="stopped"`` every tracker that answered before is
        told once, with at most ``stopped_timeout`` each, and the first answer is
        returned. Raises :class:`TrackerError` listing each tracker's failure if
        no tracker answered.
        """
        if req.event == "stopped":
            return self._announce_stopped(req, min(timeout, self.stopped_timeout), total_timeout)
        deadline = None if total_timeout is None else time.monotonic() + total_timeout
        tried: list[str] = []
        for tier in self._tiers:
            for url in list(tier):
                st = self._state[url]
                if st.unusable or st.retry_at > self._clock():
                    continue
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._none_answered(tried, "ran out of time")
                tried.append(url)
                resp = self._try(url, req, timeout, deadline)
                if resp is not None:
                    tier.remove(url)
                    tier.insert(0, url)
                    return resp
        if not tried:
            waiting = [url for url, st in self._state.items() if not st.unusable]
            if waiting:
                url = min(waiting, key=lambda u: self._state[u].retry_at)
                tried.append(url)
                resp = self._try(url, req, timeout, deadline)
                if resp is not None:
                    tier = next(t for t in self._tiers if url in t)
                    tier.remove(url)
                    tier.insert(0, url)
                    return resp
        raise self._none_answered(tried)

    def _announce_stopped(
        self, req: AnnounceRequest, timeout: float, total_timeout: float | None
    ) -> AnnounceResponse:
        deadline = None if total_timeout is None else time.monotonic() + total_timeout
        targets = [url for url in self.urls if self._state[url].answered]
        first: AnnounceResponse | None = None
        for url in targets:
            if deadline is not None and time.monotonic() >= deadline:
                break
            resp = self._try(url, req, timeout, deadline)
            if first is None:
                first = resp
        if first is None:
            if not targets:
                raise TrackerError("no tracker to send 'stopped' to: none has answered yet")
            raise self._none_answered(targets)
        return first

    def _try(
        self, url: str, req: AnnounceRequest, timeout: float, deadline: float | None
    ) -> AnnounceResponse | None:
        """One announce to ``url``; record success or failure. Returns None on failure."""
        st = self._state[url]
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - time.monotonic()))
        try:
            if st.client is None:
                st.client = self._factory(url)
            resp = st.client.announce(req, timeout)
        except TrackerError as exc:
            self._failed(url, st, str(exc), unusable=st.client is None)
            return None
        except ValueError as exc:  # a client refusing the URL outright
            self._failed(url, st, f"tracker {url}: {exc}", unusable=st.client is None)
            return None
        st.failures = 0
        st.retry_at = 0.0
        st.error = None
        st.reported = False
        st.answered = True
        if not resp.url:
            resp.url = url
        if resp.interval < self.min_announce_interval:
            self._log.debug("tracker interval raised", url=url, interval=resp.interval,
                            to=self.min_announce_interval)
            resp.interval = self.min_announce_interval
        self._log.debug("tracker answered", url=url, peers=len(resp.peers), interval=resp.interval)
        return resp

    def _failed(self, url: str, st: _State, error: str, *, unusable: bool) -> None:
        prefix = f"tracker {url}"
        if error.startswith(prefix):  # the URL is shown next to the text anyway
            error = error[len(prefix) :].lstrip(": ") or error
        st.error = error
        if unusable:
            st.unusable = True
            self._log.info("tracker unusable", url=url, error=error)
            return
        st.failures += 1
        delay = min(self.backoff_max, self.backoff_base * 2 ** min(st.failures - 1, 30))
        st.retry_at = self._clock() + delay
        self._log.info("tracker failed", url=url, error=error, failures=st.failures, backoff=delay)

    def unreported_failures(self) -> list[str]:
        """``"URL: error"`` for each tracker failing now whose failure was not returned here before.

        Lets the caller report a bad tracker once (until it answers again and then fails again), also when
        another tracker answered in its place and the announce as a whole succeeded.
        """
        out = []
        for url in self.urls:
            st = self._state[url]
            if st.error and not st.reported:
                st.reported = True
                out.append(f"{url}: {st.error}")
        return out

    def _none_answered(self, tried: list[str], why: str = "") -> TrackerError:
        now = self._clock()
        parts = []
        for url in self.urls:
            st = self._state[url]
            if url in tried or st.unusable:
                parts.append(f"{url}: {st.error or 'failed'}")
            elif st.retry_at > now:
                last = f"; last error: {st.error}" if st.error else ""
                parts.append(f"{url}: in back-off for {st.retry_at - now:.0f} s{last}")
            else:
                parts.append(f"{url}: not tried ({why or 'skipped'})")
        if not parts:
            return TrackerError("no tracker answered: the torrent lists no trackers")
        return TrackerError("no tracker answered: " + "; ".join(parts))
