"""``MemoryLedger``: a ``TradeLedger`` in a dict, for tests and demos of the audit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from taobao_ordersync._time import floor_second
from taobao_ordersync.models import Shop, Trade
from taobao_ordersync.syncer import Batch

__all__ = ["MemoryLedger"]


class MemoryLedger:
    """Holds ``tid -> (created, modified)`` per shop, upserted like a consumer should (newest wins).

    ``upsert`` takes trades as a sync delivers them; ``handler`` is a ``Fleet``-style
    ``(shop, batch)`` handler doing the same (pass it as ``repair=``). ``rows`` is the
    underlying dict per shop, for tests that delete rows or make them stale.
    """

    def __init__(self) -> None:
        self.rows: dict[str, dict[int, tuple[datetime, datetime]]] = {}
        self.writes = 0

    def __repr__(self) -> str:
        return f"MemoryLedger({sum(len(rows) for rows in self.rows.values())} trades)"

    def upsert(self, shop_id: str, trades: Iterable[Trade]) -> None:
        rows = self.rows.setdefault(shop_id, {})
        for trade in trades:
            if trade.created is None:
                raise ValueError(f"trade {trade.tid} has no created time")
            held = rows.get(trade.tid)
            if held is None or trade.modified > held[1]:
                rows[trade.tid] = (floor_second(trade.created), floor_second(trade.modified))
            self.writes += 1

    async def handler(self, shop: Shop, batch: Batch) -> None:
        self.upsert(shop.id, batch.trades)

    async def count_created(self, shop_id: str, start: datetime, end: datetime) -> int:
        return sum(1 for created, _ in self.rows.get(shop_id, {}).values() if start <= created < end)

    async def list_created(self, shop_id: str, start: datetime, end: datetime) -> dict[int, datetime]:
        return {
            tid: modified for tid, (created, modified) in self.rows.get(shop_id, {}).items() if start <= created < end
        }

    async def versions(self, shop_id: str, tids: Sequence[int]) -> dict[int, datetime]:
        rows = self.rows.get(shop_id, {})
        return {tid: rows[tid][1] for tid in tids if tid in rows}
