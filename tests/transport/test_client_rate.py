"""The client's limiter: the whole budget under backlog, never more than ``rate`` in any second,
and one limiter across rate changes (real event-loop time; a stub transport records the sends)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

from taobao_ordersync import RetryPolicy, TopClient
from taobao_ordersync.transport import RawResponse


class Recorder:
    """A transport that answers ``taobao.time.get`` at once and notes the loop time of each call."""

    def __init__(self) -> None:
        self.sent: list[float] = []

    async def post(self, url: str, form: Mapping[str, str]) -> RawResponse:
        self.sent.append(asyncio.get_running_loop().time())
        return RawResponse(status=200, body=json.dumps({"time": "2026-01-01 00:00:00"}).encode())

    async def aclose(self) -> None:
        pass


def most_in_one_second(times: list[float]) -> int:
    """The most calls in any half-open one-second window ``(t - 1, t]``."""
    times = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def client_with(recorder: Recorder, rate: float, burst: int = 1) -> TopClient:
    return TopClient("key", "secret", rate=rate, burst=burst, retry=RetryPolicy.no_wait(), transport=recorder)


async def test_a_rate_change_never_runs_two_limiters_at_once() -> None:
    """Calls already waiting when the rate changes and calls made after it share one limiter: at no
    moment do the two groups go out side by side at the sum of the rates."""
    recorder = Recorder()
    async with client_with(recorder, rate=20.0) as client:
        first = [asyncio.create_task(client.time()) for _ in range(20)]
        await asyncio.sleep(0.2)
        client.rate = 19.0  # a re-share, as a Worker does at every heartbeat when the live count changes
        second = [asyncio.create_task(client.time()) for _ in range(20)]
        await asyncio.gather(*first, *second)
    assert len(recorder.sent) == 40
    assert most_in_one_second(recorder.sent) <= 20


async def test_a_lower_rate_applies_to_calls_already_waiting() -> None:
    """Lowering the rate (another worker joined) slows the queue at once, not after it drains."""
    recorder = Recorder()
    async with client_with(recorder, rate=40.0) as client:
        calls = [asyncio.create_task(client.time()) for _ in range(30)]
        await asyncio.sleep(0.25)
        client.rate = 10.0
        changed = asyncio.get_running_loop().time()
        await asyncio.gather(*calls)
    after = [at for at in recorder.sent if at > changed]
    assert most_in_one_second(after) <= 10


async def test_backlog_uses_the_whole_budget_and_never_more() -> None:
    """A queue that never empties gets ``rate`` calls a second (late wake-ups do not add up), and
    no one-second window holds more than ``rate`` calls."""
    recorder = Recorder()
    rate = 100.0
    async with client_with(recorder, rate=rate) as client:
        started = asyncio.get_running_loop().time()
        calls = [asyncio.create_task(client.time()) for _ in range(150)]
        await asyncio.gather(*calls)
        elapsed = asyncio.get_running_loop().time() - started
    # 150 calls at 100/s: the first at once, the last 1.49 s later; aiolimiter's bucket of one took
    # 1.6 s or more (each wake-up about a millisecond late, lost for good).
    assert elapsed < 1.49 / 0.97
    assert most_in_one_second(recorder.sent) <= rate


async def test_an_idle_limiter_banks_no_burst_beyond_burst() -> None:
    """After a quiet spell, burst=1 still spaces calls evenly: no catching up on slots nobody wanted."""
    recorder = Recorder()
    async with client_with(recorder, rate=20.0) as client:
        await client.time()
        await asyncio.sleep(0.5)
        recorder.sent.clear()
        await asyncio.gather(*(client.time() for _ in range(5)))
    gaps = [b - a for a, b in zip(recorder.sent, recorder.sent[1:], strict=False)]
    assert min(gaps) >= 0.05 * 0.9  # 1 / rate, less a little for the loop's clock resolution


async def test_burst_allows_that_many_at_once_and_the_second_stays_within_rate() -> None:
    recorder = Recorder()
    async with client_with(recorder, rate=10.0, burst=5) as client:
        await asyncio.gather(*(client.time() for _ in range(15)))
    assert recorder.sent[4] - recorder.sent[0] < 0.05  # five back to back
    assert most_in_one_second(recorder.sent) <= 10
