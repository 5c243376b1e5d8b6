"""Syncer rules that only the mutation gate (``make mutants``) showed to be unguarded.

Each test here kills a mutant of ``tools/mutants.py`` that every other fast test let live.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tests.conftest import client_for

from taobao_ordersync import MemoryStore, Shop, Syncer
from taobao_ordersync._time import floor_second
from taobao_ordersync.checkpoint import Checkpoint
from taobao_ordersync.testing import Collector, ShopProfile

SHOP = Shop(id="shop-1", session="session-1")
EMPTY = ShopProfile(orders_per_day=0, history_days=0)


class RecordingStore(MemoryStore):
    """A MemoryStore that remembers every checkpoint saved."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: list[Checkpoint] = []

    async def save(self, shop_id: str, data: str, *, expected_revision: int | None) -> int:
        self.saved.append(Checkpoint.from_json(data, shop_id=shop_id))
        return await super().save(shop_id, data, expected_revision=expected_revision)


async def test_backfill_resumes_inside_a_second_split_by_a_page_seam(make_emulator: Any) -> None:
    """The backfill commits a page's newest second (with the keys it delivered there), never a
    second past it: the rest of that second, on pages not read yet, is read after a break."""
    async with make_emulator(seed=41, profile=EMPTY) as emu:
        sale = floor_second(emu.now()) - timedelta(seconds=30)
        emu.flash_sale("shop-1", 30, seconds=1, start=sale)  # 30 ties: pages 1, 3, 2 of 10 all hold them
        store = RecordingStore()
        collector = Collector()
        async with client_for(emu) as client:
            taken = 0
            async for trade in Syncer(client, store=store, lag=5, page_size=10, backfill=600).increments(SHOP):
                collector.add(trade)
                taken += 1
                if taken == 21:  # pages 1 and 3 handed over, the commit after page 3 saved
                    break
            mid_second = [cp for cp in store.saved if cp.backfilled_to is not None and cp.backfilled_to >= sale]
            resumed = Syncer(client, store=store, lag=5, page_size=10, backfill=600)
            async for trade in resumed.increments(SHOP):
                collector.add(trade)
            checkpoint = await resumed.checkpoint(SHOP.id)
    assert checkpoint is not None
    report = emu.verify_sync(checkpoint, collector)

    assert 0 == report.lost, report
    assert 30 == report.in_scope
    assert [sale] == [cp.backfilled_to for cp in mid_second]  # committed inside the sale's second


async def test_overlap_never_moves_the_checkpoint_back(make_emulator: Any) -> None:
    """With an overlap longer than a window, the windows re-read before the checkpoint commit
    nothing: every saved cursor is at or after the one before it."""
    async with make_emulator(seed=42, profile=ShopProfile(orders_per_day=2000, history_days=0.1)) as emu:
        store = RecordingStore()
        collector = Collector()
        async with client_for(emu, clock_refresh=0) as client:
            syncer = Syncer(client, store=store, lag=5, overlap=120, max_window=30)
            for _ in range(3):
                async for trade in syncer.increments(SHOP):
                    collector.add(trade)
                emu.advance(90)
            emu.pause_activity()
            emu.advance(30)
            async for trade in syncer.increments(SHOP):
                collector.add(trade)
            checkpoint = await syncer.checkpoint(SHOP.id)
    assert checkpoint is not None
    cursors: list[datetime] = [cp.cursor for cp in store.saved if cp.backfill_done]

    assert len(cursors) > 10
    assert sorted(cursors) == cursors
    assert 0 == emu.verify_sync(checkpoint, collector).lost


async def test_a_change_on_the_second_two_windows_share_is_delivered_once(make_emulator: Any) -> None:
    """Touching windows both read their shared second; a trade changed exactly on it (``.000``)
    is delivered by the first and recognised by the second (the carried boundary keys)."""
    async with make_emulator(seed=43, profile=EMPTY) as emu:
        emu.flash_sale("shop-1", 3, seconds=1, start=floor_second(emu.now()) - timedelta(seconds=60))
        async with client_for(emu, clock_refresh=0) as client:
            syncer = Syncer(client, store=MemoryStore(), lag=5, max_window=30, backfill=600)
            first = [trade async for trade in syncer.increments(SHOP)]
            committed = await syncer.checkpoint(SHOP.id)
            assert committed is not None
            emu.pause_activity()  # only the change below happens from here on
            emu.advance(120)
            shared = committed.cursor + timedelta(seconds=30)  # the end of the next run's first window
            emu.modify("shop-1", first[0].tid, at=shared)
            again = [(trade.tid, trade.modified) async for trade in syncer.increments(SHOP)]

    changed = first[0].tid
    assert [(changed, shared)] == [key for key in again if key[0] == changed]
