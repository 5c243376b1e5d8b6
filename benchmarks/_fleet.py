"""The ``fleet`` scenario: one ``Fleet`` of 10, 100 and 1,000 shops over one ``TopClient``.

For each size, one emulator (in its child process) and four passes over its shops:

1. **Budget share.** A fresh store, so every shop has a backfill of a few pages, and a
   client with a deliberately low ``rate`` (``burst`` 1): the limiter, not the CPU or
   the emulator, should be the bottleneck. From ``run()`` until every shop has
   completed its first poll (the backlog), the share of the rate budget used is
   ``calls sent / (burst + rate x elapsed)`` (every call counts, ``taobao.time.get``
   included). The consumer's copy is verified against the emulator.
2. **The same at a higher rate**, to show whether the CPU (client or emulator) caps
   the calls per second before the limiter does.
3. **CPU per poll in the steady state.** Every shop caught up, 60 s of simulated
   activity before each poll (one page per shop). Each round runs, one after the
   other on the same data and store: a ``Fleet`` poll of every shop (``wake()`` then
   ``next_poll()``); the same 60 s read by bare client calls (one
   ``taobao.trades.sold.increment.get`` per shop), as many at once as the fleet has
   workers; a plain sequential ``Syncer.batches`` loop over the shops; and the bare
   calls again, one at a time. ``time.process_time`` of this process per poll: the
   fleet minus its concurrent calls is what ``Syncer`` and ``Fleet`` add to a poll,
   the loop minus its sequential calls what ``Syncer`` alone adds.
4. **Memory per shop** (skipped with ``--no-memory`` and in ``--quick``): a fresh
   store and fleet built under ``tracemalloc``; the memory still allocated once every
   shop's first sync is done, then after one steady-state poll, divided by the shops.
   Tracing is slow, so this pass asks for three fields and backfills one hour (one page
   per shop); its handler keeps nothing, so what stays per shop is the same.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from attrs import define, field

from benchmarks._measure import Row, list_calls, time_calls
from benchmarks._remote import RemoteEmulator
from taobao_ordersync import (
    Batch,
    Fleet,
    FleetEvent,
    MemoryStore,
    PollPolicy,
    RetryPolicy,
    Shop,
    Syncer,
    TopClient,
)
from taobao_ordersync._time import floor_second
from taobao_ordersync.testing import Collector, ShopProfile

if TYPE_CHECKING:
    from benchmarks.scenarios import Sizes

__all__ = ["FleetRun", "fleet", "verify_fleet"]

PAGE: Final = 100
STEP: Final = 60.0  #: simulated seconds of shop activity before each steady-state poll
FAST: Final = 100_000.0  #: a rate the limiter never reaches here
#: Every poll is triggered by the benchmark (wake()), never by the fleet's own timer.
POLICY: Final = PollPolicy(min_interval=86_400.0, max_interval=86_400.0, jitter=0.0)
#: The traced pass's handler keeps nothing, so fewer fields and a one-hour backfill (one page per
#: shop) only make it faster: what a shop leaves behind once caught up is the same.
LIGHT_FIELDS: Final = ("tid", "modified", "created")
LIGHT_BACKFILL: Final = timedelta(hours=1)
TIMEOUT: Final = 900.0
VARIANTS: Final = ("fleet", "calls at once", "plain", "calls")


def _log(message: str) -> None:
    print(f"[bench]   fleet: {message}", file=sys.stderr, flush=True)


def _client(remote: RemoteEmulator, rate: float, burst: int = 1) -> TopClient:
    return TopClient(
        remote.app_key,
        remote.app_secret,
        url=remote.url,
        rate=rate,
        burst=burst,
        retry=RetryPolicy.no_wait(),
        clock=remote.clock,
    )


@define
class FleetRun:
    """A ``Fleet`` driven by the benchmark: ``poll()`` starts or wakes it and waits for every shop.

    Its own schedule stays out of the way (``POLICY``: a day between polls), so polls happen
    exactly when the benchmark's simulated clock says so. Used by the ``fleet`` and ``shops``
    scenarios alike.
    """

    fleet: Fleet
    shops: Sequence[Shop]
    failures: list[str] = field(factory=list)
    task: asyncio.Task[None] | None = None

    @classmethod
    def make(
        cls,
        client: TopClient,
        shops: Sequence[Shop],
        handler: Callable[[Shop, Batch], Awaitable[None]],
        *,
        concurrency: int,
        seed: int,
        store: MemoryStore | None = None,
        policy: PollPolicy = POLICY,
        on_synced: Callable[[str], None] | None = None,
        **syncer_options: Any,
    ) -> FleetRun:
        """``policy`` defaults to a day between polls (every poll started by ``poll()``);
        ``on_synced(shop_id)`` is called for every completed poll."""
        failures: list[str] = []

        def event(event: FleetEvent) -> None:
            if event.kind != "synced":
                failures.append(f"{event.shop_id} {event.kind}: {event.error!r}")
            elif on_synced is not None:
                on_synced(event.shop_id)

        fleet = Fleet(
            client,
            store=store or MemoryStore(),
            handler=handler,
            concurrency=concurrency,
            policy=policy,
            on_event=event,
            seed=seed,
            **syncer_options,
        )
        for shop in shops:
            fleet.add(shop)
        return cls(fleet=fleet, shops=shops, failures=failures)

    async def poll(self) -> None:
        """The first call starts the fleet (every shop is due); later ones wake every shop."""
        waiters = [asyncio.ensure_future(self.fleet.next_poll(shop.id)) for shop in self.shops]
        await asyncio.sleep(0)  # every waiter registered before any shop can finish
        if self.task is None:
            self.task = asyncio.create_task(self.fleet.run())
        else:
            self.fleet.wake()
        try:
            await asyncio.wait_for(asyncio.gather(*waiters), timeout=TIMEOUT)
        except TimeoutError:
            self.failures.append(f"a poll did not finish within {TIMEOUT:.0f} s")
            raise

    @property
    def syncer(self) -> Syncer:
        return self.fleet.syncer

    async def close(self) -> None:
        if self.task is not None:
            self.fleet.stop()
            await self.task
            self.task = None


def _emulator_cpu() -> float | None:
    """CPU seconds used so far by this process's children (the emulator), from ``/proc``; None elsewhere."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0.0
    try:
        for child in multiprocessing.active_children():
            fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    except (OSError, IndexError, ValueError):
        return None
    return total


@define
class _Backlog:
    rate: float
    burst: int
    seconds: float
    cpu: float
    emulator_cpu: float | None
    calls: Mapping[str, int]
    store: MemoryStore
    delivered: int
    trades: int = 0
    duplicates: int = 0
    in_scope: int = 0
    lost: int = 0
    minimum: int = 0
    lost_versions: dict[int, Any] = field(factory=dict)
    failures: list[str] = field(factory=list)

    @property
    def sent(self) -> int:
        return sum(self.calls.values())

    @property
    def share(self) -> float:
        """Calls sent over the calls the limiter allowed: ``burst + rate x elapsed``."""
        return self.sent / (self.burst + self.rate * self.seconds)

    @property
    def per_second(self) -> float:
        return self.sent / self.seconds

    @property
    def busy(self) -> float:
        """This process's CPU time over the wall time (1.0 = one core all the time)."""
        return self.cpu / self.seconds

    @property
    def emulator_busy(self) -> float | None:
        return None if self.emulator_cpu is None else self.emulator_cpu / self.seconds


async def _backlog(
    remote: RemoteEmulator, shops: Sequence[Shop], sizes: Sizes, rate: float, burst: int = 1
) -> _Backlog:
    """Every shop's first sync through one fleet at ``rate`` calls/s; verified against the emulator."""
    collectors = {shop.id: Collector() for shop in shops}

    async def handler(shop: Shop, batch: Batch) -> None:
        collector = collectors[shop.id]
        for trade in batch.trades:
            collector.add(trade)

    store = MemoryStore()
    async with _client(remote, rate, burst) as client:
        running = FleetRun.make(
            client, shops, handler, concurrency=sizes.fleet_concurrency, seed=sizes.seed, store=store
        )
        emulator_cpu = _emulator_cpu()
        cpu = time.process_time()
        started = time.perf_counter()
        try:
            await running.poll()
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu
            ended = _emulator_cpu()
            emulator_cpu = None if ended is None or emulator_cpu is None else ended - emulator_cpu
            calls = client.call_counts
        finally:
            await running.close()
        syncer = running.fleet.syncer
        statuses = running.fleet.statuses()
        if any(
            status.schedule is None or status.schedule.polls != 1 or status.state != "waiting" for status in statuses
        ):
            running.failures.append("a shop did not end its backlog waiting, after exactly one poll")
    result = _Backlog(
        rate=rate,
        burst=burst,
        seconds=seconds,
        cpu=cpu,
        emulator_cpu=emulator_cpu,
        calls=calls,
        store=store,
        delivered=sum(status.delivered for status in statuses),
        failures=running.failures,
    )
    result.in_scope, result.lost, result.lost_versions, scopes = await verify_fleet(remote, syncer, shops, collectors)
    result.minimum = sum(minimum.backfill_calls for minimum in await remote.minimum(scopes))
    result.trades = sum(len(collector.newest) for collector in collectors.values())
    result.duplicates = sum(collector.duplicates for collector in collectors.values())
    return result


async def verify_fleet(
    remote: RemoteEmulator, syncer: Syncer, shops: Sequence[Shop], collectors: Mapping[str, Collector]
) -> tuple[int, int, dict[int, Any], list[tuple[str, Any, list[Any], int]]]:
    """Every shop's copy against the emulator, up to its committed cursor.

    Returns (in scope, lost, lost trades' versions, the backfill scopes for ``remote.minimum``).
    """
    items, scopes = [], []
    for shop in shops:
        checkpoint = await syncer.checkpoint(shop.id)
        if checkpoint is None or not checkpoint.backfill_done:
            raise RuntimeError(f"{shop.id}: the fleet did not complete its backfill")
        collector = collectors[shop.id]
        items.append(
            (
                shop.id,
                collector.newest,
                checkpoint.backfill_from,
                checkpoint.origin,
                checkpoint.cursor,
                collector.duplicates,
            )
        )
        scopes.append((shop.id, checkpoint.backfill_from, [checkpoint.origin], PAGE))
    in_scope = lost = 0
    versions: dict[int, Any] = {}
    for (shop_id, *_), check in zip(items, await remote.verify(items), strict=True):
        in_scope += check.report.in_scope
        lost += check.report.lost
        versions.update(check.lost_versions)
        if check.report.lost:
            print(
                f"[bench]   LOST in {shop_id}: missing {check.report.missing[:5]}, stale {check.report.stale[:5]}; "
                f"checkpoint cursor {items[[item[0] for item in items].index(shop_id)][4]}",
                file=sys.stderr,
                flush=True,
            )
    return in_scope, lost, versions, scopes


@define
class _Steady:
    polls: int = 0  #: per variant
    rounds: int = 0
    cpu: dict[str, float] = field(factory=dict)
    cpu_by_round: dict[str, list[float]] = field(factory=dict)
    wall: dict[str, float] = field(factory=dict)
    calls: dict[str, int] = field(factory=dict)
    trades: dict[str, int] = field(factory=dict)
    failures: list[str] = field(factory=list)

    def per_poll(self, name: str, values: Mapping[str, float]) -> float:
        return values.get(name, 0.0) / self.polls if self.polls else 0.0

    def cpu_rounds(self, shops: int) -> dict[str, list[float]]:
        """CPU seconds per poll of each round, by variant (for min / median over rounds)."""
        return {name: [value / shops for value in values] for name, values in self.cpu_by_round.items()}


async def _steady(remote: RemoteEmulator, shops: Sequence[Shop], sizes: Sizes, store: MemoryStore) -> _Steady:
    """CPU per poll of a ``Fleet``, a plain ``Syncer`` loop and the client call alone, interleaved.

    The fleet and the loop share the store, so each reads the 60 s since the other's poll;
    the client call reads the same 60 s again, just after the loop.
    """
    delivered = 0

    async def handler(shop: Shop, batch: Batch) -> None:
        nonlocal delivered
        delivered += len(batch.trades)

    async with _client(remote, FAST) as client:
        running = FleetRun.make(
            client, shops, handler, concurrency=sizes.fleet_concurrency, seed=sizes.seed, store=store
        )
        plain = Syncer(client, store=store)

        async def plain_poll() -> None:
            nonlocal delivered
            for shop in shops:
                async for batch in plain.batches(shop):
                    delivered += len(batch.trades)

        async def calls_only(workers: int) -> None:
            """The same 60 s again, one list call per shop, ``workers`` calls at a time."""
            end = floor_second(await client.server_now()) - plain.lag
            start = end - timedelta(seconds=STEP)
            pending = iter(shops)

            async def worker() -> None:
                nonlocal delivered
                for shop in pending:
                    page = await client.trades_sold_increment(
                        shop.session, start_modified=start, end_modified=end, fields=plain.fields, types=plain.types
                    )
                    delivered += len(page.trades)

            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker())

        #: (name, body, advance the shops' activity first)
        variants: tuple[tuple[str, Callable[[], Awaitable[None]], bool], ...] = (
            ("fleet", running.poll, True),
            ("calls at once", partial(calls_only, sizes.fleet_concurrency), False),
            ("plain", plain_poll, True),
            ("calls", partial(calls_only, 1), False),
        )
        steady = _Steady(rounds=max(3, -(-sizes.fleet_steady_polls // len(shops))))
        try:
            for _, body, advance in variants:  # warm-up: catch up, start the fleet, open connections
                if advance:
                    await remote.advance(STEP)
                await body()
            for _ in range(steady.rounds):
                for name, body, advance in variants:
                    if advance:
                        await remote.advance(STEP)
                    before = list_calls(client.call_counts) + time_calls(client.call_counts)
                    trades = delivered
                    cpu = time.process_time()
                    started = time.perf_counter()
                    await body()
                    steady.wall[name] = steady.wall.get(name, 0.0) + time.perf_counter() - started
                    cpu = time.process_time() - cpu
                    steady.cpu[name] = steady.cpu.get(name, 0.0) + cpu
                    steady.cpu_by_round.setdefault(name, []).append(cpu)
                    after = list_calls(client.call_counts) + time_calls(client.call_counts)
                    steady.calls[name] = steady.calls.get(name, 0) + after - before
                    steady.trades[name] = steady.trades.get(name, 0) + delivered - trades
        finally:
            await running.close()
        steady.polls = steady.rounds * len(shops)
        steady.failures = running.failures
    return steady


@define
class _Memory:
    after_backlog: int
    after_poll: int
    peak: int
    top: list[str]
    lines: list[str] = field(factory=list)  #: the largest allocation sites, per shop


async def _memory(remote: RemoteEmulator, shops: Sequence[Shop], sizes: Sizes) -> _Memory:
    """``tracemalloc`` of a fleet built under tracing: what it holds after the backlog and after a poll."""
    # Warm-up, untraced: lazy imports, converters and caches a first sync creates once per process.
    async with _client(remote, FAST) as client:
        warm_up = Syncer(client, store=MemoryStore(), fields=LIGHT_FIELDS, backfill=LIGHT_BACKFILL)
        async for _ in warm_up.batches(shops[0]):
            pass

    async def handler(shop: Shop, batch: Batch) -> None:
        return None

    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        client = _client(remote, FAST)
        running = FleetRun.make(
            client,
            shops,
            handler,
            concurrency=sizes.fleet_concurrency,
            seed=sizes.seed,
            fields=LIGHT_FIELDS,
            backfill=LIGHT_BACKFILL,
        )
        try:
            await running.poll()
            gc.collect()
            after_backlog, _ = tracemalloc.get_traced_memory()
            await remote.advance(STEP)
            await running.poll()
            gc.collect()
            after_poll, peak = tracemalloc.get_traced_memory()
            snapshot = tracemalloc.take_snapshot()
        finally:
            await running.close()
            await client.aclose()
    finally:
        tracemalloc.stop()
    if running.failures:
        raise RuntimeError(f"traced fleet pass: {running.failures[0]}")
    top = [
        f"{stat.traceback[0].filename.rsplit('/', 1)[-1]} {stat.size / len(shops):.0f} B"
        for stat in snapshot.statistics("filename")[:5]
    ]
    lines = [
        f"{stat.traceback[0].filename.rsplit('/', 1)[-1]}:{stat.traceback[0].lineno} {stat.size / len(shops):.0f} B"
        for stat in snapshot.statistics("lineno")[:12]
    ]
    return _Memory(
        after_backlog=after_backlog - base, after_poll=after_poll - base, peak=peak - base, top=top, lines=lines
    )


async def fleet(sizes: Sizes) -> list[Row]:
    """``Fleet`` at 10, 100 and 1,000 shops: rate budget used, CPU per poll, memory per shop."""
    return [await _fleet_of(sizes, count) for count in sizes.fleet_shops]


async def _fleet_of(sizes: Sizes, count: int) -> Row:
    profile = ShopProfile(orders_per_day=sizes.fleet_orders_per_day, history_days=sizes.fleet_history_days)
    async with RemoteEmulator(shops=count, profile=profile, seed=sizes.seed) as remote:
        shops = [Shop(id=shop_id, session=session) for shop_id, session in remote.shops]
        _log(f"{count} shops, {remote.trades:,} trades, generated in {remote.generated_seconds:.1f} s")
        started = time.perf_counter()
        low = await _backlog(remote, shops, sizes, sizes.fleet_rate)
        _log(f"{count} shops: backlog at {sizes.fleet_rate:g}/s in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        high = await _backlog(remote, shops, sizes, sizes.fleet_high_rate)
        _log(f"{count} shops: backlog at {sizes.fleet_high_rate:g}/s in {time.perf_counter() - started:.1f} s")
        burst = None
        if count in sizes.fleet_burst_shops:
            started = time.perf_counter()
            burst = await _backlog(remote, shops, sizes, sizes.fleet_rate, 2)
            _log(f"{count} shops: backlog at {sizes.fleet_rate:g}/s, burst 2 in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        steady = await _steady(remote, shops, sizes, low.store)
        _log(f"{count} shops: {steady.polls:,} steady polls of each kind in {time.perf_counter() - started:.1f} s")
        memory = None
        if sizes.memory:
            started = time.perf_counter()
            memory = await _memory(remote, shops, sizes)
            _log(f"{count} shops: traced pass in {time.perf_counter() - started:.1f} s")
        generated = remote.generated_seconds
    row = Row(
        scenario=f"fleet ({count})",
        syncer=f"ours, Fleet(concurrency={sizes.fleet_concurrency}) at {sizes.fleet_rate:g}/s",
        trades=low.trades,
        deliveries=low.delivered,
        in_scope=low.in_scope,
        lost=low.lost + high.lost + (burst.lost if burst else 0),
        list_calls=list_calls(low.calls),
        minimum=low.minimum,
        time_calls=time_calls(low.calls),
        seconds=low.seconds,
        lost_versions={**low.lost_versions, **high.lost_versions, **(burst.lost_versions if burst else {})},
        error="; ".join(
            low.failures[:1] + high.failures[:1] + (burst.failures[:1] if burst else []) + steady.failures[:1]
        )
        or None,
    )
    fleet_ms, plain_ms = (1000 * steady.per_poll(name, steady.cpu) for name in ("fleet", "plain"))
    calls_ms, parallel_ms = (1000 * steady.per_poll(name, steady.cpu) for name in ("calls", "calls at once"))
    row.notes = {
        "shops": count,
        "concurrency": sizes.fleet_concurrency,
        "rate": sizes.fleet_rate,
        "backlog s": low.seconds,
        "backlog calls": low.sent,
        "catch-up increment calls": low.calls.get("taobao.trades.sold.increment.get", 0),
        "budget share": low.share,
        "process CPU busy": low.busy,
        "emulator CPU busy": low.emulator_busy,
        "high rate": sizes.fleet_high_rate,
        "budget share at high rate": high.share,
        "calls/s at high rate": high.per_second,
        "process CPU busy at high rate": high.busy,
        "emulator CPU busy at high rate": high.emulator_busy,
        "lost at high rate": high.lost,
        "budget share with burst 2": burst.share if burst else None,
        "lost with burst 2": burst.lost if burst else None,
        "duplicates": low.duplicates,
        "steady polls (each)": steady.polls,
        "steady calls/poll (fleet, calls at once, plain, calls)": [
            round(steady.per_poll(name, steady.calls), 3) for name in VARIANTS
        ],
        "steady trades/poll (same order)": [round(steady.per_poll(name, steady.trades), 2) for name in VARIANTS],
        "CPU ms/poll fleet": fleet_ms,
        "CPU ms/call, calls at once": parallel_ms,
        "CPU ms/poll plain": plain_ms,
        "CPU ms/call, calls one at a time": calls_ms,
        "fleet/plain": fleet_ms / plain_ms if plain_ms else 0.0,
        "wall ms/poll (same order)": [round(1000 * steady.per_poll(name, steady.wall), 3) for name in VARIANTS],
        "generation s (emulator)": generated,
    }
    if memory is not None:
        row.notes |= {
            "bytes/shop after backlog": memory.after_backlog / count,
            "bytes/shop after a poll": memory.after_poll / count,
            "traced MB after backlog": memory.after_backlog / 1e6,
            "traced peak MB": memory.peak / 1e6,
            "top files (B/shop)": memory.top,
        }
    return row
