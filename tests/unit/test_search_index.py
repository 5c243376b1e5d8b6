"""The emulator's search index and trade rendering against their plain definitions.

``SearchIndex`` walks the shop's index newest first, keeps a window's rows until they can
change and orders only the runs of ties; ``render`` builds only the requested fields. Both
are held here to the obvious, slow way of saying what they answer, on random shops whose
trades change and surface late, and on query sequences that revisit windows as time passes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from taobao_ordersync import _wire
from taobao_ordersync._time import CST, floor_second
from taobao_ordersync.testing._order_apis import SearchIndex, TimeField, render
from taobao_ordersync.testing._shop import ShopProfile, ShopState, Simulator, TradeRecord, Version, make_shop

BASE = datetime(2026, 3, 1, 12, 0, 0, tzinfo=CST)
PROPERTY = settings(max_examples=300, deadline=None)
TYPES = (frozenset({"fixed"}), frozenset({"fixed", "tmall_i18n"}))
STATUSES = (None, "WAIT_BUYER_PAY", "WAIT_SELLER_SEND_GOODS")


def ms(value: int) -> datetime:
    return BASE + timedelta(milliseconds=value)


def expected_rows(
    shop: ShopState,
    time_field: TimeField,
    start: datetime,
    end: datetime,
    types: frozenset[str],
    status: str | None,
    now: datetime,
) -> list[tuple[int, Version]]:
    """Every trade whose version visible at ``now`` falls in the window, by printed second then tid, descending."""
    found = []
    for record in shop.trades.values():
        version = record.view(now)
        if version is None or record.type not in types or (status is not None and version.status != status):
            continue
        moment = record.created if time_field == "created" else version.modified
        if start <= moment <= end:
            found.append((floor_second(moment), record.tid, version))
    found.sort(key=lambda row: (row[0], row[1]), reverse=True)
    return [(tid, version) for _, tid, version in found]


# A change: (trade it applies to, milliseconds after the trade's last change, new status or "" for a memo
# edit, milliseconds until it becomes visible).
changes = st.tuples(
    st.integers(0, 30), st.integers(0, 2500), st.sampled_from(["", "WAIT_SELLER_SEND_GOODS"]), st.integers(0, 3000)
)
trades = st.lists(
    st.tuples(st.integers(0, 6000), st.sampled_from(["fixed", "tmall_i18n"]), st.integers(0, 3000)),
    min_size=1,
    max_size=30,
)
moments = st.sampled_from([0, 400, 1000, 2999, 3000, 4500, 9000])
queries = st.lists(
    st.tuples(
        st.sampled_from(["created", "modified"]),
        moments,
        moments,
        st.integers(0, 24).map(lambda half_seconds: half_seconds * 500),  # now, on a coarse grid: windows repeat
        st.sampled_from(TYPES),
        st.sampled_from(STATUSES),
        st.none() | changes,  # a change made before this query
    ),
    min_size=1,
    max_size=25,
)


def change(shop: ShopState, simulator: Simulator, records: list[TradeRecord], made: tuple[int, int, str, int]) -> None:
    which, gap, status, visible_after = made
    record = records[which % len(records)]
    when = record.versions[-1].modified + timedelta(milliseconds=gap)
    if status and record.versions[-1].status == status:
        status = ""  # a second payment is a memo edit
    simulator.advance_trade(shop, record, when, status, applied_at=when + timedelta(milliseconds=visible_after))


@PROPERTY
@given(trades, st.lists(changes, max_size=20), queries)
def test_windows_match_their_definition_as_trades_change_and_surface(
    made: list[tuple[int, str, int]],
    edits: list[tuple[int, int, str, int]],
    asked: list[tuple[Any, int, int, int, frozenset[str], str | None, Any]],
) -> None:
    """Each window lists what the plain definition lists, in its order, however the cache was filled before."""
    shop = make_shop(1, profile=ShopProfile(), seed=0)
    simulator = Simulator(visibility_lag=0.0)
    records = [
        simulator.create(shop, ms(created), trade_type=kind, applied_at=ms(created + visible_after))
        for created, kind, visible_after in made
    ]
    for edit in edits:
        change(shop, simulator, records, edit)
    index = SearchIndex()

    for time_field, start, end, now, types, status, edit in asked:
        if edit is not None:
            change(shop, simulator, records, edit)
        listing = index.window(shop, time_field, ms(start), ms(end), types, status, ms(now))
        listed = [(record.tid, version) for record, version in listing.rows()]

        assert expected_rows(shop, time_field, ms(start), ms(end), types, status, ms(now)) == listed


def test_a_cached_window_is_not_served_to_an_earlier_moment() -> None:
    """Asked again for a moment before its computation, the window is recomputed (a trade not yet visible then)."""
    shop = make_shop(1, profile=ShopProfile(), seed=0)
    simulator = Simulator(visibility_lag=0.0)
    simulator.create(shop, ms(0), trade_type="fixed", applied_at=ms(2000))
    index = SearchIndex()
    args: tuple[Any, ...] = (shop, "created", ms(0), ms(5000), TYPES[0], None)

    later = index.window(*args, ms(3000))
    earlier = index.window(*args, ms(1000))

    assert (1, 0) == (len(later), len(earlier))


def test_a_cached_window_expires_when_the_first_hidden_version_surfaces() -> None:
    """Two changes surfacing at 2 s and 5 s: asked at 1 s, then at 3 s, the window shows the first change."""
    shop = make_shop(1, profile=ShopProfile(), seed=0)
    simulator = Simulator(visibility_lag=0.0)
    record = simulator.create(shop, ms(0), trade_type="fixed", applied_at=ms(0))
    simulator.advance_trade(shop, record, ms(100), "WAIT_SELLER_SEND_GOODS", applied_at=ms(2000))
    simulator.advance_trade(shop, record, ms(200), "", applied_at=ms(5000))
    index = SearchIndex()
    args: tuple[Any, ...] = (shop, "created", ms(0), ms(5000), TYPES[0], None)

    before = index.window(*args, ms(1000))
    between = index.window(*args, ms(3000))

    assert ["WAIT_BUYER_PAY"] == [version.status for version in before.versions]
    assert [record.versions[1]] == between.versions


def plain_render(record: TradeRecord, version: Version, fields: frozenset[str]) -> dict[str, Any]:
    """The whole trade at ``version``, then only the requested fields (sub-orders by ``orders.<name>``)."""
    data = record.render(version)
    shown = {name: value for name, value in data.items() if name in fields and name != "orders"}
    order_fields = {name.split(".", 1)[1] for name in fields if name.startswith("orders.")}
    if "orders" in fields or order_fields:
        orders = data["orders"]
        if order_fields:
            orders = [{k: v for k, v in order.items() if k in order_fields} for order in orders]
        shown["orders"] = orders
    return shown


NAMES = sorted(
    set(_wire.DEFAULT_TRADE_FIELDS)
    | {"seller_memo", "status", "orders", "orders.title", "orders.status", "orders.oid", "nope", "orders.nope"}
)


@PROPERTY
@given(st.integers(0, 10_000), st.sets(st.sampled_from(NAMES)), st.booleans())
def test_render_shows_the_requested_fields_of_the_whole_trade_in_its_order(
    seed: int, fields: set[str], memo_edit: bool
) -> None:
    """Same names, values and key order (the JSON bytes depend on it) as rendering everything, then filtering."""
    shop = make_shop(1, profile=ShopProfile(), seed=seed)
    simulator = Simulator(visibility_lag=0.0)
    record = simulator.create(shop, BASE)
    simulator.advance_trade(shop, record, BASE + timedelta(minutes=1), "" if memo_edit else "WAIT_SELLER_SEND_GOODS")

    for version in record.versions:
        expected = plain_render(record, version, frozenset(fields))
        shown = render(record, version, frozenset(fields))

        assert list(expected.items()) == list(shown.items())
