"""The benchmark scenarios: quiet, peak, backfill, shops, the seed article's mistakes, fleet, workers,
decode, memory, tenk.

Every run uses the real ``TopClient`` (rate 5,000/s, ``RetryPolicy.no_wait()``) over
loopback against the real emulator in a child process (``_remote``). Shop activity
over a poll interval is simulated at once with ``advance``; the client's local clock
moves with it (``VirtualClock``), so its clock estimate and ``clock_refresh`` behave
as over real time. Every run ends the same way: shop activity stops, one more poll
runs, and what the consumer kept is compared with the emulator's ground truth.
``fleet`` (in ``_fleet``) sets its own rates and schedule.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final

from attrs import define, evolve, field, frozen

from benchmarks._decode import decode
from benchmarks._fleet import FleetRun, fleet
from benchmarks._measure import Meter, Row, list_calls, time_calls
from benchmarks._memory import memory
from benchmarks._push import push as _push
from benchmarks._remote import Check, Minimum, RemoteEmulator, VirtualClock
from benchmarks._tenk import tenk
from benchmarks._workers import workers
from taobao_ordersync import (
    HORIZON,
    Batch,
    MemoryStore,
    RetryPolicy,
    Shop,
    SqliteStore,
    Syncer,
    TaobaoOrderSyncError,
    TopClient,
    Trade,
)
from taobao_ordersync._time import floor_second, from_epoch
from taobao_ordersync.testing import Chaos, Collector, NaiveSyncer, ShopProfile

__all__ = ["EXTRA", "FULL", "QUICK", "SCENARIOS", "Sizes"]

LAG: Final = timedelta(seconds=10)  # Syncer's and NaiveSyncer's default
PAGE: Final = 100  # both syncers' page size (TOP's maximum)
POLL: Final = 600.0  # the seed article's 10-minute interval
SHOP: Final = Shop(id="shop-1", session="session-1")
INCREMENT: Final = "taobao.trades.sold.increment.get"


@frozen(kw_only=True)
class Sizes:
    """How big each scenario is. ``FULL`` is what ``docs/benchmarks.md`` reports."""

    seed: int = 2026
    memory: bool = True  # run a second, traced pass for peak memory where reported
    quiet_orders_per_day: float = 1000.0
    quiet_history_days: float = 10.0
    quiet_polls: int = 24
    peak_orders_per_day: float = 15_000.0
    peak_history_days: float = 1.0
    peak_sale: int = 40_000
    peak_sale_seconds: int = 240
    peak_poll: float = 300.0
    backfill_orders_per_day: float = 1150.0
    backfill_history_days: float = 87.0
    shops: int = 1000
    shop_orders_per_day: float = 100.0
    shop_history_days: float = 2.0
    shop_polls: int = 2
    shop_concurrency: int = 32
    mistakes_orders_per_day: float = 10_000.0
    mistakes_history_days: float = 1.0
    mistakes_rounds: int = 6
    crash_round: int = 3
    crash_after: int = 25
    mistakes_seeds: int = 3
    fleet_shops: tuple[int, ...] = (10, 100, 1000)
    fleet_orders_per_day: float = 250.0  # with 1 day of history: ~250 trades, 3 pages of backfill
    fleet_history_days: float = 1.0
    fleet_rate: float = 50.0  # the client's rate (burst 1) while the backlog is measured
    fleet_high_rate: float = 500.0  # the same backlog again, to see what caps the calls per second
    fleet_concurrency: int = 16  # Fleet's default
    fleet_burst_shops: tuple[int, ...] = (10, 100)  # sizes whose backlog also runs at burst 2 (same rate)
    fleet_steady_polls: int = 2000  # steady-state polls per variant and size (at least 3 rounds)
    worker_shops: int = 2000  # shops shared by 1, 2 and 4 PostgreSQL workers (``workers``)
    decode_pages: int = 50  # 100-trade pages read per pass (``decode``)
    decode_rounds: int = 15  # interleaved passes per way of reading; the median is reported
    memory_trades: float = 1_000_000  # trades in the ``memory`` backfill (not part of the default run)
    tenk_shops: tuple[int, ...] = (10_000,)  # ``tenk`` (not part of the default run): Fleet and 4 workers, each size
    tenk_interval: float = 20.0  # ``tenk`` fairness pass: seconds between a shop's polls (real time)
    tenk_sale_trades: int = 2000  # per sale shop (1% of the shops)
    tenk_sale_seconds: int = 5
    tenk_sale_lead: float = 20.0  # the sale is created this long before it starts (the emulator is busy meanwhile)
    push_seconds: float = 120.0  # seconds of live activity per mode in ``push`` (real time; all modes at once)


FULL: Final = Sizes()
QUICK: Final = Sizes(
    quiet_history_days=2.0,
    quiet_polls=6,
    peak_orders_per_day=2000.0,
    peak_history_days=0.5,
    peak_sale=21_000,
    peak_sale_seconds=120,
    backfill_orders_per_day=1000.0,
    backfill_history_days=10.0,
    shops=20,
    shop_polls=1,
    mistakes_orders_per_day=3000.0,
    mistakes_history_days=0.5,
    mistakes_rounds=3,
    crash_round=2,
    mistakes_seeds=1,
    fleet_shops=(10, 100),
    fleet_burst_shops=(10,),
    fleet_steady_polls=500,
    worker_shops=200,
    decode_pages=10,
    decode_rounds=5,
    memory_trades=50_000,
    push_seconds=20.0,
    memory=False,
    tenk_shops=(500,),
    tenk_interval=5.0,
    tenk_sale_trades=500,
    tenk_sale_lead=3.0,
)


# -- plumbing -------------------------------------------------------------------------


def connect(remote: RemoteEmulator) -> TopClient:
    """A real client for the emulator: fast limits, no retry delays, the virtual local clock."""
    return TopClient(
        remote.app_key,
        remote.app_secret,
        url=remote.url,
        rate=5000.0,
        retry=RetryPolicy.no_wait(),
        clock=remote.clock,
    )


class Crash(Exception):
    """The consumer's process dying mid-sync."""


async def consume(source: AsyncGenerator[Trade, None], collector: Collector, *, crash_after: int | None = None) -> None:
    """Hand every trade to ``collector``; with ``crash_after``, raise ``Crash`` after that many."""
    async with aclosing(source) as trades:
        count = 0
        async for trade in trades:
            collector.add(trade)
            count += 1
            if crash_after is not None and count >= crash_after:
                raise Crash


@define(kw_only=True)
class LocalClockNaive(NaiveSyncer):
    """``NaiveSyncer`` whose "local clock" is the benchmark's virtual clock (it moves with ``advance``)."""

    local: VirtualClock | None = None

    async def _now(self) -> datetime:
        if self.local_clock and self.local is not None:
            return floor_second(from_epoch(self.local.time()))
        return await super()._now()


def make_naive(
    client: TopClient,
    clock: VirtualClock,
    flags: Mapping[str, bool],
    *,
    origin: datetime | None = None,
    cursor: datetime | None = None,
) -> LocalClockNaive:
    """A naive syncer with the mistakes in ``flags`` switched on."""
    naive = LocalClockNaive(client=client, local=clock, origin=origin, cursor=cursor)
    for flag, value in flags.items():
        if not hasattr(naive, flag):
            raise ValueError(f"NaiveSyncer has no flag {flag!r}")
        setattr(naive, flag, value)
    return naive


@define
class Poll:
    list_calls: int
    increment_calls: int
    time_calls: int
    deliveries: int
    seconds: float
    error: str | None = None


@define
class Driver:
    """Polls on a schedule of simulated time and records each poll's cost.

    ``marks[k]`` is poll k's target on the emulator's clock (its now minus the lag):
    the schedule the minimum number of calls is computed from.
    """

    remote: RemoteEmulator
    client: TopClient
    meter: Meter
    deliveries: Callable[[], int]
    marks: list[datetime] = field(factory=list)
    polls: list[Poll] = field(factory=list)

    async def mark(self, advance: float = 0.0) -> None:
        now = await self.remote.advance(advance) if advance else await self.remote.now()
        self.marks.append(floor_second(now) - LAG)

    async def sync(self, body: Callable[[], Awaitable[None]]) -> Poll:
        before = self.client.call_counts
        delivered = self.deliveries()
        seconds = self.meter.seconds
        error = None
        try:
            with self.meter.timed():
                await body()
        except Crash:
            error = "crash"
        except TaobaoOrderSyncError as exc:
            error = f"{type(exc).__name__}: {exc}"
        after = self.client.call_counts
        poll = Poll(
            list_calls=list_calls(after) - list_calls(before),
            increment_calls=after.get(INCREMENT, 0) - before.get(INCREMENT, 0),
            time_calls=time_calls(after) - time_calls(before),
            deliveries=self.deliveries() - delivered,
            seconds=self.meter.seconds - seconds,
            error=error,
        )
        self.polls.append(poll)
        return poll

    @property
    def errors(self) -> list[str]:
        return [poll.error for poll in self.polls if poll.error and poll.error != "crash"]


def base_row(
    checks: Sequence[Check], minimums: Sequence[Minimum], *, scenario: str, syncer: str, client: TopClient
) -> Row:
    """A row with the verification and call counts of a whole run (callers adjust what differs)."""
    lost_versions: dict[int, Any] = {}
    for check in checks:
        lost_versions.update(check.lost_versions)
    return Row(
        scenario=scenario,
        syncer=syncer,
        in_scope=sum(check.report.in_scope for check in checks),
        lost=sum(check.report.lost for check in checks),
        list_calls=list_calls(client.call_counts),
        time_calls=time_calls(client.call_counts),
        minimum=sum(minimum.total for minimum in minimums),
        lost_versions=lost_versions,
    )


async def verify_ours(
    remote: RemoteEmulator, syncer: Syncer, shop_id: str, collector: Collector, until: datetime
) -> Check:
    checkpoint = await syncer.checkpoint(shop_id)
    if checkpoint is None or not checkpoint.backfill_done:
        raise RuntimeError(f"{shop_id}: the sync did not complete its backfill")
    [check] = await remote.verify(
        [(shop_id, collector.newest, checkpoint.backfill_from, checkpoint.origin, until, collector.duplicates)]
    )
    return check


async def verify_naive(
    remote: RemoteEmulator, naive: NaiveSyncer, collector: Collector, until: datetime
) -> Check | None:
    if naive.origin is None:
        return None
    [check] = await remote.verify(
        [(SHOP.id, collector.newest, naive.origin - naive.backfill, naive.origin, until, collector.duplicates)]
    )
    return check


async def minimum_of(remote: RemoteEmulator, marks: Sequence[datetime], shop_id: str = SHOP.id) -> Minimum:
    [found] = await remote.minimum([(shop_id, marks[0] - HORIZON, marks, PAGE)])
    return found


async def two_passes(run: Callable[[bool], Awaitable[Row]], *, memory: bool) -> Row:
    """A timed pass; then, with ``memory``, the same run traced for its peak (slower, so separate)."""
    row = await run(False)
    if memory:
        traced = await run(True)
        row.peak_bytes = traced.peak_bytes
        if traced.lost != row.lost:
            row.notes["lost in traced pass"] = traced.lost
            row.lost_versions.update(traced.lost_versions)
    return row


# -- quiet ----------------------------------------------------------------------------


async def quiet(sizes: Sizes) -> list[Row]:
    """A ~1,000 orders/day shop polled every 10 minutes: list calls per poll in the steady state."""
    profile = ShopProfile(orders_per_day=sizes.quiet_orders_per_day, history_days=sizes.quiet_history_days)
    collector = Collector()
    async with RemoteEmulator(shops=1, profile=profile, seed=sizes.seed) as remote, connect(remote) as client:
        meter = Meter()
        driver = Driver(remote, client, meter, lambda: collector.deliveries)
        syncer = Syncer(client, store=MemoryStore())
        body = partial(_ours_poll, syncer, SHOP, collector)
        await driver.mark()
        await driver.sync(body)
        for _ in range(sizes.quiet_polls):
            await driver.mark(POLL)
            await driver.sync(body)
        await remote.pause_activity()
        await driver.mark(POLL)
        await driver.sync(body)
        check = await verify_ours(remote, syncer, SHOP.id, collector, driver.marks[-1])
        minimum = await minimum_of(remote, driver.marks)
    steady = driver.polls[1 : 1 + sizes.quiet_polls]
    steady_min = minimum.poll_calls[: sizes.quiet_polls]
    row = base_row([check], [], scenario="quiet", syncer="ours", client=client)
    row.trades = sum(poll.deliveries for poll in steady)
    row.deliveries = row.trades
    row.list_calls = sum(poll.list_calls for poll in steady)
    row.time_calls = sum(poll.time_calls for poll in steady)
    row.minimum = sum(steady_min)
    row.seconds = sum(poll.seconds for poll in steady)
    row.error = "; ".join(driver.errors) or None
    row.notes = {
        "polls": len(steady),
        "list calls/poll": row.list_calls / len(steady),
        "max list calls in a poll": max(poll.list_calls for poll in steady),
        "polls over 1 list call": sum(1 for poll in steady if poll.list_calls > 1),
        "time.get/poll": row.time_calls / len(steady),
        "trades/poll": row.trades / len(steady),
        "max trades in a window": max(minimum.poll_trades[: sizes.quiet_polls]),
        "ms/poll": 1000 * row.seconds / len(steady),
        "backfill list calls": driver.polls[0].list_calls,
        "backfill minimum": minimum.backfill_calls,
        "in scope (whole run)": row.in_scope,
    }
    return [row]


async def _ours_poll(syncer: Syncer, shop: Shop, collector: Collector, *, crash_after: int | None = None) -> None:
    await consume(syncer.increments(shop), collector, crash_after=crash_after)


# -- peak -----------------------------------------------------------------------------


async def peak(sizes: Sizes) -> list[Row]:
    """An 11.11 burst: a busy shop, then a flash sale of 30,000+ trades synced in one poll."""
    ours = await two_passes(partial(_peak_run, sizes, naive=False), memory=sizes.memory)
    naive = await _peak_run(sizes, naive=True, traced=False)
    return [ours, naive]


async def _peak_run(sizes: Sizes, traced: bool, *, naive: bool) -> Row:
    profile = ShopProfile(orders_per_day=sizes.peak_orders_per_day, history_days=sizes.peak_history_days)
    collector = Collector()
    async with RemoteEmulator(shops=1, profile=profile, seed=sizes.seed) as remote, connect(remote) as client:
        meter = Meter(traced=traced)
        driver = Driver(remote, client, meter, lambda: collector.deliveries)
        syncer = Syncer(client, store=MemoryStore())
        plain = LocalClockNaive(client=client)
        body: Callable[[], Awaitable[None]] = (
            partial(_naive_poll, plain, collector) if naive else partial(_ours_poll, syncer, SHOP, collector)
        )
        await driver.mark()
        await driver.sync(body)
        await remote.flash_sale(SHOP.id, sizes.peak_sale, seconds=sizes.peak_sale_seconds, delay=30)
        await driver.mark(sizes.peak_poll)
        with meter.tracing():
            sale = await driver.sync(body)
        splits = syncer.progress(SHOP.id).splits
        await remote.pause_activity()
        await driver.mark(60)
        await driver.sync(body)
        if naive:
            check = await verify_naive(remote, plain, collector, driver.marks[-1])
        else:
            check = await verify_ours(remote, syncer, SHOP.id, collector, driver.marks[-1])
        minimum = await minimum_of(remote, driver.marks)
    row = base_row(
        [check] if check else [], [], scenario="peak", syncer="naive, no flags" if naive else "ours", client=client
    )
    row.trades = row.deliveries = sale.deliveries
    row.list_calls = sale.list_calls
    row.minimum = minimum.poll_calls[0]
    row.seconds = sale.seconds
    row.peak_bytes = meter.peak_bytes
    row.error = "; ".join(driver.errors[:1]) or None
    row.notes = {
        "sale trades": sizes.peak_sale,
        "trades in the sale window": minimum.poll_trades[0],
        "sale poll span s": sizes.peak_poll,
        "splits": splits if not naive else 0,
        "backfill trades": minimum.backfill_trades,
        "backfill list calls": driver.polls[0].list_calls,
        "backfill minimum": minimum.backfill_calls,
        "in scope (whole run)": row.in_scope,
    }
    return row


async def _naive_poll(naive: NaiveSyncer, collector: Collector, *, crash_after: int | None = None) -> None:
    await consume(naive.run(SHOP), collector, crash_after=crash_after)


# -- backfill -------------------------------------------------------------------------


async def backfill(sizes: Sizes) -> list[Row]:
    """A 100,000-trade first sync: calls vs ceil(trades / 100), throughput, memory."""
    profile = ShopProfile(orders_per_day=sizes.backfill_orders_per_day, history_days=sizes.backfill_history_days)
    async with RemoteEmulator(shops=1, profile=profile, seed=sizes.seed) as remote:
        await remote.pause_activity()  # a still shop: every pass reads the same trades
        row = await two_passes(partial(_backfill_pass, remote, naive=False), memory=sizes.memory)
        row.notes["generation s (emulator)"] = remote.generated_seconds
        naive = await _backfill_pass(remote, False, naive=True)
    return [row, naive]


async def _backfill_pass(remote: RemoteEmulator, traced: bool, *, naive: bool) -> Row:
    collector = Collector()
    async with connect(remote) as client:
        meter = Meter(traced=traced)
        driver = Driver(remote, client, meter, lambda: collector.deliveries)
        syncer = Syncer(client, store=MemoryStore())
        plain = LocalClockNaive(client=client)
        await driver.mark()
        with meter.tracing():
            if naive:
                await driver.sync(partial(_naive_poll, plain, collector))
            else:
                await driver.sync(partial(_ours_poll, syncer, SHOP, collector))
        if naive:
            check = await verify_naive(remote, plain, collector, driver.marks[-1])
        else:
            check = await verify_ours(remote, syncer, SHOP.id, collector, driver.marks[-1])
        minimum = await minimum_of(remote, driver.marks)
        if check is None:  # the naive syncer failed before it delivered anything
            [check] = await remote.verify(
                [(SHOP.id, {}, driver.marks[0] - plain.backfill, driver.marks[0], driver.marks[0], 0)]
            )
    row = base_row(
        [check], [minimum], scenario="backfill", syncer="naive, no flags" if naive else "ours", client=client
    )
    row.minimum = minimum.backfill_calls
    row.trades = len(collector.newest)
    row.deliveries = collector.deliveries
    row.seconds = meter.seconds
    row.peak_bytes = meter.peak_bytes
    row.error = "; ".join(driver.errors[:1]) or None
    if not naive:
        progress = syncer.progress(SHOP.id)
        row.notes = {
            "trades in scope": minimum.backfill_trades,
            "splits": progress.splits,
            "windows": progress.windows,
            "catch-up increment calls": driver.polls[0].increment_calls,
            "duplicates": progress.duplicates,
        }
    return row


# -- many shops -----------------------------------------------------------------------


async def shops(sizes: Sizes) -> list[Row]:
    """Many shops in one process and one shared client: a bounded TaskGroup per poll, then ``Fleet``."""
    return [await _shops_run(sizes, fleet=False), await _shops_run(sizes, fleet=True)]


async def _shops_run(sizes: Sizes, *, fleet: bool) -> Row:
    profile = ShopProfile(orders_per_day=sizes.shop_orders_per_day, history_days=sizes.shop_history_days)
    async with RemoteEmulator(shops=sizes.shops, profile=profile, seed=sizes.seed) as remote, connect(remote) as client:
        all_shops = [Shop(id=shop_id, session=session) for shop_id, session in remote.shops]
        collectors = {shop.id: Collector() for shop in all_shops}
        meter = Meter()
        driver = Driver(remote, client, meter, lambda: sum(c.deliveries for c in collectors.values()))
        runner = (
            _fleet_runner(client, sizes, all_shops, collectors)
            if fleet
            else _GatherRunner(client, sizes, all_shops, collectors)
        )
        try:
            await driver.mark()
            await driver.sync(runner.poll)
            for _ in range(sizes.shop_polls):
                await driver.mark(POLL)
                await driver.sync(runner.poll)
            await remote.pause_activity()
            await driver.mark(POLL)
            await driver.sync(runner.poll)
        finally:
            await runner.close()
        items = []
        for shop in all_shops:
            checkpoint = await runner.syncer.checkpoint(shop.id)
            if checkpoint is None:
                raise RuntimeError(f"{shop.id} was never synced")
            collector = collectors[shop.id]
            items.append(
                (
                    shop.id,
                    collector.newest,
                    checkpoint.backfill_from,
                    checkpoint.origin,
                    driver.marks[-1],
                    collector.duplicates,
                )
            )
        checks = await remote.verify(items)
        minimums = await remote.minimum(
            [(shop.id, driver.marks[0] - HORIZON, driver.marks, PAGE) for shop in all_shops]
        )
        generated = remote.generated_seconds
    label = f"ours, Fleet(concurrency={sizes.shop_concurrency})" if fleet else "ours, bounded TaskGroup"
    row = base_row(checks, minimums, scenario=f"shops ({sizes.shops})", syncer=label, client=client)
    row.trades = sum(len(c.newest) for c in collectors.values())
    row.deliveries = sum(c.deliveries for c in collectors.values())
    row.seconds = meter.seconds
    row.error = "; ".join(driver.errors[:1] + runner.failures[:1]) or None
    first, polls = driver.polls[0], driver.polls[1:]
    row.notes = {
        "concurrency": sizes.shop_concurrency,
        "backfill s": first.seconds,
        "backfill trades/s": first.deliveries / first.seconds if first.seconds else 0.0,
        "backfill list calls": first.list_calls,
        "backfill minimum": sum(m.backfill_calls for m in minimums),
        "catch-up increment calls after backfills": first.increment_calls,
        "poll s (each)": [round(poll.seconds, 2) for poll in polls],
        "poll list calls (each)": [poll.list_calls for poll in polls],
        "generation s (emulator)": generated,
    }
    return row


class _GatherRunner:
    """Each poll: every shop's ``Syncer.increments`` in a TaskGroup, at most ``concurrency`` at once."""

    def __init__(
        self, client: TopClient, sizes: Sizes, shops: Sequence[Shop], collectors: Mapping[str, Collector]
    ) -> None:
        self.syncer = Syncer(client, store=MemoryStore())
        self.failures: list[str] = []
        self._shops = shops
        self._collectors = collectors
        self._limit = asyncio.Semaphore(sizes.shop_concurrency)

    async def _one(self, shop: Shop) -> None:
        async with self._limit:
            await _ours_poll(self.syncer, shop, self._collectors[shop.id])

    async def poll(self) -> None:
        async with asyncio.TaskGroup() as group:
            for shop in self._shops:
                group.create_task(self._one(shop))

    async def close(self) -> None:
        return None


def _fleet_runner(
    client: TopClient, sizes: Sizes, shops: Sequence[Shop], collectors: Mapping[str, Collector]
) -> FleetRun:
    """Each poll wakes every shop of a running ``Fleet`` and waits until each has caught up."""

    async def handler(shop: Shop, batch: Batch) -> None:
        for trade in batch.trades:
            collectors[shop.id].add(trade)

    return FleetRun.make(client, shops, handler, concurrency=sizes.shop_concurrency, seed=sizes.seed)


# -- the seed article's mistakes ------------------------------------------------------


@frozen
class Setup:
    """Scenario data shared by ``Syncer`` and the naive syncers it is compared with."""

    name: str
    emulator: Mapping[str, Any]
    crash: bool = False
    step: float = POLL  #: simulated seconds between polls
    rounds_scale: int = 1  #: polls = sizes.mistakes_rounds * rounds_scale
    sale: int = 0  #: trades of a 10-second flash sale in the history, and again in the second poll


SETUPS: Final = (
    Setup("plain", {}),
    # 30-minute polls: ~1,000 changes, ~10 pages per window, so pages can shift under a reader.
    Setup("moving pages", {"chaos": Chaos(move_while_paging=0.5)}, step=1800.0),
    Setup("taobao 5 min behind", {"clock_offset": -300.0}),
    # 2-minute polls: more window ends for late-visible changes to fall on.
    Setup("visibility lag 4 s", {"visibility_lag": 4.0}, step=120.0, rounds_scale=4),
    Setup("crash + restart", {}, crash=True),
    # The same dense seconds (flash sales of 3,000 trades in 10 s) with ties in one order, and in a
    # new order on every list call: what tie-safety costs where it is needed.
    Setup("sales, stable ties", {}, sale=3000),
    Setup("sales, ties reshuffled", {"chaos": Chaos(shuffle_ties=True)}, sale=3000),
)
#: (mistake, setup, NaiveSyncer flags)
MISTAKES: Final[tuple[tuple[str, str, dict[str, bool]], ...]] = (
    ("none (naive, no flags)", "plain", {}),
    ("creation time only", "plain", {"creation_time": True}),
    ("default types", "plain", {"default_types": True}),
    ("forward paging", "moving pages", {"forward_paging": True}),
    ("local clock", "taobao 5 min behind", {"local_clock": True}),
    ("end + 1 s, no lag", "visibility lag 4 s", {"gap_boundaries": True, "no_lag": True}),
    ("no checkpoint", "crash + restart", {}),
    ("ties assumed stable", "sales, ties reshuffled", {}),
)


async def mistakes(sizes: Sizes) -> list[Row]:
    """``Syncer`` and one naive syncer per mistake, on the same seeds and data.

    Each row adds up ``sizes.mistakes_seeds`` runs (seeds ``seed``, ``seed + 1``...);
    memory is traced on the first seed only.
    """
    rows = []
    for setup in SETUPS:
        variants: list[tuple[str, Mapping[str, bool]] | None] = [None]
        variants += [(mistake, flags) for mistake, name, flags in MISTAKES if name == setup.name]
        for variant in variants:
            runs = []
            for index in range(sizes.mistakes_seeds):
                run = partial(_mistake_run, evolve(sizes, seed=sizes.seed + index), setup, variant)
                runs.append(await two_passes(run, memory=sizes.memory and index == 0))
            rows.append(_merge(runs))
    return rows


def _merge(runs: Sequence[Row]) -> Row:
    """One row for the same run over several seeds: counts and times add up; memory is the first seed's."""
    first = runs[0]
    row = Row(
        scenario=first.scenario,
        syncer=first.syncer,
        trades=sum(run.trades for run in runs),
        deliveries=sum(run.deliveries for run in runs),
        in_scope=sum(run.in_scope for run in runs),
        lost=sum(run.lost for run in runs),
        list_calls=sum(run.list_calls for run in runs),
        minimum=sum(run.minimum for run in runs),
        time_calls=sum(run.time_calls for run in runs),
        seconds=sum(run.seconds for run in runs),
        peak_bytes=first.peak_bytes,
        peak_trades=first.trades,
        error="; ".join(run.error for run in runs if run.error) or None,
    )
    row.notes = {
        "seeds": len(runs),
        "lost per seed": [run.lost for run in runs],
        "duplicates": sum(run.notes.get("duplicates", 0) for run in runs),
    }
    if "lost in traced pass" in first.notes:
        row.notes["lost in traced pass (first seed)"] = first.notes["lost in traced pass"]
    for run in runs:
        row.lost_versions.update(run.lost_versions)
    return row


async def _mistake_run(sizes: Sizes, setup: Setup, naive: tuple[str, Mapping[str, bool]] | None, traced: bool) -> Row:
    profile = ShopProfile(
        orders_per_day=sizes.mistakes_orders_per_day,
        history_days=sizes.mistakes_history_days,
        memo_share=0.3,
        other_type_share=0.03,
    )
    collector = Collector()
    crash_round = sizes.crash_round if setup.crash else None
    async with (
        RemoteEmulator(shops=1, profile=profile, seed=sizes.seed, **setup.emulator) as remote,
        connect(remote) as client,
        _store(setup.crash) as store,
    ):
        meter = Meter(traced=traced)
        driver = Driver(remote, client, meter, lambda: collector.deliveries)
        syncer = Syncer(client, store=store)
        flags = dict(naive[1]) if naive else {}
        plain = make_naive(client, remote.clock, flags)
        with meter.tracing():
            rounds = sizes.mistakes_rounds * setup.rounds_scale
            for round_no in range(rounds + 2):
                if round_no == rounds + 1:
                    await remote.pause_activity()
                if setup.sale and round_no in (0, 2):
                    delay = -6 * 3600.0 if round_no == 0 else setup.step - 120.0
                    await remote.flash_sale(SHOP.id, setup.sale, seconds=10, delay=delay)
                await driver.mark(setup.step if round_no else 0.0)
                if crash_round is not None and round_no == crash_round + 1:
                    # The restarted process: ours keeps only what is in its store; the naive
                    # syncer kept nothing, so it begins again at the restart time.
                    syncer = Syncer(client, store=store)
                    restart = floor_second(await client.server_now()) - plain.lag
                    plain = make_naive(client, remote.clock, flags, origin=plain.origin, cursor=restart)
                crash_after = sizes.crash_after if round_no == crash_round else None
                if naive:
                    await driver.sync(partial(_naive_poll, plain, collector, crash_after=crash_after))
                else:
                    await driver.sync(partial(_ours_poll, syncer, SHOP, collector, crash_after=crash_after))
        until = driver.marks[-1]
        if naive:
            check = await verify_naive(remote, plain, collector, until)
        else:
            check = await verify_ours(remote, syncer, SHOP.id, collector, until)
        minimum = await minimum_of(remote, driver.marks)
    label = f"naive: {naive[0]}" if naive else "ours"
    row = base_row([check] if check else [], [minimum], scenario=f"mistakes/{setup.name}", syncer=label, client=client)
    row.trades = len(collector.newest)
    row.deliveries = collector.deliveries
    row.seconds = meter.seconds
    row.peak_bytes = meter.peak_bytes
    row.error = "; ".join(driver.errors[:1]) or None
    row.notes = {"in scope": row.in_scope, "duplicates": collector.duplicates}
    return row


class _store:  # noqa: N801 - used like a function
    """A SQLite store in a temporary folder when a crash must survive; else a MemoryStore."""

    def __init__(self, durable: bool) -> None:
        self._folder = tempfile.TemporaryDirectory() if durable else None

    async def __aenter__(self) -> MemoryStore | SqliteStore:
        if self._folder is None:
            return MemoryStore()
        return SqliteStore(Path(self._folder.name) / "checkpoints.sqlite3")

    async def __aexit__(self, *exc: object) -> None:
        if self._folder is not None:
            self._folder.cleanup()


async def push(sizes: Sizes) -> list[Row]:
    """TMC push vs polling alone: freshness, calls per change, lost (``_push``; about 3 minutes)."""
    return await _push(sizes.push_seconds, sizes.seed)


SCENARIOS: Final[dict[str, Callable[[Sizes], Awaitable[list[Row]]]]] = {
    "quiet": quiet,
    "peak": peak,
    "backfill": backfill,
    "shops": shops,
    "mistakes": mistakes,
    "fleet": fleet,
    "workers": workers,
    "decode": decode,
    "memory": memory,
    "tenk": tenk,
    "push": push,
}
#: Scenarios a plain ``python -m benchmarks`` leaves out (name them with ``--scenario``).
EXTRA: Final = frozenset({"memory", "tenk", "push"})
