"""Write ``Syncer.batches`` into a SQLite ``trades`` table, one transaction per batch.

What it shows:

- ``batches(shop)`` yields one de-duplicated page of trades at a time, for bulk
  writers; each batch is written with ``executemany`` in a single transaction;
- the upsert is idempotent: ``INSERT ... ON CONFLICT(tid) DO UPDATE ... WHERE
  excluded.modified > trades.modified`` keeps the newest version of each trade,
  so a replayed batch (delivery is at least once) changes no row;
- ``tid`` is stored as TEXT: Taobao's 19-digit ids exceed 2**53, and a 19-digit
  id can exceed SQLite's signed 64-bit INTEGER;
- the blocking sqlite3 calls run in a worker thread (``asyncio.to_thread``), and a
  batch's window is committed to the checkpoint only after the write returned and
  the next batch was asked for;
- the checkpoints (``SqliteStore``) live in the same file as the trades, so the
  two cannot drift apart: delete the file and the shop starts over.

Run it:

    python examples/bulk_batches_to_sqlite.py

By default it syncs a shop of the built-in TOP emulator into a temporary
directory. With TAOBAO_ORDERSYNC_APP_KEY, TAOBAO_ORDERSYNC_APP_SECRET and TAOBAO_ORDERSYNC_SESSION set, it syncs
your shop on the real Taobao gateway (id TAOBAO_ORDERSYNC_SHOP_ID, default "my-shop") into
./trades.sqlite3; run it again and it continues from the checkpoint in that file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from taobao_ordersync import Batch, Shop, SqliteStore, Syncer, TopClient
from taobao_ordersync.testing import Emulator, ShopProfile

SCHEMA = """
CREATE TABLE IF NOT EXISTS trades (
    tid      TEXT PRIMARY KEY,   -- 19 digits: never an INTEGER, a float or a JavaScript number
    modified INTEGER NOT NULL,   -- POSIX seconds of trade.modified
    status   TEXT NOT NULL,
    raw      TEXT NOT NULL       -- the trade's JSON as Taobao sent it
)
"""

UPSERT = """
INSERT INTO trades (tid, modified, status, raw) VALUES (?, ?, ?, ?)
ON CONFLICT(tid) DO UPDATE SET modified = excluded.modified, status = excluded.status, raw = excluded.raw
WHERE excluded.modified > trades.modified
"""


class TradeTable:
    """The consumer: one row per trade, replaced only by a newer ``modified``."""

    def __init__(self, path: Path) -> None:
        # One connection, used by one worker thread at a time (every write is awaited).
        self.db = sqlite3.connect(path, check_same_thread=False)
        try:
            self.db.execute(SCHEMA)
            self.db.commit()
        except BaseException:
            self.db.close()  # e.g. not a database file: no connection left behind
            raise

    def _write(self, batch: Batch) -> int:
        rows = [
            (
                str(t.tid),
                int(t.modified.timestamp()),
                t.status or "",
                json.dumps(t.raw, ensure_ascii=False, default=str),
            )
            for t in batch.trades
        ]
        before = self.db.total_changes
        with self.db:  # one transaction: the whole batch or nothing
            self.db.executemany(UPSERT, rows)
        return self.db.total_changes - before

    async def write(self, batch: Batch) -> int:
        """Upsert a batch; returns the rows inserted or updated."""
        return await asyncio.to_thread(self._write, batch)

    def close(self) -> None:
        self.db.close()


@contextlib.asynccontextmanager
async def environment() -> AsyncIterator[tuple[TopClient, Shop, Path, Callable[[], None]]]:
    """A client, the shop, a directory for the databases and a "time passes" step."""
    if key := os.environ.get("TAOBAO_ORDERSYNC_APP_KEY"):
        shop_id = os.environ.get("TAOBAO_ORDERSYNC_SHOP_ID", "my-shop")
        shop = Shop(id=shop_id, session=os.environ["TAOBAO_ORDERSYNC_SESSION"])
        async with TopClient(key, os.environ["TAOBAO_ORDERSYNC_APP_SECRET"]) as client:
            yield client, shop, Path(), lambda: None
        return
    with tempfile.TemporaryDirectory() as scratch:
        async with (
            Emulator(profile=ShopProfile(orders_per_day=500, history_days=2), seed=2) as emulator,
            # rate=100 and clock_refresh=0: the emulator needs no pacing, and its clock jumps below.
            TopClient(emulator.app_key, emulator.app_secret, url=emulator.url, rate=100, clock_refresh=0) as client,
        ):
            yield (
                client,
                Shop(id="shop-1", session=emulator.shops[0].session),
                Path(scratch),
                lambda: emulator.advance(300),
            )


async def sync(syncer: Syncer, shop: Shop, table: TradeTable) -> Batch | None:
    """Catch the shop up, one transaction per batch; returns the last batch."""
    last = None
    async for batch in syncer.batches(shop):
        changed = await table.write(batch)
        if last is None or batch.window != last.window:
            print(
                f"  {batch.phase} window {batch.window.start:%Y-%m-%d %H:%M:%S} .. {batch.window.end:%Y-%m-%d %H:%M:%S}"
            )
        print(f"    batch of {len(batch.trades):3d} trades: {changed:3d} rows inserted or updated")
        last = batch
    return last


async def main() -> None:
    async with environment() as (client, shop, directory, time_passes):
        path = directory / "trades.sqlite3"
        table = TradeTable(path)
        try:
            syncer = Syncer(client, store=SqliteStore(path))  # its own "checkpoints" table beside "trades"
            print(f"first run for {shop.id}:")
            last = await sync(syncer, shop, table)
            time_passes()
            print(f"second run for {shop.id}, from the checkpoint:")
            last = await sync(syncer, shop, table) or last
            if last is not None:
                replayed = await table.write(last)
                print(f"replaying the last batch ({len(last.trades)} trades) wrote {replayed} rows")
            (count,) = table.db.execute("SELECT count(*) FROM trades").fetchone()
            by_status = table.db.execute("SELECT status, count(*) FROM trades GROUP BY status ORDER BY 2 DESC")
            print(f"trades table: {count} rows")
            for status, rows in by_status:
                print(f"  {status:<26} {rows}")
        finally:
            table.close()


if __name__ == "__main__":
    asyncio.run(main())
