"""The client's limiter: the whole budget under backlog, never more than ``rate`` in any second,
and one limiter across rate changes. On the client's injected clock, so every figure is exact
(a scripted transport records when each call goes out)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from taobao_ordersync import RawResponse, RetryPolicy, TopClient
from taobao_ordersync.testing import FakeClock, ScriptedRequest, ScriptedTransport, json_reply


class LateClock(FakeClock):
    """Every sleep wakes a millisecond late, as asyncio's timers do (they round up, and a busy
    loop runs other callbacks first)."""

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds + 0.001)


class Recorder:
    """Answers ``taobao.time.get`` at once (a ScriptedTransport's script), notes the clock time of
    each call, and can act when the n-th call goes out."""

    def __init__(self, clock: FakeClock, on_send: Callable[[int], None] | None = None) -> None:
        self.clock = clock
        self.on_send = on_send
        self.sent: list[float] = []
        self.transport = ScriptedTransport(self.answer)

    def answer(self, request: ScriptedRequest) -> RawResponse:
        self.sent.append(self.clock.monotonic())
        if self.on_send is not None:
            self.on_send(len(self.sent))
        return json_reply({"time": "2026-01-01 00:00:00"})


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
    return TopClient(
        "key",
        "secret",
        rate=rate,
        burst=burst,
        retry=RetryPolicy.no_wait(),
        transport=recorder.transport,
        clock=recorder.clock,
    )


async def test_a_rate_change_never_runs_two_limiters_at_once() -> None:
    """Calls already waiting when the rate changes and calls made after it share one limiter: at no
    moment do the two groups go out side by side at the sum of the rates."""
    clock = FakeClock()
    later: list[asyncio.Task[object]] = []

    def reshare(sent: int) -> None:
        if sent == 5:  # a re-share, as a Worker does at every heartbeat when the live count changes
            client.rate = 19.0
            later.extend(asyncio.create_task(client.time()) for _ in range(20))

    recorder = Recorder(clock, reshare)
    async with client_with(recorder, rate=20.0) as client:
        await asyncio.gather(*(client.time() for _ in range(20)))
        await asyncio.gather(*later)
    assert len(recorder.sent) == 40
    assert most_in_one_second(recorder.sent) <= 20


async def test_a_lower_rate_applies_to_calls_already_waiting() -> None:
    """Lowering the rate (another worker joined) slows the queue at once, not after it drains."""
    clock = FakeClock()
    changed: list[float] = []

    def slow_down(sent: int) -> None:
        if sent == 10:
            client.rate = 10.0
            changed.append(clock.monotonic())

    recorder = Recorder(clock, slow_down)
    async with client_with(recorder, rate=40.0) as client:
        await asyncio.gather(*(client.time() for _ in range(30)))
    after = [at for at in recorder.sent if at > changed[0]]
    assert len(after) == 20
    assert most_in_one_second(after) <= 10


async def test_backlog_uses_the_whole_budget_and_never_more() -> None:
    """A queue that never empties gets ``rate`` calls a second although every wake-up is late:
    each slot is chained to the previous one, so the lateness does not add up."""
    recorder = Recorder(LateClock())
    rate = 100.0
    async with client_with(recorder, rate=rate) as client:
        await asyncio.gather(*(client.time() for _ in range(150)))
    # 150 calls at 100/s: the first at once, the last 1.49 s later, give or take a few late wake-ups
    # (a limiter that lost each millisecond would take 1.64 s).
    assert recorder.sent[-1] - recorder.sent[0] <= 1.49 + 0.005
    assert most_in_one_second(recorder.sent) <= rate


async def test_an_idle_limiter_banks_no_burst_beyond_burst() -> None:
    """After a quiet spell, burst=1 still spaces calls evenly: no catching up on slots nobody wanted."""
    clock = FakeClock()
    recorder = Recorder(clock)
    async with client_with(recorder, rate=20.0) as client:
        await client.time()
        await clock.sleep(0.5)
        recorder.sent.clear()
        await asyncio.gather(*(client.time() for _ in range(5)))
    gaps = [b - a for a, b in zip(recorder.sent, recorder.sent[1:], strict=False)]
    assert min(gaps) >= 0.05 - 1e-9  # 1 / rate


async def test_burst_allows_that_many_at_once_and_the_second_stays_within_rate() -> None:
    clock = FakeClock()
    recorder = Recorder(clock)
    async with client_with(recorder, rate=10.0, burst=5) as client:
        await asyncio.gather(*(client.time() for _ in range(15)))
    assert recorder.sent[4] == recorder.sent[0]  # five back to back
    assert most_in_one_second(recorder.sent) <= 10
