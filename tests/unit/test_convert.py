"""Trades are read tolerantly: big ids, strings for numbers, money as Decimal."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from taobao_ordersync._convert import structure_page, structure_trade
from taobao_ordersync._time import CST
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
        {"total_results": "1", "has_next": "false", "trades": [{"tid": "12", "modified": "2024-01-01 00:00:00"}]}
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
        {"tid": 1, "modified": "2024-01-01 00:00:00", "payment": "lots"},
        {"tid": 1, "modified": "2024-01-01 00:00:00", "orders": {"order": [{"title": "no oid"}]}},
    ],
)
def test_unreadable_trades_raise_format_errors(raw: dict[str, object]) -> None:
    """A trade that cannot be read is an error naming it, never a silent skip."""
    with pytest.raises(ResponseFormatError, match="trade"):
        structure_trade(raw)


def test_non_object_trade() -> None:
    """A list item that is not an object is a format error."""
    with pytest.raises(ResponseFormatError):
        structure_page({"trades": [1]})
