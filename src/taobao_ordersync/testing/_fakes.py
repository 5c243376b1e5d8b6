"""Fakes for tests: a clock that never really sleeps."""

from __future__ import annotations

import asyncio


class FakeClock:
    """A ``Clock`` whose ``sleep`` returns at once and moves time forward.

    ``sleeps`` records every requested sleep, so a test can check a ban pause
    without waiting for it.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = start
        self._mono = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self._wall += seconds
        self._mono += seconds

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock alone (an NTP correction, a VM resumed); monotonic time stays."""
        self._wall += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)
