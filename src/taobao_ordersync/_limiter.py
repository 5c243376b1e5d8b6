"""``RateLimiter``: the client's limiter, paced on the client's (monotonic) clock without losing slots.

A token bucket in its exact form (GCRA): each call's slot is the previous slot plus ``1 / rate``,
or its own arrival if the limiter was idle, and a call may go ``(burst - 1) / rate`` before its
slot. The slot is fixed before the call sleeps, so a wake-up that comes late (asyncio rounds its
timers up to whole milliseconds, and the loop may be busy) delays that call only: the next slot is
still counted from the previous one, and a queue that never empties gets ``rate`` calls a second.
(aiolimiter's bucket of one, which this replaced inside ``TopClient``, drops the lateness of every
wake-up for good: 6-7% of the budget at 50 calls/s.)

On top of that a hard ceiling: never more than ``max(burst, floor(rate))`` calls in any one
second (Taobao, and the emulator, ban an app for a second above its per-second limit). It also
bounds how fast a late queue catches up. Changing ``rate`` changes this one limiter: calls already
waiting and calls made after the change queue together, and a lower rate applies to the next
call out (the ceiling counts the calls of the last second whatever rate they went at).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from types import TracebackType
from typing import Final

from taobao_ordersync.clock import Clock, SystemClock, wait_until_set

__all__ = ["RateLimiter"]

_WINDOW: Final = 1.0  # seconds over which the ceiling counts calls


class RateLimiter:
    """At most ``rate`` calls a second on average, ``burst`` back to back, FIFO; use ``async with``."""

    def __init__(self, rate: float, burst: int = 1, *, clock: Clock | None = None) -> None:
        self._rate = float(rate)
        self._burst = burst
        self._clock: Clock = clock or SystemClock()
        self._tat = -math.inf  # the next call's slot (monotonic time)
        self._sent: deque[float] = deque()  # when the calls of the last second went out
        self._lock: asyncio.Lock | None = None  # FIFO: asyncio.Lock wakes its waiters in order
        self._changed: asyncio.Event | None = None

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, rate: float) -> None:
        rate = float(rate)
        if rate == self._rate:
            return
        if rate < self._rate and self._sent:
            # Slower: the next slot is one new interval after the last call, not one old one.
            self._tat = max(self._tat, self._sent[-1] + 1.0 / rate)
        self._rate = rate
        if self._changed is not None:
            self._changed.set()  # the call waiting at the head recomputes its slot

    @property
    def ceiling(self) -> int:
        """The most calls allowed in any one second."""
        return max(self._burst, math.floor(self._rate + 1e-9), 1)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def acquire(self) -> None:
        """Wait for this call's slot."""
        arrived = self._clock.monotonic()
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while True:
                now = self._clock.monotonic()
                slot = max(self._tat, arrived)  # chained to the previous slot unless we came to an idle limiter
                sent = self._sent
                while sent and sent[0] <= now - _WINDOW:
                    sent.popleft()
                over = len(sent) - self.ceiling
                # A full second holds the call until its oldest call leaves it, and the slot moves
                # with it, so the calls after it are spaced at the (maybe new, lower) rate from there.
                held = sent[over] + _WINDOW if over >= 0 else -math.inf
                at = max(slot - (self._burst - 1) / self._rate, held)
                slot = max(slot, held)
                if at <= now:
                    break
                self._changed = changed = asyncio.Event()
                try:
                    await wait_until_set(changed, at - now, clock=self._clock)
                finally:
                    self._changed = None
            self._tat = slot + 1.0 / self._rate
            sent.append(now)
