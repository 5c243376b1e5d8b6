"""Sync one shop with ``Syncer.increments`` and a ``SqliteStore``, twice.

What it shows:

- the first run of a shop has no checkpoint: it backfills the trades created in
  the last three months, then follows changes by modification time;
- the second run (a new client and a new ``Syncer`` over the same checkpoint
  file, as a second process would have) continues from the checkpoint the first
  run committed and reads only what changed since, in a call or two;
- the consumer is an idempotent upsert into a dict, one entry per ``tid`` keeping
  the newest ``modified``, so duplicates (delivery is at least once) change nothing.

The copy is a dict in memory, so the checkpoint file is a temporary one that lives
exactly as long: a checkpoint must never outlive the data it vouches for. In your
application keep both durable (``bulk_batches_to_sqlite.py`` keeps them in one
SQLite file).

Run it:

    python examples/sync_one_shop.py

By default it runs against the built-in TOP emulator (a shop with two days of
history; between the two runs the emulator's clock jumps five minutes ahead, with
the shop's activity in between).

With TAOBAO_ORDERSYNC_APP_KEY, TAOBAO_ORDERSYNC_APP_SECRET and TAOBAO_ORDERSYNC_SESSION set, it syncs your shop
on the real Taobao gateway instead, under the id TAOBAO_ORDERSYNC_SHOP_ID (default
"my-shop"). The first run there backfills three months of trades, which can take
a while; the second continues from its checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from taobao_ordersync import Shop, SqliteStore, Syncer, TopClient, Trade
from taobao_ordersync.testing import Emulator, ShopProfile


@contextlib.asynccontextmanager
async def environment() -> AsyncIterator[tuple[Callable[[], TopClient], Shop, Callable[[], None]]]:
    """A client factory, the shop and a "time passes" step.

    Real credentials from the environment if set, else the emulator.
    """
    if key := os.environ.get("TAOBAO_ORDERSYNC_APP_KEY"):
        secret = os.environ["TAOBAO_ORDERSYNC_APP_SECRET"]
        shop_id = os.environ.get("TAOBAO_ORDERSYNC_SHOP_ID", "my-shop")
        shop = Shop(id=shop_id, session=os.environ["TAOBAO_ORDERSYNC_SESSION"])
        yield (lambda: TopClient(key, secret)), shop, lambda: None
        return
    profile = ShopProfile(orders_per_day=2000, history_days=2)
    async with Emulator(profile=profile, seed=1) as emulator:
        shop = Shop(id="shop-1", session=emulator.shops[0].session)

        def client() -> TopClient:
            # rate=100: the emulator needs no pacing; against Taobao keep the default or your app's limit.
            return TopClient(emulator.app_key, emulator.app_secret, url=emulator.url, rate=100)

        yield client, shop, lambda: emulator.advance(300)


def upsert(copy: dict[int, Trade], trade: Trade) -> None:
    """Keep one version per trade, the newest: replaying a delivery changes nothing."""
    known = copy.get(trade.tid)
    if known is None or trade.modified > known.modified:
        copy[trade.tid] = trade


async def sync_once(
    run: int, make_client: Callable[[], TopClient], shop: Shop, path: Path, copy: dict[int, Trade]
) -> None:
    """One run, as one process would do it: a client, a Syncer, the shop caught up, done."""
    async with make_client() as client:
        syncer = Syncer(client, store=SqliteStore(path))
        before = await syncer.checkpoint(shop.id)
        if before is None:
            print(f"run {run}: no checkpoint for {shop.id}: first sync, backfill then increments")
        else:
            print(f"run {run}: resuming {shop.id} from the checkpoint, cursor {before.cursor:%Y-%m-%d %H:%M:%S}")
        deliveries = 0
        async for trade in syncer.increments(shop):
            upsert(copy, trade)
            deliveries += 1
        after = await syncer.checkpoint(shop.id)
        if after is None:
            raise RuntimeError("a finished run always leaves a checkpoint")
        calls = sum(count for method, count in client.call_counts.items() if method != "taobao.time.get")
        print(
            f"run {run}: {deliveries} trades delivered, {calls} list call(s); "
            f"checkpoint cursor now {after.cursor:%Y-%m-%d %H:%M:%S}"
        )


async def main() -> None:
    copy: dict[int, Trade] = {}
    with tempfile.TemporaryDirectory() as scratch:  # the checkpoints live as long as the copy
        path = Path(scratch) / "checkpoints.sqlite3"
        async with environment() as (make_client, shop, time_passes):
            await sync_once(1, make_client, shop, path, copy)
            time_passes()
            await sync_once(2, make_client, shop, path, copy)
    print(f"the copy holds {len(copy)} trades, one version each")


if __name__ == "__main__":
    asyncio.run(main())
