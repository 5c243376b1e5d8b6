"""A reply proves itself or is retried (design rules 13 and 17), through the real TopClient.

A ScriptedTransport stands in for the network; each malformed reply is followed by a
good one, so a client that checks the reply inside its retried attempt returns the good
page after exactly two calls, and one that does not returns the bad one.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import pytest

from taobao_ordersync import ResponseFormatError, RetryPolicy, TopClient, _fields
from taobao_ordersync._time import CST
from taobao_ordersync.testing import FakeClock, ScriptedTransport, json_reply

URL = "https://gw.example.invalid/router/rest"
SESSION = "6100a1b2c3-seller-session"
START = datetime(2023, 11, 15, 6, 0, 0, 250_000, tzinfo=CST)
END = datetime(2023, 11, 15, 6, 10, 0, 250_000, tzinfo=CST)
INCREMENT = "taobao.trades.sold.increment.get"


def trade(tid: int, modified: str = "2023-11-15 06:05:00", **extra: Any) -> dict[str, Any]:
    return {"tid": tid, "modified": modified, "created": "2023-11-15 06:01:00", "status": "TRADE_FINISHED", **extra}


GOOD = {"total_results": 2, "trades": [trade(2), trade(1)]}


def client_over(*replies: dict[str, Any]) -> TopClient:
    """The real client answered by ``replies`` (JSON documents) in order; a request after them fails the test."""
    # simplify=True (the default): the reply is the bare object, so no envelope vouches for it.
    return TopClient(
        "app",
        "secret",
        url=URL,
        retry=RetryPolicy.no_wait(max_tries=3),
        transport=ScriptedTransport([json_reply(document) for document in replies]),
        clock=FakeClock(start=1_700_000_000.0),
    )


async def list_increment(client: TopClient, **options: Any) -> Any:
    options.setdefault("page_size", 2)
    return await client.trades_sold_increment(SESSION, start_modified=START, end_modified=END, **options)


@pytest.mark.parametrize(
    "bad",
    [
        {"rsp": "busy"},  # a proxy's answer: no total_results, so not "an empty window"
        {"total_results": "n/a"},
        {"total_results": 3, "trades": [trade(3), trade(2), trade(1)]},  # page_size is 2
        {"total_results": 2, "trades": [trade(2), trade(1, "2023-11-15 06:10:01")]},  # after the window
        {"total_results": 2, "trades": [trade(2), trade(1, "2023-11-15 05:59:59")]},  # before it
        {"total_results": 2, "trades": [trade(2), trade(2)]},
        {"total_results": 2, "trades": [trade(2), {"modified": "2023-11-15 06:05:00"}]},  # no tid
        {"total_results": 2, "trades": [trade(2), {"tid": 1}]},  # no modified
    ],
)
async def test_malformed_list_reply_is_retried(bad: dict[str, Any]) -> None:
    """A list reply that does not fit the request is a transient format error: retried, never a page."""
    async with client_over(bad, GOOD) as client:
        page = await list_increment(client)

    assert (2, 1) == page.tids
    assert 2 == page.total_results
    assert 2 == client.call_counts[INCREMENT]


async def test_has_next_call_must_carry_has_next() -> None:
    """With use_has_next, a reply without has_next is retried."""
    async with client_over({"trades": [trade(2)]}, {"has_next": False, "trades": [trade(2)]}) as client:
        page = await list_increment(client, page_no=3, use_has_next=True)

    assert page.has_next is False
    assert 2 == client.call_counts[INCREMENT]


async def test_persistent_malformed_reply_raises_not_empty() -> None:
    """When every attempt is malformed, the caller gets the error, never an empty page."""
    async with client_over(*3 * [{"rsp": "busy"}]) as client:
        with pytest.raises(ResponseFormatError, match="total_results") as caught:
            await list_increment(client)

    assert caught.value.is_transient
    assert 3 == client.call_counts[INCREMENT]


async def test_sold_get_checks_created_against_its_window() -> None:
    """taobao.trades.sold.get windows are on created: a trade created after end_created is retried."""
    late = trade(1, created="2023-11-15 06:10:01")
    async with client_over(
        {"total_results": 1, "trades": [late]}, {"total_results": 1, "trades": [trade(1)]}
    ) as client:
        page = await client.trades_sold(SESSION, start_created=START, end_created=END)

    assert 2 == client.call_counts["taobao.trades.sold.get"]
    assert 1 == len(page.trades)


async def test_time_reply_without_time_is_retried() -> None:
    """taobao.time.get must carry a readable time; otherwise it is retried like any transient reply."""
    async with client_over({"request_id": "r1"}, {"time": "2023-11-15 06:13:20", "request_id": "r2"}) as client:
        moment = await client.time()

    assert datetime(2023, 11, 15, 6, 13, 20, tzinfo=CST) == moment
    assert 2 == client.call_counts["taobao.time.get"]


@pytest.mark.parametrize(
    "bad",
    [
        {"request_id": "r1"},
        {"trade": trade(99)},  # another trade than asked for
        {"trade": {"tid": 42, "created": "2023-11-15 06:01:00"}},  # no modified
        {"trade": {"tid": 42, "modified": "2023-11-15 06:05:00"}},  # no created, which was requested
    ],
)
async def test_fullinfo_reply_must_carry_the_trade_asked_for(bad: dict[str, Any]) -> None:
    """A fullinfo reply without the trade, or with another one, is retried."""
    async with client_over(bad, {"trade": trade(42)}) as client:
        fetched = await client.trade_fullinfo(SESSION, 42)

    assert 42 == fetched.tid
    assert 2 == client.call_counts["taobao.trade.fullinfo.get"]


async def test_unreadable_fields_and_unknown_types_never_fail_a_page(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """payment "abc", an order without oid and a new trade type: delivered in one call, logged once."""
    monkeypatch.setattr(_fields, "_warned", set())
    caplog.set_level(logging.WARNING, logger="taobao_ordersync")
    odd = [
        trade(3, type="brand_new_type", payment="abc", orders=[{"title": "t"}]),
        trade(2, type="fenxiao"),
        trade(1, type="brand_new_type", payment="abc"),
    ]
    async with client_over({"total_results": 3, "trades": odd}, {"trade": trade(3, type="brand_new_type")}) as client:
        page = await list_increment(client, page_size=3, types=("fixed",))
        fetched = await client.trade_fullinfo(SESSION, 3)

    assert 1 == client.call_counts[INCREMENT]
    assert ["brand_new_type", "fenxiao", "brand_new_type"] == [t.type for t in page.trades]
    assert page.trades[0].payment is None
    assert page.trades[0].orders[0].oid is None
    assert "brand_new_type" == fetched.type
    messages = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert 2 == len(messages), messages  # payment once, brand_new_type once
    assert 1 == sum("brand_new_type" in message for message in messages)
