"""Clocks: the local one (the only place that reads time or sleeps) and Taobao's.

Rule 2 of the design: plan every window on Taobao's clock, not ours. ``ClockEstimate``
turns one ``taobao.time.get`` round trip (or a reply's ``Date`` header) into an
offset with its uncertainty; the client keeps the estimate fresh.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

from attrs import frozen

from taobao_ordersync._time import from_epoch

__all__ = ["Clock", "ClockEstimate", "SystemClock"]


class Clock(Protocol):
    """Protocol: the local clock. Inject a fake one in tests."""

    def time(self) -> float:
        """POSIX seconds now, from the local wall clock."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock of this machine."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


async def wait_until_set(event: asyncio.Event, seconds: float | None, *, clock: Clock) -> None:
    """Wait until ``event`` is set or ``seconds`` have passed on ``clock`` (None: no time limit)."""
    if seconds is None:
        await event.wait()
        return
    waiting = asyncio.ensure_future(event.wait())
    sleeping = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((waiting, sleeping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        sleeping.cancel()


@frozen
class ClockEstimate:
    """Taobao's clock, anchored on our monotonic clock: ``server = monotonic + offset``, +/- ``uncertainty``.

    Anchored on the monotonic clock because the wall clock can step (NTP, a VM resumed):
    a step after a measurement must not move Taobao's "now" (design rule 16).
    ``measured_at`` is the monotonic time of the measurement; ``wall_gap`` is the local
    wall clock minus the monotonic clock then, so a later change of that gap shows that
    one of the two jumped and the estimate should be measured again.
    """

    offset: float
    uncertainty: float
    measured_at: float
    wall_gap: float = 0.0

    @classmethod
    def from_round_trip(
        cls, *, sent: float, received: float, server: datetime, wall_gap: float = 0.0, resolution: float = 1.0
    ) -> ClockEstimate:
        """From a reply stamped ``server`` (floored to ``resolution``) between monotonic ``sent`` and ``received``.

        The true server time at our midpoint lies in ``server + [0, resolution)`` widened
        by half the round trip; the estimate is the middle of that interval.
        """
        round_trip = max(0.0, received - sent)
        midpoint = (sent + received) / 2
        offset = server.timestamp() + resolution / 2 - midpoint
        return cls(offset=offset, uncertainty=resolution / 2 + round_trip / 2, measured_at=received, wall_gap=wall_gap)

    @classmethod
    def from_date_header(cls, header: str, *, sent: float, received: float, wall_gap: float = 0.0) -> ClockEstimate:
        """From an HTTP ``Date`` header (RFC 9110, whole seconds) between monotonic ``sent`` and ``received``."""
        server = parsedate_to_datetime(header)
        return cls.from_round_trip(sent=sent, received=received, server=server, wall_gap=wall_gap)

    def now(self, monotonic: float) -> datetime:
        """Best estimate of Taobao's time when our monotonic clock reads ``monotonic`` (for signing)."""
        return from_epoch(monotonic + self.offset)

    def earliest(self, monotonic: float) -> datetime:
        """A time Taobao's clock has surely reached at ``monotonic`` (for planning windows)."""
        return from_epoch(monotonic + self.offset - self.uncertainty)

    def wall_drift(self, *, wall: float, monotonic: float) -> float:
        """Seconds the wall clock moved against the monotonic clock since the measurement."""
        return (wall - monotonic) - self.wall_gap
