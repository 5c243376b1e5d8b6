"""The audit's pure core: slots, narrowing decisions and diffs."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from taobao_ordersync._audit import (
    AuditReport,
    Slot,
    diff_listed,
    diff_versions,
    expect_small,
    halves,
    settled,
    should_list,
)
from taobao_ordersync._time import CST

T0 = datetime(2024, 11, 11, 0, 0, 0, tzinfo=CST)
S = timedelta(seconds=1)


def test_halves_touch_and_end_at_one_second_slots() -> None:
    """Halves touch at the middle second; [s, s+1] is the smallest slot and is never split."""
    slot = Slot(T0, T0 + 7 * S)
    left, right = halves(slot)

    assert (Slot(T0, T0 + 3 * S), Slot(T0 + 3 * S, T0 + 7 * S)) == (left, right)
    assert Slot(T0, T0 + S) == halves(Slot(T0, T0 + 2 * S))[0]
    assert not Slot(T0, T0 + S).can_split
    with pytest.raises(ValueError, match="cannot be split"):
        halves(Slot(T0, T0 + S))


def test_narrowing_decisions() -> None:
    """A disagreeing slot is listed when it fits a page or is one second long; children of a small
    parent are probed with a full page."""
    assert should_list(100, 100, Slot(T0, T0 + 60 * S))
    assert not should_list(101, 100, Slot(T0, T0 + 60 * S))
    assert should_list(5000, 100, Slot(T0, T0 + S))
    assert expect_small(200, 100) and not expect_small(201, 100) and not expect_small(None, 100)


def test_diff_drops_trades_printed_at_the_slot_end() -> None:
    """Taobao's [a, b] holds b.000; the ledger's [a, b) does not: such a trade belongs to the next slot."""
    slot = Slot(T0, T0 + 10 * S)
    taobao = [(1, T0, T0), (2, T0 + 10 * S, T0 + 10 * S)]

    diff = diff_listed(slot, taobao, {1: T0}, as_of=T0 + 3600 * S)

    assert (frozenset(), frozenset(), 1) == (diff.missing, diff.extra, diff.expected)


def test_diff_classifies_missing_stale_extra_and_in_flight() -> None:
    """Older versions are stale only when Taobao's is older than as_of; newer ones are in flight."""
    slot = Slot(T0, T0 + 100 * S)
    as_of = T0 + 50 * S
    taobao = [(1, T0 + 10 * S, T0), (2, T0 + 20 * S, T0), (3, T0 + 60 * S, T0), (4, T0 + 5 * S, T0)]
    ledger = {2: T0 + 19 * S, 3: T0 + 1 * S, 4: T0 + 5 * S, 9: T0}

    diff = diff_listed(slot, taobao, ledger, as_of=as_of)

    assert ({1}, {2}, {9}, {3}) == (diff.missing, diff.stale, diff.extra, diff.in_flight)


def test_sub_second_differences_are_not_stale() -> None:
    """Both sides print whole seconds: a ledger value with milliseconds in the same second is current."""
    diff = diff_versions({1: T0 + 5 * S}, {1: T0 + 5 * S + timedelta(milliseconds=1)}, as_of=T0 + 60 * S)
    assert not (diff.missing or diff.stale or diff.in_flight)


def test_settled_and_report() -> None:
    """A re-check settles tids the ledger now holds in Taobao's version; the report sums up."""
    assert frozenset({1}) == settled([1, 2, 3], {1: T0, 2: T0 + S, 3: T0}, {1: T0 + S, 2: T0})
    report = AuditReport(shop_id="s", start=T0, until=T0 + S, as_of=T0, missing=[3, 1], stale=[2], repaired=[1])

    assert (1, 3) == report.missing and 3 == report.lost and (2, 3) == report.unrepaired and not report.clean
    assert ["1", "3"] == report.as_dict()["missing"]
