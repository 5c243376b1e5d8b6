"""Trades are read tolerantly: big ids, strings for numbers, money as Decimal.

Only ``tid``, ``modified`` and ``created`` are required (rule 17); a page must fit
the call that asked for it (rule 13).
"""

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from taobao_ordersync import _fields
from taobao_ordersync._convert import ListQuery, structure_page, structure_trade
from taobao_ordersync._time import CST
from taobao_ordersync._wire import DEFAULT_TRADE_FIELDS
from taobao_ordersync.errors import ResponseFormatError


def test_trade_fields_and_raw() -> None:
    """tid stays an exact int above 2**53; times are aware CST; raw is the object as sent."""
    raw = {
        "tid": 4000010000622536347,
        "modified": "2024-11-11 00:00:01",
        "created": "2024-11-10 23:59:59",
        "status": "WAIT_SELLER_SEND_GOODS",
        "type": "fixed",
        "payment": "200.07",
        "unknown_future_field": {"x": 1},
        "orders": {"order": [{"oid": "4000010000622536348", "num": "2", "price": "100.00"}]},
    }

    trade = structure_trade(raw)

    assert 4000010000622536347 == trade.tid
    assert timedelta(hours=8) == trade.modified.utcoffset()
    assert datetime(2024, 11, 11, 0, 0, 1, tzinfo=CST) == trade.modified
    assert Decimal("200.07") == trade.payment
    assert raw is trade.raw
    assert 4000010000622536348 == trade.orders[0].oid
    assert 2 == trade.orders[0].num


def test_numbers_and_booleans_as_strings() -> None:
    """A 2012-style page with every value quoted still reads."""
    page = structure_page(
        {"total_results": "1", "has_next": "false", "trades": [{"tid": "12", "modified": "2024-01-01 10:00:01"}]},
        query(fields=frozenset({"tid", "modified"})),
    )

    assert 1 == page.total_results
    assert page.has_next is False
    assert 12 == page.trades[0].tid


def test_tid_str_is_used_when_tid_is_absent() -> None:
    """Newer replies may carry only tid_str."""
    assert 42 == structure_trade({"tid_str": "42", "modified": "2024-01-01 00:00:00"}).tid


@pytest.mark.parametrize(
    "raw",
    [
        {"modified": "2024-01-01 00:00:00"},
        {"tid": 1},
        {"tid": 1, "modified": "yesterday"},
        {"tid": True, "modified": "2024-01-01 00:00:00"},
        {"tid": 1, "modified": "2024-01-01 00:00:00", "created": "later"},
    ],
)
def test_unreadable_trades_raise_format_errors(raw: dict[str, object]) -> None:
    """A trade without a readable tid, modified or created is an error naming it (retried), never a skip."""
    with pytest.raises(ResponseFormatError, match="trade") as caught:
        structure_trade(raw)

    assert caught.value.is_transient


def test_non_object_trade() -> None:
    """A list item that is not an object is a format error."""
    with pytest.raises(ResponseFormatError):
        structure_page({"total_results": 1, "trades": [1]}, query())


# -- rule 17: only tid, modified and created are required ---------------------------


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Forget which fields and types this process already warned about."""
    monkeypatch.setattr(_fields, "_warned", set())
    caplog.set_level(logging.WARNING, logger="taobao_ordersync")
    return caplog


def test_unreadable_optional_fields_become_none_and_warn_once(fresh_warnings: pytest.LogCaptureFixture) -> None:
    """payment "abc", num "x", an order without oid: None in the model, kept in raw, one WARNING per field."""
    raws = [
        {
            "tid": tid,
            "modified": "2024-01-01 00:00:00",
            "payment": "abc",
            "orders": [{"title": "no oid", "num": "x"}, {"oid": "7", "price": "1.5.0"}],
        }
        for tid in (1, 2)
    ]

    trades = [structure_trade(raw) for raw in raws]

    assert [None, None] == [trade.payment for trade in trades]
    assert "abc" == trades[0].raw["payment"]
    assert (None, 7) == tuple(order.oid for order in trades[0].orders)
    assert trades[0].orders[0].num is None
    assert "no oid" == trades[0].orders[0].title
    assert trades[0].orders[1].price is None
    warned = [record for record in fresh_warnings.records if record.levelno == logging.WARNING]
    named = sorted(record.getMessage().split("'")[1] for record in warned)
    assert ["orders.num", "orders.price", "payment"] == named  # a missing oid is absent, not unreadable
    assert all(record.name.startswith("taobao_ordersync.") for record in warned)


def test_unreadable_orders_list_is_empty_not_fatal(fresh_warnings: pytest.LogCaptureFixture) -> None:
    """An ``orders`` member of a shape nobody sends is logged and left in raw."""
    trade = structure_trade({"tid": 1, "modified": "2024-01-01 00:00:00", "orders": "??", "status": 5})

    assert () == trade.orders
    assert trade.status is None  # optional means None (issue 15), logged once
    assert "??" == trade.raw["orders"]
    assert 2 == len(fresh_warnings.records)


def test_unknown_trade_type_is_kept_and_warned_once_per_name(fresh_warnings: pytest.LogCaptureFixture) -> None:
    """A type Taobao added since is delivered as sent; each new name is logged once."""
    base = {"modified": "2024-01-01 00:00:00"}
    trades = [
        structure_trade({"tid": 1, "type": "brand_new_type", **base}),
        structure_trade({"tid": 2, "type": "brand_new_type", **base}),
        structure_trade({"tid": 3, "type": "fenxiao", **base}),  # response-side type TOP documents
        structure_trade({"tid": 4, "type": "fixed", **base}),
    ]

    assert ["brand_new_type", "brand_new_type", "fenxiao", "fixed"] == [trade.type for trade in trades]
    assert 1 == len(fresh_warnings.records)
    assert "brand_new_type" in fresh_warnings.records[0].getMessage()


# -- rule 13: a reply proves itself ------------------------------------------------

START = datetime(2024, 1, 1, 10, 0, 0, 700_000, tzinfo=CST)  # bounds finer than seconds (rule 15)
END = datetime(2024, 1, 1, 10, 0, 5, 300_000, tzinfo=CST)


def query(**overrides: Any) -> ListQuery:
    options: dict[str, Any] = {
        "time_field": "modified",
        "start": START,
        "end": END,
        "fields": frozenset(DEFAULT_TRADE_FIELDS),
        "page_size": 3,
        "use_has_next": False,
    }
    options.update(overrides)
    return ListQuery(**options)


def listed(tid: int, modified: str = "2024-01-01 10:00:02", created: str = "2024-01-01 10:00:01") -> dict[str, Any]:
    return {"tid": tid, "modified": modified, "created": created}


def test_window_bounds_are_compared_by_whole_seconds() -> None:
    """Trades printed as the start's and the end's second are inside a window with sub-second bounds."""
    inner = {"total_results": 2, "trades": [listed(1, "2024-01-01 10:00:05"), listed(2, "2024-01-01 10:00:00")]}

    page = structure_page(inner, query())

    assert (1, 2) == page.tids
    assert (1, 2) == tuple(trade.tid for trade in page.trades)
    assert 2 == page.total_results


@pytest.mark.parametrize(
    ("inner", "overrides", "why"),
    [
        ({"rsp": "busy"}, {}, "total_results"),
        ({"total_results": None, "trades": [listed(1)]}, {}, "total_results"),
        ({"total_results": "abc"}, {}, "total_results"),
        ({"total_results": -1}, {}, "total_results"),
        ({"trades": [listed(1)]}, {"use_has_next": True}, "has_next"),
        ({"has_next": "maybe"}, {"use_has_next": True}, "has_next"),
        ({"total_results": 9, "trades": [listed(n) for n in range(1, 5)]}, {}, "page_size"),
        ({"total_results": 9, "trades": [listed(1, "2024-01-01 09:59:59")]}, {}, "window"),
        ({"total_results": 9, "trades": [listed(1, "2024-01-01 10:00:06")]}, {}, "window"),
        (
            {"total_results": 9, "trades": [listed(1, created="2024-01-01 10:00:06")]},
            {"time_field": "created"},
            "window",
        ),
        ({"total_results": 9, "trades": [listed(1), listed(2), listed(1)]}, {}, "twice"),
        ({"total_results": 9, "trades": [{"tid": 1, "created": "2024-01-01 10:00:01"}]}, {}, "modified"),
        ({"total_results": 9, "trades": [{"tid": 1}]}, {"fields": frozenset({"tid", "created"})}, "created"),
        ({"total_results": 9, "trades": [{"modified": "2024-01-01 10:00:02"}]}, {}, "tid"),
        ({"total_results": 9, "trades": [{"tid": "x1"}]}, {"fields": frozenset({"tid"})}, "tid"),
        ({"total_results": 9, "trades": [1]}, {}, "trade object"),
    ],
)
def test_malformed_pages_are_transient_format_errors(
    inner: dict[str, Any], overrides: dict[str, Any], why: str
) -> None:
    """No count, no has_next, too many trades, a trade outside the window or twice: retry, never "no trades"."""
    with pytest.raises(ResponseFormatError, match=why) as caught:
        structure_page(inner, query(**overrides))

    assert caught.value.is_transient


def test_tid_only_page_has_tids_and_no_trades() -> None:
    """fields=tid (the count call of the seed article): the tids in list order, no Trade objects."""
    inner = {"total_results": "3", "trades": [{"tid": 3}, {"tid": "2"}, {"tid_str": "1"}]}

    page = structure_page(inner, query(fields=frozenset({"tid"})))

    assert (3, 2, 1) == page.tids
    assert () == page.trades
    assert 3 == page.total_results


def test_page_without_modified_in_fields_checks_created() -> None:
    """A creation-time listing of tid and created is still checked against its window."""
    fields = frozenset({"tid", "created"})
    inside = {"total_results": 1, "trades": [{"tid": 1, "created": "2024-01-01 10:00:05"}]}
    outside = {"total_results": 1, "trades": [{"tid": 1, "created": "2024-01-01 10:00:06"}]}

    assert (1,) == structure_page(inside, query(time_field="created", fields=fields)).tids
    with pytest.raises(ResponseFormatError, match="window"):
        structure_page(outside, query(time_field="created", fields=fields))
