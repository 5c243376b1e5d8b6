"""``decode``: bytes of a 100-trade page -> ``Trade`` objects, side by side with ``json.loads``.

The pages are what the emulator serves for ``taobao.trades.sold.get`` with the
library's default fields (sub-orders included), plus ``pay_time``,
``consign_time`` and ``end_time`` where the trade's status implies them (the
emulator does not generate those three; TOP sends them). Each round times, on
the same bytes in the same process: the standard library's ``json.loads`` alone;
the client's whole read of a reply (``decode_response``, which parses the JSON
and checks the envelope, then ``structure_page``, which checks the page against
its call and builds the trades); and the same followed by reading every typed
attribute of every trade and sub-order. The time cache is emptied before each
pass, so no pass profits from an earlier one. The median round is reported.

It also times the emulator's side of a page (the listing, the envelope and
``json.dumps``: its request handler without HTTP), to show that serving pages is
not what limits the other scenarios.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from benchmarks._measure import Row
from taobao_ordersync import Order, Trade, _wire
from taobao_ordersync._convert import ListQuery, structure_page
from taobao_ordersync._fields import TIMES
from taobao_ordersync._time import format_time, from_epoch
from taobao_ordersync.models import _FIELDS
from taobao_ordersync.testing import ShopProfile
from taobao_ordersync.testing._fake_top import FakeTop

__all__ = ["decode"]

METHOD: Final = "taobao.trades.sold.get"
PAGE: Final = 100
_PAID: Final = frozenset(
    {"WAIT_SELLER_SEND_GOODS", "WAIT_BUYER_CONFIRM_GOODS", "TRADE_FINISHED", "TRADE_CLOSED", "SELLER_CONSIGNED_PART"}
)
_SHIPPED: Final = frozenset({"WAIT_BUYER_CONFIRM_GOODS", "TRADE_FINISHED"})
_ENDED: Final = frozenset({"TRADE_FINISHED", "TRADE_CLOSED", "TRADE_CLOSED_BY_TAOBAO"})


def _with_times(trade: dict[str, Any]) -> None:
    """Add the times TOP sends for the trade's status (paid a minute after creation, shipped/ended at its change)."""
    created = datetime.strptime(trade["created"], "%Y-%m-%d %H:%M:%S")  # noqa: DTZ007 (wire text only)
    status = trade.get("status")
    if status in _PAID:
        trade["pay_time"] = (created + timedelta(seconds=61)).strftime("%Y-%m-%d %H:%M:%S")
    if status in _SHIPPED:
        trade["consign_time"] = trade["modified"]
    if status in _ENDED:
        trade["end_time"] = trade["modified"]


class Pages:
    """Real-sized pages from an in-process emulator, and what it takes the emulator to serve them."""

    def __init__(self, pages: int, seed: int) -> None:
        days = 2.0
        self.now = from_epoch(time.time())
        self.emulator = FakeTop(
            now=self.now,
            shops=1,
            profile=ShopProfile(orders_per_day=PAGE * pages / days * 1.05, history_days=days),
            seed=seed,
        )
        self.emulator.pause_activity()
        self.shop = self.emulator.shops[0]
        self.start = self.now - timedelta(days=days + 1)
        self.count = pages
        self.params = {
            "fields": ",".join(_wire.DEFAULT_TRADE_FIELDS),
            "type": ",".join(_wire.ALL_TRADE_TYPES),
            "page_size": str(PAGE),
            "start_created": format_time(self.start),
            "end_created": format_time(self.now),
        }
        self.query = ListQuery(
            time_field="created",
            start=self.start,
            end=self.now,
            fields=frozenset(_wire.DEFAULT_TRADE_FIELDS),
            page_size=PAGE,
            use_has_next=False,
        )
        self.simplified = [self.body(page, simplify=True) for page in range(1, pages + 1)]
        self.wrapped = [self.body(page, simplify=False) for page in range(1, pages + 1)]

    def payload(self, page: int) -> dict[str, Any]:
        payload = self.emulator.list_trades(self.shop, METHOD, {**self.params, "page_no": str(page)}, self.now)
        for trade in payload["trades"]:
            _with_times(trade)
        return payload

    def body(self, page: int, *, simplify: bool) -> bytes:
        document = _wire.success_body(METHOD, {**self.payload(page), "request_id": "bench"}, simplify=simplify)
        return json.dumps(document, ensure_ascii=False).encode()

    def serve_seconds(self) -> float:
        """One pass of the emulator's side: list each page, wrap it, encode it (its handler without HTTP)."""
        started = time.perf_counter()
        for page in range(1, self.count + 1):
            payload = self.emulator.list_trades(self.shop, METHOD, {**self.params, "page_no": str(page)}, self.now)
            document = _wire.success_body(METHOD, {**payload, "request_id": "bench"}, simplify=True)
            json.dumps(document, ensure_ascii=False).encode()
        return time.perf_counter() - started


def _read_everything(trades: Sequence[Trade]) -> None:
    trade_fields, order_fields = _FIELDS[Trade], _FIELDS[Order]
    for trade in trades:
        for name in trade_fields:
            getattr(trade, name)
        for order in trade.orders:
            for name in order_fields:
                getattr(order, name)


def _pass(bodies: Sequence[bytes], read: Callable[[bytes], Any]) -> float:
    TIMES.clear()
    started = time.perf_counter()
    for body in bodies:
        read(body)
    return time.perf_counter() - started


def _parsers() -> dict[str, Callable[[bytes], Any]]:
    """The reply parsers to measure with: the standard library's, and the ``fast`` extra's when installed."""
    found: dict[str, Callable[[bytes], Any]] = {"json": json.loads}
    if _wire.JSON_PARSER == "orjson":
        found["orjson"] = _wire.loads
    return found


def measure(
    pages: Pages, rounds: int, *, simplify: bool = True, parser: Callable[[bytes], Any] = json.loads
) -> dict[str, float]:
    """Median seconds per pass over all pages, for each way of reading them (interleaved rounds).

    ``parser`` is the JSON parser the client's ``decode_response`` uses; ``json.loads`` is always the reference.
    """
    bodies = pages.simplified if simplify else pages.wrapped
    query = pages.query

    def ours(body: bytes) -> Any:
        return structure_page(_wire.decode_response(METHOD, 200, body, simplify=simplify), query)

    def ours_all_fields(body: bytes) -> None:
        _read_everything(ours(body).trades)

    ways: dict[str, Callable[[bytes], Any]] = {
        "json.loads": json.loads,
        "ours": ours,
        "ours + every field": ours_all_fields,
    }
    trades = sum(len(ours(body).trades) for body in bodies)
    assert trades == PAGE * len(bodies), trades  # noqa: S101 (the emulator made full pages)
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    installed = _wire.loads
    _wire.loads = parser
    try:
        for _ in range(rounds):
            for name, read in ways.items():
                seconds[name].append(_pass(bodies, read))
    finally:
        _wire.loads = installed
    return {name: statistics.median(values) for name, values in seconds.items()}


async def decode(sizes: Any) -> list[Row]:
    """Rows for ``decode``: our rate next to ``json.loads`` on the same bytes, per parser and envelope shape."""
    pages = Pages(sizes.decode_pages, sizes.seed)
    trades = PAGE * pages.count
    rows = []
    for parser_name, parser in _parsers().items():
        for simplify in (True, False):
            medians = measure(pages, sizes.decode_rounds, simplify=simplify, parser=parser)
            loads = trades / medians["json.loads"]
            label = parser_name + ("" if simplify else ", simplify=false")
            names = ("ours", "ours + every field") if parser_name == "json" and simplify else ("ours",)
            for name in names:
                rate = trades / medians[name]
                rows.append(
                    Row(
                        scenario="decode",
                        syncer=f"{name} ({label})",
                        trades=trades,
                        deliveries=trades,
                        seconds=medians[name],
                        notes={"json.loads trades/s": round(loads), "ratio to json.loads": round(rate / loads, 3)},
                    )
                )
    serve = statistics.median(pages.serve_seconds() for _ in range(max(3, sizes.decode_rounds // 3)))
    rows[0].notes["emulator serves trades/s"] = round(trades / serve)
    rows[0].notes["emulator time / our decode time"] = round(serve / rows[0].seconds, 2)
    rows[0].notes["bytes per page"] = round(sum(map(len, pages.simplified)) / pages.count)
    return rows
