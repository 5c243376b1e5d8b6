"""Freshness of push and polling, measured on the emulator: change -> handler, calls, lost.

``measure_push`` runs live shops on the emulator for a while, with a ``Fleet`` and (unless
``mode="polling"``) a ``TmcConsumer``, and measures for each change (the TMC broker's ground
truth) the seconds until the handler first received that version or a newer one. The
``demo --tmc`` command and the benchmarks' ``push`` scenario use it. It runs in real time.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections import Counter, defaultdict
from datetime import datetime
from typing import Final, Literal

from attrs import define, field

from taobao_ordersync._retry import RetryPolicy
from taobao_ordersync._time import floor_second
from taobao_ordersync.client import TopClient
from taobao_ordersync.fleet import Fleet, PollPolicy
from taobao_ordersync.models import Shop
from taobao_ordersync.stores import MemoryStore
from taobao_ordersync.syncer import Batch
from taobao_ordersync.testing._shop import ShopProfile
from taobao_ordersync.testing._tmc import TmcChaos
from taobao_ordersync.testing.emulator import Emulator
from taobao_ordersync.testing.naive import Collector
from taobao_ordersync.tmc import TmcConsumer, TmcStats, tmc_user_permit

__all__ = ["PushRun", "measure_push"]

Mode = Literal["fullinfo", "poll", "auto", "polling"]
_TMC_METHODS: Final = ("taobao.tmc.messages.consume", "taobao.tmc.messages.confirm")


@define(kw_only=True)
class PushRun:
    """What one ``measure_push`` run saw.

    ``ages`` holds, for each change during the measured span, the seconds until the handler had
    it (``inf`` when it had not arrived ``tail`` seconds after the span: a dropped message waits
    for the next reconciling poll). ``calls`` are the API calls during the span, by method.
    """

    mode: Mode
    seconds: float
    tail: float
    ages: list[float] = field(factory=list)
    calls: dict[str, int] = field(factory=dict)
    lost: int = 0
    duplicates: int = 0
    unpublished: int = 0  # changes whose message chaos never published (whole run)
    stats: TmcStats | None = None

    @property
    def changes(self) -> int:
        return len(self.ages)

    @property
    def late(self) -> int:
        """Changes not delivered within ``tail`` seconds after the span."""
        return sum(1 for age in self.ages if math.isinf(age))

    def percentile(self, q: int) -> float:
        """The ``q``-th percentile of ``ages`` (``inf`` if it falls among the late)."""
        if not self.ages:
            return math.nan
        ordered = sorted(self.ages)
        if len(ordered) == 1:
            return ordered[0]
        finite = [age if not math.isinf(age) else 1e12 for age in ordered]
        value = statistics.quantiles(finite, n=100, method="inclusive")[q - 1]
        return math.inf if value >= 1e12 else value

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def calls_per_change(self) -> float:
        return self.total_calls / self.changes if self.changes else math.nan

    def describe(self, value: float) -> str:
        return f"> {self.tail:.0f} s" if math.isinf(value) else f"{value:.1f} s"


async def measure_push(
    mode: Mode,
    *,
    shops: int = 4,
    seconds: float = 60.0,
    orders_per_day: float = 21_600.0,
    lag: float = 10.0,
    interval: float = 30.0,
    rate: float = 20.0,
    flood: int = 0,
    chaos: TmcChaos | None = None,
    seed: int = 2026,
) -> PushRun:
    """Run ``shops`` live shops for ``seconds`` (after a first sync) and measure every change.

    ``mode``: the ``TmcConsumer`` mode, or ``"polling"`` for polling alone (no TMC at all).
    Polls come every ``interval`` seconds (``reconcile_interval`` 300 s while push is healthy),
    windows ``lag`` behind, all on one app budget of ``rate`` calls a second. ``flood`` trades
    are sold by shop 1 in 10 seconds a third of the way in. After the span the run goes on for
    ``lag + interval + 3`` seconds (the tail), then activity stops, two polls run and what the
    handler received is verified (``lost``, ``duplicates``).
    """
    tail = lag + interval + 3.0
    profile = ShopProfile(orders_per_day=orders_per_day, history_days=0.05, memo_share=0.3)
    async with Emulator(shops=shops, profile=profile, seed=seed, tmc=chaos) as emu:
        retry = RetryPolicy(base_delay=0.05, max_delay=0.5, ban_margin=0.2)
        async with TopClient(emu.app_key, emu.app_secret, url=emu.url, rate=rate, retry=retry) as client:
            collectors: dict[str, Collector] = defaultdict(Collector)
            arrivals: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)

            async def handler(shop: Shop, batch: Batch) -> None:
                now = emu.now()
                for trade in batch.trades:
                    collectors[shop.id].add(trade)
                    arrivals[trade.tid].append((trade.modified, now))

            policy = PollPolicy(min_interval=interval, max_interval=interval, min_backoff=0.5, max_backoff=5.0)
            fleet = Fleet(client, store=MemoryStore(), handler=handler, policy=policy, lag=lag, seed=seed)
            for state in emu.shops:
                fleet.add(Shop(id=state.id, session=state.session))
            consumer = None
            if mode == "polling":
                for state in emu.shops:
                    emu.tmc.permit(state, None)  # the ground truth of changes only: nobody consumes
            else:
                for state in emu.shops:
                    await tmc_user_permit(client, state.session)
                consumer = TmcConsumer(fleet, shop_for={state.nick: state.id for state in emu.shops}, mode=mode)
            tasks = [asyncio.create_task(fleet.run())]
            if consumer is not None:
                tasks.append(asyncio.create_task(consumer.run()))
            try:
                await asyncio.gather(*(fleet.next_poll(state.id) for state in emu.shops))
                started = emu.now()
                before = Counter(client.call_counts)
                if flood:
                    await asyncio.sleep(seconds / 3)
                    emu.flash_sale(emu.shops[0].id, flood, seconds=10)
                    await asyncio.sleep(seconds * 2 / 3)
                else:
                    await asyncio.sleep(seconds)
                ended = emu.now()
                calls = Counter(client.call_counts)
                calls.subtract(before)
                await asyncio.sleep(tail)
                seen_until = emu.now()
                emu.pause_activity()
                for _ in range(2):
                    fleet.wake()
                    await asyncio.gather(*(fleet.next_poll(state.id) for state in emu.shops))
            finally:
                if consumer is not None:
                    consumer.stop()
                fleet.stop()
                await asyncio.gather(*tasks)
            run = PushRun(
                mode=mode,
                seconds=(ended - started).total_seconds(),
                tail=tail,
                stats=None if consumer is None else consumer.stats,
            )
            run.calls = {method: count for method, count in calls.items() if count > 0}
            for change in emu.tmc.changes:
                if not started <= change.modified < ended:
                    continue
                shown = floor_second(change.modified)
                times = [at for modified, at in arrivals.get(change.tid, []) if modified >= shown and at <= seen_until]
                run.ages.append(max(0.0, (min(times) - change.modified).total_seconds()) if times else math.inf)
            run.unpublished = sum(not change.published for change in emu.tmc.changes)
            for state in emu.shops:
                checkpoint = await fleet.syncer.checkpoint(state.id)
                if checkpoint is None:
                    raise RuntimeError(f"{state.id} has no checkpoint after its sync")
                report = emu.verify_sync(checkpoint, collectors[state.id])
                run.lost += report.lost
                run.duplicates += report.duplicates
            return run
