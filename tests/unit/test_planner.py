"""Window planning: tiling and splitting heavy windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taobao_ordersync._time import CST
from taobao_ordersync.planner import Window, second_within, split, tile

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
        assert window._commits
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
    """The children cover the parent's time (with its milliseconds) and types; each is strictly smaller."""
    if not window.can_split:
        return

    first, last = split(window)

    if window.is_single_second:
        assert (window.start, window.end) == (first.start, first.end) == (last.start, last.end)
        assert window.types == first.types + last.types
        assert 0 < len(first.types) < len(window.types)
        assert 0 < len(last.types) < len(window.types)
    else:
        assert first.types == last.types == window.types
        # Touching halves: every instant of [start, end], s.001 .. s.999 included, lies in one.
        assert (window.start, first.end, window.end) == (first.start, last.start, last.end)
        assert first.span >= SECOND and last.span >= SECOND
        assert seconds_of(first) < seconds_of(window)
        assert seconds_of(last) < seconds_of(window)


@PROPERTY
@given(windows())
def test_split_flags_and_touching(window: Window) -> None:
    """commits passes to the last child; a type split's first part never commits; time halves touch."""
    if not window.can_split:
        return

    first, last = split(window)

    assert window._commits == last._commits
    if window.is_single_second:
        assert not first._commits
    else:
        assert first.end == last.start
        assert (window.start, window.end) == (first.start, last.end)
        assert first._commits


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


def test_a_one_second_window_is_not_split_in_time() -> None:
    """[s, s+1] holds second s whole (s.000 .. s+1.000): splitting it in [s, s] and [s+1, s+1]
    would miss s.001 .. s.999, so it splits its types instead."""
    start = moment(0)
    window = Window(start, start + SECOND, ("fixed", "step"))

    assert window.is_single_second
    assert (
        Window(start, start + SECOND, ("fixed",), commits=False),
        Window(start, start + SECOND, ("step",)),
    ) == split(window)
    assert not Window(start, start + SECOND, ("fixed",)).can_split


def test_a_two_second_window_splits_into_touching_one_second_windows() -> None:
    """[s, s+2] splits into [s, s+1] and [s+1, s+2]; a non-committing parent has non-committing halves."""
    start = moment(0)

    assert (
        Window(start, start + SECOND, ("fixed",), commits=False),
        Window(start + SECOND, start + 2 * SECOND, ("fixed",), commits=False),
    ) == split(Window(start, start + 2 * SECOND, ("fixed",), commits=False))


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


@pytest.mark.parametrize(("second", "expected"), [(0, (0, 1)), (5, (5, 6)), (10, (10, 10))])
def test_second_within_never_reaches_past_the_window(second: int, expected: tuple[int, int]) -> None:
    """The part of [0, 10] holding second s is [s, s+1], cut at the window's end."""
    window = Window(moment(0), moment(10), ("fixed",))

    part = second_within(window, moment(second))

    assert (moment(expected[0]), moment(expected[1])) == (part.start, part.end)
    assert not part._commits


def test_what_a_window_tells_users_leaves_out_the_syncers_commit_flag() -> None:
    """Batch.window shows start, end and types; the commit flag is the syncer's (its old name warns)."""
    part = split(Window(moment(0), moment(1), ("fixed", "step")))[0]

    assert "commits" not in repr(part)
    with pytest.warns(DeprecationWarning, match=r"Window\.commits is internal"):
        assert part.commits is False
