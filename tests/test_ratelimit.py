"""The token bucket behind upload and download limits, on a fake clock: a new bucket starts (nearly) empty, so
the first fast peer gets one block, not a second's worth; then the rate holds, and an idle bucket saves a tenth of
a second's worth at most (libtorrent saves none)."""

from __future__ import annotations

import pytest

from torrentcore.ratelimit import IDLE_BURST, START_TOKENS, RateLimits, TokenBucket

BLOCK = 16384
RATE = 100_000


class FakeClock:
    """A monotonic clock that moves only when a bucket sleeps (or the test advances it)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += 1
        self.now += seconds


def _send(bucket: TokenBucket, clock: FakeClock, blocks: int) -> list[tuple[float, int]]:
    """Pass ``blocks`` blocks through ``bucket``: (seconds since the start, bytes passed) after each."""
    start, passed, out = clock.now, 0, []
    for _ in range(blocks):
        bucket.consume(BLOCK)
        passed += BLOCK
        out.append((clock.now - start, passed))
    return out


def test_a_new_bucket_gives_one_block_at_once_then_holds_its_rate():
    clock = FakeClock()
    bucket = TokenBucket(RATE, clock=clock, sleep=clock.sleep)
    sent = _send(bucket, clock, 60)
    assert sent[0] == (0.0, BLOCK)  # the first block passes at once...
    assert sent[1][0] > 0  # ...the second waits: no second's worth of burst at start
    for elapsed, passed in sent:  # never ahead of the rate, never behind it
        assert passed == pytest.approx(START_TOKENS + RATE * elapsed, abs=1), (elapsed, passed)
    assert clock.slept == 59


@pytest.mark.parametrize("rate", [RATE, 10 * RATE])
def test_an_idle_bucket_saves_a_tenth_of_a_second_at_most(rate):
    """Idle for 10 s, a bucket saves IDLE_BURST seconds' worth (a block at least), not ten seconds' nor one."""
    clock = FakeClock()
    bucket = TokenBucket(rate, clock=clock, sleep=clock.sleep)
    clock.now += 10
    saved = max(rate * IDLE_BURST, BLOCK)
    sent = _send(bucket, clock, 100)
    at_once = [passed for elapsed, passed in sent if elapsed == 0]
    assert at_once[-1] == max(1, saved // BLOCK) * BLOCK  # (1 MB/s: 6 blocks; the 7th waits for its debt)
    for elapsed, passed in sent:  # never ahead of the rate with its savings; exactly on it once in debt
        assert passed <= saved + rate * elapsed + 1, (elapsed, passed)
        if elapsed:
            assert passed == pytest.approx(saved + rate * elapsed, abs=1), (elapsed, passed)


def test_unlimited_never_sleeps_and_chained_limits_take_the_tightest():
    clock = FakeClock()
    free = TokenBucket(None, clock=clock, sleep=clock.sleep)
    _send(free, clock, 1000)
    assert clock.slept == 0 and not free.limited
    tight = TokenBucket(RATE, clock=clock, sleep=clock.sleep)
    loose = TokenBucket(RATE * 10, clock=clock, sleep=clock.sleep)
    both = RateLimits(tight, None, loose)
    assert both.rate == RATE
    start = clock.now
    for _ in range(30):
        both.consume(BLOCK)
    assert 30 * BLOCK == pytest.approx(START_TOKENS + RATE * (clock.now - start), abs=1)
