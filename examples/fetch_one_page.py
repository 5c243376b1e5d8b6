"""Fetch one page of recently modified trades.

Runs against the built-in emulator unless TAOBAO_ORDERSYNC_APP_KEY, TAOBAO_ORDERSYNC_APP_SECRET and
TAOBAO_ORDERSYNC_SESSION are set, in which case it asks the real Taobao gateway.

    python examples/fetch_one_page.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import timedelta

from taobao_ordersync import TopClient
from taobao_ordersync.testing import Emulator, ShopProfile


@contextlib.asynccontextmanager
async def connect() -> AsyncIterator[tuple[TopClient, str]]:
    """A client and a session key: real credentials from the environment, else the emulator."""
    if key := os.environ.get("TAOBAO_ORDERSYNC_APP_KEY"):
        async with TopClient(key, os.environ["TAOBAO_ORDERSYNC_APP_SECRET"]) as client:
            yield client, os.environ["TAOBAO_ORDERSYNC_SESSION"]
        return
    async with (
        Emulator(profile=ShopProfile(orders_per_day=500, history_days=2)) as emulator,
        TopClient(emulator.app_key, emulator.app_secret, url=emulator.url) as client,
    ):
        yield client, emulator.shops[0].session


async def main() -> None:
    async with connect() as (client, session):
        now = await client.server_now()
        page = await client.trades_sold_increment(
            session, start_modified=now - timedelta(minutes=30), end_modified=now, page_size=5
        )
        print(f"{page.total_results} trades changed in the last 30 minutes; the newest:")
        for trade in page.trades:
            print(f"  {trade.tid}  {trade.modified:%H:%M:%S}  {trade.status or '-':<26} {trade.payment}")


if __name__ == "__main__":
    asyncio.run(main())
