"""The ``tenk`` scenario: 10,000 small shops in one ``Fleet``, and over 4 ``Worker``s on PostgreSQL.

Not part of the default run (``python -m benchmarks --scenario tenk``; ``--tenk-shops N``,
repeatable, for other sizes). Every shop is small (20 orders a day, 1 day of history: about
21 trades, one page of backfill), so the backlog is cheap and what is measured is the
per-shop overhead. For each size, one emulator (in its child process) for the fleet:

1. **Backlog**: every shop's first sync through one fleet (``_fleet._backlog``), at a rate
   the CPU caps before the limiter; verified against the emulator.
2. **CPU per poll in the steady state**: ``_fleet._steady`` on the caught-up store (a Fleet
   poll, bare calls 16 at once, a plain ``Syncer`` loop, bare calls one at a time).
3. **Memory per shop**: ``_fleet._memory`` (tracemalloc after every shop's first sync and
   after one more poll, over the shops), with its largest allocation sites.
4. **Fairness**: a fresh store and a fleet on its own timer (``PollPolicy`` with a fixed
   ``interval``, jitter 10%), in real time. After its backlog, every shop's next poll is
   spread over one interval (``wake(shop, delay=...)``); after one interval to settle, a
   quiet window of two intervals, then a flash sale on 1% of the shops (``tenk_sale_trades``
   each over ``tenk_sale_seconds``). For every shop, the longest gap between two completed
   polls (``synced`` events) that ends in the window, counting a poll still missing at the
   window's end as a gap up to it. The sale window lasts until every sale shop's checkpoint
   is past the sale, plus one and a half intervals. Then activity stops, every shop is
   polled twice more and every shop's copy is verified.

Then ``_workers._one_count`` with 4 workers over the same number of shops (a fresh emulator
that bans above 200 calls/s, and a ``LocalPostgres``): backlog, crash, final poll after the
activity stops, verification of every shop, database round trips per commit.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from attrs import define, field

from benchmarks._fleet import (
    FAST,
    FleetRun,
    _backlog,
    _client,
    _emulator_cpu,
    _memory,
    _steady,
    verify_fleet,
)
from benchmarks._measure import Row, list_calls, time_calls
from benchmarks._remote import RemoteEmulator
from benchmarks._workers import RATE, _one_count
from taobao_ordersync import Batch, MemoryStore, PollPolicy, Shop
from taobao_ordersync.testing import Chaos, Collector, ShopProfile
from taobao_ordersync.testing.postgres import LocalPostgres

if TYPE_CHECKING:
    from benchmarks.scenarios import Sizes

__all__ = ["tenk"]

PROFILE: Final = ShopProfile(orders_per_day=20.0, history_days=1.0)  # ~21 trades: one page of backfill
LAG: Final = 10.0  # Syncer's default
#: The workers' schedule at 10,000 shops: a poll every 60-120 s fits the 200 calls/s budget
#: (the ``workers`` scenario's 5-15 s would ask for 700-2,000 calls/s).
WORKER_POLICY: Final = PollPolicy(min_interval=60.0, max_interval=120.0, jitter=0.2, min_backoff=1.0, max_backoff=5.0)
WORKERS: Final = 4
TIMEOUT: Final = 900.0


def _log(message: str) -> None:
    print(f"[bench]   tenk: {message}", file=sys.stderr, flush=True)


@define
class _Gaps:
    """Per shop, the longest gap between two completed polls ending in a window (seconds)."""

    worst: dict[str, float] = field(factory=dict)

    @classmethod
    def of(cls, times: Mapping[str, Sequence[float]], start: float, end: float) -> _Gaps:
        worst: dict[str, float] = {}
        for shop_id, polls in times.items():
            longest = 0.0
            previous: float | None = None
            for moment in polls:
                if moment > end:
                    break
                if previous is not None and moment >= start:
                    longest = max(longest, moment - previous)
                previous = moment
            if previous is not None:
                longest = max(longest, end - max(previous, start))  # no poll since: a gap up to the end
            worst[shop_id] = longest
        return cls(worst=worst)

    def summary(self, only: Sequence[str] | None = None) -> dict[str, float]:
        values = sorted(self.worst[shop_id] for shop_id in only) if only is not None else sorted(self.worst.values())
        if not values:
            return {}
        return {
            "max": values[-1],
            "p99": values[min(len(values) - 1, int(0.99 * len(values)))],
            "median": statistics.median(values),
        }


@define
class _Fairness:
    interval: float
    backlog_s: float = 0.0
    sale_shops: list[str] = field(factory=list)
    sale_trades: int = 0
    sale_lead_s: float = 0.0
    caught_up_s: float | None = None  #: from the sale's start until every sale shop's checkpoint is past it
    quiet: _Gaps = field(factory=_Gaps)
    sale: _Gaps = field(factory=_Gaps)
    quiet_s: float = 0.0
    sale_s: float = 0.0
    polls_in_sale: int = 0
    cpu_busy_sale: float = 0.0
    emulator_busy_sale: float | None = None
    trades: int = 0
    in_scope: int = 0
    lost: int = 0
    lost_versions: dict[int, object] = field(factory=dict)
    failures: list[str] = field(factory=list)


async def _fairness(remote: RemoteEmulator, shops: Sequence[Shop], sizes: Sizes) -> _Fairness:
    interval = sizes.tenk_interval
    result = _Fairness(interval=interval)
    policy = PollPolicy(min_interval=interval, max_interval=interval, jitter=0.1, min_backoff=1.0, max_backoff=5.0)
    collectors = {shop.id: Collector() for shop in shops}
    times: dict[str, list[float]] = {shop.id: [] for shop in shops}

    async def handler(shop: Shop, batch: Batch) -> None:
        collector = collectors[shop.id]
        for trade in batch.trades:
            collector.add(trade)

    def synced(shop_id: str) -> None:
        times[shop_id].append(time.monotonic())

    rng = random.Random(sizes.seed)
    async with _client(remote, FAST) as client:
        running = FleetRun.make(
            client,
            shops,
            handler,
            concurrency=sizes.fleet_concurrency,
            seed=sizes.seed,
            store=MemoryStore(),
            policy=policy,
            on_synced=synced,
        )
        try:
            started = time.monotonic()
            await running.poll()  # starts the fleet: every shop's first sync
            result.backlog_s = time.monotonic() - started
            _log(f"fairness: backlog of {len(shops):,} shops in {result.backlog_s:.1f} s; spreading the polls")
            for shop in shops:
                running.fleet.wake(shop.id, delay=rng.uniform(0.0, interval))
            await asyncio.sleep(interval)  # settle
            quiet_start = time.monotonic()
            await asyncio.sleep(2 * interval)
            quiet_end = time.monotonic()
            result.quiet = _Gaps.of(times, quiet_start, quiet_end)
            result.quiet_s = quiet_end - quiet_start

            # The sale: created ahead (the emulator is busy while it makes them), starting together.
            sale_count = max(1, len(shops) // 100)
            result.sale_shops = sorted(shop.id for shop in rng.sample(list(shops), sale_count))
            result.sale_trades = sizes.tenk_sale_trades
            lead = sizes.tenk_sale_lead
            made = time.monotonic()
            for shop_id in result.sale_shops:
                delay = max(0.0, lead - (time.monotonic() - made))
                await remote.flash_sale(shop_id, sizes.tenk_sale_trades, seconds=sizes.tenk_sale_seconds, delay=delay)
            result.sale_lead_s = time.monotonic() - made
            if result.sale_lead_s > lead:
                _log(f"fairness: creating the sale took {result.sale_lead_s:.1f} s, more than its {lead:g} s lead")
            sale_start = made + lead
            await asyncio.sleep(max(0.0, sale_start - time.monotonic()))
            sale_end_at: datetime = await remote.now() + timedelta(seconds=sizes.tenk_sale_seconds)
            cpu, emulator_cpu = time.process_time(), _emulator_cpu()
            while result.caught_up_s is None:
                cursors = [running.syncer.progress(shop_id).cursor for shop_id in result.sale_shops]
                if all(cursor is not None and cursor >= sale_end_at for cursor in cursors):
                    result.caught_up_s = time.monotonic() - sale_start
                elif time.monotonic() - sale_start > TIMEOUT:
                    raise TimeoutError(f"the sale shops did not catch up within {TIMEOUT:.0f} s")
                else:
                    await asyncio.sleep(0.5)
            await asyncio.sleep(1.5 * interval)
            sale_stop = time.monotonic()
            result.sale_s = sale_stop - sale_start
            result.cpu_busy_sale = (time.process_time() - cpu) / result.sale_s
            ended = _emulator_cpu()
            if ended is not None and emulator_cpu is not None:
                result.emulator_busy_sale = (ended - emulator_cpu) / result.sale_s
            result.sale = _Gaps.of(times, sale_start, sale_stop)
            result.polls_in_sale = sum(1 for polls in times.values() for t in polls if sale_start <= t <= sale_stop)
            _log(
                f"fairness: sale shops caught up {result.caught_up_s:.1f} s after the sale began; "
                f"{result.polls_in_sale:,} polls in {result.sale_s:.0f} s"
            )

            # The end of every run: activity stops; once the last change is older than the lag, every
            # shop is polled (twice: once started after that). Polled sooner, a window could end
            # before a trade's last change while the trade already shows it: that version is due
            # in the next window, and a check at the checkpoint would call it missing.
            await remote.pause_activity()
            await asyncio.sleep(LAG + 1.0)
            await running.poll()
            await running.poll()
        finally:
            await running.close()
        result.failures = running.failures
        result.in_scope, result.lost, result.lost_versions, _ = await verify_fleet(
            remote, running.syncer, shops, collectors
        )
    result.trades = sum(len(collector.newest) for collector in collectors.values())
    return result


async def tenk(sizes: Sizes) -> list[Row]:
    """``Fleet`` and 4 ``Worker``s at ``sizes.tenk_shops`` shops each."""
    rows = []
    for count in sizes.tenk_shops:
        rows.append(await _fleet_row(sizes, count))
        rows.append(await _workers_row(sizes, count))
    return rows


async def _fleet_row(sizes: Sizes, count: int) -> Row:
    async with RemoteEmulator(shops=count, profile=PROFILE, seed=sizes.seed) as remote:
        shops = [Shop(id=shop_id, session=session) for shop_id, session in remote.shops]
        _log(f"{count:,} shops, {remote.trades:,} trades, generated in {remote.generated_seconds:.1f} s")
        started = time.perf_counter()
        backlog = await _backlog(remote, shops, sizes, sizes.fleet_high_rate)
        _log(f"{count:,} shops: backlog in {time.perf_counter() - started:.1f} s, lost {backlog.lost}")
        started = time.perf_counter()
        steady = await _steady(remote, shops, sizes, backlog.store)
        _log(f"{count:,} shops: {steady.polls:,} steady polls of each kind in {time.perf_counter() - started:.1f} s")
        memory = None
        if sizes.memory:
            started = time.perf_counter()
            memory = await _memory(remote, shops, sizes)
            _log(f"{count:,} shops: traced pass in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        fair = await _fairness(remote, shops, sizes)
        _log(f"{count:,} shops: fairness pass in {time.perf_counter() - started:.1f} s, lost {fair.lost}")
    row = Row(
        scenario=f"tenk fleet ({count:,})",
        syncer=f"ours, Fleet(concurrency={sizes.fleet_concurrency})",
        trades=fair.trades,
        deliveries=backlog.delivered,
        in_scope=backlog.in_scope + fair.in_scope,
        lost=backlog.lost + fair.lost,
        list_calls=list_calls(backlog.calls),
        minimum=backlog.minimum,
        time_calls=time_calls(backlog.calls),
        seconds=backlog.seconds,
        lost_versions={**backlog.lost_versions, **fair.lost_versions},
        error="; ".join(backlog.failures[:1] + steady.failures[:1] + fair.failures[:1]) or None,
    )
    light = [shop.id for shop in shops if shop.id not in set(fair.sale_shops)]
    per_round = {
        name: [round(1000 * value, 3) for value in values] for name, values in steady.cpu_rounds(len(shops)).items()
    }
    row.notes = {
        "shops": count,
        "backlog calls": backlog.sent,
        "backlog s": backlog.seconds,
        "backlog calls/s": backlog.per_second,
        "process CPU busy in backlog": backlog.busy,
        "lost in backlog": backlog.lost,
        "steady rounds": steady.rounds,
        "CPU ms/poll fleet": 1000 * steady.per_poll("fleet", steady.cpu),
        "CPU ms/call, calls at once": 1000 * steady.per_poll("calls at once", steady.cpu),
        "CPU ms/poll plain": 1000 * steady.per_poll("plain", steady.cpu),
        "CPU ms/call, calls one at a time": 1000 * steady.per_poll("calls", steady.cpu),
        "CPU ms/poll per round (fleet, calls at once, plain, calls)": per_round,
        "poll interval s": fair.interval,
        "fairness backlog s": fair.backlog_s,
        "sale shops": len(fair.sale_shops),
        "sale trades per shop": fair.sale_trades,
        "sale seconds": sizes.tenk_sale_seconds,
        "sale created in s": fair.sale_lead_s,
        "sale caught up after s": fair.caught_up_s,
        "quiet window s": fair.quiet_s,
        "quiet gap s (all shops)": fair.quiet.summary(),
        "sale window s": fair.sale_s,
        "polls in sale window": fair.polls_in_sale,
        "sale gap s (all shops)": fair.sale.summary(),
        "sale gap s (other shops)": fair.sale.summary(light),
        "sale gap s (sale shops)": fair.sale.summary(fair.sale_shops),
        "process CPU busy in sale window": fair.cpu_busy_sale,
        "emulator CPU busy in sale window": fair.emulator_busy_sale,
        "lost in fairness pass": fair.lost,
        "in scope in fairness pass": fair.in_scope,
    }
    if memory is not None:
        row.notes |= {
            "bytes/shop after backlog": memory.after_backlog / count,
            "bytes/shop after a poll": memory.after_poll / count,
            "top files (B/shop)": memory.top,
            "top lines (B/shop)": memory.lines,
        }
    return row


async def _workers_row(sizes: Sizes, count: int) -> Row:
    server = LocalPostgres()
    await asyncio.to_thread(server.start)
    try:
        chaos = Chaos(rate_limit=int(RATE))
        async with RemoteEmulator(shops=count, profile=PROFILE, seed=sizes.seed, chaos=chaos) as remote:
            _log(f"workers: emulator with {count:,} shops ({remote.trades:,} trades) ready")
            return await _one_count(remote, server, WORKERS, count, policy=WORKER_POLICY, verify=True, scenario="tenk")
    finally:
        await asyncio.to_thread(server.stop)
