"""Syncer behaviour against the emulator: costs, the commit rule, modes and refusals."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from tests.conftest import client_for

from taobao_ordersync import (
    CheckpointConflictError,
    CheckpointExpiredError,
    ConfigurationError,
    MemoryStore,
    ResponseFormatError,
    Shop,
    Syncer,
    Trade,
    TradeUnavailableError,
    WindowTooDenseError,
)
from taobao_ordersync import syncer as syncer_module
from taobao_ordersync._time import floor_second
from taobao_ordersync.testing import Chaos, Collector, Emulator, ShopProfile
from taobao_ordersync.testing._shop import Version

SHOP = Shop(id="shop-1", session="session-1")
BUSY = ShopProfile(orders_per_day=1000, history_days=1)
LIST_METHODS = ("taobao.trades.sold.get", "taobao.trades.sold.increment.get")


def list_calls(counts: dict[str, int] | Any) -> int:
    return sum(counts.get(method, 0) for method in LIST_METHODS)


async def test_steady_state_poll_costs_one_list_call(make_emulator: Any) -> None:
    """A poll whose window fits in one page costs exactly one list call (count and data together)."""
    async with make_emulator(seed=2, profile=ShopProfile(orders_per_day=1000, history_days=1)) as emu:
        async with client_for(emu, clock_refresh=0) as client:
            syncer = Syncer(client, store=MemoryStore(), lag=5)
            async for _ in syncer.increments(SHOP):
                pass
            costs = []
            for _ in range(5):
                emu.advance(600)
                before = list_calls(client.call_counts)
                async for _ in syncer.increments(SHOP):
                    pass
                costs.append(list_calls(client.call_counts) - before)

    assert [1, 1, 1, 1, 1] == costs


async def test_backfill_costs_close_to_the_minimum(make_emulator: Any) -> None:
    """A backfill lists every trade with at most ~1.1 x ceil(trades / page_size) calls."""
    async with make_emulator(seed=3, profile=ShopProfile(orders_per_day=500, history_days=20)) as emu:
        async with client_for(emu) as client:
            syncer = Syncer(client, store=MemoryStore(), lag=5, page_size=50)
            delivered = sum([1 async for _ in syncer.increments(SHOP)])
            calls = list_calls(client.call_counts)

    minimum = -(-delivered // 50)
    assert delivered > 9000
    assert calls <= 1.1 * minimum + 2


async def test_break_leaves_the_window_to_be_read_again(make_emulator: Any) -> None:
    """Breaking right after a window's last trade commits nothing: the next run delivers it all again."""
    async with make_emulator(seed=4, profile=ShopProfile(orders_per_day=500, history_days=1)) as emu:
        async with client_for(emu, clock_refresh=0) as client:
            store = MemoryStore()
            async for _ in Syncer(client, store=store, lag=5).increments(SHOP):
                pass
            emu.advance(600)
            emu.pause_activity()
            saved = await store.load(SHOP.id)
            assert saved is not None
            rehearsal = MemoryStore()
            await rehearsal.save(SHOP.id, saved.data, expected_revision=None)
            window = [trade async for trade in Syncer(client, store=rehearsal, lag=5).increments(SHOP)]
            assert len(window) > 1

            broken = []
            async for trade in Syncer(client, store=store, lag=5).increments(SHOP):
                broken.append(trade)
                if len(broken) == len(window):
                    break  # after the last trade, without asking for more
            after_break = await store.load(SHOP.id)
            again = [trade async for trade in Syncer(client, store=store, lag=5).increments(SHOP)]

    assert saved == after_break
    assert [t.tid for t in window] == [t.tid for t in broken]
    assert {t.tid for t in window} == {t.tid for t in again}


async def test_commit_happens_only_after_the_consumer_asks_for_more(make_emulator: Any) -> None:
    """The checkpoint moves when the consumer resumes after a window's last trade, not before."""
    async with make_emulator(seed=5, profile=BUSY) as emu, client_for(emu, clock_refresh=0) as client:
        store = MemoryStore()
        syncer = Syncer(client, store=store, lag=5)
        async for _ in syncer.increments(SHOP):
            pass
        emu.advance(300)
        committed = await syncer.checkpoint(SHOP.id)
        trades = syncer.increments(SHOP)
        seen = 0
        checkpoints_seen = []
        async for _ in trades:
            seen += 1
            checkpoints_seen.append(await syncer.checkpoint(SHOP.id))
        final = await syncer.checkpoint(SHOP.id)

    assert committed is not None
    assert final is not None
    assert seen > 0
    assert all(cp == committed for cp in checkpoints_seen)  # nothing moved while trades were in hand
    assert final.cursor > committed.cursor


class Boom(Exception):
    pass


async def test_consumer_exception_leaves_checkpoint(make_emulator: Any) -> None:
    """An exception raised by the consumer propagates and leaves the checkpoint untouched."""
    async with make_emulator(seed=6, profile=BUSY) as emu, client_for(emu, clock_refresh=0) as client:
        store = MemoryStore()
        syncer = Syncer(client, store=store, lag=5)
        async for _ in syncer.increments(SHOP):
            pass
        emu.advance(600)
        before = await store.load(SHOP.id)

        async def consume_and_fail() -> None:
            async for _ in syncer.increments(SHOP):
                raise Boom

        with pytest.raises(Boom):
            await consume_and_fail()
        after = await store.load(SHOP.id)

    assert before == after


async def test_duplicates_are_suppressed_within_and_across_touching_windows(make_emulator: Any) -> None:
    """The boundary second is read by both windows but each (tid, modified) is delivered once.

    (The first run's backfill and increments may overlap: a trade created before T0 and changed
    after it is listed by both. That is allowed at-least-once; these polls come after it.)
    """
    async with make_emulator(seed=7, profile=ShopProfile(orders_per_day=200_000, history_days=0.01)) as emu:
        async with client_for(emu, clock_refresh=0) as client:
            syncer = Syncer(client, store=MemoryStore(), lag=5)
            collector = Collector()
            keys: list[tuple[int, Any]] = []
            async for _ in syncer.increments(SHOP):
                pass
            for _ in range(4):
                emu.advance(60)
                async for trade in syncer.increments(SHOP):
                    collector.add(trade)
                    keys.append((trade.tid, trade.modified))

    assert len(keys) == len(set(keys))
    assert syncer.progress(SHOP.id).duplicates > 0


async def test_fullinfo_mode_fetches_details(make_emulator: Any) -> None:
    """With fullinfo=True the list asks for tid/modified only and each trade is fetched in full."""
    async with make_emulator(seed=8, profile=ShopProfile(orders_per_day=200, history_days=2)) as emu:
        async with client_for(emu) as client:
            syncer = Syncer(client, store=MemoryStore(), lag=5, fullinfo=True, fields=("tid", "modified", "orders"))
            trades = [trade async for trade in syncer.increments(SHOP)]
            counts = dict(client.call_counts)

    assert trades
    assert all(trade.orders for trade in trades)
    assert len(trades) == counts["taobao.trade.fullinfo.get"]


@pytest.mark.parametrize("misses", [1, 99])
async def test_fullinfo_never_drops_a_listed_trade(
    make_emulator: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, misses: int
) -> None:
    """A listed trade fullinfo does not know is asked for again; if it stays unknown the
    window fails with a typed error, nothing is committed past it, and a later run delivers it."""
    monkeypatch.setattr(syncer_module, "DETAIL_RETRY_DELAYS", (0.01, 0.01))
    async with make_emulator(seed=9, profile=ShopProfile(orders_per_day=200, history_days=2)) as emu:
        victim = next(iter(emu.shop("shop-1").trades.values()))
        emu.hide_from_fullinfo(victim.tid, times=misses)
        async with client_for(emu) as client:
            syncer = Syncer(client, store=MemoryStore(), lag=5, fullinfo=True)
            trades: list[Trade] = []
            if misses == 1:
                trades = [trade async for trade in syncer.increments(SHOP)]
            else:

                async def drain() -> None:
                    async for trade in syncer.increments(SHOP):
                        trades.append(trade)

                with pytest.raises(TradeUnavailableError) as raised:
                    await drain()
                assert raised.value.tids == (victim.tid,)
                assert [victim.tid] == syncer.progress(SHOP.id).missing
                assert str(victim.tid) in caplog.text or str(victim.tid) in str(raised.value)
                stuck = await syncer.checkpoint(SHOP.id)
                assert stuck is not None and not stuck.backfill_done
                assert stuck.backfilled_to is not None and stuck.backfilled_to <= floor_second(victim.created)
                emu.hide_from_fullinfo(victim.tid, times=0)  # fullinfo knows it now: the window is read again
                trades += [trade async for trade in syncer.increments(SHOP)]
            checkpoint = await syncer.checkpoint(SHOP.id)

    assert victim.tid in {t.tid for t in trades}
    assert checkpoint is not None and checkpoint.backfill_done


async def test_expired_checkpoint_is_refused_or_rebackfilled(make_emulator: Any) -> None:
    """A checkpoint older than the 3-month horizon raises; on_expired='rebackfill' starts over."""
    async with make_emulator(seed=10) as emu, client_for(emu, clock_refresh=0) as client:
        store = MemoryStore()
        syncer = Syncer(client, store=store, lag=5)
        async for _ in syncer.increments(SHOP):
            pass
        emu.advance(91 * 86400)
        with pytest.raises(CheckpointExpiredError, match="rebackfill"):
            async for _ in syncer.increments(SHOP):
                pass
        fresh = Syncer(client, store=store, lag=5, on_expired="rebackfill")
        delivered = [trade async for trade in fresh.increments(SHOP)]
        checkpoint = await fresh.checkpoint(SHOP.id)

    assert delivered
    assert checkpoint is not None
    assert checkpoint.origin > emu.now() - timedelta(minutes=5)


async def test_two_syncers_on_one_shop_conflict(make_emulator: Any) -> None:
    """A second writer cannot move a shop's checkpoint over the first (compare-and-set)."""
    async with make_emulator(seed=11, profile=BUSY) as emu, client_for(emu, clock_refresh=0) as client:
        store = MemoryStore()
        one, two = Syncer(client, store=store, lag=5), Syncer(client, store=store, lag=5)
        async for _ in one.increments(SHOP):
            pass
        emu.advance(600)
        first = one.increments(SHOP)
        await anext(first)  # `one` has loaded revision N and holds the window
        async for _ in two.increments(SHOP):
            pass  # `two` commits revision N+1
        with pytest.raises(CheckpointConflictError):
            async for _ in first:
                pass


async def test_dense_second_is_split_by_type_then_read_whole(
    make_emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """More than max_window_orders in one second: split by type, then read in full with a warning."""
    caplog.set_level(logging.WARNING)
    async with make_emulator(seed=12, profile=ShopProfile(orders_per_day=0, history_days=0)) as emu:
        emu.flash_sale("shop-1", 300, seconds=1, start=emu.now() - timedelta(seconds=30))
        async with client_for(emu) as client:
            syncer = Syncer(client, store=MemoryStore(), lag=5, page_size=20, max_window_orders=40, backfill=600)
            collector = Collector()
            async for trade in syncer.increments(SHOP):
                collector.add(trade)
            checkpoint = await syncer.checkpoint(SHOP.id)
    assert checkpoint is not None
    report = emu.verify_sync(checkpoint, collector)

    assert 0 == report.lost, report
    assert report.in_scope >= 300
    assert syncer.progress(SHOP.id).splits > 5
    assert "single second" in caplog.text


async def test_second_that_taobao_cannot_list_is_a_clear_error(make_emulator: Any) -> None:
    """Over 20,000 trades of one type in one second: WindowTooDenseError, never a silent truncation."""
    async with make_emulator(seed=13, profile=ShopProfile(orders_per_day=0, history_days=0)) as emu:
        moment = emu.now().replace(microsecond=0) - timedelta(seconds=30)
        shop = emu.shop("shop-1")
        for _ in range(20_001):
            emu._simulator.create(shop, moment, trade_type="fixed")
        async with client_for(emu) as client:
            syncer = Syncer(client, store=MemoryStore(), lag=5, backfill=600)
            with pytest.raises(WindowTooDenseError, match="single second"):
                async for _ in syncer.increments(SHOP):
                    pass


async def test_batches_deliver_pages_of_new_trades(make_emulator: Any) -> None:
    """batches() yields de-duplicated pages; together they are exactly what increments() yields."""
    profile = ShopProfile(orders_per_day=500, history_days=3)
    async with make_emulator(seed=14, profile=profile) as emu, client_for(emu) as client:
        batches = [batch async for batch in Syncer(client, store=MemoryStore(), lag=5, page_size=30).batches(SHOP)]
    async with make_emulator(seed=14, profile=profile) as emu, client_for(emu) as client:
        trades = [trade async for trade in Syncer(client, store=MemoryStore(), lag=5, page_size=30).increments(SHOP)]

    assert all(0 < len(batch.trades) <= 30 for batch in batches)
    assert {t.tid for b in batches for t in b.trades} == {t.tid for t in trades}


@pytest.mark.parametrize(
    "options",
    [
        {"lag": -1},
        {"page_size": 0},
        {"page_size": 101},
        {"max_window_orders": 10},
        {"types": ()},
        {"fields": ()},
        {"fullinfo_concurrency": 0},
        {"on_expired": "ignore"},
        {"max_window": 0},
    ],
)
def test_bad_syncer_options_are_clear_errors(emulator: Emulator, options: dict[str, Any]) -> None:
    """Invalid options raise ConfigurationError at construction."""
    client = client_for(emulator)

    with pytest.raises(ConfigurationError):
        Syncer(client, store=MemoryStore(), **options)


async def test_shop_argument_is_checked(emulator: Emulator) -> None:
    """Passing something other than a Shop is a ConfigurationError, not an AttributeError deep inside."""
    async with client_for(emulator) as client:
        syncer = Syncer(client, store=MemoryStore())
        with pytest.raises(ConfigurationError, match="Shop"):
            async for _ in syncer.increments("shop-1"):  # type: ignore[arg-type]
                pass


def test_durations_round_up_to_whole_seconds(emulator: Emulator) -> None:
    """Taobao counts whole seconds: a fractional lag rounds up (safer), overlap too."""
    syncer = Syncer(client_for(emulator), store=MemoryStore(), lag=2.5, overlap=0.2)

    assert timedelta(seconds=3) == syncer.lag
    assert timedelta(seconds=1) == syncer.overlap


async def test_pages_past_the_counted_last_are_read_while_the_window_grows(make_emulator: Any) -> None:
    """A window that grows after page 1 counted it says has_next on its last counted page: the
    pages past it are read too (here 120 trades join a creation window mid-read)."""
    async with make_emulator(seed=4, profile=ShopProfile(orders_per_day=500, history_days=1)) as emu:
        grown = False

        def grow(progress: Any) -> None:
            nonlocal grown
            if not grown and progress.pages == 1:
                grown = True
                emu.flash_sale("shop-1", 120, seconds=1, start=emu.now() - timedelta(hours=20))

        collector = Collector()
        async with client_for(emu, clock_refresh=0) as client:
            syncer = Syncer(client, store=MemoryStore(), lag=5, page_size=50, on_progress=grow)
            async for trade in syncer.increments(SHOP):
                collector.add(trade)
            checkpoint = await syncer.checkpoint(SHOP.id)
        assert checkpoint is not None
        report = emu.verify_sync(checkpoint, collector)
        backfill_pages = emu.calls["taobao.trades.sold.get"]
        trades = sum(1 for record in emu.shop("shop-1").trades.values() if record.created <= checkpoint.origin)

    assert grown
    assert 0 == report.lost, report
    assert backfill_pages >= -(-trades // 50)  # every page of the grown window was read


async def test_a_server_that_always_says_has_next_is_an_error_not_a_loop(make_emulator: Any) -> None:
    """An empty page that says has_next is malformed: retried, then a transient error; the
    checkpoint stays before the window."""
    chaos = Chaos(always_has_next=True)
    async with make_emulator(seed=4, profile=ShopProfile(orders_per_day=500, history_days=1), chaos=chaos) as emu:
        async with client_for(emu, clock_refresh=0) as client:
            syncer = Syncer(client, store=MemoryStore(), lag=5, page_size=50)

            async def drain() -> None:
                async for _ in syncer.increments(SHOP):
                    pass

            with pytest.raises(ResponseFormatError, match="has_next") as raised:
                await drain()
            checkpoint = await syncer.checkpoint(SHOP.id)

    assert raised.value.is_transient
    assert checkpoint is not None and not checkpoint.backfill_done
    assert emu.calls["taobao.trades.sold.get"] < 30


async def test_a_backfill_resumed_after_the_horizon_passed_it_narrows_its_scope(
    make_emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Trades created before Taobao's 3-month horizon can no longer be listed: a backfill resumed
    after the horizon passed its position says so, records the narrower scope and loses nothing in it."""
    async with make_emulator(seed=6, profile=ShopProfile(orders_per_day=40, history_days=90)) as emu:
        store = MemoryStore()
        collector = Collector()
        async with client_for(emu, clock_refresh=0) as client:
            syncer = Syncer(client, store=store, lag=5, page_size=20)
            async for batch in syncer.batches(SHOP):
                for trade in batch.trades:
                    collector.add(trade)
                break  # a crash a few pages into the backfill
            started = await syncer.checkpoint(SHOP.id)
        assert started is not None and started.backfilled_to is not None
        emu.advance(3 * 3600)  # the horizon moves past the resume point
        async with client_for(emu, clock_refresh=0) as client:
            syncer = Syncer(client, store=store, lag=5, page_size=20)
            emu.pause_activity()
            async for trade in syncer.increments(SHOP):
                collector.add(trade)
            checkpoint = await syncer.checkpoint(SHOP.id)
        assert checkpoint is not None
        report = emu.verify_sync(checkpoint, collector)

    assert "can no longer be listed" in caplog.text
    assert checkpoint.backfill_from > started.backfill_from
    assert checkpoint.backfill_from > started.backfilled_to
    assert 0 == report.lost, report


async def test_a_failing_progress_callback_never_aborts_the_sync(
    make_emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """on_progress is a display: when it raises, the sync goes on and the error is logged."""

    def broken(progress: Any) -> None:
        raise RuntimeError("progress bar bug")

    async with make_emulator(seed=7, profile=BUSY) as emu, client_for(emu, clock_refresh=0) as client:
        syncer = Syncer(client, store=MemoryStore(), lag=5, on_progress=broken)
        trades = [trade async for trade in syncer.increments(SHOP)]
        checkpoint = await syncer.checkpoint(SHOP.id)

    assert trades
    assert checkpoint is not None and checkpoint.backfill_done
    assert "on_progress callback failed" in caplog.text


async def test_progress_says_when_the_backfill_is_done(make_emulator: Any) -> None:
    """ShopProgress.backfill_done: False before the checkpoint is known and while the backfill runs
    (backfilled_to is None in the first case too), True once it is done."""
    seen: list[tuple[str, bool]] = []
    async with make_emulator(seed=7, profile=BUSY) as emu, client_for(emu, clock_refresh=0) as client:
        syncer = Syncer(
            client, store=MemoryStore(), lag=5, on_progress=lambda p: seen.append((p.phase, p.backfill_done))
        )
        unknown = syncer.progress(SHOP.id)
        assert (None, False) == (unknown.backfilled_to, unknown.backfill_done)
        async for _ in syncer.increments(SHOP):
            pass
        emu.advance(600)
        async for _ in syncer.increments(SHOP):
            pass

    assert {("backfill", False), ("increments", True)} == set(seen)
    assert syncer.progress(SHOP.id).backfill_done


async def test_a_second_version_within_the_boundary_second_is_delivered(make_emulator: Any) -> None:
    """A trade delivered at the very start of the committed position's second (e.000, inside the window
    ending there), then changed again within that second (paid right after it was created, say) and shown
    to the lists only later: the touching next window delivers the new version. Times are whole seconds,
    so the boundary tells versions apart by status too; keyed by (tid, modified) alone, the paid version
    passed for the one delivered."""
    async with make_emulator(seed=8, profile=ShopProfile(orders_per_day=2_000, history_days=1)) as emu:
        emu.pause_activity()  # only this test's changes happen
        shop = emu.shop(SHOP.id)
        async with client_for(emu, clock_refresh=0) as client:
            syncer = Syncer(client, store=MemoryStore(), lag=5)
            delivered: list[tuple[int, Any, str | None]] = []
            async for _ in syncer.increments(SHOP):
                pass

            # The next poll's window ends at floor(now - lag): put a version at the start of that second
            # (and of the one after, in case the clock crosses a second meanwhile).
            ends = floor_second(emu.now() + timedelta(seconds=1) - timedelta(seconds=5))
            records = [record for record in shop.trades.values() if record.versions[-1].modified < ends][:2]
            for record, second in zip(records, (ends, ends + timedelta(seconds=1)), strict=True):
                last = record.versions[-1]
                shop.add_version(record, Version(modified=second, visible_at=emu.now(), status=last.status))
            emu.advance(1)
            async for trade in syncer.increments(SHOP):
                delivered.append((trade.tid, trade.modified, trade.status))
            checkpoint = await syncer.checkpoint(SHOP.id)
            assert checkpoint is not None
            [(tid, second, status)] = checkpoint.boundary  # the one at the window's last second

            record = shop.trades[tid]
            new_status = "TRADE_CLOSED" if status != "TRADE_CLOSED" else "TRADE_FINISHED"
            changed = Version(modified=second + timedelta(milliseconds=500), visible_at=emu.now(), status=new_status)
            shop.add_version(record, changed)  # in that same second, but visible only now
            emu.advance(10)
            async for trade in syncer.increments(SHOP):
                delivered.append((trade.tid, trade.modified, trade.status))

    assert (tid, second, status) in delivered
    assert (tid, second, new_status) in delivered
