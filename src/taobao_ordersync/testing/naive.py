"""Naive syncers that make the seed article's mistakes, one flag per mistake.

They exist to prove that the emulator's chaos is real (each must lose trades
where ``Syncer`` loses none) and to be measured against in the benchmarks. Do not
use them to sync real shops.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from datetime import datetime, timedelta

from attrs import define

from taobao_ordersync import _wire
from taobao_ordersync._paging import page_count
from taobao_ordersync._time import SECOND, floor_second, from_epoch
from taobao_ordersync.client import TopClient
from taobao_ordersync.models import Shop, Trade, TradePage

__all__ = ["Collector", "NaiveSyncer"]


class Collector:
    """A consumer that upserts by ``tid`` keeping the newest ``modified``.

    It also counts deliveries and exact duplicates (the same ``tid`` and ``modified``
    delivered again), which at-least-once delivery allows.
    """

    def __init__(self) -> None:
        self.newest: dict[int, datetime] = {}
        self.deliveries = 0
        self.duplicates = 0
        self._keys: set[tuple[int, datetime]] = set()

    def __repr__(self) -> str:
        return f"Collector({len(self.newest)} trades, {self.deliveries} deliveries, {self.duplicates} duplicates)"

    def add(self, trade: Trade) -> None:
        """Upsert one delivered trade."""
        self.deliveries += 1
        key = (trade.tid, trade.modified)
        if key in self._keys:
            self.duplicates += 1
        else:
            self._keys.add(key)
        known = self.newest.get(trade.tid)
        if known is None or trade.modified > known:
            self.newest[trade.tid] = trade.modified


@define(kw_only=True)
class NaiveSyncer:
    """A simple backfill-then-increments loop with chosen mistakes switched on.

    Flags (each one of the seed article's ways to lose orders):
        forward_paging: read pages 1, 2, ... instead of last to first.
        local_clock: end windows at this machine's clock instead of Taobao's.
        gap_boundaries: start the next window at the previous end + 1 s.
        creation_time: follow new trades by creation time only (misses changes).
        default_types: omit ``type`` (Taobao then hides some trade types).
        no_lag: end windows at "now" instead of ``lag`` behind it.
    """

    client: TopClient
    lag: timedelta = timedelta(seconds=10)
    page_size: int = 100
    backfill: timedelta = timedelta(days=90) - timedelta(minutes=10)
    forward_paging: bool = False
    local_clock: bool = False
    gap_boundaries: bool = False
    creation_time: bool = False
    default_types: bool = False
    no_lag: bool = False
    origin: datetime | None = None
    cursor: datetime | None = None

    async def _now(self) -> datetime:
        if self.local_clock:
            return floor_second(from_epoch(time.time()))
        return floor_second(await self.client.server_now())

    async def run(self, shop: Shop) -> AsyncGenerator[Trade, None]:
        """Backfill on the first run, then increments up to now; keeps its position in memory."""
        end = await self._now() - (timedelta(0) if self.no_lag else self.lag)
        if self.cursor is None:
            self.origin = self.cursor = end
            async for trade in self._read(shop, "created", end - self.backfill, end):
                yield trade
            return
        start = self.cursor + SECOND if self.gap_boundaries else self.cursor
        if end <= start:
            return
        kind = "created" if self.creation_time else "modified"
        span = timedelta(days=1)
        while start < end:
            stop = min(start + span, end)
            async for trade in self._read(shop, kind, start, stop):
                yield trade
            self.cursor = stop
            start = stop + SECOND if self.gap_boundaries else stop

    async def _page(self, shop: Shop, kind: str, start: datetime, end: datetime, page_no: int) -> TradePage:
        types = () if self.default_types else _wire.ALL_TRADE_TYPES
        if kind == "created":
            return await self.client.trades_sold(
                shop.session, start_created=start, end_created=end, types=types, page_no=page_no,
                page_size=self.page_size,
            )  # fmt: skip
        return await self.client.trades_sold_increment(
            shop.session, start_modified=start, end_modified=end, types=types, page_no=page_no,
            page_size=self.page_size,
        )  # fmt: skip

    async def _read(self, shop: Shop, kind: str, start: datetime, end: datetime) -> AsyncGenerator[Trade, None]:
        first = await self._page(shop, kind, start, end, 1)
        for trade in first.trades:
            yield trade
        last = page_count(first.total_results or 0, self.page_size)
        order = range(2, last + 1) if self.forward_paging or kind == "created" else range(last, 0, -1)
        for page_no in order:
            for trade in (await self._page(shop, kind, start, end, page_no)).trades:
                yield trade
