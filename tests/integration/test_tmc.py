"""Push and poll: TMC messages for freshness, the fleet's polling as the proof."""

from __future__ import annotations

import asyncio
import statistics
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from tests.conftest import client_for

from taobao_ordersync import Batch, Fleet, MemoryStore, PollPolicy, Shop, TmcConsumer, TransportError
from taobao_ordersync._time import floor_second
from taobao_ordersync.testing import Collector, Emulator, ShopProfile, TmcChaos
from taobao_ordersync.tmc import TmcMessage

RARE = PollPolicy(min_interval=3600, max_interval=3600, min_backoff=0.2, max_backoff=1.0, jitter=0.0)
FAST = PollPolicy(min_interval=1.0, max_interval=2.0, min_backoff=0.2, max_backoff=1.0, jitter=0.1)


class CountingStore(MemoryStore):
    """A MemoryStore that counts its saves."""

    def __init__(self) -> None:
        super().__init__()
        self.saves = 0

    async def save(self, shop_id: str, data: str, *, expected_revision: Any) -> Any:
        self.saves += 1
        return await super().save(shop_id, data, expected_revision=expected_revision)


class Recorder:
    """The app's handler: a collector per shop, the phase of each delivery, when it arrived."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.collectors: dict[str, Collector] = defaultdict(Collector)
        self.arrivals: dict[int, list[tuple[datetime, datetime, str]]] = defaultdict(list)

    async def __call__(self, shop: Shop, batch: Batch) -> None:
        now = self.emu.now()
        for trade in batch.trades:
            self.collectors[shop.id].add(trade)
            self.arrivals[trade.tid].append((trade.modified, now, batch.phase))

    def freshness(self, since: datetime, shops: set[str] | None = None) -> list[float]:
        """Seconds from each change after ``since`` to the first delivery at least that new."""
        ages = []
        for change in self.emu.tmc.changes:
            if change.modified < since or (shops is not None and change.shop_id not in shops):
                continue
            shown = floor_second(change.modified)
            times = [at for modified, at, _ in self.arrivals.get(change.tid, []) if modified >= shown]
            if times:
                ages.append(max(0.0, (min(times) - change.modified).total_seconds()))
        return ages


async def _until(condition: Callable[[], bool], seconds: float) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def _running(fleet: Fleet, consumer: TmcConsumer, body: Callable[[], Awaitable[None]]) -> None:
    tasks = [asyncio.create_task(fleet.run()), asyncio.create_task(consumer.run())]
    try:
        await body()
    finally:
        consumer.stop()
        fleet.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def test_push_is_fresh_and_never_moves_a_checkpoint(make_emulator: Any) -> None:
    """Changes reach the handler by fullinfo within seconds, while no checkpoint is saved.

    Polling is made rare (an hour), so every delivery after the first sync is push; the store
    must see no save and the committed cursor must not move. Messages are confirmed once handed over.
    """
    async with make_emulator(shops=2, seed=11, profile=ShopProfile(orders_per_day=40, history_days=1)) as emu:
        recorder = Recorder(emu)
        store = CountingStore()
        async with client_for(emu, clock_refresh=0) as client:
            for state in emu.shops:
                await client.call("taobao.tmc.user.permit", {}, session=state.session)
            fleet = Fleet(client, store=store, handler=recorder, policy=RARE, lag=2)
            for state in emu.shops:
                fleet.add(Shop(id=state.id, session=state.session))
            consumer = TmcConsumer(fleet, shop_for={s.nick: s.id for s in emu.shops}, mode="fullinfo", idle_wait=0.05)

            async def body() -> None:
                await asyncio.wait_for(asyncio.gather(fleet.next_poll("shop-1"), fleet.next_poll("shop-2")), 20)
                saves = store.saves
                cursors = {s.id: (await fleet.syncer.checkpoint(s.id)) for s in emu.shops}
                started = floor_second(emu.now())
                emu.flash_sale("shop-1", 5, seconds=1, start=started)
                for tid in list(emu.shop("shop-2").trades)[-3:]:
                    emu.modify("shop-2", tid)
                await _until(lambda: emu.tmc.confirmed >= 8 and consumer.pending == 0, 10)
                assert saves == store.saves  # push saved nothing
                assert cursors == {s.id: (await fleet.syncer.checkpoint(s.id)) for s in emu.shops}
                ages = recorder.freshness(started)
                assert len(ages) >= 8, ages
                assert max(ages) < 3.0, ages

            await _running(fleet, consumer, body)
    assert consumer.stats.fetched >= 8
    phases = {phase for arrivals in recorder.arrivals.values() for _, _, phase in arrivals}
    assert "push" in phases


async def test_lost_zero_under_message_chaos_and_a_flood(make_emulator: Any) -> None:
    """5% of messages never published, duplicates, reordering, redelivery, delays and a flash sale
    over the push budget: lost = 0, no version delivered twice, the flood became early polls,
    and freshness stays within seconds for the quiet shops."""
    chaos = TmcChaos(
        drop_rate=0.05, duplicate_rate=0.2, redeliver_rate=0.2, reorder=True, max_delay=0.5, redeliver_after=2
    )
    busy = ShopProfile(orders_per_day=86_400 / 2, history_days=0.02)
    async with make_emulator(shops=3, seed=12, profile=busy, tmc=chaos) as emu:
        recorder = Recorder(emu)
        async with client_for(emu, clock_refresh=0) as client:
            for state in emu.shops:
                await client.call("taobao.tmc.user.permit", {}, session=state.session)
            fleet = Fleet(client, store=MemoryStore(), handler=recorder, policy=FAST, lag=2)
            for state in emu.shops:
                fleet.add(Shop(id=state.id, session=state.session))
            consumer = TmcConsumer(
                fleet, shop_for={s.nick: s.id for s in emu.shops}, push_rate=20, idle_wait=0.05, reconcile_interval=3
            )

            async def body() -> None:
                await asyncio.wait_for(asyncio.gather(*(fleet.next_poll(s.id) for s in emu.shops)), 20)
                started = emu.now()
                flood_at = asyncio.get_running_loop().time()
                emu.flash_sale("shop-1", 300, seconds=2)
                await asyncio.sleep(5)
                elapsed = asyncio.get_running_loop().time() - flood_at
                assert consumer.stats.fetched <= 20 * elapsed + 21  # the budget held
                emu.pause_activity()
                await asyncio.sleep(3)  # the last messages
                for _ in range(2):
                    fleet.wake()
                    await asyncio.wait_for(asyncio.gather(*(fleet.next_poll(s.id) for s in emu.shops)), 20)
                for label, shops in (("flooded shop", {"shop-1"}), ("quiet shops", {"shop-2", "shop-3"})):
                    ages = recorder.freshness(started, shops)
                    print(
                        f"{label}: freshness over {len(ages)} changes: p50 {statistics.median(ages):.2f} s, "
                        f"p99 {statistics.quantiles(ages, n=100)[98]:.2f} s"
                    )
                print(consumer.stats)

            await _running(fleet, consumer, body)
    for state in emu.shops:
        checkpoint = await fleet.syncer.checkpoint(state.id)
        assert checkpoint is not None
        report = emu.verify_sync(checkpoint, recorder.collectors[state.id])
        assert 0 == report.lost, (state.id, report)
        assert 0 == report.duplicates, (state.id, report)  # push and polling never repeat a version
    assert consumer.stats.early_polls > 0  # the flood beyond the budget
    assert consumer.stats.pushed > 0
    assert consumer.stats.coalesced > 0  # duplicates and redeliveries cost no call
    assert sum(not change.published for change in emu.tmc.changes) > 0


class RecordingRelay:
    """A ``PushRelay`` in memory: what was forwarded, and which of it the test says was delivered."""

    def __init__(self, shops: set[str]) -> None:
        self.shops = shops
        self.forwarded: dict[int, str] = {}
        self.delivered_elsewhere: set[int] = set()

    async def forward(self, shop_id: str, message: TmcMessage) -> bool:
        if shop_id not in self.shops:
            return False
        self.forwarded[message.id] = shop_id
        return True

    async def settled(self, message_ids: Collection[int]) -> set[int]:
        return self.delivered_elsewhere & set(message_ids)

    async def delivered(self, message_ids: Sequence[int]) -> None:
        self.delivered_elsewhere.update(message_ids)  # as the inbox does: delivered, so settled


async def test_messages_of_shops_held_elsewhere_are_relayed_and_confirmed_only_once_delivered(
    make_emulator: Any,
) -> None:
    """A message of a shop the fleet does not hold goes to the relay and stays unconfirmed until the relay
    says its holder delivered it; one of a shop nobody holds is confirmed and dropped; and when the fleet
    loses a shop, the messages still waiting for its poll are relayed too."""
    async with make_emulator(shops=3, seed=13, profile=ShopProfile(orders_per_day=40, history_days=1)) as emu:
        recorder = Recorder(emu)
        async with client_for(emu, clock_refresh=0) as client:
            for state in emu.shops:
                await client.call("taobao.tmc.user.permit", {}, session=state.session)
            # lag 30: shop-1's early poll is due 30 s after its change, long after this test
            fleet = Fleet(client, store=MemoryStore(), handler=recorder, policy=RARE, lag=30)
            fleet.add(Shop(id="shop-1", session=emu.shop("shop-1").session))
            relay = RecordingRelay({"shop-1", "shop-2"})  # shop-3 is registered nowhere
            consumer = TmcConsumer(
                fleet, shop_for={s.nick: s.id for s in emu.shops}, mode="poll", idle_wait=0.05, relay=relay
            )

            async def body() -> None:
                await asyncio.wait_for(fleet.next_poll("shop-1"), 20)
                for shop_id in ("shop-1", "shop-2", "shop-3"):
                    emu.modify(shop_id, next(iter(emu.shop(shop_id).trades)))
                await _until(lambda: len(relay.forwarded) == 1 and emu.tmc.confirmed == 1, 10)
                assert {"shop-2"} == set(relay.forwarded.values())  # shop-3's was the one confirmed
                await asyncio.sleep(0.5)
                assert 1 == emu.tmc.confirmed  # shop-2's waits for its holder; shop-1's for a poll
                relay.delivered_elsewhere.update(relay.forwarded)
                await _until(lambda: emu.tmc.confirmed == 2, 10)

                fleet.remove("shop-1")  # its lease moved: the message waiting for its poll goes along
                await _until(lambda: {"shop-1", "shop-2"} == set(relay.forwarded.values()), 10)
                assert 2 == emu.tmc.confirmed
                relay.delivered_elsewhere.update(relay.forwarded)
                await _until(lambda: emu.tmc.confirmed == 3 and consumer.pending == 0, 10)

            await _running(fleet, consumer, body)
    assert (2, 1) == (consumer.stats.forwarded, consumer.stats.unmapped)


async def test_a_message_relayed_before_its_shop_opened_here_is_delivered_by_this_consumer(
    make_emulator: Any,
) -> None:
    """A worker consumes a message of a shop it has just claimed but not opened yet (its session is being
    looked up): the message goes to the relay, and when the shop opens, this same consumer takes it back
    from the relay, delivers it, and confirms it once the relay says so (it once stayed pending forever)."""
    async with make_emulator(shops=2, seed=14, profile=ShopProfile(orders_per_day=40, history_days=1)) as emu:
        recorder = Recorder(emu)
        async with client_for(emu, clock_refresh=0) as client:
            for state in emu.shops:
                await client.call("taobao.tmc.user.permit", {}, session=state.session)
            fleet = Fleet(client, store=MemoryStore(), handler=recorder, policy=RARE, lag=2)
            fleet.add(Shop(id="shop-1", session=emu.shop("shop-1").session))
            relay = RecordingRelay({"shop-1", "shop-2"})
            consumer = TmcConsumer(
                fleet, shop_for={s.nick: s.id for s in emu.shops}, mode="fullinfo", idle_wait=0.05, relay=relay
            )

            async def body() -> None:
                await asyncio.wait_for(fleet.next_poll("shop-1"), 20)
                tid = next(iter(emu.shop("shop-2").trades))
                emu.modify("shop-2", tid)
                await _until(lambda: len(relay.forwarded) == 1, 10)
                [(message_id, _)] = relay.forwarded.items()
                fleet.add(Shop(id="shop-2", session=emu.shop("shop-2").session))
                message = TmcMessage(id=message_id, topic="taobao_trade_TradeChanged", content={"tid": tid})
                assert 1 == await consumer.take_relayed([("shop-2", message)])
                await _until(lambda: emu.tmc.confirmed == 1 and consumer.pending == 0, 10)
                assert message_id in relay.delivered_elsewhere
                assert any(phase == "push" for _, _, phase in recorder.arrivals[tid])

            await _running(fleet, consumer, body)
    assert (1, 1) == (consumer.stats.forwarded, consumer.stats.relayed)


async def test_an_early_poll_that_cannot_read_taobaos_clock_leaves_its_message_for_a_redelivery(
    make_emulator: Any,
) -> None:
    """The early poll of a message needs Taobao's clock, whose measurement is a call that can fail: the
    message is then left unconfirmed (not held), the consumer keeps running, and TMC's redelivery is
    handled once the clock can be read again."""
    async with make_emulator(
        shops=1, seed=15, profile=ShopProfile(orders_per_day=40, history_days=1), tmc=TmcChaos(redeliver_after=1)
    ) as emu:
        recorder = Recorder(emu)
        async with client_for(emu, clock_refresh=0) as client:
            await client.call("taobao.tmc.user.permit", {}, session=emu.shop("shop-1").session)
            fleet = Fleet(client, store=MemoryStore(), handler=recorder, policy=RARE, lag=2)
            fleet.add(Shop(id="shop-1", session=emu.shop("shop-1").session))
            consumer = TmcConsumer(fleet, shop_for={emu.shop("shop-1").nick: "shop-1"}, mode="poll", idle_wait=0.05)
            measure = client.server_now
            refusals = 0

            async def unreachable() -> datetime:
                nonlocal refusals
                refusals += 1
                raise TransportError("taobao.time.get: connection refused")

            async def body() -> None:
                nonlocal refusals
                await asyncio.wait_for(fleet.next_poll("shop-1"), 20)
                client.server_now = unreachable  # type: ignore[method-assign]
                emu.modify("shop-1", next(iter(emu.shop("shop-1").trades)))
                await _until(lambda: refusals >= 1, 10)
                assert 0 == consumer.pending and 0 == emu.tmc.confirmed  # not held, not confirmed
                client.server_now = measure  # type: ignore[method-assign]
                await _until(lambda: emu.tmc.confirmed == 1 and consumer.pending == 0, 15)

            await _running(fleet, consumer, body)
    assert consumer.stats.failures >= 1 and consumer.stats.early_polls >= 1
