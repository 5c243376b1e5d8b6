"""Trade and Order: every documented field typed, read lazily, ``raw`` of one shape (issue 15)."""

import json
import logging
import pickle
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from taobao_ordersync import Order, Trade, _fields, _wire
from taobao_ordersync._convert import ListQuery, structure_page, structure_trade
from taobao_ordersync._time import CST, parse_time
from taobao_ordersync._wire import DEFAULT_TRADE_FIELDS

MODIFIED = "2024-11-11 00:00:01"


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=CST)


# Each default field: (name, as TOP documents it, a quirk TOP also sends, the typed value of both).
DEFAULTS: list[tuple[str, Any, Any, Any]] = [
    ("tid", 4000010000622536347, "4000010000622536347", 4000010000622536347),
    ("status", "WAIT_SELLER_SEND_GOODS", "WAIT_SELLER_SEND_GOODS", "WAIT_SELLER_SEND_GOODS"),
    ("type", "fixed", "fixed", "fixed"),
    ("created", "2024-11-10 23:59:59", "2024-11-10 23:59:59", at("2024-11-10 23:59:59")),
    ("modified", MODIFIED, MODIFIED, at(MODIFIED)),
    ("pay_time", "2024-11-11 00:00:00", "2024-11-11 00:00:00", at("2024-11-11 00:00:00")),
    ("consign_time", "2024-11-12 09:30:00", "2024-11-12 09:30:00", at("2024-11-12 09:30:00")),
    ("end_time", "2024-11-20 18:00:05", "2024-11-20 18:00:05", at("2024-11-20 18:00:05")),
    ("payment", "200.07", 200.07, Decimal("200.07")),
    ("total_fee", "195.07", 195.07, Decimal("195.07")),
    ("post_fee", "5.00", 5, Decimal("5")),
    ("discount_fee", "0.00", 0, Decimal("0")),
    ("buyer_nick", "买家1", "买家1", "买家1"),
    ("buyer_open_uid", "AAHx1", "AAHx1", "AAHx1"),
    ("seller_nick", "店铺", "店铺", "店铺"),
    ("receiver_state", "浙江省", "浙江省", "浙江省"),
    ("receiver_city", "杭州市", "杭州市", "杭州市"),
    ("num", 2, "2", 2),
    ("title", "店铺", "店铺", "店铺"),
]


def test_every_default_field_has_a_case() -> None:
    """The table above covers DEFAULT_TRADE_FIELDS (orders has its own tests)."""
    assert set(DEFAULT_TRADE_FIELDS) - {"orders"} == {name for name, *_ in DEFAULTS}


@pytest.mark.parametrize(("name", "documented", "quirk", "expected"), DEFAULTS, ids=[case[0] for case in DEFAULTS])
def test_default_fields_are_typed(name: str, documented: Any, quirk: Any, expected: Any) -> None:
    """As documented and as TOP also sends it (ids as strings, money as numbers): the same typed value."""
    for value in (documented, quirk):
        raw = {"tid": 1, "modified": MODIFIED, name: value}

        got = getattr(structure_trade(raw), name)

        assert expected == got
        assert type(expected) is type(got)
        if isinstance(got, datetime):
            assert got.tzinfo is CST


OPTIONAL = [case for case in DEFAULTS if case[0] not in ("tid", "modified", "created")]


@pytest.mark.parametrize(("name", "documented", "quirk", "expected"), OPTIONAL, ids=[case[0] for case in OPTIONAL])
def test_optional_fields_absent_or_empty_are_none(name: str, documented: Any, quirk: Any, expected: Any) -> None:
    """Absent, null or "" (TOP's empty value): None, with no warning."""
    base = {"tid": 1, "modified": MODIFIED}
    for raw in (base, {**base, name: None}, {**base, name: ""}):
        assert getattr(structure_trade(raw), name) is None


TRADE_EXTRAS: list[tuple[str, Any, Any]] = [
    ("adjust_fee", "-3.50", Decimal("-3.50")),
    ("received_payment", 12, Decimal("12")),
    ("commission_fee", "0.60", Decimal("0.60")),
    ("price", "99.00", Decimal("99.00")),
    ("step_paid_fee", "10.00", Decimal("10.00")),
    ("num_iid", "600000000123", 600000000123),
    ("seller_flag", "3", 3),
    ("receiver_zip", 310000, "310000"),
    ("receiver_mobile", "*******1234", "*******1234"),
    ("alipay_no", 2024111122001, "2024111122001"),
    ("seller_memo", "加急", "加急"),
    ("buyer_message", "请尽快发货", "请尽快发货"),
    ("step_trade_status", "FRONT_PAID_FINAL_NOPAID", "FRONT_PAID_FINAL_NOPAID"),
    ("shipping_type", "express", "express"),
    ("receiver_district", "西湖区", "西湖区"),
    ("oaid", "1Xyz", "1Xyz"),
]


@pytest.mark.parametrize(("name", "value", "expected"), TRADE_EXTRAS, ids=[case[0] for case in TRADE_EXTRAS])
def test_documented_seller_fields_are_typed(name: str, value: Any, expected: Any) -> None:
    """Fields beyond the defaults that seller tools read (fullinfo, custom ``fields``)."""
    got = getattr(structure_trade({"tid": 1, "modified": MODIFIED, name: value}), name)

    assert expected == got
    assert type(expected) is type(got)


ORDER = {
    "oid": "4000010000622536348",
    "num_iid": 600000000123,
    "sku_id": 5000000000001,
    "title": "连衣裙",
    "price": 100,
    "num": "2",
    "total_fee": "200.00",
    "payment": 195.5,
    "discount_fee": "",
    "status": "WAIT_SELLER_SEND_GOODS",
    "refund_status": "NO_REFUND",
    "refund_id": 123456789012,
    "consign_time": "2024-11-12 09:30:00",
    "end_time": None,
    "cid": "50010850",
    "seller_type": "B",
    "buyer_rate": "false",
    "seller_rate": True,
    "is_service_order": 0,
    "divide_order_fee": "190.00",
    "part_mjz_discount": "5.00",
    "outer_iid": 8801,
    "invoice_no": "SF1234567890",
}


def test_order_fields_are_typed() -> None:
    """ids and counts as strings, money as numbers, booleans as text or 0/1, empty money: all typed."""
    order = structure_trade({"tid": 1, "modified": MODIFIED, "orders": {"order": [ORDER]}}).orders[0]

    assert 4000010000622536348 == order.oid
    assert 600000000123 == order.num_iid
    assert "5000000000001" == order.sku_id
    assert "123456789012" == order.refund_id
    assert (Decimal("100"), 2, Decimal("200.00"), Decimal("195.5")) == (
        order.price,
        order.num,
        order.total_fee,
        order.payment,
    )
    assert order.discount_fee is None
    assert at("2024-11-12 09:30:00") == order.consign_time
    assert order.end_time is None
    assert 50010850 == order.cid
    assert (False, True, False) == (order.buyer_rate, order.seller_rate, order.is_service_order)
    assert (Decimal("190.00"), Decimal("5.00")) == (order.divide_order_fee, order.part_mjz_discount)
    assert ("8801", "SF1234567890", "B") == (order.outer_iid, order.invoice_no, order.seller_type)
    assert order.logistics_company is None


def test_oid_str_is_used_when_oid_is_absent() -> None:
    trade = structure_trade({"tid": 1, "modified": MODIFIED, "orders": [{"oid_str": "77"}]})

    assert 77 == trade.orders[0].oid


# -- raw has one shape ------------------------------------------------------------


def page_body(simplify: bool) -> bytes:
    trades = [
        {
            "tid": tid,
            "modified": MODIFIED,
            "created": "2024-11-10 23:59:59",
            "orders": [{"oid": tid + 1, "title": "t"}],
            "promotion_details": [{"promotion_name": "满减"}],
            "service_orders": [],
            "note": {"level": 1},
        }
        for tid in (3, 2)
    ]
    payload = {"total_results": 2, "trades": trades, "request_id": "r"}
    body = _wire.success_body("taobao.trades.sold.increment.get", payload, simplify=simplify)
    if not simplify:  # TOP sends an empty list as {} too (top-api.md §4.3)
        for trade in body["trades_sold_increment_get_response"]["trades"]["trade"]:
            trade["service_orders"] = {}
    return json.dumps(body, ensure_ascii=False).encode()


def read_page(simplify: bool) -> list[Trade]:
    inner = _wire.decode_response("taobao.trades.sold.increment.get", 200, page_body(simplify), simplify=simplify)
    query = ListQuery(
        time_field="modified",
        start=at("2024-11-11 00:00:00"),
        end=at("2024-11-11 00:00:05"),
        fields=frozenset(DEFAULT_TRADE_FIELDS),
        page_size=100,
        use_has_next=False,
    )
    return list(structure_page(inner, query).trades)


def test_raw_has_one_shape_whatever_simplify_was() -> None:
    """``{"orders": {"order": [...]}}`` and ``{"orders": [...]}`` both read as ``[...]``, at every level."""
    simplified, wrapped = read_page(True), read_page(False)

    assert [trade.raw for trade in simplified] == [trade.raw for trade in wrapped]
    raw = wrapped[0].raw
    assert [{"oid": 4, "title": "t"}] == raw["orders"]
    assert [{"promotion_name": "满减"}] == raw["promotion_details"]
    assert [] == raw["service_orders"]
    assert {"level": 1} == raw["note"]  # an object that is not a wrapped list is left alone
    assert wrapped[0].orders[0].raw is raw["orders"][0]
    assert simplified == wrapped


def test_raw_is_the_object_received() -> None:
    """No copy of the JSON: raw is the dict json.loads made (its lists unwrapped in place)."""
    sent = {"tid": 1, "modified": MODIFIED, "orders": {"order": [{"oid": 2}]}}

    trade = structure_trade(sent)

    assert sent is trade.raw
    assert [{"oid": 2}] == sent["orders"]


# -- lazy and cached ---------------------------------------------------------------


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    monkeypatch.setattr(_fields, "_warned", set())
    caplog.set_level(logging.WARNING, logger="taobao_ordersync")
    return caplog


def test_only_tid_modified_and_created_are_read_on_arrival(fresh_warnings: pytest.LogCaptureFixture) -> None:
    """An unreadable field costs nothing until read; then it is None and logged once, and cached."""
    raw = {"tid": 1, "modified": MODIFIED, "pay_time": "soon", "orders": [{"num": "x"}]}

    trade = structure_trade(raw)

    assert [] == fresh_warnings.records
    assert trade._cache is None  # nothing parsed yet
    assert trade.pay_time is None
    assert trade.pay_time is None
    assert trade.orders is trade.orders
    assert trade.orders[0].num is None
    assert ["orders.num", "pay_time"] == sorted(r.getMessage().split("'")[1] for r in fresh_warnings.records)


def test_a_field_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    field = vars(Trade)["payment"]
    monkeypatch.setattr(field, "read", lambda value: calls.append(value) or Decimal(value))
    trade = structure_trade({"tid": 1, "modified": MODIFIED, "payment": "1.50"})

    assert (Decimal("1.50"), Decimal("1.50")) == (trade.payment, trade.payment)
    assert ["1.50"] == calls


# -- building, equality, read-only --------------------------------------------------


def test_trade_by_keyword() -> None:
    """Trade(tid=, modified=, ...): typed values by name win over raw; unknown names are refused."""
    moment = at(MODIFIED)
    order = Order(oid=5, title="x")

    trade = Trade(tid=1, modified=moment, status="TRADE_FINISHED", orders=[order], raw={"status": "X", "post_fee": "1"})

    assert (1, moment, None) == (trade.tid, trade.modified, trade.created)
    assert "TRADE_FINISHED" == trade.status
    assert Decimal("1") == trade.post_fee
    assert (order,) == trade.orders
    assert Trade(tid=1, modified=moment).raw == {}
    with pytest.raises(TypeError, match="stauts"):
        Trade(tid=1, modified=moment, stauts="typo")
    with pytest.raises(ValueError, match="aware"):
        Trade(tid=1, modified=datetime(2024, 1, 1))  # noqa: DTZ001


def test_equality_hash_and_read_only() -> None:
    """Equal when tid, times and typed fields are; hash by (tid, modified); no attribute can be set."""
    moment = at(MODIFIED)
    a = structure_trade({"tid": 1, "modified": MODIFIED, "status": "WAIT_BUYER_PAY", "extra": 1})
    b = Trade(tid=1, modified=moment, status="WAIT_BUYER_PAY")
    c = Trade(tid=1, modified=moment, status="TRADE_CLOSED")

    assert a == b
    assert hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    with pytest.raises(AttributeError):
        a.status = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        a.tid = 2  # type: ignore[misc]


def test_trades_pickle() -> None:
    """Trades cross process boundaries (multiprocessing consumers)."""
    trade = structure_trade({"tid": 1, "modified": MODIFIED, "payment": "2.00", "orders": [{"oid": 2}]})

    copy = pickle.loads(pickle.dumps(trade))  # noqa: S301 (our own bytes)

    assert trade == copy
    assert Decimal("2.00") == copy.payment
    assert trade.raw == copy.raw


# -- time parsing --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["2024-11-11 00:00:01", "1999-12-31 23:59:59", "2024-02-29 12:00:00", " 2024-01-01 08:00:00 "]
)
def test_fast_time_parsing_matches_strptime(text: str) -> None:
    expected = datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=CST)

    got = parse_time(text)

    assert expected == got
    assert got.tzinfo is CST


@pytest.mark.parametrize(
    "text", ["2024-11-11T00:00:01", "2024-W45-1 00:00:01", "2024-11-11 24:00:00", "2023-02-29 00:00:00", "2024-11-11"]
)
def test_time_format_is_strict(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)
