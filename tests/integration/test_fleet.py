"""The fleet: dozens of shops under chaos, broken sessions, a flash sale and a buggy handler."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncGenerator, Iterable
from datetime import datetime
from typing import Any

import pytest
from tests.conftest import client_for

from taobao_ordersync import (
    AuthenticationError,
    Batch,
    CheckpointCorruptError,
    CheckpointVersionError,
    ConfigurationError,
    Fleet,
    FleetEvent,
    InvalidRequestError,
    MemoryStore,
    PollPolicy,
    ServerError,
    Shop,
    TopClient,
    Trade,
    WindowTooDenseError,
)
from taobao_ordersync._time import CST
from taobao_ordersync.testing import Chaos, Collector, Emulator, FakeClock, ShopProfile

FAST = PollPolicy(min_interval=0.2, max_interval=1.0, min_backoff=0.2, max_backoff=1.0, jitter=0.2)


async def test_fleet_under_chaos(make_emulator: Any) -> None:
    """24 shops: healthy ones lose nothing, broken sessions are reported, the busy shop delays no one.

    The stated bound: while one shop reads a 15,000-trade flash sale (150 pages), every other
    healthy shop still completes a poll within 5 seconds, because a turn is at most
    ``turn_batches`` pages and shops take turns.
    """
    chaos = Chaos(error_rate=0.05, ban_rate=0.01, move_while_paging=0.2)
    profile = ShopProfile(orders_per_day=500, history_days=2)
    async with make_emulator(shops=24, seed=41, profile=profile, chaos=chaos) as emu:
        broken = {"shop-22", "shop-23", "shop-24"}
        for shop_id in broken:
            emu.expire_session(shop_id)
        collectors: dict[str, Collector] = defaultdict(Collector)
        failed_once: set[str] = set()
        events: list[tuple[float, FleetEvent]] = []

        async def handler(shop: Shop, batch: Batch) -> None:
            if shop.id == "shop-2" and shop.id not in failed_once:
                failed_once.add(shop.id)
                raise RuntimeError("bug in the user's handler")
            for trade in batch.trades:
                collectors[shop.id].add(trade)

        async with client_for(emu, clock_refresh=0) as client:
            fleet = Fleet(
                client,
                store=MemoryStore(),
                handler=handler,
                concurrency=6,
                policy=FAST,
                turn_batches=3,
                on_event=lambda event: events.append((fleet.clock.monotonic(), event)),
                lag=5,
                seed=1,
            )
            for state in emu.shops:
                fleet.add(Shop(id=state.id, session=state.session))
            runner = asyncio.create_task(fleet.run())
            try:
                await asyncio.wait_for(asyncio.gather(*(fleet.next_poll(f"shop-{i}") for i in range(1, 22))), 60)
                # Stamped ahead of the clock: changes must never surface behind a committed window.
                emu.flash_sale("shop-1", 15_000, seconds=30, start=emu.now() + timedelta_seconds(1))
                sale_started = fleet.clock.monotonic()
                for _ in range(6):
                    emu.advance(30)
                    await asyncio.sleep(0.3)
                emu.pause_activity()
                emu.advance(10)
                await asyncio.wait_for(asyncio.gather(*(fleet.next_poll(f"shop-{i}") for i in range(1, 22))), 60)
                await asyncio.wait_for(asyncio.gather(*(fleet.next_poll(f"shop-{i}") for i in range(1, 22))), 60)
                statuses = {status.shop_id: status for status in fleet.statuses()}
            finally:
                fleet.stop()
                await asyncio.wait_for(runner, 10)

    for index in range(1, 22):
        shop_id = f"shop-{index}"
        checkpoint = await fleet.syncer.checkpoint(shop_id)
        assert checkpoint is not None
        report = emu.verify_sync(checkpoint, collectors[shop_id])
        assert 0 == report.lost, (shop_id, report)
    assert all(statuses[f"shop-{i}"].calls > 0 for i in range(1, 22))
    assert all(statuses[f"shop-{i}"].position is not None for i in range(1, 22))
    for shop_id in broken:
        assert "paused" == statuses[shop_id].state
        assert "AuthenticationError" in (statuses[shop_id].last_error or "")
    paused = {event.shop_id for _, event in events if event.kind == "paused"}
    assert broken == paused
    assert any(e.kind == "handler_failed" and e.shop_id == "shop-2" for _, e in events)
    first_sync_after_sale = {}
    for moment, event in events:
        if event.kind == "synced" and moment > sale_started and event.shop_id not in first_sync_after_sale:
            first_sync_after_sale[event.shop_id] = moment - sale_started
    others = {f"shop-{i}" for i in range(2, 22)}
    assert others <= set(first_sync_after_sale)
    assert max(first_sync_after_sale[s] for s in others) < 5.0, first_sync_after_sale


def timedelta_seconds(seconds: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=seconds)


async def test_updated_session_resumes_a_paused_shop(make_emulator: Any) -> None:
    """A shop paused on an invalid session syncs again once add() gives it a new session."""
    async with make_emulator(shops=2, seed=42) as emu:
        emu.expire_session("shop-2")
        collector = Collector()

        async def handler(shop: Shop, batch: Batch) -> None:
            if shop.id == "shop-2":
                for trade in batch.trades:
                    collector.add(trade)

        async with client_for(emu, clock_refresh=0) as client:
            fleet = Fleet(client, store=MemoryStore(), handler=handler, policy=FAST, lag=5)
            for state in emu.shops:
                fleet.add(Shop(id=state.id, session=state.session))
            runner = asyncio.create_task(fleet.run())
            try:
                await asyncio.wait_for(fleet.next_poll("shop-1"), 20)
                while fleet.status("shop-2").state != "paused":  # noqa: ASYNC110 - polling a status view
                    await asyncio.sleep(0.05)
                session = emu.renew_session("shop-2")
                fleet.add(Shop(id="shop-2", session=session))
                emu.pause_activity()
                await asyncio.wait_for(fleet.next_poll("shop-2"), 20)
            finally:
                fleet.stop()
                await asyncio.wait_for(runner, 10)
        checkpoint = await fleet.syncer.checkpoint("shop-2")

    assert checkpoint is not None
    assert 0 == emu.verify_sync(checkpoint, collector).lost
    assert "waiting" == fleet.status("shop-2").state


async def test_stop_commits_no_partial_window(make_emulator: Any) -> None:
    """Stopping mid-read leaves the checkpoint at a window boundary; a restart re-reads, losing nothing."""
    profile = ShopProfile(orders_per_day=3000, history_days=2)
    async with make_emulator(shops=1, seed=43, profile=profile) as emu:
        emu.pause_activity()
        collector = Collector()
        store = MemoryStore()
        seen_batches = 0

        async def slow_handler(shop: Shop, batch: Batch) -> None:
            nonlocal seen_batches
            seen_batches += 1
            for trade in batch.trades:
                collector.add(trade)
            await asyncio.sleep(0.01)

        async with client_for(emu, clock_refresh=0) as client:
            fleet = Fleet(client, store=store, handler=slow_handler, policy=FAST, lag=5, page_size=20)
            fleet.add(Shop(id="shop-1", session="session-1"))
            runner = asyncio.create_task(fleet.run())
            while seen_batches < 7:  # noqa: ASYNC110 - the handler's count is the signal
                await asyncio.sleep(0.01)
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await runner
            partial = await fleet.syncer.checkpoint("shop-1")

            again = Fleet(client, store=store, handler=slow_handler, policy=FAST, lag=5, page_size=20)
            again.add(Shop(id="shop-1", session="session-1"))
            runner = asyncio.create_task(again.run())
            await asyncio.wait_for(again.next_poll("shop-1"), 60)
            again.stop()
            await runner
        checkpoint = await again.syncer.checkpoint("shop-1")

    assert partial is not None
    assert not partial.backfill_done  # stopped inside the backfill
    assert checkpoint is not None
    assert 0 == emu.verify_sync(checkpoint, collector).lost


def test_poll_policy_adapts() -> None:
    """Heavy polls shorten the interval towards min; light polls lengthen it towards max."""
    policy = PollPolicy(min_interval=60, max_interval=600)

    assert 100.0 == policy.next_interval(300, pages=3)
    assert 60.0 == policy.next_interval(100, pages=10)
    assert 450.0 == policy.next_interval(300, pages=1)
    assert 600.0 == policy.next_interval(500, pages=0)
    assert [30.0, 60.0, 120.0] == [PollPolicy().backoff(n) for n in (1, 2, 3)]


@pytest.mark.parametrize(
    "options",
    [{"min_interval": 0}, {"min_interval": 10, "max_interval": 5}, {"jitter": 1.5}, {"target_pages": 0}],
)
def test_bad_policies_are_refused(options: dict[str, Any]) -> None:
    """Invalid poll policies raise ConfigurationError."""
    with pytest.raises(ConfigurationError):
        PollPolicy(**options)


async def test_removed_shop_stops_syncing(make_emulator: Any) -> None:
    """remove() stops a shop's polls and cancels anyone waiting for them; other shops go on.

    Counted in reads the fleet starts, not trades delivered: a quiet shop has no new trades to
    deliver, so a removed shop still polling would go unseen in its handler.
    """
    async with make_emulator(shops=2, seed=44) as emu:
        reads: dict[str, int] = defaultdict(int)
        async with client_for(emu, clock_refresh=0) as client:
            fleet = Fleet(client, store=MemoryStore(), handler=ignore, policy=FAST, lag=5)
            real_batches = fleet.syncer.batches

            def counted_batches(shop: Shop) -> AsyncGenerator[Batch, None]:
                reads[shop.id] += 1
                return real_batches(shop)

            fleet.syncer.batches = counted_batches  # type: ignore[method-assign]
            for state in emu.shops:
                fleet.add(Shop(id=state.id, session=state.session))
            runner = asyncio.create_task(fleet.run())
            try:
                await asyncio.wait_for(asyncio.gather(fleet.next_poll("shop-1"), fleet.next_poll("shop-2")), 20)
                waiting = asyncio.ensure_future(fleet.next_poll("shop-2"))
                await asyncio.sleep(0)
                fleet.remove("shop-2")
                removed_at, kept_at = reads["shop-2"], reads["shop-1"]
                # Three polls of shop-1 span two whole intervals; a shop still in the fleet polls at
                # least once per max_interval * (1 + jitter), which is shorter.
                for _ in range(3):
                    await asyncio.wait_for(fleet.next_poll("shop-1"), 20)
            finally:
                fleet.stop()
                await asyncio.wait_for(runner, 10)

    assert waiting.cancelled()
    assert reads["shop-1"] >= kept_at + 3
    assert removed_at == reads["shop-2"]
    assert ["shop-1"] == fleet.shop_ids
    assert fleet.syncer.forget("shop-2") is None  # nothing per shop outlives its place in the fleet
    assert fleet.syncer.forget("shop-1") is not None


# -- failures on the fleet's own (fake) clock: no emulator, each read raises the next scripted error ----

SLOW_BACKOFF = PollPolicy(min_interval=600, max_interval=600, jitter=0, min_backoff=30, max_backoff=240)


def scripted_fleet(errors: Iterable[BaseException], events: list[FleetEvent]) -> tuple[Fleet, FakeClock]:
    """A fleet on a fake clock whose shop's reads raise ``errors`` one by one, then find nothing new."""
    clock = FakeClock()
    client = TopClient("app", "secret", url="http://127.0.0.1:9/router/rest")  # never called
    fleet = Fleet(client, store=MemoryStore(), handler=ignore, policy=SLOW_BACKOFF, on_event=events.append, clock=clock)
    script = iter(errors)

    async def batches(shop: Shop) -> AsyncGenerator[Batch, None]:
        error = next(script, None)
        if error is not None:
            raise error
        for batch in ():  # caught up: nothing new
            yield batch

    fleet.syncer.batches = batches  # type: ignore[method-assign]
    fleet.add(Shop(id="shop-1", session="session-1"))
    return fleet, clock


async def ignore(shop: Shop, batch: Batch) -> None:
    pass


async def poll_once(fleet: Fleet) -> None:
    """Run the fleet until shop-1 completes a poll (raising its error if it pauses instead)."""
    runner = asyncio.create_task(fleet.run())
    try:
        await asyncio.wait_for(fleet.next_poll("shop-1"), 10)
    finally:
        fleet.stop()
        await asyncio.wait_for(runner, 10)


async def test_polled_is_the_old_name_of_next_poll() -> None:
    """Fleet.polled() still waits for the next poll, and warns that it is now next_poll()."""
    fleet, _ = scripted_fleet([], [])
    runner = asyncio.create_task(fleet.run())
    try:
        with pytest.warns(DeprecationWarning, match=r"Fleet\.polled\(\) is deprecated: use Fleet\.next_poll\(\)"):
            waiting = fleet.polled("shop-1")
        await asyncio.wait_for(waiting, 10)
    finally:
        fleet.stop()
        await asyncio.wait_for(runner, 10)

    assert 1 == fleet.status("shop-1").schedule.polls  # type: ignore[union-attr]


async def test_backoff_runs_on_the_fleets_clock() -> None:
    """Transient failures back off 30, 60, 120, 240, 240 s (exponential, bounded) on the injected clock:
    the fake clock makes them instant, and the retry comes when that clock says, not the machine's."""
    events: list[FleetEvent] = []
    fleet, clock = scripted_fleet([ServerError(code=15, msg="Remote service error")] * 5, events)

    await poll_once(fleet)

    assert [30.0, 60.0, 120.0, 240.0, 240.0] == clock.sleeps[:5]
    assert ["backing_off"] * 5 + ["synced"] == [event.kind for event in events][:6]


@pytest.mark.parametrize(
    ("error", "reported"),
    [
        (WindowTooDenseError("one second holds more than Taobao lists"), "WindowTooDenseError"),
        (InvalidRequestError(code=31, msg="Invalid timestamp"), "InvalidRequestError"),  # refused twice in a row
        (ExceptionGroup("fullinfo", [ServerError(code=15, msg="Remote service error")]), "ServerError"),
        # Written by a newer release during a rolling upgrade: a newer worker may be the only reader.
        (CheckpointVersionError("shop-1", found=2, known=1), "CheckpointVersionError"),
    ],
    ids=["dense-second", "timestamp-refused", "group-of-transient", "newer-checkpoint"],
)
async def test_transient_causes_back_off_and_never_pause(error: Exception, reported: str) -> None:
    """A dense second, a refused timestamp, or a task group's transient error back off (rule 18):
    the shop is polled again once the cause has passed, and its status names the typed error."""
    events: list[FleetEvent] = []
    fleet, clock = scripted_fleet([error] * 3, events)
    last_errors: list[str | None] = []
    fleet.on_event = lambda event: (events.append(event), last_errors.append(fleet.status("shop-1").last_error))

    await poll_once(fleet)

    assert ["backing_off"] * 3 + ["synced"] == [event.kind for event in events][:4]
    assert [30.0, 60.0, 120.0] == clock.sleeps[:3]
    assert (last_errors[0] or "").startswith(f"{reported}: ")


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationError(code=27, msg="Invalid session"),
        InvalidRequestError(code=25, msg="Invalid Signature"),
        CheckpointCorruptError("shop 'shop-1': stored checkpoint is unreadable"),
        ExceptionGroup("fullinfo", [ServerError(code=15, msg="busy"), AuthenticationError(code=27, msg="expired")]),
    ],
    ids=["session", "signature", "corrupt-checkpoint", "group-with-session"],
)
async def test_causes_only_an_operator_can_fix_pause_with_the_typed_error(error: Exception) -> None:
    """An invalid session, a bad request or a corrupt checkpoint pause the shop; an ExceptionGroup
    is unwrapped, so the pause carries (and next_poll() raises) the error inside it."""
    events: list[FleetEvent] = []
    fleet, _ = scripted_fleet([error], events)
    expected = type(error.exceptions[-1] if isinstance(error, ExceptionGroup) else error)

    with pytest.raises(expected):
        await poll_once(fleet)

    assert ["paused"] == [event.kind for event in events]
    assert isinstance(events[0].error, expected)
    assert "paused" == fleet.status("shop-1").state


async def test_push_deduplication_tells_two_versions_of_one_second_apart(emulator: Emulator) -> None:
    """Created, then paid within the same second: both versions print the same ``modified``. The
    paid one is delivered although the created one was (its status differs); the same version
    twice is not."""
    got: list[str | None] = []

    async def handler(shop: Shop, batch: Batch) -> None:
        got.extend(trade.status for trade in batch.trades)

    second = datetime(2026, 11, 11, 0, 0, 1, tzinfo=CST)

    def version(status: str) -> Trade:
        return Trade(tid=4_000_000_000_000_000_001, modified=second, created=second, raw={}, status=status)

    async with client_for(emulator) as client:
        fleet = Fleet(client, store=MemoryStore(), handler=handler)
        fleet.add(Shop(id="shop-1", session="session-1"))
        created = await fleet.deliver_pushed("shop-1", [version("WAIT_BUYER_PAY")])
        paid = await fleet.deliver_pushed("shop-1", [version("WAIT_SELLER_SEND_GOODS")])
        again = await fleet.deliver_pushed("shop-1", [version("WAIT_SELLER_SEND_GOODS")])

    assert (1, 1, 0) == (created, paid, again)
    assert ["WAIT_BUYER_PAY", "WAIT_SELLER_SEND_GOODS"] == got
