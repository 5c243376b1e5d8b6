"""Window planning: tiling, splitting heavy windows and the order pages are read in."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from taobao_ordersync._time import CST
from taobao_ordersync.planner import Window, page_count, page_order, split, tile

SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)
BASE = datetime(2024, 1, 1, tzinfo=CST)
TYPES = ("fixed", "auction", "guarantee_trade", "step", "independent_simple_trade", "ec", "cod", "nopaid")

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

type_lists = st.lists(st.sampled_from(TYPES), min_size=1, max_size=len(TYPES), unique=True).map(tuple)


def moment(seconds: int, zone: tzinfo = CST) -> datetime:
    """``BASE`` plus whole ``seconds``, expressed in ``zone`` (the same instant whatever the zone)."""
    return (BASE + timedelta(seconds=seconds)).astimezone(zone)


def seconds_of(window: Window) -> int:
    """How many distinct seconds ``[start, end]`` holds."""
    return int(window.span.total_seconds()) + 1


def cells(window: Window) -> set[tuple[datetime, str]]:
    """Every (second, trade type) pair ``window`` reads."""
    return {(window.start + n * SECOND, kind) for n in range(seconds_of(window)) for kind in window.types}


@st.composite
def tile_inputs(draw: st.DrawFn) -> tuple[datetime, datetime, timedelta, tuple[str, ...]]:
    """A whole-second range of up to 120 days and a max_span of 1 s to 1 day (at most ~2,000 windows)."""
    span = draw(st.integers(0, 120 * 86_400))
    max_span = draw(st.integers(max(1, -(-span // 2_000)), 86_400))
    offset = draw(st.integers(-(10**8), 10**8))
    zone = draw(st.sampled_from([CST, UTC]))
    return moment(offset, zone), moment(offset + span, zone), max_span * SECOND, draw(type_lists)


@st.composite
def windows(draw: st.DrawFn, max_seconds: int = 2 * 86_400) -> Window:
    """A window as the planner makes them: tiled (commits) or a type-part of one second (either)."""
    start = moment(draw(st.integers(-(10**8), 10**8)))
    span = draw(st.integers(0, max_seconds))
    commits = draw(st.booleans()) if span == 0 else True
    return Window(start, start + span * SECOND, draw(type_lists), commits)


@PROPERTY
@given(tile_inputs(), st.data())
def test_tile_covers_the_range_with_touching_windows(
    inputs: tuple[datetime, datetime, timedelta, tuple[str, ...]], data: st.DataObject
) -> None:
    """Tiles start at start, end at end, touch, are at most max_span long, carry the types and skip no second."""
    start, end, max_span, types = inputs

    tiles = tile(start, end, max_span=max_span, types=list(types))

    assert start == tiles[0].start
    assert end == tiles[-1].end
    for previous, following in pairwise(tiles):
        assert previous.end == following.start
    for window in tiles:
        assert window.start < window.end or start == end
        assert window.span <= max_span
        assert types == window.types
        assert window.commits
        assert 0 == window.start.microsecond == window.end.microsecond
    probe = start + data.draw(st.integers(0, int((end - start).total_seconds())), label="probe") * SECOND
    assert any(window.start <= probe <= window.end for window in tiles)


def test_tile_covers_every_second_of_a_short_range() -> None:
    """Every second of a short range lies in some tile, the touching seconds in two."""
    start = moment(0)

    tiles = tile(start, start + 10 * SECOND, max_span=3 * SECOND, types=["fixed"])

    assert [(0, 3), (3, 6), (6, 9), (9, 10)] == [
        ((w.start - start) // SECOND, (w.end - start) // SECOND) for w in tiles
    ]
    assert {start + n * SECOND for n in range(11)} == {second for w in tiles for second, _ in cells(w)}


def test_tile_of_a_zero_length_range_is_one_single_second() -> None:
    """start == end gives one single-second window."""
    start = moment(0)

    assert [Window(start, start, ("fixed", "step"))] == tile(start, start, max_span=DAY, types=["fixed", "step"])


@pytest.mark.parametrize(
    ("start", "end", "max_span", "message"),
    [
        (moment(10), moment(9), DAY, "before start"),
        (moment(0).replace(microsecond=1), moment(9), DAY, "whole seconds"),
        (moment(0), moment(9).replace(microsecond=500_000), DAY, "whole seconds"),
        (moment(0), moment(9), SECOND - timedelta(microseconds=1), "at least one second"),
        (moment(0), moment(9), timedelta(0), "at least one second"),
        (moment(0), moment(9), -SECOND, "at least one second"),
    ],
)
def test_tile_rejects_invalid_input(start: datetime, end: datetime, max_span: timedelta, message: str) -> None:
    """A reversed range, sub-second bounds or a max_span under one second raise ValueError."""
    with pytest.raises(ValueError, match=message):
        tile(start, end, max_span=max_span, types=["fixed"])


@PROPERTY
@given(windows(max_seconds=120))
def test_split_children_cover_exactly_the_parent(window: Window) -> None:
    """The two children read exactly the parent's (second, type) pairs; each is strictly smaller."""
    if not window.can_split:
        return

    first, last = split(window)

    assert cells(window) == cells(first) | cells(last)
    if window.is_single_second:
        assert window.start == first.start == first.end == last.start == last.end
        assert window.types == first.types + last.types
        assert 0 < len(first.types) < len(window.types)
        assert 0 < len(last.types) < len(window.types)
    else:
        assert first.types == last.types == window.types
        assert {s for s, _ in cells(window)} == {s for s, _ in cells(first)} | {s for s, _ in cells(last)}
        assert seconds_of(first) < seconds_of(window)
        assert seconds_of(last) < seconds_of(window)


@PROPERTY
@given(windows())
def test_split_flags_and_touching(window: Window) -> None:
    """commits passes to the last child; a type split's first part never commits; time halves touch."""
    if not window.can_split:
        return

    first, last = split(window)

    assert window.commits == last.commits
    if window.is_single_second:
        assert not first.commits
    elif window.span == SECOND:
        assert (window.start, window.start) == (first.start, first.end)
        assert (window.end, window.end) == (last.start, last.end)
    else:
        assert first.end == last.start
        assert (window.start, window.end) == (first.start, last.end)
        assert first.commits


@PROPERTY
@given(windows(max_seconds=120 * 86_400), st.data())
def test_repeated_splitting_terminates(window: Window, data: st.DataObject) -> None:
    """Splitting and descending into any child ends, strictly shrinking, at one second of one type."""
    steps = 0
    while window.can_split:
        children = split(window)
        child = children[data.draw(st.integers(0, 1), label="child")]
        shrank = seconds_of(child) < seconds_of(window) or (
            child.is_single_second and window.is_single_second and len(child.types) < len(window.types)
        )
        assert shrank
        assert window.start <= child.start <= child.end <= window.end
        assert set(child.types) <= set(window.types)
        window = child
        steps += 1
        assert steps <= 64

    assert window.is_single_second
    assert 1 == len(window.types)
    with pytest.raises(ValueError, match="cannot be split"):
        split(window)


def test_a_two_second_window_splits_into_its_seconds() -> None:
    """[s, s+1] splits into [s, s] and [s+1, s+1]; a non-committing parent has non-committing halves."""
    start = moment(0)

    assert (
        Window(start, start, ("fixed",), commits=False),
        Window(start + SECOND, start + SECOND, ("fixed",), commits=False),
    ) == split(Window(start, start + SECOND, ("fixed",), commits=False))
    assert (
        Window(start, start, ("fixed",)),
        Window(start + SECOND, start + SECOND, ("fixed",)),
    ) == split(Window(start, start + SECOND, ("fixed",)))


def test_a_single_second_splits_its_types() -> None:
    """One second with three types splits into one type (no commit) and two (commits)."""
    start = moment(0)

    assert (
        Window(start, start, ("fixed",), commits=False),
        Window(start, start, ("auction", "step")),
    ) == split(Window(start, start, ("fixed", "auction", "step")))


def test_split_of_an_unsplittable_window_raises() -> None:
    """One second of one type cannot split."""
    window = Window(moment(0), moment(0), ("fixed",))

    assert not window.can_split
    with pytest.raises(ValueError, match="cannot be split"):
        split(window)


@PROPERTY
@given(st.integers(0, 100_000), st.integers(1, 500))
def test_page_order_is_last_page_down_to_one(total: int, page_size: int) -> None:
    """Beyond one page the order is last, last-1, ..., 1; within one page there is nothing more to read."""
    last = -(-total // page_size)

    order = list(page_order(total, page_size))

    if total > page_size:
        assert list(range(last, 0, -1)) == order
    else:
        assert [] == order
    assert max(1, last) == page_count(total, page_size)
    assert 1 <= page_count(total, page_size)


# --- Simulation: a newest-first list that shrinks while it is read ------------------------------
#
# Reading is deterministic, so an adaptive adversary is no stronger than a fixed schedule: before
# each page read after the first, it removes the items at the given positions (taken modulo the
# current length) - trades that were modified and so left the window.

Scenario = tuple[int, int, list[list[int]]]
scenarios = st.tuples(
    st.integers(0, 60),
    st.integers(1, 10),
    st.lists(st.lists(st.integers(0, 1_000), max_size=4), max_size=12),
)


def simulate(pages: Callable[[int, int], Iterable[int]], scenario: Scenario) -> tuple[set[int], set[int]]:
    """Read the list in the given page order under the scenario; the ids (seen, removed)."""
    size, page_size, schedule = scenario
    present = list(range(size))
    seen: set[int] = set()
    removed: set[int] = set()
    moves = iter(schedule)

    def read(page: int) -> None:
        seen.update(present[(page - 1) * page_size : page * page_size])

    order: Sequence[int] = list(pages(len(present), page_size))
    read(order[0])
    for page in order[1:]:
        for position in next(moves, []):
            if present:
                removed.add(present.pop(position % len(present)))
        read(page)
    return seen, removed


def backwards(total: int, page_size: int) -> list[int]:
    """The library's order: page 1 (it reports the total), then page_order."""
    return [1, *page_order(total, page_size)]


def forwards(total: int, page_size: int) -> list[int]:
    """The naive order: 1, 2, ..., last."""
    return list(range(1, page_count(total, page_size) + 1))


def missed(pages: Callable[[int, int], Iterable[int]], scenario: Scenario) -> set[int]:
    """Items present from the start and never removed that no page read returned."""
    seen, removed = simulate(pages, scenario)
    return set(range(scenario[0])) - removed - seen


@settings(max_examples=500, deadline=None)
@given(scenarios)
def test_reading_pages_backwards_never_misses_a_staying_item(scenario: Scenario) -> None:
    """Page 1 then last..1: every item that stays in the shrinking list is seen at least once."""
    assert set() == missed(backwards, scenario)


def test_reading_pages_forwards_can_miss_a_staying_item() -> None:
    """Page 1, 2, ...: an item leaving page 1 shifts a staying item from page 2 onto page 1, unseen."""
    by_hand: Scenario = (4, 2, [[0]])  # read [0, 1]; 0 leaves; page 2 is now [3]: 2 is never seen

    assert {2} == missed(forwards, by_hand)
    assert set() == missed(backwards, by_hand)
    found = find(scenarios, lambda s: bool(missed(forwards, s)), settings=settings(database=None, derandomize=True))
    assert missed(forwards, found)
    assert set() == missed(backwards, found)
