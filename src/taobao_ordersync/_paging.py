"""Reading one window page by page without losing a trade (pure: no I/O).

Both list APIs sort newest first by a time printed in whole seconds, and TOP
documents no order among trades that share a second: a backend may return such
ties in a different order on every request. Offset paging is then safe at a page
seam between two seconds, and unsafe at a seam inside a second whose ties moved.

What the Syncer reads, in order (``page_plan``): page 1, which carries the count;
then the last page back to page 2 (creation windows, which never shift) or back
to page 1 again (modification windows, where a trade that changes leaves the
window and shifts later trades towards page 1: read backwards, a shift becomes a
duplicate, never a gap).

How a lost tie is seen (``SeamCheck``): the pages that touch a second ``s`` offer
exactly as many places to ``s``'s trades as ``s`` holds (more, when an edit
shifted the list towards page 1 meanwhile; never fewer, since nothing joins a
window that ended ``lag`` ago). If ties moved and one trade of ``s`` fell through
a seam, another one took two of those places: some trade of ``s`` shows on two
different pages. So a second without such a repeat is complete, and a second with
one is read again on its own (``planner.second_within``); where that part still
needs several pages, ``CountProof`` decides when every trade of it has been seen.

Stable ties never repeat a trade unless trades left the window meanwhile, so a
steady shop pays nothing for this. A repeat caused by such a shift cannot be told
from a lost tie for certain, so it is read again too (property-tested: trusting a
repeat that looks like a shift loses trades when ties move).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

__all__ = ["CountProof", "SeamCheck", "newest_second", "page_count", "page_plan"]

Sighting = tuple[int, datetime]  # (tid, the printed second on the window's time axis)


def page_count(total: int, page_size: int) -> int:
    """Pages needed for ``total`` trades (at least one)."""
    return max(1, -(-total // page_size))


def page_plan(total: int, page_size: int, *, shifting: bool) -> list[int]:
    """The pages to read after page 1, in order: the last page first, down to page 2,
    then page 1 again when the list may shift while it is read."""
    last = page_count(total, page_size)
    if last == 1:
        return []
    return list(range(last, 0 if shifting else 1, -1))


def newest_second(sightings: Iterable[Sighting]) -> datetime | None:
    """The newest printed second among a page's trades (None for an empty page)."""
    return max((second for _, second in sightings), default=None)


class SeamCheck:
    """The seconds of one window read that must be read again: those with a trade on two pages.

    Record every page as it arrives; only the latest read of each page number counts
    (re-reading page 1 replaces what it showed before). A repeat can also come from a
    shift (trades leaving the window between two reads), and then nothing was lost;
    but no count or order tells the two apart for certain (a repeat that looks like a
    shift can hide a lost tie), so every repeat is read again. That costs calls only
    where trades change while a second spanning several pages is read.
    """

    def __init__(self) -> None:
        self._read: dict[int, tuple[Sighting, ...]] = {}
        self._pages_of: dict[Sighting, set[int]] = {}
        self._repeats: Counter[datetime] = Counter()  # second -> its trades seen on several pages
        self._settled: set[datetime] = set()

    def record(self, page_no: int, sightings: Iterable[Sighting]) -> None:
        for sighting in self._read.get(page_no, ()):
            pages = self._pages_of[sighting]
            pages.discard(page_no)
            if len(pages) == 1:
                self._repeats[sighting[1]] -= 1
        read = self._read[page_no] = tuple(sightings)
        for sighting in read:
            pages = self._pages_of.setdefault(sighting, set())
            pages.add(page_no)
            if len(pages) == 2:
                self._repeats[sighting[1]] += 1

    def unsettled(self, *, before: datetime | None = None) -> list[datetime]:
        """Seconds to read again, oldest first; only those older than ``before`` if given."""
        return sorted(
            second
            for second, repeats in self._repeats.items()
            if repeats > 0 and second not in self._settled and (before is None or second < before)
        )

    def settle(self, second: datetime) -> None:
        self._settled.add(second)


class CountProof:
    """Knows, from counts alone, when every trade that stays in a window has been seen.

    Each read ``i`` of the window reports its count ``N_i`` and some of its trades.
    Nothing joins a window that ended ``lag`` ago, so every trade seen at read ``j``
    or later was a member at read ``j``. If those trades number ``N_j``, they *are*
    the members at ``j``: a superset of every trade that stays. Trades that leave
    (edited meanwhile) are delivered by a later window in their new version.
    """

    def __init__(self) -> None:
        self._counts: list[int] = []
        self._last_read: dict[int, int] = {}

    @property
    def reads(self) -> int:
        return len(self._counts)

    def record(self, count: int, tids: Iterable[int]) -> None:
        read = len(self._counts)
        self._counts.append(count)
        for tid in tids:
            self._last_read[tid] = read

    @property
    def proven(self) -> bool:
        """Whether, for some read ``j``, the trades seen since ``j`` number at least ``N_j``."""
        if not self._counts:
            return False
        seen_last_at = [0] * len(self._counts)
        for read in self._last_read.values():
            seen_last_at[read] += 1
        seen_since = 0
        for read in range(len(self._counts) - 1, -1, -1):
            seen_since += seen_last_at[read]
            if seen_since >= self._counts[read]:
                return True
        return False
