"""Sync several shops at once with ``Fleet``, one of them with an expired session.

What it shows:

- one ``TopClient`` shared by every shop (one rate limit, one ban gate), one
  checkpoint store, one ``handler(shop, batch)`` that upserts into a copy per shop;
- fault isolation: the shop whose session expired is paused (a ``paused`` event,
  state ``paused``) while the others sync; on the emulator the handler also fails
  once for one shop, which backs off and gets the same trades again
  (a ``handler_failed`` event), never skipping them;
- status lines from ``fleet.statuses()`` while it runs, and events from ``on_event``;
- a bounded run: it waits until every shop has completed a poll
  (``await fleet.next_poll(shop_id)``) or been paused, then ``fleet.stop()``.

Run it:

    python examples/fleet.py

By default it runs four shops of the built-in TOP emulator; ``shop-4``'s session
is expired with ``emulator.expire_session``. It takes a few seconds.

With TAOBAO_ORDERSYNC_APP_KEY and TAOBAO_ORDERSYNC_APP_SECRET set, it runs your shops on the real
Taobao gateway instead, read from TAOBAO_ORDERSYNC_SHOPS as ``shop_id=session`` pairs
separated by commas or spaces (``TAOBAO_ORDERSYNC_SHOPS="shop-a=6100...,shop-b=6201..."``).
A shop's first poll backfills three months of trades, so that run can take a long
while. The copies are dicts in memory, so the checkpoints are kept in memory too
(``MemoryStore``): a checkpoint must never outlive the data it vouches for. In
production, give the fleet a durable store and a handler that writes durably.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections import defaultdict
from collections.abc import AsyncIterator

from taobao_ordersync import (
    Batch,
    Fleet,
    FleetEvent,
    MemoryStore,
    PollPolicy,
    Shop,
    ShopStatus,
    TopClient,
    Trade,
)
from taobao_ordersync.testing import Emulator, ShopProfile

# On the emulator, poll and back off within seconds; the defaults (60 s .. 600 s) suit Taobao.
DEMO_POLICY = PollPolicy(min_interval=1.0, max_interval=10.0, min_backoff=0.5, max_backoff=5.0)


@contextlib.asynccontextmanager
async def environment() -> AsyncIterator[tuple[TopClient, list[Shop], PollPolicy, bool]]:
    """The client, the shops, a poll policy, and whether this is the emulator."""
    if key := os.environ.get("TAOBAO_ORDERSYNC_APP_KEY"):
        listed = os.environ.get("TAOBAO_ORDERSYNC_SHOPS", "")
        pairs = [pair.partition("=") for pair in re.split(r"[,\s]+", listed) if pair]
        shops = [Shop(id=shop_id.strip(), session=session.strip()) for shop_id, _, session in pairs]
        if not shops:
            raise SystemExit(
                "set TAOBAO_ORDERSYNC_SHOPS to shop_id=session pairs, e.g. TAOBAO_ORDERSYNC_SHOPS='shop-a=6100...'"
            )
        async with TopClient(key, os.environ["TAOBAO_ORDERSYNC_APP_SECRET"]) as client:
            yield client, shops, PollPolicy(), False
        return
    profile = ShopProfile(orders_per_day=500, history_days=2)
    async with (
        Emulator(shops=4, profile=profile, seed=4) as emulator,
        # rate=200: the emulator needs no pacing; against Taobao keep the default or your app's limit.
        TopClient(emulator.app_key, emulator.app_secret, url=emulator.url, rate=200, clock_refresh=0) as client,
    ):
        emulator.expire_session("shop-4")  # the seller must authorise the app again
        shops = [Shop(id=state.id, session=state.session) for state in emulator.shops]
        yield client, shops, DEMO_POLICY, True


def status_line(status: ShopStatus) -> str:
    """One line per shop: what ``fleet.status(shop_id)`` tells an operator."""
    schedule = status.schedule
    if schedule is None:  # never for a fleet's shop: a fleet knows when it polls
        return f"  {status.shop_id:<8} {status.state}"
    line = (
        f"  {status.shop_id:<8} {status.state:<11} polls={schedule.polls} delivered={status.delivered:<5} "
        f"failures={schedule.failures} interval={schedule.interval:.1f}s"
    )
    if schedule.next_poll_in is not None:
        line += f" next poll in {schedule.next_poll_in:.1f}s"
    if status.behind:
        line += f" behind={status.behind}"
    if status.last_error:
        line += f" error={status.last_error[:60]}"
    return line


async def settled(fleet: Fleet, shop_id: str, paused: asyncio.Event) -> None:
    """Until the shop completes a poll (it has caught up) or is paused."""
    polled = asyncio.ensure_future(fleet.next_poll(shop_id))
    stopped = asyncio.ensure_future(paused.wait())
    await asyncio.wait({polled, stopped}, return_when=asyncio.FIRST_COMPLETED)
    polled.cancel()
    stopped.cancel()


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    copies: dict[str, dict[int, Trade]] = defaultdict(dict)
    paused: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async with environment() as (client, shops, policy, demo):
        handled: dict[str, int] = defaultdict(int)

        async def handler(shop: Shop, batch: Batch) -> None:
            handled[shop.id] += 1
            if demo and shop.id == "shop-2" and handled[shop.id] == 3:
                raise RuntimeError("a bug in the handler (simulated once, on the emulator)")
            copy = copies[shop.id]
            for trade in batch.trades:  # idempotent upsert: keep the newest modified per tid
                known = copy.get(trade.tid)
                if known is None or trade.modified > known.modified:
                    copy[trade.tid] = trade

        def on_event(event: FleetEvent) -> None:
            error = f" ({type(event.error).__name__})" if event.error is not None else ""
            print(f"event: {event.shop_id} {event.kind}{error}")
            if event.kind == "paused":
                paused[event.shop_id].set()

        store = MemoryStore()  # as short-lived as the copies
        fleet = Fleet(client, store=store, handler=handler, concurrency=4, policy=policy, on_event=on_event)
        for shop in shops:
            fleet.add(shop)
        # Ask before the fleet starts, so no shop's first poll can finish unobserved.
        waiting = asyncio.gather(*(settled(fleet, shop.id, paused[shop.id]) for shop in shops))
        runner = asyncio.create_task(fleet.run())
        try:
            while not waiting.done():
                print("status:")
                for status in fleet.statuses():
                    print(status_line(status))
                await asyncio.wait({waiting}, timeout=0.5)
            await waiting
        finally:
            fleet.stop()  # no partial window is committed
            await runner

    print("final status:")
    for status in fleet.statuses():
        print(status_line(status))
    for shop in shops:
        status = fleet.status(shop.id)  # delivered counts re-deliveries too, e.g. after a handler failure
        print(f"{shop.id}: {len(copies[shop.id])} trades in the copy, {status.delivered} delivered ({status.state})")


if __name__ == "__main__":
    asyncio.run(main())
