"""Window planning (pure): tile a time range, split heavy windows, order pages.

Bounds are whole seconds and inclusive, but Taobao's backend compares them with
millisecond times: ``[a, s]`` ends at ``s.000`` and misses a change at ``s.5``.
So consecutive windows *touch*: the next starts at the previous end, never at
end + 1 s (seed article, "way 4"), and the smallest window that holds a whole
printed second ``s`` is ``[s, s + 1]``. A window that holds too many trades is
split in time down to such one-second windows, then by trade type; only one
second of one type is left whole, and the caller must handle it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import datetime, timedelta

from attrs import evolve, field, frozen

from taobao_ordersync._time import SECOND

__all__ = ["Window", "second_within", "split", "tile"]


@frozen
class Window:
    """``[start, end]``, both inclusive, whole seconds, for ``types``: what a ``Batch`` was read from.

    The time is the creation time in the backfill (and an audit's repairs), the modification
    time otherwise.
    """

    start: datetime
    end: datetime
    types: tuple[str, ...]
    # The planner's and the syncer's (``commits=`` to the constructor): false for all but the last
    # type-part of a second split by type, as the checkpoint may only move past a second once every
    # type in it was read, and for windows no checkpoint follows (re-reads of a second, push, repair).
    _commits: bool = field(default=True, repr=False)

    @property
    def commits(self) -> bool:
        """Deprecated: whether the checkpoint may move to this window's end is the syncer's business."""
        warnings.warn(
            "Window.commits is internal to the syncer and goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._commits

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    @property
    def is_single_second(self) -> bool:
        """At most one second long: splitting it in time would lose the milliseconds between."""
        return self.span <= SECOND

    @property
    def can_split(self) -> bool:
        return not self.is_single_second or len(self.types) > 1


def tile(start: datetime, end: datetime, *, max_span: timedelta, types: Sequence[str]) -> list[Window]:
    """Touching windows covering ``[start, end]``, none longer than ``max_span``.

    ``start`` and ``end`` must be whole seconds with ``start <= end``.
    """
    if start.microsecond or end.microsecond:
        raise ValueError("window bounds must be whole seconds")
    if end < start:
        raise ValueError("end must not be before start")
    if max_span < SECOND or max_span % SECOND:
        raise ValueError("max_span must be at least one second, in whole seconds")
    windows = []
    cursor = start
    while True:
        stop = min(cursor + max_span, end)
        windows.append(Window(cursor, stop, tuple(types)))
        if stop >= end:
            return windows
        cursor = stop


def split(window: Window) -> tuple[Window, Window]:
    """Two windows that together cover ``window``, each holding fewer trades.

    Time first: halves touch at the midpoint (``[s, m]`` and ``[m, e]``), down to
    one-second windows ``[s, s + 1]`` (``[s, s]`` and ``[s + 1, s + 1]`` would miss every
    change between ``s.001`` and ``s.999``). A one-second window splits its types.
    """
    if not window.is_single_second:
        seconds = int(window.span.total_seconds())
        middle = window.start + timedelta(seconds=seconds // 2)
        return evolve(window, end=middle), evolve(window, start=middle)
    if len(window.types) > 1:
        half = len(window.types) // 2
        return (
            evolve(window, types=window.types[:half], commits=False),
            evolve(window, types=window.types[half:]),
        )
    raise ValueError("a single second of a single trade type cannot be split")


def second_within(window: Window, second: datetime) -> Window:
    """The part of ``window`` that holds the trades printed at ``second`` (never wider than it)."""
    return Window(max(second, window.start), min(second + SECOND, window.end), window.types, commits=False)
