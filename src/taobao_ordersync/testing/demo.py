"""``taobao-ordersync demo``: a realistic shop on the emulator, synced and verified.

Everything is real except Taobao: the fleet runner and client talk HTTP over
loopback to the emulator, which plays a shop with three months of history, live activity, an
11.11-style burst and chaos (bans, transient failures, trades moving while
pages are read, a clock that disagrees with ours). At the end shop activity
stops, one last poll runs, and what was delivered is checked against the
emulator's ground truth.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import TextIO

from attrs import define, field

from taobao_ordersync._retry import RetryPolicy
from taobao_ordersync.client import TopClient
from taobao_ordersync.fleet import Fleet, FleetEvent, PollPolicy
from taobao_ordersync.models import Shop
from taobao_ordersync.stores import MemoryStore
from taobao_ordersync.syncer import Batch, ShopProgress
from taobao_ordersync.testing import Chaos, Collector, Emulator, ShopProfile, VerifyReport
from taobao_ordersync.testing._push import PushRun, measure_push

LIST_METHODS = ("taobao.trades.sold.get", "taobao.trades.sold.increment.get")


@define
class DemoResult:
    """Totals over every shop of a demo run."""

    reports: list[VerifyReport] = field(factory=list)
    suppressed: int = 0
    calls: int = 0
    minimum: int = 0

    @property
    def lost(self) -> int:
        return sum(report.lost for report in self.reports)

    def summary(self) -> str:
        in_scope = sum(report.in_scope for report in self.reports)
        delivered = sum(report.delivered for report in self.reports)
        ratio = self.calls / max(1, self.minimum)
        return (
            f"verified: {in_scope} trades in scope, {delivered} delivered, {self.lost} lost, "
            f"{self.suppressed} duplicates suppressed, {self.calls} API calls ({ratio:.2f}x minimum)"
        )


class Progress:
    """One status line on stderr, redrawn in place on a terminal, every few seconds otherwise."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._clock = clock
        self._last = 0.0

    def show(self, text: str, *, force: bool = False) -> None:
        now = self._clock()
        if self._tty:
            if force or now - self._last >= 0.1:
                self._stream.write("\r\033[K" + text)
                self._stream.flush()
                self._last = now
        elif force or now - self._last >= 5.0:
            self._stream.write(text + "\n")
            self._stream.flush()
            self._last = now

    def done(self, text: str) -> None:
        if self._tty:
            self._stream.write("\r\033[K")
        self._stream.write(text + "\n")
        self._stream.flush()


async def run_demo(
    *,
    shops: int = 1,
    seed: int = 2026,
    polls: int = 6,
    sale_size: int = 25_000,
    orders_per_day: float = 350.0,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> DemoResult:
    """Run the demo and print its report; returns the totals (``lost`` must be 0)."""
    out = out or sys.stdout
    err = err or sys.stderr
    chaos = Chaos(error_rate=0.03, ban_rate=0.004, ban_seconds=1, move_while_paging=0.15)
    profile = ShopProfile(orders_per_day=orders_per_day, history_days=90, other_type_share=0.03)
    progress = Progress(err)
    started = time.monotonic()
    out.write(f"Building {shops} shop(s) with 90 days of history on the emulator (seed {seed})...\n")
    out.flush()
    async with Emulator(
        shops=shops, profile=profile, seed=seed, clock_offset=-97.0, visibility_lag=2.0, chaos=chaos
    ) as emulator:
        histories = sum(len(shop.trades) for shop in emulator.shops)
        out.write(
            f"Emulator at {emulator.url}: {histories} trades; Taobao's clock runs 97 s behind ours; "
            f"chaos: 3% transient failures, bans, trades moving mid-read.\n"
        )
        retry = RetryPolicy(base_delay=0.05, max_delay=0.5, ban_margin=0.2)
        async with TopClient(
            emulator.app_key, emulator.app_secret, url=emulator.url, rate=80.0, retry=retry, clock_refresh=0
        ) as client:
            collectors = {shop.id: Collector() for shop in emulator.shops}
            since_poll = dict.fromkeys(collectors, 0)
            minimum = 0

            async def handler(shop: Shop, batch: Batch) -> None:
                for trade in batch.trades:
                    collectors[shop.id].add(trade)
                since_poll[shop.id] += len(batch.trades)

            def on_event(event: FleetEvent) -> None:
                nonlocal minimum
                if event.kind == "synced":  # the least a poll could cost: its trades, full pages
                    minimum += max(1, -(-since_poll[event.shop_id] // 100))
                    since_poll[event.shop_id] = 0

            def show(_: ShopProgress) -> None:
                delivered = sum(c.deliveries for c in collectors.values())
                calls = sum(client.call_counts.values())
                states = [fleet.syncer.progress(shop.id) for shop in emulator.shops]
                phase = "backfill" if any(s.phase == "backfill" for s in states) else "increments"
                behind = max((s.behind or timedelta(0) for s in states), default=timedelta(0))
                progress.show(
                    f"  {phase:<10} {delivered:>7} trades delivered  {calls:>5} calls  "
                    f"{client.bans} bans  behind {_human(behind)}"
                )

            # Polls are driven by the demo (wake), so the interval only has to outlast a round.
            policy = PollPolicy(min_interval=3600, max_interval=3600, min_backoff=0.5, max_backoff=5)
            fleet = Fleet(
                client,
                store=MemoryStore(),
                handler=handler,
                concurrency=min(8, shops),
                policy=policy,
                on_event=on_event,
                lag=5,
                on_progress=show,
            )
            for shop in emulator.shops:
                fleet.add(Shop(id=shop.id, session=shop.session))

            async def poll(label: str) -> None:
                fleet.wake()
                await asyncio.gather(*(fleet.next_poll(shop.id) for shop in emulator.shops))
                delivered = sum(c.deliveries for c in collectors.values())
                progress.done(f"  {label:<44} {delivered:>7} trades delivered so far")

            runner = asyncio.create_task(fleet.run())
            try:
                await poll("backfill (3 months) + first increments")
                for number in range(1, polls + 1):
                    emulator.advance(600)
                    if number == polls // 2:
                        sale_start = emulator.now() - timedelta(seconds=200)
                        for shop in emulator.shops:
                            emulator.flash_sale(shop.id, sale_size, seconds=120, start=sale_start)
                        await poll(f"poll {number}: 11.11 burst, {sale_size} orders in 2 minutes")
                    else:
                        await poll(f"poll {number}: 10 minutes of live orders")
                emulator.pause_activity()
                emulator.advance(60)
                await poll("final poll after activity stops")
            finally:
                fleet.stop()
                await runner

            result = DemoResult(calls=sum(client.call_counts.values()), minimum=minimum)
            for shop in emulator.shops:
                checkpoint = await fleet.syncer.checkpoint(shop.id)
                if checkpoint is None:
                    raise RuntimeError(f"{shop.id} has no checkpoint after its sync")
                collector = collectors[shop.id]
                report = emulator.verify_sync(checkpoint, collector)
                result.reports.append(report)
                result.suppressed += fleet.syncer.progress(shop.id).duplicates
                if shops <= 10:
                    out.write(f"  {shop.id}: {report}\n")
            counts = client.call_counts
            out.write(
                f"Calls: {counts.get('taobao.trades.sold.get', 0)} sold.get, "
                f"{counts.get('taobao.trades.sold.increment.get', 0)} increment.get, "
                f"{counts.get('taobao.time.get', 0)} time.get (incl. {emulator.faults_injected} failures injected "
                f"and retried, {client.bans} bans waited out) in {time.monotonic() - started:.0f} s.\n"
            )
    out.write(result.summary() + "\n")
    out.flush()
    return result


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 86400:
        return f"{seconds // 86400}d {seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 60}m {seconds % 60}s"


async def run_push_demo(
    *,
    shops: int = 3,
    seed: int = 2026,
    seconds: float = 30.0,
    orders_per_day: float = 17_280.0,
    lag: float = 5.0,
    interval: float = 15.0,
    out: TextIO | None = None,
) -> list[PushRun]:
    """``demo --tmc``: the same live shops with TMC push and with polling alone, side by side.

    Prints, for each, how long a change took to reach the handler (p50, p99), the calls per
    change and the verification; returns both runs (``lost`` must be 0).
    """
    out = out or sys.stdout
    out.write(
        f"{shops} live shop(s) on two emulators for {seconds:.0f} s, {orders_per_day:,.0f} orders a day each "
        f"(seed {seed}): one with TMC push (auto mode), one with polling alone every {interval:.0f} s; "
        f"windows {lag:.0f} s behind Taobao's clock...\n"
    )
    out.flush()
    measure = partial(
        measure_push, shops=shops, seconds=seconds, orders_per_day=orders_per_day, lag=lag, interval=interval, seed=seed
    )
    runs = await asyncio.gather(measure("auto"), measure("polling"))
    for run in runs:
        label = "push + polling (auto)" if run.mode == "auto" else "polling alone"
        out.write(
            f"  {label:<22} {run.changes:>4} changes: change -> handler p50 {run.describe(run.percentile(50))}, "
            f"p99 {run.describe(run.percentile(99))}; {run.calls_per_change:.2f} calls per change; "
            f"{run.lost} lost\n"
        )
    push = runs[0]
    if push.stats is not None:
        out.write(
            f"  push: {push.stats.fetched} fullinfo fetches, {push.stats.early_polls} early polls, "
            f"{push.stats.coalesced} duplicates coalesced, {push.stats.confirmed} messages confirmed; "
            f"no checkpoint moved by push\n"
        )
    out.write(f"verified: {sum(run.lost for run in runs)} lost\n")
    out.flush()
    return list(runs)
