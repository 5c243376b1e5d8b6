"""Audit planning and diffing (pure: no I/O).

An audit compares two sides per *slot* of creation time:

* Taobao's: ``taobao.trades.sold.get`` over the window ``[start, end]``. The backend
  compares bounds with millisecond times, so the window holds trades created from
  ``start.000`` to ``end.000``: every printed second ``start .. end - 1`` whole, plus
  the trades of the printed second ``end`` created at exactly ``end.000``.
* The application's (a ``TradeLedger``): its trades whose printed ``created`` is in
  ``[start, end)``, half-open, the only cut it can make with whole seconds.

Slots touch (the next starts at the previous end), so every printed second belongs
to exactly one slot on the ledger's side. Taobao's count of a slot can exceed the
ledger's by the trades at exactly ``end.000``; such a slot only costs narrowing
calls, never a false report, because a *listed* slot drops Taobao's trades printed
at ``end`` (they belong to the next slot) before the two lists are compared.

Equal counts are taken as agreement and not narrowed: they cannot show one missing
trade and one extra trade in the same slot, nor an old version (deep mode can).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from attrs import field, frozen

from taobao_ordersync._time import SECOND, floor_second, format_time

__all__ = ["AuditReport", "Slot", "SlotDiff", "diff_listed", "diff_versions", "halves"]


#: (tid, modified, created) of a trade as Taobao listed it.
Listed = tuple[int, datetime, datetime | None]


@frozen
class Slot:
    """A slot of creation time: Taobao's window ``[start, end]``, the ledger's ``[start, end)``."""

    start: datetime
    end: datetime

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    @property
    def can_split(self) -> bool:
        """Longer than one second: ``[s, s + 1]`` is the smallest slot holding a printed second whole."""
        return self.span > SECOND

    def __str__(self) -> str:
        return f"[{format_time(self.start)}, {format_time(self.end)}]"


def halves(slot: Slot) -> tuple[Slot, Slot]:
    """Two touching slots covering ``slot``, split at its middle second."""
    if not slot.can_split:
        raise ValueError("a one-second slot cannot be split")
    middle = slot.start + (slot.span // SECOND // 2) * SECOND
    return Slot(slot.start, middle), Slot(middle, slot.end)


def should_list(taobao_count: int, page_size: int, slot: Slot) -> bool:
    """Whether a disagreeing slot is listed now rather than narrowed further."""
    return taobao_count <= page_size or not slot.can_split


def expect_small(parent_count: int | None, page_size: int) -> bool:
    """Whether a child slot probably fits one page, so its count call should list it too."""
    return parent_count is not None and parent_count <= 2 * page_size


@frozen(kw_only=True)
class SlotDiff:
    """What one listed slot showed.

    ``expected`` is how many trades Taobao lists in the slot's half-open range (its
    trades printed at ``end`` dropped): the count the ledger should hold.
    """

    missing: frozenset[int] = frozenset()
    stale: frozenset[int] = frozenset()
    extra: frozenset[int] = frozenset()
    in_flight: frozenset[int] = frozenset()
    expected: int = 0


def in_slot(slot: Slot, created: datetime | None) -> bool:
    """Whether a trade Taobao listed in ``slot`` belongs to it on the ledger's half-open axis."""
    return created is None or floor_second(created) < slot.end


def diff_listed(slot: Slot, taobao: Iterable[Listed], ledger: Mapping[int, datetime], *, as_of: datetime) -> SlotDiff:
    """Compare a slot's full Taobao list with the ledger's ``(tid, modified)`` of the same slot.

    * missing: Taobao lists it, the ledger does not hold it;
    * stale: the ledger holds an older version, and Taobao's version is older than
      ``as_of`` (the application's sync has had time to deliver it);
    * in flight: the ledger holds an older version, but Taobao's is newer than ``as_of``
      (a change the sync may not have delivered yet: not reported as a loss);
    * extra: the ledger holds it, Taobao does not list it in this slot.
    """
    listed: dict[int, datetime] = {}
    for tid, modified, created in taobao:
        if in_slot(slot, created):
            listed[tid] = max(modified, listed.get(tid, modified))
    missing, stale, in_flight = _compare(listed, ledger, as_of=as_of)
    extra = frozenset(tid for tid in ledger if tid not in listed)
    return SlotDiff(missing=missing, stale=stale, extra=extra, in_flight=in_flight, expected=len(listed))


def diff_versions(taobao: Mapping[int, datetime], ledger: Mapping[int, datetime], *, as_of: datetime) -> SlotDiff:
    """Compare Taobao's newest ``modified`` per tid with the ledger's versions of those tids (deep mode)."""
    missing, stale, in_flight = _compare(taobao, ledger, as_of=as_of)
    return SlotDiff(missing=missing, stale=stale, in_flight=in_flight, expected=len(taobao))


def _compare(
    taobao: Mapping[int, datetime], ledger: Mapping[int, datetime], *, as_of: datetime
) -> tuple[frozenset[int], frozenset[int], frozenset[int]]:
    missing: set[int] = set()
    stale: set[int] = set()
    in_flight: set[int] = set()
    for tid, modified in taobao.items():
        held = ledger.get(tid)
        if held is None:
            missing.add(tid)
        elif floor_second(held) < floor_second(modified):  # both sides print whole seconds
            (in_flight if modified >= as_of else stale).add(tid)
    return frozenset(missing), frozenset(stale), frozenset(in_flight)


def settled(tids: Iterable[int], taobao: Mapping[int, datetime], ledger: Mapping[int, datetime]) -> frozenset[int]:
    """Of ``tids``, those the ledger now holds in Taobao's version or newer (a re-check)."""
    return frozenset(
        tid for tid in tids if (held := ledger.get(tid)) is not None and floor_second(held) >= floor_second(taobao[tid])
    )


def _sorted(tids: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted(tids))


@frozen(kw_only=True)
class AuditReport:
    """The answer for one shop: does the ledger hold every trade Taobao has, in its latest state?

    Trades created in ``[start, until)`` are audited; a version is required once it is
    older than ``as_of`` (the audit's start minus ``settle``), newer ones are ``in_flight``.

    Attributes:
        missing: tids Taobao lists that the ledger did not hold.
        stale: tids the ledger held in a version older than Taobao's (older than ``as_of``).
        extra: tids the ledger holds that Taobao does not list in that slot (wrong
            ``created``, a type not requested, another shop's trade, or a test row).
        in_flight: tids whose newer version is younger than ``as_of``; not a loss.
        repaired: of ``missing`` and ``stale``, those the ledger held in Taobao's version
            after the repair handler ran (empty without repair).
        slots: slots compared (by count or by list); ``listed``: of them, compared tid by tid.
        calls: TOP calls the audit made (counts, lists, deep increments, fullinfo).
        deep: whether the deep pass ran, and ``deep_from`` where it started.
        recount_agrees: after a repair, whether every repaired slot's ledger count now
            equals Taobao's (extras included); None without repair.
    """

    shop_id: str
    start: datetime
    until: datetime
    as_of: datetime
    missing: tuple[int, ...] = field(default=(), converter=_sorted)
    stale: tuple[int, ...] = field(default=(), converter=_sorted)
    extra: tuple[int, ...] = field(default=(), converter=_sorted)
    in_flight: tuple[int, ...] = field(default=(), converter=_sorted)
    repaired: tuple[int, ...] = field(default=(), converter=_sorted)
    slots: int = 0
    listed: int = 0
    calls: int = 0
    deep: bool = False
    deep_from: datetime | None = None
    recount_agrees: bool | None = None

    @property
    def lost(self) -> int:
        """Trades missing or stale when the audit found them (repaired or not)."""
        return len(self.missing) + len(self.stale)

    @property
    def unrepaired(self) -> tuple[int, ...]:
        """Missing or stale trades the repair did not bring up to date (all of them without repair)."""
        done = set(self.repaired)
        return tuple(sorted(tid for tid in (*self.missing, *self.stale) if tid not in done))

    @property
    def clean(self) -> bool:
        """Nothing missing, stale or extra."""
        return not (self.missing or self.stale or self.extra)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times in Taobao's format, tids as strings: they exceed 2**53)."""

        def tids(values: Iterable[int]) -> list[str]:
            return [str(tid) for tid in values]

        return {
            "shop_id": self.shop_id,
            "start": format_time(self.start),
            "until": format_time(self.until),
            "as_of": format_time(self.as_of),
            "clean": self.clean,
            "slots": self.slots,
            "listed": self.listed,
            "calls": self.calls,
            "missing": tids(self.missing),
            "stale": tids(self.stale),
            "extra": tids(self.extra),
            "in_flight": tids(self.in_flight),
            "repaired": tids(self.repaired),
            "unrepaired": tids(self.unrepaired),
            "deep": self.deep,
            "deep_from": format_time(self.deep_from) if self.deep_from else None,
            "recount_agrees": self.recount_agrees,
        }
