"""Syncer.audit against the emulator: exact findings, repair, live changes, costs."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from tests.conftest import client_for

from taobao_ordersync import ConfigurationError, MemoryStore, Shop, Syncer, TopClient
from taobao_ordersync._time import floor_second
from taobao_ordersync.audit import AuditProgress, AuditReport
from taobao_ordersync.testing import Chaos, Emulator, MemoryLedger, ShopProfile

SHOP = Shop(id="shop-1", session="session-1")
LIST = "taobao.trades.sold.get"
SETTLE = timedelta(minutes=15)


@asynccontextmanager
async def synced(
    profile: ShopProfile, *, seed: int, chaos: Chaos | None = None, **syncer_options: Any
) -> AsyncIterator[tuple[Emulator, TopClient, Syncer, MemoryLedger]]:
    """An emulator shop, fully synced into a MemoryLedger."""
    async with Emulator(shops=1, profile=profile, seed=seed, chaos=chaos) as emu:
        async with client_for(emu) as client:
            syncer = Syncer(client, store=MemoryStore(), lag=5, **syncer_options)
            ledger = MemoryLedger()
            async for batch in syncer.batches(SHOP):
                ledger.upsert(SHOP.id, batch.trades)
            yield emu, client, syncer, ledger


def damage(
    emu: Emulator, ledger: MemoryLedger, rng: random.Random, *, deleted: int, staled: int
) -> tuple[set[int], set[int]]:
    """Delete ``deleted`` random rows and put ``staled`` others back to an older version."""
    rows = ledger.rows[SHOP.id]
    old_enough = emu.now() - SETTLE - timedelta(minutes=1)
    candidates = sorted(tid for tid, (created, _) in rows.items() if created < old_enough)
    chosen = rng.sample(candidates, deleted + staled)
    gone, stale = set(chosen[:deleted]), set(chosen[deleted:])
    for tid in gone:
        del rows[tid]
    for tid in stale:
        created, modified = rows[tid]
        rows[tid] = (created, modified - timedelta(seconds=rng.randint(1, 3600)))
    return gone, stale


def expected_stale(emu: Emulator, stale: set[int], as_of: datetime) -> set[int]:
    """Staled rows still required: Taobao's newest version is older than ``as_of`` (else in flight)."""
    trades = emu.shop(SHOP.id).trades
    return {tid for tid in stale if trades[tid].versions[-1].modified < as_of}


@asynccontextmanager
async def live_changes(emu: Emulator, rng: random.Random) -> AsyncIterator[set[int]]:
    """Modify random trades (and create new ones) every few milliseconds while the block runs."""
    touched: set[int] = set()
    stop = asyncio.Event()

    async def churn() -> None:
        shop = emu.shop(SHOP.id)
        while not stop.is_set():
            tid = rng.choice(list(shop.trades))
            emu.modify(SHOP.id, tid)
            touched.add(tid)
            if rng.random() < 0.2:
                emu.flash_sale(SHOP.id, 1, seconds=1)
            await asyncio.sleep(0.002)

    task = asyncio.create_task(churn())
    try:
        yield touched
    finally:
        stop.set()
        await task


@pytest.mark.parametrize("seed", [11, 12, 13])
async def test_audit_finds_exactly_the_deleted_and_stale_rows_with_live_changes(seed: int) -> None:
    """Random deletions and stale rows are all reported, and nothing else, while trades change live.

    Live changes touch trades during the audit (some of them damaged ones): a stale row whose
    trade changed during the audit is in flight, not stale; nothing live is reported. Stale rows
    keep their slot's count, so finding all of them takes the deep pass over the shop's history;
    without it, only those in slots listed anyway are found (never a false one).
    """
    rng = random.Random(seed)
    profile = ShopProfile(orders_per_day=300, history_days=10)
    async with synced(profile, seed=seed) as (emu, _client, syncer, ledger):
        gone, stale = damage(emu, ledger, rng, deleted=7, staled=5)
        async with live_changes(emu, rng) as touched:
            shallow = await syncer.audit(SHOP, ledger, settle=SETTLE)
            report = await syncer.audit(SHOP, ledger, settle=SETTLE, deep=timedelta(days=11))

    assert touched, "the live changes ran during the audit"
    assert set(shallow.missing) == gone and set(shallow.stale) <= stale and not shallow.extra
    assert (sorted(gone), sorted(expected_stale(emu, stale, report.as_of)), ()) == (
        list(report.missing),
        list(report.stale),
        report.extra,
    )
    assert set(report.in_flight) <= touched | stale


async def test_clean_shop_costs_a_few_count_calls_and_reports_nothing() -> None:
    """A synced shop with no damage is clean; its counts agree at the first level they can be had."""
    profile = ShopProfile(orders_per_day=300, history_days=10)
    async with synced(profile, seed=21) as (emu, _client, syncer, ledger):
        before = emu.calls[LIST]
        report = await syncer.audit(SHOP, ledger)
        calls = emu.calls[LIST] - before

    assert report.clean and report.lost == 0 and not report.in_flight
    assert calls == report.calls - 1  # every list call, plus one taobao.time.get
    assert calls <= 3


async def test_repair_brings_lost_to_zero_with_live_changes() -> None:
    """Repair hands the missing and stale trades to the handler; with the next sync, lost is 0.

    The deep pass covers the shop's history, so every stale row is found (and repaired) too.
    """
    rng = random.Random(31)
    profile = ShopProfile(orders_per_day=300, history_days=10)
    async with synced(profile, seed=31) as (emu, _client, syncer, ledger):
        gone, stale = damage(emu, ledger, rng, deleted=9, staled=6)
        checkpoint = await syncer.checkpoint(SHOP.id)
        assert checkpoint is not None
        lost_before = _verify(emu, ledger, checkpoint).lost
        async with live_changes(emu, rng):
            report = await syncer.audit(SHOP, ledger, repair=ledger.handler, settle=SETTLE, deep=timedelta(days=11))
        emu.pause_activity()
        async for batch in syncer.batches(SHOP):  # the application's sync goes on as usual
            ledger.upsert(SHOP.id, batch.trades)
        after = _verify(emu, ledger, checkpoint)
        again = await syncer.audit(SHOP, ledger, settle=SETTLE)

    assert lost_before == len(gone | stale)  # the harness sees the damage
    assert set(report.missing) == gone and set(report.repaired) == set(report.missing) | set(report.stale)
    assert report.unrepaired == () and report.recount_agrees is True
    assert 0 == after.lost, after
    assert again.clean, again


def _verify(emu: Emulator, ledger: MemoryLedger, checkpoint: Any) -> Any:
    received = {tid: modified for tid, (_, modified) in ledger.rows[SHOP.id].items()}
    return emu.verify(
        SHOP.id,
        received,
        created_from=checkpoint.backfill_from,
        sync_started=checkpoint.origin,
        until=emu.now() - timedelta(seconds=30),
    )


async def test_narrowing_costs_about_two_calls_per_level_for_one_missing_trade() -> None:
    """One missing trade among thousands is found by bisecting only the disagreeing slots."""
    profile = ShopProfile(orders_per_day=2000, history_days=5)
    async with synced(profile, seed=41) as (emu, _client, syncer, ledger):
        start = floor_second(emu.now()) - timedelta(days=5)  # the shop's whole history
        clean = await syncer.audit(SHOP, ledger, start=start)
        (gone,), _ = damage(emu, ledger, random.Random(41), deleted=1, staled=0)
        report = await syncer.audit(SHOP, ledger, start=start)

    assert (gone,) == report.missing
    # ~10,000 trades: from the whole range to <= 100 trades is ~7 halvings, two counts each.
    assert report.calls - clean.calls <= 2 * 8 + 2


async def test_equal_counts_hide_a_swap_that_deep_mode_finds() -> None:
    """One missing and one extra in the same slot: counts agree. Deep mode finds the missing one
    if it changed in the deep span, and reports old versions equal counts cannot see."""
    profile = ShopProfile(orders_per_day=2000, history_days=5)
    async with synced(profile, seed=51) as (emu, _client, syncer, ledger):
        rows = ledger.rows[SHOP.id]
        trades = emu.shop(SHOP.id).trades
        now = emu.now()
        # A trade changed in the last day but more than `settle` ago, and an old version of another.
        recent = sorted(
            tid
            for tid, record in trades.items()
            if now - timedelta(hours=20) < record.versions[-1].modified < now - timedelta(hours=1)
            and record.created < now - timedelta(days=2)
            and len(record.versions) > 1
        )
        gone, old = recent[0], recent[1]
        created, _ = rows.pop(gone)
        rows[1] = (created, created)  # an extra row in gone's second: the counts still agree
        rows[old] = (rows[old][0], rows[old][1] - timedelta(hours=3))
        shallow = await syncer.audit(SHOP, ledger)
        deep = await syncer.audit(SHOP, ledger, deep=timedelta(days=1))

    assert shallow.clean  # what equal counts cannot prove
    assert ((gone,), (old,)) == (deep.missing, deep.stale)
    assert deep.calls - shallow.calls >= 2  # the increments of the last day


async def test_dense_second_is_listed_whole_when_ties_shuffle() -> None:
    """A one-second slot holding more than a page is listed until its count is proven, even when
    ties come back in a new order on every call."""
    profile = ShopProfile(orders_per_day=20, history_days=3)
    async with Emulator(shops=1, profile=profile, seed=61, chaos=Chaos(shuffle_ties=True)) as emu:
        sale = floor_second(emu.now()) - timedelta(hours=2)
        emu.flash_sale(SHOP.id, 450, seconds=1, start=sale)
        async with client_for(emu) as client:
            syncer = Syncer(client, store=MemoryStore(), lag=5)
            ledger = MemoryLedger()
            async for batch in syncer.batches(SHOP):
                ledger.upsert(SHOP.id, batch.trades)
            in_sale = [tid for tid, (created, _) in ledger.rows[SHOP.id].items() if created == sale]
            lost = random.Random(61).sample(in_sale, 3)
            for tid in lost:
                del ledger.rows[SHOP.id][tid]
            report = await syncer.audit(SHOP, ledger)

    assert sorted(lost) == list(report.missing) and report.clean is False and not report.stale


async def test_extra_rows_and_trades_of_any_type_are_reported_exactly() -> None:
    """A row Taobao does not have is extra; trades of rarely listed types are counted too."""
    profile = ShopProfile(orders_per_day=300, history_days=5, other_type_share=0.3)
    async with synced(profile, seed=71) as (_emu, _client, syncer, ledger):
        rows = ledger.rows[SHOP.id]
        some_created = min(created for created, _ in rows.values())
        rows[123] = (some_created, some_created)
        report = await syncer.audit(SHOP, ledger)

    assert ((), (), (123,)) == (report.missing, report.stale, report.extra)


async def test_progress_and_range_options() -> None:
    """on_progress sees every slot; start/end narrow the range; a naive bound is refused."""
    profile = ShopProfile(orders_per_day=300, history_days=10)
    seen: list[AuditProgress] = []
    async with synced(profile, seed=81) as (emu, _client, syncer, ledger):
        now = floor_second(emu.now())
        report = await syncer.audit(
            SHOP, ledger, start=now - timedelta(days=2), end=now - timedelta(days=1), on_progress=seen.append
        )
        with pytest.raises(ConfigurationError):
            await syncer.audit(SHOP, ledger, start=datetime(2024, 1, 1))  # noqa: DTZ001 - the point
        with pytest.raises(ConfigurationError):
            await syncer.audit(SHOP, ledger, start=now, end=now - timedelta(days=1))

    assert (now - timedelta(days=2), now - timedelta(days=1)) == (report.start, report.until)
    assert seen and seen[-1].slots == report.slots
    assert isinstance(report, AuditReport) and report.clean


async def test_audit_many_reports_each_shop_and_isolates_failures() -> None:
    """Many shops on one client: a shop with an expired session fails alone."""
    from taobao_ordersync.audit import audit_many
    from taobao_ordersync.errors import AuthenticationError

    profile = ShopProfile(orders_per_day=100, history_days=5)
    async with Emulator(shops=3, profile=profile, seed=91) as emu:
        async with client_for(emu) as client:
            syncer = Syncer(client, store=MemoryStore(), lag=5)
            ledger = MemoryLedger()
            shops = [Shop(id=s.id, session=s.session) for s in emu.shops]
            for shop in shops:
                async for batch in syncer.batches(shop):
                    ledger.upsert(shop.id, batch.trades)
            emu.expire_session("shop-2")
            results = await audit_many(syncer, [(shop, ledger) for shop in shops], concurrency=2)

    first, second, third = results
    assert isinstance(first, AuditReport) and first.clean
    assert isinstance(second, AuthenticationError)
    assert isinstance(third, AuditReport) and third.clean


async def test_a_trade_written_during_the_audit_is_rechecked_not_reported() -> None:
    """The application's sync writes a trade after the audit listed its slot: the re-check sees it."""
    profile = ShopProfile(orders_per_day=20, history_days=5)
    async with synced(profile, seed=101) as (_emu, _client, syncer, ledger):
        rows = ledger.rows[SHOP.id]
        late = min(rows, key=lambda tid: rows[tid][0])
        held = rows.pop(late)

        class WrittenMeanwhile(MemoryLedger):
            async def list_created(self, shop_id: str, start: datetime, end: datetime) -> dict[int, datetime]:
                listed = await ledger.list_created(shop_id, start, end)
                if start <= held[0] < end:
                    rows[late] = held  # the sync's write lands just after the audit listed its slot
                return listed

        racing = WrittenMeanwhile()
        racing.rows = ledger.rows
        report = await syncer.audit(SHOP, racing)

    assert late in rows and report.clean, report
