"""Workers in one process against the emulator and a real PostgreSQL: sharing, hand-over, sessions, bans."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from attrs import evolve

from taobao_ordersync import Batch, Checkpoint, FleetEvent, PollPolicy, Schedule, Shop, TmcConsumer, TopClient
from taobao_ordersync.errors import HeartbeatFailedError, LeaseLostError, SessionUnavailableError
from taobao_ordersync.postgres import PostgresStore
from taobao_ordersync.testing import Chaos, Collector, Emulator
from taobao_ordersync.testing.postgres import LocalPostgres
from taobao_ordersync.worker import Worker
from tests.conftest import client_for

from .conftest import new_schema, run_sql

FAST = PollPolicy(min_interval=0.2, max_interval=1.0, min_backoff=0.2, max_backoff=1.0, jitter=0.2)
LEASE = 1.5


class Cluster:
    """N workers (each with its own client and store, as separate processes would have) on one schema."""

    def __init__(self, emu: Emulator, dsn: str, schema: str, stack: AsyncExitStack) -> None:
        self.emu = emu
        self.dsn = dsn
        self.schema = schema
        self.stack = stack
        self.collectors: dict[str, Collector] = defaultdict(Collector)
        self.phases: dict[str, list[str]] = defaultdict(list)  # per shop, the phase of each batch with trades
        self.consumers: dict[str, TmcConsumer] = {}
        self.sessions: dict[str, str] = {state.id: state.session for state in emu.shops}
        self.events: list[FleetEvent] = []
        self.workers: list[Worker] = []
        self.runs: list[asyncio.Task[None]] = []

    async def handler(self, shop: Shop, batch: Batch) -> None:
        if batch.trades:
            self.phases[shop.id].append(batch.phase)
        for trade in batch.trades:
            self.collectors[shop.id].add(trade)

    async def start(
        self,
        name: str,
        *,
        rate: float = 400.0,
        sessions: Any = None,
        policy: PollPolicy = FAST,
        push_group: str | None = None,
        **options: Any,
    ) -> Worker:
        """Start a worker; with ``push_group``, it also consumes that TMC group (fullinfo push)."""
        client = await self.stack.enter_async_context(client_for(self.emu, rate=rate, clock_refresh=0))
        store = await self.stack.enter_async_context(PostgresStore(self.dsn, schema=self.schema))
        worker = Worker(
            client,
            store,
            self.handler,
            sessions or self.sessions.get,
            worker_id=name,
            lease=LEASE,
            on_event=self.events.append,
            policy=policy,
            concurrency=4,
            lag=5,
            **options,
        )
        push = None
        if push_group is not None:
            push = TmcConsumer(
                worker.fleet,
                group_name=push_group,
                shop_for={state.nick: state.id for state in self.emu.shops},
                mode="fullinfo",
                idle_wait=0.05,
            )
            self.consumers[name] = push
        self.workers.append(worker)
        self.runs.append(asyncio.create_task(worker.run(push=push)))
        return worker

    async def stop(self, worker: Worker) -> None:
        worker.stop()
        await asyncio.wait_for(self.runs[self.workers.index(worker)], 10)

    async def synced(self, admin: PostgresStore, shop_ids: list[str], *, within: float = 60) -> None:
        """Wait until every shop finished its backfill and its checkpoint reached Taobao's now - lag - 2 s."""
        target = self.emu.now().timestamp() - 7
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            shops = {shop.shop_id: shop for shop in await admin.statuses()}
            if all(
                (c := shops[shop_id].checkpoint) is not None and c.backfill_done and c.cursor.timestamp() >= target
                for shop_id in shop_ids
            ):
                return
            await asyncio.sleep(0.1)
        raise AssertionError("shops did not catch up in time")

    async def verify(self, admin: PostgresStore, shop_ids: list[str]) -> None:
        for shop_id in shop_ids:
            stored = await admin.load(shop_id)
            assert stored is not None
            report = self.emu.verify_sync(Checkpoint.from_json(stored.data, shop_id=shop_id), self.collectors[shop_id])
            assert 0 == report.lost, (shop_id, report)


@asynccontextmanager
async def cluster(
    make_emulator: Callable[..., Any], server: LocalPostgres, **emulator: Any
) -> AsyncIterator[tuple[Cluster, PostgresStore]]:
    async with make_emulator(**emulator) as emu, AsyncExitStack() as stack:
        schema = new_schema()
        admin = await stack.enter_async_context(PostgresStore(server.dsn, schema=schema))
        await admin.add_shops(*(state.id for state in emu.shops))
        group = Cluster(emu, server.dsn, schema, stack)
        try:
            yield group, admin
        finally:
            for worker in group.workers:
                worker.stop()
            await asyncio.gather(*group.runs, return_exceptions=True)


async def owners(admin: PostgresStore) -> dict[str, str | None]:
    return {shop.shop_id: shop.lease.owner for shop in await admin.statuses() if shop.lease}


@pytest.mark.every_postgres
async def test_two_workers_split_the_shops_and_the_budget_and_lose_nothing(
    make_emulator: Any, postgres_server: LocalPostgres
) -> None:
    """12 shops under chaos, two workers: six shops and half the rate each, every shop complete."""
    chaos = Chaos(error_rate=0.03, ban_rate=0.002, move_while_paging=0.2)
    async with cluster(make_emulator, postgres_server, shops=12, seed=5, chaos=chaos) as (group, admin):
        first = await group.start("w1")
        second = await group.start("w2")
        shop_ids = [state.id for state in group.emu.shops]

        await group.synced(admin, shop_ids)

        held = await owners(admin)
        assert [6, 6] == sorted(list(held.values()).count(name) for name in ("w1", "w2"))
        assert 200.0 == first.client.rate == second.client.rate
        assert all(shop_id in worker.fleet for worker in (first, second) for shop_id in worker.shop_ids)
        await group.verify(admin, shop_ids)
        await asyncio.sleep(LEASE / 2)  # a heartbeat reports each shop's state
        reported = await admin.statuses()
        assert all(shop.state in ("waiting", "syncing", "due") and shop.last_error is None for shop in reported)


@pytest.mark.every_postgres
async def test_a_stopping_worker_hands_its_shops_over_at_once(
    make_emulator: Any, postgres_server: LocalPostgres
) -> None:
    """A graceful stop releases every lease: the survivor holds all shops well before a lease would run out."""
    async with cluster(make_emulator, postgres_server, shops=6, seed=6) as (group, admin):
        leaving = await group.start("leaving")
        staying = await group.start("staying")
        shop_ids = [state.id for state in group.emu.shops]
        await group.synced(admin, shop_ids)

        stopped_at = time.monotonic()
        await group.stop(leaving)
        while set((await owners(admin)).values()) != {"staying"}:  # noqa: ASYNC110 - polling the database
            await asyncio.sleep(0.02)
        handed_over = time.monotonic() - stopped_at

        assert handed_over < LEASE
        while staying.client.rate != 400.0:  # the whole budget once the leaver is unregistered
            assert time.monotonic() - stopped_at < LEASE
            await asyncio.sleep(0.02)
        group.emu.advance(5)
        await group.synced(admin, shop_ids)
        await group.verify(admin, shop_ids)


async def test_a_shop_without_session_is_reported_and_the_others_sync(
    make_emulator: Any, postgres_server: LocalPostgres
) -> None:
    """The provider has no session for one shop: status shows why, the rest sync; a session later resumes it."""
    async with cluster(make_emulator, postgres_server, shops=4, seed=7) as (group, admin):
        missing = group.sessions.pop("shop-3")
        await group.start("w1")
        healthy = ["shop-1", "shop-2", "shop-4"]

        await group.synced(admin, healthy)

        shop = {shop.shop_id: shop for shop in await admin.statuses()}["shop-3"]
        assert shop.checkpoint is None
        assert "SessionUnavailableError" in (shop.last_error or "")
        assert any(
            isinstance(event.error, SessionUnavailableError) and event.shop_id == "shop-3" for event in group.events
        )
        group.sessions["shop-3"] = missing
        await group.synced(admin, ["shop-3"])
        await group.verify(admin, [*healthy, "shop-3"])


@pytest.mark.every_postgres
async def test_a_ban_met_by_one_worker_pauses_the_other(make_emulator: Any, postgres_server: LocalPostgres) -> None:
    """Worker A meets a code-7 ban: B's client holds every call too, told by NOTIFY before its next heartbeat."""
    async with cluster(make_emulator, postgres_server, shops=4, seed=8) as (group, admin):
        a = await group.start("a")
        b = await group.start("b")
        await group.synced(admin, [state.id for state in group.emu.shops])
        calm = group.emu.chaos

        group.emu.chaos = evolve(calm, ban_rate=1.0, ban_seconds=30)
        group.emu.advance(5)
        for worker in (a, b):
            for shop_id in worker.shop_ids:
                worker.fleet.wake(shop_id)
        while a.client.bans + b.client.bans == 0:  # noqa: ASYNC110 - polling client counters
            await asyncio.sleep(0.01)
        seen = time.monotonic()
        while min(a.client.held_for, b.client.held_for) < 20:  # noqa: ASYNC110 - polling client state
            await asyncio.sleep(0.01)
        group.emu.chaos = calm

        assert time.monotonic() - seen < LEASE / 3
        bans = group.emu.bans_issued
        await asyncio.sleep(0.5)
        assert bans == group.emu.bans_issued  # both hold: nobody keeps knocking


async def test_workers_pause_while_postgres_is_down_and_take_their_shops_back(make_emulator: Any) -> None:
    """PostgreSQL stops for longer than a lease: the worker drops its shops, then re-claims them and loses nothing."""
    with LocalPostgres() as server:
        async with cluster(make_emulator, server, shops=3, seed=9) as (group, admin):
            worker = await group.start("lonely")
            shop_ids = [state.id for state in group.emu.shops]
            await group.synced(admin, shop_ids)

            await asyncio.to_thread(server.halt)
            dropped_at = time.monotonic()
            while worker.shop_ids:
                assert time.monotonic() - dropped_at < 4 * LEASE
                await asyncio.sleep(0.05)
            before = len(group.collectors["shop-1"].newest)
            group.emu.flash_sale("shop-1", 300, seconds=2)
            await asyncio.to_thread(server.resume)

            while len(group.collectors["shop-1"].newest) < before + 300:
                assert time.monotonic() - dropped_at < 30, "the shops were not taken back"
                await asyncio.sleep(0.05)
            await group.synced(admin, shop_ids)
            assert {"lonely"} == set((await owners(admin)).values())
            await group.verify(admin, shop_ids)
            # Notifications came back with the database: a shared ban arrives by NOTIFY again.
            heard = worker.bans_notified
            await admin.ban(0.5)
            while worker.bans_notified == heard:
                assert time.monotonic() - dropped_at < 40, "no NOTIFY after the outage"
                await asyncio.sleep(0.02)


async def test_a_joining_worker_gets_its_share_within_a_lease(
    make_emulator: Any, postgres_server: LocalPostgres
) -> None:
    """Two workers hold 12 shops; a third joins: the others give back, and within a lease (after its
    settling heartbeat) each holds four, with nothing lost in the moves."""
    async with cluster(make_emulator, postgres_server, shops=12, seed=10) as (group, admin):
        await group.start("a")
        await group.start("b")
        shop_ids = [state.id for state in group.emu.shops]
        await group.synced(admin, shop_ids)

        joined_at = time.monotonic()
        late = await group.start("c")
        while True:
            held = list((await owners(admin)).values())
            if sorted(held.count(name) for name in "abc") == [4, 4, 4]:
                break
            assert time.monotonic() - joined_at < LEASE + late.heartbeat_every, held
            await asyncio.sleep(0.05)

        assert 400.0 / 3 == pytest.approx(late.client.rate)
        await group.synced(admin, shop_ids)
        await group.verify(admin, shop_ids)


async def test_a_lone_worker_claims_at_its_first_heartbeat(make_emulator: Any, postgres_server: LocalPostgres) -> None:
    """Nobody else is live, so nobody has a rate to lower: the first heartbeat takes the whole
    budget and the shops (no settling second spent idle)."""
    async with cluster(make_emulator, postgres_server, shops=4, seed=12) as (group, admin):
        worker = await group.start("a")
        deadline = time.monotonic() + 10
        while not any(owner == "a" for owner in (await owners(admin)).values()):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert 1 == worker.heartbeats
        assert 400.0 == worker.client.rate


@pytest.mark.every_postgres
async def test_the_rates_workers_report_never_add_up_to_more_than_the_budget(
    make_emulator: Any, postgres_server: LocalPostgres
) -> None:
    """Three workers join one after the other: each starts on what the others have left, so the
    rates in the registry (each the most that worker sends) never sum above the app's budget, and
    end at a third each."""
    async with cluster(make_emulator, postgres_server, shops=6, seed=13) as (group, admin):
        seen: list[float] = []
        started = []
        for name in ("a", "b", "c"):
            started.append(await group.start(name))
            until = time.monotonic() + 0.6
            while time.monotonic() < until:
                seen.append(sum(w.rate or 0.0 for w in await admin.workers() if w.alive))
                await asyncio.sleep(0.02)
        deadline = time.monotonic() + 3 * LEASE
        while any(worker.client.rate != pytest.approx(400.0 / 3) for worker in started):
            assert time.monotonic() < deadline, [worker.client.rate for worker in started]
            seen.append(sum(w.rate or 0.0 for w in await admin.workers() if w.alive))
            await asyncio.sleep(0.02)
        assert max(seen) <= 400.0 * (1 + 1e-9)


async def test_shops_that_turn_heavy_later_are_spread_over_the_workers(
    make_emulator: Any, postgres_server: LocalPostgres
) -> None:
    """Two workers share 16 quiet shops; then two of one worker's shops get a flash sale that goes
    on and on. Measured by their calls per minute they turn heavy, and after their minimum stay one
    of them moves to the other worker (in exchange for a light shop), once: no shop bounces back,
    and no shop loses anything. (Verified after activity stops and one more poll: a trade paid after
    its window closed is, by design, delivered by the next window, so a check while sold trades are
    still being paid would call it missing.)"""
    async with cluster(make_emulator, postgres_server, shops=16, seed=14) as (group, admin):
        first = await group.start("a", min_stay=1.0)
        await group.start("b", min_stay=1.0)
        shop_ids = [state.id for state in group.emu.shops]
        await group.synced(admin, shop_ids)
        held = await owners(admin)
        hot = [shop_id for shop_id in shop_ids if held[shop_id] == "a"][:2]

        async def sale() -> None:
            while True:
                for shop_id in hot:
                    group.emu.flash_sale(shop_id, 300, seconds=1)
                await asyncio.sleep(0.3)

        seller = asyncio.create_task(sale())
        moves: list[tuple[str, str | None]] = []
        try:
            deadline = time.monotonic() + 30
            last = {shop_id: held[shop_id] for shop_id in hot}
            while {last[shop_id] for shop_id in hot} != {"a", "b"}:
                assert time.monotonic() < deadline, last
                await asyncio.sleep(0.1)
                now = await owners(admin)
                for shop_id in hot:
                    if now[shop_id] is not None and now[shop_id] != last[shop_id]:
                        moves.append((shop_id, now[shop_id]))
                        last[shop_id] = now[shop_id]
            await asyncio.sleep(2 * LEASE)  # the sale goes on: nothing moves back
            now = await owners(admin)
            assert {now[shop_id] for shop_id in hot} == {"a", "b"}
            assert 1 == len(moves)
            # A hand-over nobody took within min_stay (a loaded machine) is claimed back and
            # offered again, so the giver may count more than one; the shop moved once.
            assert first.handed_over >= 1
        finally:
            seller.cancel()
        group.emu.pause_activity()  # nothing changes after this: every change becomes due
        await asyncio.sleep(5 + 3)  # the last changes are older than the lag
        await group.synced(admin, shop_ids)
        await group.verify(admin, shop_ids)


async def test_a_slow_session_provider_never_delays_the_heartbeat(
    make_emulator: Any, postgres_server: LocalPostgres
) -> None:
    """Each session lookup takes 0.6 s: one after another, 12 would stall the heartbeat for 7 s, past
    the 1.5 s lease. Looked up off the heartbeat, concurrently, the heartbeat keeps its pace."""
    async with cluster(make_emulator, postgres_server, shops=12, seed=11) as (group, admin):

        async def slow_sessions(shop_id: str) -> str | None:
            await asyncio.sleep(0.6)
            return group.sessions.get(shop_id)

        worker = await group.start("patient", sessions=slow_sessions)
        shop_ids = [state.id for state in group.emu.shops]
        await asyncio.sleep(0.5 + 2.0)  # the settling beat, then 2 s of lookups

        assert worker.heartbeats >= 4  # one every 0.5 s, lookups or not
        await group.synced(admin, shop_ids)
        assert 12 == len(worker.shop_ids)
        assert not [event for event in group.events if event.kind in ("removed", "paused")]
        await group.verify(admin, shop_ids)


async def test_a_paused_shop_gives_its_lease_back(make_emulator: Any, postgres_server: LocalPostgres) -> None:
    """A shop paused on a session that no longer works is not held forever: after a few leases its
    worker releases it (and leaves it to the others for as long), so another worker, whose provider
    has the renewed session, takes it and syncs it; the first worker keeps its healthy shop."""
    async with cluster(make_emulator, postgres_server, shops=2, seed=12) as (group, admin):
        stale = dict(group.sessions)  # this worker's provider never learns the renewed session
        group.emu.expire_session("shop-2")
        first = await group.start("w1", sessions=stale.get, release_paused_after=2 * LEASE)
        while not any(event.kind == "paused" and event.shop_id == "shop-2" for event in group.events):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        paused_at = time.monotonic()
        assert "w1" == (await owners(admin))["shop-2"]

        while (await owners(admin))["shop-2"] == "w1":
            assert time.monotonic() - paused_at < 2 * LEASE + 3 * first.heartbeat_every + 1, "never given back"
            await asyncio.sleep(0.05)
        assert ["shop-1"] == first.shop_ids
        group.sessions["shop-2"] = group.emu.renew_session("shop-2")
        await group.start("w2")

        await group.synced(admin, ["shop-1", "shop-2"])
        assert {"shop-1": "w1", "shop-2": "w2"} == await owners(admin)
        await group.verify(admin, ["shop-1", "shop-2"])


async def test_a_refused_read_from_an_earlier_lease_does_not_drop_the_current_one() -> None:
    """A read left over from a lease this worker lost and has since claimed back is refused with its old
    token: the worker keeps the shop it holds under the new token. A refusal of its current token drops it."""
    store = PostgresStore("postgresql://w@127.0.0.1:9/db")  # never opened

    async def handler(shop: Shop, batch: Batch) -> None:
        pass

    async with TopClient("key", "secret") as client:
        worker = Worker(client, store, handler, lambda shop_id: None, worker_id="w")
        worker._tokens["shop"] = 8
        worker._fleet_event(FleetEvent("shop", "paused", LeaseLostError("stale token 7", token=7)))
        await asyncio.sleep(0)
        assert ["shop"] == worker.shop_ids
        worker._fleet_event(FleetEvent("shop", "paused", LeaseLostError("stale token 8", token=8)))
        await asyncio.sleep(0)
        assert [] == worker.shop_ids


async def test_a_worker_whose_heartbeat_keeps_failing_says_so_and_gives_up(
    make_emulator: Any, postgres_server: LocalPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    """The database answers but refuses every heartbeat (a table is gone). Within a lease the worker warns;
    past a lease it logs an ERROR and `status` (workers()) shows the error and for how long; after
    give_up_after, run() ends with HeartbeatFailedError (the CLI's exit code 11) instead of trying forever."""
    async with cluster(make_emulator, postgres_server, shops=1, seed=13) as (group, admin):
        await run_sql(admin, f"ALTER TABLE {admin.schema}.app RENAME TO app_gone")
        started = time.monotonic()
        worker = await group.start("doomed", give_up_after=3 * LEASE)
        await asyncio.sleep(LEASE / 2)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("heartbeat failed" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)

        await asyncio.sleep(LEASE + 0.2)
        failing_for = worker.heartbeat_failing_for
        assert failing_for is not None and failing_for > LEASE
        loud = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert loud and "no heartbeat for" in loud[0] and "gives up" in loud[0], loud
        record = {w.worker_id: w for w in await admin.workers()}["doomed"]
        assert not record.alive and "app" in (record.last_error or "")
        assert record.failing_for is not None and record.failing_for > LEASE

        with pytest.raises(HeartbeatFailedError, match="no heartbeat for"):
            await asyncio.wait_for(group.runs[-1], 3 * LEASE)
        assert 3 * LEASE <= time.monotonic() - started < 3 * LEASE + 2
        assert {"shop-1": None} == await owners(admin)
        record = {w.worker_id: w for w in await admin.workers()}["doomed"]
        assert "gave up" in (record.last_error or "")


async def test_push_messages_consumed_by_the_other_worker_reach_the_shops_holder(
    make_emulator: Any, postgres_server: LocalPostgres
) -> None:
    """Two workers, each consuming the TMC group that carries only the other worker's shops: every
    message goes through the push inbox. The holder delivers it by fullinfo (polling is an hour
    apart, so every delivery after the first sync is push, and no checkpoint moves), the consumer
    confirms it only then, the inbox ends empty, and a final poll finds nothing lost."""
    rare = evolve(FAST, min_interval=3600, max_interval=3600)
    async with cluster(make_emulator, postgres_server, shops=2, seed=21) as (group, admin):
        emu = group.emu
        workers = [await group.start(name, policy=rare, push_group=f"for-{name}") for name in ("w1", "w2")]
        shop_ids = [state.id for state in emu.shops]
        await group.synced(admin, shop_ids)
        deadline = time.monotonic() + 30
        while {"w1", "w2"} != set((held := await owners(admin)).values()):
            assert time.monotonic() < deadline, held  # every shop held, and by both workers
            await asyncio.sleep(0.05)  # the second worker's share is being handed over
        holders = dict(zip(("w1", "w2"), workers, strict=True))
        while not all(  # each holder's first poll is done: the next is an hour away
            shop_id in (fleet := holders[held[shop_id]].fleet)  # type: ignore[index]
            and fleet.status(shop_id).state == "waiting"
            and (fleet.status(shop_id).schedule or Schedule(interval=0)).polls > 0
            for shop_id in shop_ids
        ):
            assert time.monotonic() < deadline, held
            await asyncio.sleep(0.05)
        assert held == await owners(admin)  # nothing moved meanwhile
        while not all(emu.tmc.permitted(shop_id) for shop_id in shop_ids):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for state in emu.shops:  # each seller's messages go to the group the other worker consumes
            emu.tmc.assign_group(state.nick, "for-w2" if held[state.id] == "w1" else "for-w1")
        revisions = {shop_id: (await admin.load(shop_id)).revision for shop_id in shop_ids}  # type: ignore[union-attr]
        before = {shop_id: len(group.phases[shop_id]) for shop_id in shop_ids}

        changed = 0
        for state in emu.shops:
            for tid in list(emu.shop(state.id).trades)[-3:]:
                emu.modify(state.id, tid)
                changed += 1
        deadline = time.monotonic() + 20
        while not (
            emu.tmc.confirmed >= changed
            and all(consumer.pending == 0 for consumer in group.consumers.values())
            and await admin.push_backlog() == 0
        ):
            assert time.monotonic() < deadline, (emu.tmc.confirmed, changed, await admin.push_backlog())
            await asyncio.sleep(0.05)

        stats = {name: consumer.stats for name, consumer in group.consumers.items()}
        assert changed == sum(s.forwarded for s in stats.values()) == sum(s.relayed for s in stats.values())
        assert changed == sum(s.pushed for s in stats.values())
        assert all(s.unmapped == 0 for s in stats.values())
        for shop_id in shop_ids:  # delivered by push alone, checkpoints untouched
            assert ["push"] * 3 == group.phases[shop_id][before[shop_id] :]
            assert revisions[shop_id] == (await admin.load(shop_id)).revision  # type: ignore[union-attr]

        for worker in workers:
            worker.fleet.wake()
        await group.synced(admin, shop_ids)
        await group.verify(admin, shop_ids)
