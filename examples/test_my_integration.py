"""Test your own integration against the TOP emulator, with the shipped pytest fixtures.

What it shows: a user's test module (copy it into your test suite) that

- loads the fixtures with ``pytest_plugins = ["taobao_ordersync.testing.pytest_plugin"]``
  (in your project this line usually goes into the top-level ``conftest.py``);
- overrides ``top_emulator_options`` for a busier shop with chaos (transient
  errors, bans, trades changing while pages are read, late visibility);
- syncs through the ``top_client`` fixture into the code under test (here a small
  SQLite ``OrderBook`` standing in for yours), records every delivery in a
  ``Collector``, and after ``emulator.pause_activity()`` and a last sync checks the
  result against the emulator's ground truth with ``verify_sync``: lost == 0;
- checks that a crash in the middle of a sync loses nothing either.

Run it (pytest and pytest-asyncio installed):

    python -m pytest -q examples/test_my_integration.py

The tests carry ``@pytest.mark.asyncio``, so they run in pytest-asyncio's strict
and auto modes alike. It always uses the emulator; it never calls Taobao.
"""

# Assertions are the point of a test:

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from taobao_ordersync import Shop, SqliteStore, Syncer, TopClient, Trade
from taobao_ordersync.testing import Chaos, Collector, Emulator, ShopProfile

pytest_plugins = ["taobao_ordersync.testing.pytest_plugin"]

# If warnings are errors in your suite: on Python 3.14+, backoff (a dependency of taobao-ordersync)
# calls the deprecated asyncio.iscoroutinefunction on each request; ignore that warning, from backoff only.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:'asyncio.iscoroutinefunction' is deprecated:DeprecationWarning:backoff\."
)


class OrderBook:
    """The code under test: your application's idempotent upsert (here into SQLite)."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE TABLE trades (tid TEXT PRIMARY KEY, modified INTEGER NOT NULL, raw TEXT NOT NULL)")

    def upsert(self, trade: Trade) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO trades (tid, modified, raw) VALUES (?, ?, ?) "
                "ON CONFLICT(tid) DO UPDATE SET modified = excluded.modified, raw = excluded.raw "
                "WHERE excluded.modified > trades.modified",
                (str(trade.tid), int(trade.modified.timestamp()), json.dumps(trade.raw, default=str)),
            )

    def newest(self) -> dict[int, int]:
        """tid -> the POSIX time of the version kept."""
        return {int(tid): modified for tid, modified in self.db.execute("SELECT tid, modified FROM trades")}

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def book() -> Iterator[OrderBook]:
    """A fresh order book, closed after the test (an unclosed connection is a ResourceWarning on 3.13+)."""
    with closing(OrderBook()) as order_book:
        yield order_book


@pytest.fixture
def top_emulator_options() -> dict[str, Any]:
    """One busy shop, with chaos; changes surface up to 2 s late (below the syncer's lag of 5 s)."""
    return {
        "shops": 1,
        "seed": 7,
        "profile": ShopProfile(orders_per_day=1000, history_days=3),
        "chaos": Chaos(error_rate=0.05, ban_rate=0.01, move_while_paging=0.2),
        "visibility_lag": 2.0,
    }


@pytest.mark.asyncio
async def test_my_sync_loses_nothing(
    top_emulator: Emulator, top_client: TopClient, book: OrderBook, tmp_path: Path
) -> None:
    """Sync, let time pass twice, stop the shop's activity, sync once more: nothing lost."""
    syncer = Syncer(top_client, store=SqliteStore(tmp_path / "checkpoints.sqlite3"), lag=5)
    shop = Shop(id="shop-1", session=top_emulator.shops[0].session)
    received = Collector()  # what the consumer was handed, for the ground-truth check

    async def sync_once() -> None:
        async for trade in syncer.increments(shop):
            book.upsert(trade)
            received.add(trade)

    await sync_once()  # the first sync: backfill, then increments
    for _ in range(2):
        top_emulator.advance(600)  # ten minutes of shop activity at once
        await sync_once()
    top_emulator.pause_activity()  # no more changes...
    top_emulator.advance(60)  # ...and let the last ones pass the lag
    await sync_once()  # a final sync that can be held to every change

    checkpoint = await syncer.checkpoint(shop.id)
    assert checkpoint is not None
    report = top_emulator.verify_sync(checkpoint, received)
    assert report.lost == 0, report
    assert report.in_scope > 2000
    # The order book kept the newest version of every trade it was handed.
    assert book.newest() == {tid: int(modified.timestamp()) for tid, modified in received.newest.items()}


@pytest.mark.asyncio
async def test_a_crash_mid_sync_loses_nothing(top_emulator: Emulator, top_client: TopClient, tmp_path: Path) -> None:
    """The consumer dies after 250 trades; a new Syncer over the same store resumes from the checkpoint."""
    store = SqliteStore(tmp_path / "checkpoints.sqlite3")
    shop = Shop(id="shop-1", session=top_emulator.shops[0].session)
    top_emulator.pause_activity()
    received = Collector()

    async def crashing_sync() -> None:
        async for trade in Syncer(top_client, store=store, lag=5).increments(shop):
            received.add(trade)
            if received.deliveries == 250:
                raise RuntimeError("crash while storing a trade")

    with pytest.raises(RuntimeError, match="crash"):
        await crashing_sync()

    syncer = Syncer(top_client, store=store, lag=5)  # as a restarted process would
    async for trade in syncer.increments(shop):
        received.add(trade)

    checkpoint = await syncer.checkpoint(shop.id)
    assert checkpoint is not None
    report = top_emulator.verify_sync(checkpoint, received)
    assert report.lost == 0, report
