"""Window planning (pure): tile a time range, split heavy windows, order pages.

Times have 1-second resolution and both bounds of a window are inclusive.
Consecutive windows *touch*: the next starts at the previous end, so the
boundary second is read twice (and de-duplicated) rather than skipped (seed
article, "way 4"). A window that holds too many trades is split in time; a
single second that still holds too many is split by trade type; only a single
second of a single type is left whole, and the caller must handle it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Final

from attrs import evolve, frozen

__all__ = ["Window", "page_count", "page_order", "split", "tile"]

SECOND: Final = timedelta(seconds=1)


@frozen
class Window:
    """``[start, end]``, both inclusive, whole seconds, for ``types``.

    ``commits`` is false for all but the last type-part of a second split by type:
    the checkpoint may only move past a second once every type in it was read.
    """

    start: datetime
    end: datetime
    types: tuple[str, ...]
    commits: bool = True

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    @property
    def is_single_second(self) -> bool:
        return self.start == self.end

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

    Time first: halves touch at the midpoint (``[s, m]`` and ``[m, e]``); a 2-second
    window splits into its two single seconds. A single second splits its types.
    """
    if not window.is_single_second:
        seconds = int(window.span.total_seconds())
        if seconds == 1:
            return (
                Window(window.start, window.start, window.types, window.commits),
                Window(window.end, window.end, window.types, window.commits),
            )
        middle = window.start + timedelta(seconds=seconds // 2)
        return (
            Window(window.start, middle, window.types, window.commits),
            Window(middle, window.end, window.types, window.commits),
        )
    if len(window.types) > 1:
        half = len(window.types) // 2
        return (
            evolve(window, types=window.types[:half], commits=False),
            evolve(window, types=window.types[half:]),
        )
    raise ValueError("a single second of a single trade type cannot be split")


def page_count(total: int, page_size: int) -> int:
    """Pages needed for ``total`` trades."""
    return max(1, -(-total // page_size))


def page_order(total: int, page_size: int) -> Iterator[int]:
    """The page numbers to read after page 1, for a newest-first list that shifts while read.

    Last page first, down to page 1 (re-read last): a trade that leaves the window
    shifts later trades towards page 1, into pages still to be read, so the worst
    case is a duplicate, never a gap (seed article, technique 2).
    """
    last = page_count(total, page_size)
    if last == 1:
        return iter(())
    return iter(range(last, 0, -1))
