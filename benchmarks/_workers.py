"""The ``workers`` scenario: 1, 2 and 4 ``Worker`` objects sharing shops through PostgreSQL.

The workers run in this one process, but each has its own ``TopClient`` and its own
``PostgresStore`` (its own connection pool and LISTEN connection), as separate
processes would have; they meet only in PostgreSQL (a throw-away ``LocalPostgres``
on loopback) and at the emulator (in its child process, ``_remote``). Every shop has
a small history (one page of backfill), so the backlog is the initial backfill of
every shop. The app's budget is ``RATE`` calls per second: each client is given the
whole of it and its ``Worker`` takes ``RATE / live workers``; the emulator bans the
app for a second whenever it gets more than ``RATE`` calls in a second, so any
overshoot shows as bans. For each worker count, on a fresh schema:

1. **Budget share while there is backlog.** From the moment the workers start until
   every shop's checkpoint has ``backfill_done`` (polled through
   ``PostgresStore.statuses()``): emulator calls / (``RATE`` x seconds). The start-up
   includes each worker's settling heartbeat (``lease / 3``) before it claims.
2. **Resume after a crash** (2 and 4 workers). One worker's ``run()`` task is
   cancelled (no graceful release, like a crash) and its client and store closed.
   Seconds until every one of its shops has a new owner, and until each has
   committed a new checkpoint revision; compare with ``LEASE``.
3. **Database round trips per synced window.** Statements sent by every worker's
   store over the run / checkpoint commits (the sum of the checkpoint revisions),
   and the heartbeats' share of them (5 round trips each).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import traceback
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from benchmarks._measure import Row, _render
from benchmarks._remote import RemoteEmulator
from taobao_ordersync import Batch, PollPolicy, RetryPolicy, Shop, TopClient
from taobao_ordersync.postgres import HEARTBEAT_ROUND_TRIPS, PostgresStore
from taobao_ordersync.testing import Chaos, Collector, ShopProfile
from taobao_ordersync.testing.postgres import LocalPostgres
from taobao_ordersync.worker import Worker

if TYPE_CHECKING:
    import asyncpg

    from benchmarks.scenarios import Sizes

__all__ = ["format_workers_table", "workers"]

RATE: Final = 200.0  #: the whole app's calls per second, shared by the workers
LEASE: Final = 3.0
COUNTS: Final = (1, 2, 4)
PROFILE: Final = ShopProfile(orders_per_day=20.0, history_days=1.0)
POLICY: Final = PollPolicy(min_interval=5.0, max_interval=15.0, jitter=0.2, min_backoff=1.0, max_backoff=5.0)

TIMEOUT: Final = 300.0
LAG: Final = 10.0  #: the workers' Syncer lag (the default)
CHECK_EVERY: Final = 0.25


def _log(message: str) -> None:
    print(f"[bench]   workers: {message}", file=sys.stderr, flush=True)


class _Run:
    """The workers of one count, on one schema; each with its own client and store."""

    def __init__(
        self, remote: RemoteEmulator, dsn: str, schema: str, *, policy: PollPolicy = POLICY, keep: bool = False
    ) -> None:
        self.remote = remote
        self.dsn = dsn
        self.schema = schema
        self.policy = policy
        self.sessions = dict(remote.shops)
        self.deliveries = 0
        #: with ``keep``, what each shop's handler calls delivered (shops move between workers)
        self.collectors: dict[str, Collector] | None = (
            {shop_id: Collector() for shop_id in self.sessions} if keep else None
        )
        self.workers: list[Worker] = []
        self.stores: list[PostgresStore] = []
        self.clients: list[TopClient] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def handler(self, shop: Shop, batch: Batch) -> None:
        self.deliveries += len(batch.trades)
        if self.collectors is not None:
            collector = self.collectors[shop.id]
            for trade in batch.trades:
                collector.add(trade)

    async def start(self, name: str) -> None:
        remote = self.remote
        client = TopClient(
            remote.app_key,
            remote.app_secret,
            url=remote.url,
            rate=RATE,
            retry=RetryPolicy.no_wait(),
            clock=remote.clock,
        )
        store = PostgresStore(self.dsn, schema=self.schema)
        await store.open()
        worker = Worker(
            client,
            store,
            self.handler,
            self.sessions.get,
            worker_id=name,
            lease=LEASE,
            policy=self.policy,
            concurrency=16,
        )
        self.clients.append(client)
        self.stores.append(store)
        self.workers.append(worker)
        self.tasks.append(asyncio.create_task(worker.run(), name=f"worker {name}"))

    async def crash(self, index: int) -> None:
        """Cancel one worker's ``run()`` (no release) and close its client and store, as a dying process would."""
        task = self.tasks[index]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self.clients[index].aclose()
        await self.stores[index].close()

    async def close(self) -> None:
        for worker, task in zip(self.workers, self.tasks, strict=True):
            if not task.done():
                worker.stop()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.aclose()
        for store in self.stores:
            await store.close()


async def _revisions(connection: asyncpg.Connection, schema: str) -> dict[str, int]:
    rows = await connection.fetch(f"SELECT shop_id, revision FROM {schema}.checkpoints")  # noqa: S608 - our schema
    return {row["shop_id"]: int(row["revision"]) for row in rows}


async def _backlog_done(admin: PostgresStore, connection: asyncpg.Connection, shops: int) -> bool:
    # A cheap count first: parsing every checkpoint (shops()) four times a second would cost CPU
    # in this process, which the workers share.
    query = f"SELECT count(*) FROM {admin.schema}.checkpoints"  # noqa: S608 - our schema
    if int(await connection.fetchval(query)) < shops:
        return False
    done = [shop for shop in await admin.statuses() if shop.checkpoint is not None and shop.checkpoint.backfill_done]
    return len(done) == shops


async def _one_count(
    remote: RemoteEmulator,
    server: LocalPostgres,
    count: int,
    shops: int,
    *,
    policy: PollPolicy = POLICY,
    verify: bool = False,
    scenario: str = "workers",
) -> Row:
    """One worker count on a fresh schema: backlog, a crash (2 or more workers), graceful stop.

    With ``verify``: after the crash, shop activity stops, every live worker polls every shop
    once more on its own schedule (its CPU per committed poll is measured), and every shop's copy is verified
    against the emulator up to its committed checkpoint.
    """
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    row = Row(scenario=f"{scenario} ({count} x {shops:,} shops)", syncer=f"ours: {count} Worker(s)")
    async with PostgresStore(server.dsn, schema=schema) as admin:
        await admin.add_shops(*(shop_id for shop_id, _ in remote.shops))
        import asyncpg  # the postgres extra; imported here so other scenarios run without it

        connection = await asyncpg.connect(server.dsn)
        group = _Run(remote, server.dsn, schema, policy=policy, keep=verify)
        try:
            before = await remote.stats()
            started = time.monotonic()
            for index in range(count):
                await group.start(f"w{index + 1}")
            while not await _backlog_done(admin, connection, shops):
                if time.monotonic() - started > TIMEOUT:
                    raise TimeoutError(f"the backlog was not done within {TIMEOUT:.0f} s")
                for task in group.tasks:
                    if task.done():
                        task.result()
                await asyncio.sleep(CHECK_EVERY)
            backlog = time.monotonic() - started
            after = await remote.stats()
            calls = sum(after["calls"].values()) - sum(before["calls"].values())
            row.notes.update(
                {
                    "workers": count,
                    "shops": shops,
                    "backlog calls": calls,
                    "backlog s": backlog,
                    "budget share": calls / (RATE * backlog),
                    "bans": after["bans"] - before["bans"],
                }
            )
            _log(f"{count} workers: backlog of {shops} shops in {backlog:.1f} s, {calls} calls")

            if count > 1:
                victim = group.workers[0]
                held = {
                    shop.shop_id
                    for shop in await admin.statuses()
                    if shop.lease is not None and shop.lease.owner == victim.worker_id
                }
                killed = time.monotonic()
                await group.crash(0)
                at_kill = await _revisions(connection, schema)  # after the crash: its last commits are not resumes
                owned: float | None = None
                resumed: dict[str, float] = {}
                while owned is None or len(resumed) < len(held):
                    now = time.monotonic() - killed
                    if now > TIMEOUT:
                        raise TimeoutError(f"{len(held) - len(resumed)} shops did not resume within {TIMEOUT:.0f} s")
                    if owned is None:
                        owners = {
                            shop.shop_id: shop.lease.owner if shop.lease else None
                            for shop in await admin.statuses()
                            if shop.shop_id in held
                        }
                        if all(owner not in (None, victim.worker_id) for owner in owners.values()):
                            owned = now
                    for shop_id, revision in (await _revisions(connection, schema)).items():
                        if shop_id in held and shop_id not in resumed and revision > at_kill.get(shop_id, 0):
                            resumed[shop_id] = now
                    await asyncio.sleep(CHECK_EVERY / 2)
                times = sorted(resumed.values())
                row.notes.update(
                    {
                        "crashed shops": len(held),
                        "all re-owned s": owned,
                        "first resumed s": times[0] if times else None,
                        "median resumed s": times[len(times) // 2] if times else None,
                        "all resumed s": times[-1] if times else None,
                    }
                )
                _log(f"{count} workers: {len(held)} shops moved in {owned:.1f} s, resumed in {times[-1]:.1f} s")
            if verify:
                await _final_poll(group, connection, row)
            await group.close()
            if verify:
                await _verify(group, admin, row)
            final = await remote.stats()
            revisions = sum((await _revisions(connection, schema)).values())
            round_trips = sum(store.round_trips for store in group.stores)
            heartbeats = sum(worker.heartbeats for worker in group.workers)
            row.notes.update(
                {
                    "commits": revisions,
                    "round trips": round_trips,
                    "round trips per commit": round_trips / revisions if revisions else None,
                    "heartbeat round trips per commit": HEARTBEAT_ROUND_TRIPS * heartbeats / revisions
                    if revisions
                    else None,
                    "bans in run": final["bans"] - before["bans"],
                    "run s": time.monotonic() - started,
                }
            )
            row.list_calls = sum(value for name, value in final["calls"].items() if name != "taobao.time.get") - sum(
                value for name, value in before["calls"].items() if name != "taobao.time.get"
            )
            row.time_calls = final["calls"].get("taobao.time.get", 0) - before["calls"].get("taobao.time.get", 0)
            row.deliveries = group.deliveries
            row.trades = row.trades or group.deliveries
            row.seconds = time.monotonic() - started
        except Exception as exc:
            row.error = f"{type(exc).__name__}: {exc}"
            _log(f"{count} workers failed: " + "".join(traceback.format_exception(exc)))
            await group.close()
        finally:
            with contextlib.suppress(Exception):
                await connection.close()
    return row


async def _final_poll(group: _Run, connection: asyncpg.Connection, row: Row) -> None:
    """Stop shop activity and, once the last change is older than the lag, wait until every shop
    committed again (a commit of a window that ended before the last change would leave that
    change due in the next window, and the check would call it missing)."""
    await group.remote.pause_activity()
    await asyncio.sleep(LAG + 1.0)
    before = await _revisions(connection, group.schema)
    cpu = time.process_time()
    started = time.monotonic()
    # No wake(): every shop's next poll comes from its worker's own schedule (at most
    # ``max_interval`` plus jitter away), as in production.
    while True:
        now = await _revisions(connection, group.schema)
        if all(revision > before.get(shop_id, 0) for shop_id, revision in now.items()):
            break
        if time.monotonic() - started > TIMEOUT:
            raise TimeoutError(f"the final poll was not done within {TIMEOUT:.0f} s")
        for task in group.tasks:
            if task.done() and not task.cancelled():
                task.result()
        await asyncio.sleep(CHECK_EVERY)
    seconds = time.monotonic() - started
    commits = sum(now.values()) - sum(before.values())
    row.notes.update(
        {
            "final poll s": seconds,
            "final poll commits": commits,
            "CPU ms per commit, final poll": 1000 * (time.process_time() - cpu) / commits if commits else None,
        }
    )
    _log(f"final poll after the pause: {commits} commits in {seconds:.1f} s")


async def _verify(group: _Run, admin: PostgresStore, row: Row) -> None:
    """Every shop's copy (all workers' deliveries) against the emulator, up to its committed cursor."""
    collectors = group.collectors or {}
    items = []
    for shop in await admin.statuses():
        checkpoint = shop.checkpoint
        if checkpoint is None or not checkpoint.backfill_done:
            raise RuntimeError(f"{shop.shop_id}: no complete backfill")
        collector = collectors[shop.shop_id]
        items.append(
            (
                shop.shop_id,
                collector.newest,
                checkpoint.backfill_from,
                checkpoint.origin,
                checkpoint.cursor,
                collector.duplicates,
            )
        )
    for check in await group.remote.verify(items):
        row.in_scope += check.report.in_scope
        row.lost += check.report.lost
        row.lost_versions.update(check.lost_versions)
    row.trades = sum(len(collector.newest) for collector in collectors.values())
    _log(f"verified {len(items)} shops: {row.in_scope} trades in scope, lost {row.lost}")


async def workers(sizes: Sizes) -> list[Row]:
    """1, 2 and 4 workers over ``sizes.worker_shops`` shops, one emulator and one PostgreSQL server."""
    shops = sizes.worker_shops
    server = LocalPostgres()
    await asyncio.to_thread(server.start)
    try:
        chaos = Chaos(rate_limit=int(RATE))
        async with RemoteEmulator(shops=shops, profile=PROFILE, seed=sizes.seed, chaos=chaos) as remote:
            _log(f"emulator with {shops} shops ({remote.trades} trades) ready")
            return [await _one_count(remote, server, count, shops) for count in COUNTS]
    finally:
        await asyncio.to_thread(server.stop)


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_workers_table(rows: Sequence[Row], *, markdown: bool = False) -> str:
    """The ``workers`` scenario's budget share, crash recovery and round trips ("" without its rows)."""
    found = [row for row in rows if row.scenario.startswith("workers (") and "workers" in row.notes]
    if not found:
        return ""
    columns = (
        ("workers", ">"),
        ("shops", ">"),
        ("backlog calls", ">"),
        ("backlog s", ">"),
        (f"budget used ({RATE:g}/s)", ">"),
        ("after the settling beat", ">"),
        ("bans", ">"),
        ("crashed shops", ">"),
        ("re-owned after s", ">"),
        ("resumed: median / all s", ">"),
        ("DB round trips/commit", ">"),
        ("of which heartbeats", ">"),
    )
    cells = []
    for row in found:
        notes = row.notes
        resumed = "-"
        if notes.get("all resumed s") is not None:
            resumed = f"{notes['median resumed s']:.1f} / {notes['all resumed s']:.1f}"
        per_commit = notes.get("round trips per commit")
        heartbeat = notes.get("heartbeat round trips per commit")
        cells.append(
            [
                str(notes["workers"]),
                f"{notes['shops']:,}",
                f"{notes['backlog calls']:,}",
                f"{notes['backlog s']:.1f}",
                f"{100 * notes['budget share']:.0f}%",
                f"{100 * notes['backlog calls'] / (RATE * (notes['backlog s'] - LEASE / 3)):.0f}%",
                str(notes.get("bans in run", notes["bans"])),
                f"{notes['crashed shops']:,}" if "crashed shops" in notes else "-",
                _seconds(notes.get("all re-owned s")),
                resumed,
                "-" if per_commit is None else f"{per_commit:.2f}",
                "-" if heartbeat is None else f"{heartbeat:.2f}",
            ]
        )
    title = (
        f"workers: in-process Worker objects, each with its own TopClient and PostgresStore (as separate "
        f"processes would have); app budget {RATE:g} calls/s shared, emulator bans above {RATE:g}/s; lease {LEASE:g} s"
    )
    return title + "\n" + _render(columns, cells, markdown=markdown)
