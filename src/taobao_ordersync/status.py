"""``ShopStatus``: how one shop is doing, the one shape every runner reports (pure).

What is known depends on who asks, so the parts are composed:

- every runner knows the sync's position (``phase``, ``position``, ``behind``), its ``state``
  and its last error;
- a ``Fleet`` also knows when it polls the shop (``schedule``);
- PostgreSQL workers also know who holds the shop (``lease``).

``Fleet.status()``, ``PostgresStore.statuses()`` and ``taobao-ordersync status`` all give
``ShopStatus``; ``render_status`` prints any list of them as one table.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final, Literal

from attrs import field, frozen

from taobao_ordersync.checkpoint import Checkpoint

__all__ = ["Lease", "Phase", "Schedule", "ShopStatus", "duration", "lease_text", "phase_of", "render_status"]

Phase = Literal["backfill", "increments"]


@frozen(kw_only=True)
class Schedule:
    """When a ``Fleet`` polls the shop: ``interval`` seconds between polls (adapted to its
    activity), ``next_poll_in`` seconds (None while reading or paused), ``polls`` completed and
    ``failures`` in a row."""

    interval: float
    next_poll_in: float | None = None
    polls: int = 0
    failures: int = 0


@frozen(kw_only=True)
class Lease:
    """Who holds the shop among PostgreSQL workers: ``owner`` (None: free), ``seconds_left``
    before the lease runs out (negative: expired), the fencing ``token`` of the last claim and
    the shop's ``weight`` (its calls per minute, smoothed, as its owner last reported)."""

    owner: str | None
    seconds_left: float | None = None
    token: int = 0
    weight: float = 0.0


@frozen(kw_only=True)
class ShopStatus:
    """How one shop is doing (a snapshot).

    ``position`` is the committed checkpoint's position: creation time during the backfill,
    then modification time (``phase`` says which); ``behind`` how far it trails Taobao's
    ``now - lag``. ``state`` is the runner's: ``due``, ``syncing``, ``waiting``,
    ``backing_off`` or ``paused`` in a fleet; the registry adds ``free`` (no live lease),
    ``claimed`` and ``released``. ``error`` is the exception behind ``last_error`` where the
    runner has it (decide on its type, never on the text). ``delivered`` and ``calls`` count
    this process's trades handed over and API calls for the shop. ``checkpoint`` is the stored
    checkpoint where the runner read it (the registry does; a fleet knows its position only).
    """

    shop_id: str
    state: str | None = None
    phase: Phase | None = None
    position: datetime | None = None
    behind: timedelta | None = None
    last_error: str | None = None
    error: BaseException | None = field(default=None, eq=False, repr=False)
    delivered: int = 0
    calls: int = 0
    schedule: Schedule | None = None
    lease: Lease | None = None
    checkpoint: Checkpoint | None = field(default=None, repr=False)

    # -- the old flat names of the fleet's status, for one release ----------------------

    @property
    def interval(self) -> float:
        """Deprecated: ``schedule.interval``."""
        _renamed("interval", "schedule.interval")
        return 0.0 if self.schedule is None else self.schedule.interval

    @property
    def next_poll_in(self) -> float | None:
        """Deprecated: ``schedule.next_poll_in``."""
        _renamed("next_poll_in", "schedule.next_poll_in")
        return None if self.schedule is None else self.schedule.next_poll_in

    @property
    def polls(self) -> int:
        """Deprecated: ``schedule.polls``."""
        _renamed("polls", "schedule.polls")
        return 0 if self.schedule is None else self.schedule.polls

    @property
    def failures(self) -> int:
        """Deprecated: ``schedule.failures``."""
        _renamed("failures", "schedule.failures")
        return 0 if self.schedule is None else self.schedule.failures


def phase_of(checkpoint: Checkpoint) -> Phase:
    """Which time axis a checkpoint's position is on."""
    return "increments" if checkpoint.backfill_done else "backfill"


def _renamed(old: str, new: str) -> None:
    warnings.warn(f"ShopStatus.{old} is deprecated: use ShopStatus.{new}", DeprecationWarning, stacklevel=3)


# -- one table for `status` ---------------------------------------------------------------

_NONE: Final = "-"


def render_status(statuses: Iterable[ShopStatus]) -> list[str]:
    """One line per shop under a header: the columns every status has, then the schedule's or
    the lease's when some status has one."""
    rows = list(statuses)
    scheduled = any(status.schedule is not None for status in rows)
    leased = any(status.lease is not None for status in rows)
    header = f"{'shop':<16}"
    if leased:
        header += f" {'owner':<24} {'lease':<16}"
    header += f" {'state':<12} {'phase':<10} {'checkpoint (CST)':<20} {'behind':<10}"
    if scheduled:
        header += f" {'next poll':<10}"
    lines = [header.rstrip()]
    for status in rows:
        line = f"{status.shop_id:<16}"
        if leased:
            lease = status.lease
            owner = _NONE if lease is None or lease.owner is None else lease.owner
            line += f" {owner:<24} {lease_text(None if lease is None else lease.seconds_left):<16}"
        position = _NONE if status.position is None else f"{status.position:%Y-%m-%d %H:%M:%S}"
        behind = _NONE if status.behind is None else duration(status.behind.total_seconds())
        line += f" {status.state or _NONE:<12} {status.phase or _NONE:<10} {position:<20} {behind:<10}"
        if scheduled:
            next_poll = status.schedule.next_poll_in if status.schedule is not None else None
            line += f" {_NONE if next_poll is None else duration(next_poll):<10}"
        line = line.rstrip()
        if status.last_error:
            line += f"  {status.last_error}"
        lines.append(line)
    return lines


def duration(seconds: float) -> str:
    """``0:00:42``, ``1 day, 2:04:00``: whole seconds."""
    return str(timedelta(seconds=round(max(0.0, seconds))))


def lease_text(seconds_left: float | None) -> str:
    """``25s left``, ``expired 3s ago``, or ``free``."""
    if seconds_left is None:
        return "free"
    return f"{seconds_left:.0f}s left" if seconds_left >= 0 else f"expired {-seconds_left:.0f}s ago"
