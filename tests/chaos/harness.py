"""Scenario harness: run a syncer against an emulator through rounds of shop activity.

Every scenario ends the same way: shop activity stops, one more sync runs, and
what the consumer kept is compared with the emulator's ground truth (lost must
be 0 for ``Syncer``). The pause matters: a trade changed after a window closed
(or moved out of it mid-read) is, by design, delivered by the *next* window, so
only a sync after the last change can be held to every change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from taobao_ordersync import MemoryStore, Shop, Syncer, TopClient, Trade
from taobao_ordersync.testing import Collector, Emulator, NaiveSyncer, VerifyReport
from tests.conftest import client_for

SHOP = Shop(id="shop-1", session="session-1")


async def _play(
    emu: Emulator,
    sync: Callable[[], AsyncIterator[Trade]],
    collector: Collector,
    *,
    rounds: int,
    step: float,
    between: Callable[[Emulator, int], None] | None,
) -> None:
    """First sync, ``rounds`` of (advance ``step`` seconds; sync), then a sync after activity stops."""
    for round_no in range(rounds + 2):
        if round_no == rounds + 1:
            emu.pause_activity()
        if round_no:
            emu.advance(step)
        if between is not None:
            between(emu, round_no)
        async for trade in sync():
            collector.add(trade)


async def run_syncer(
    emu: Emulator,
    *,
    rounds: int = 3,
    step: float = 600.0,
    between: Callable[[Emulator, int], None] | None = None,
    client_options: dict[str, Any] | None = None,
    **syncer_options: Any,
) -> tuple[VerifyReport, Syncer, TopClient]:
    """The rounds with ``Syncer``; the report is checked against the final checkpoint's scope."""
    options: dict[str, Any] = {"lag": 5, **syncer_options}
    collector = Collector()
    async with client_for(emu, clock_refresh=0, **(client_options or {})) as client:
        syncer = Syncer(client, store=MemoryStore(), **options)
        await _play(emu, lambda: syncer.increments(SHOP), collector, rounds=rounds, step=step, between=between)
        checkpoint = await syncer.checkpoint(SHOP.id)
    assert checkpoint is not None
    return emu.verify_sync(checkpoint, collector), syncer, client


async def run_naive(
    emu: Emulator,
    *,
    rounds: int = 3,
    step: float = 600.0,
    between: Callable[[Emulator, int], None] | None = None,
    **flags: Any,
) -> VerifyReport:
    """The same rounds with a ``NaiveSyncer`` making the mistakes in ``flags``."""
    collector = Collector()
    async with client_for(emu, clock_refresh=0) as client:
        naive = NaiveSyncer(client=client, **{"lag": timedelta(seconds=5), **flags})
        await _play(emu, lambda: naive.run(SHOP), collector, rounds=rounds, step=step, between=between)
    assert naive.origin is not None and naive.cursor is not None
    return emu.verify(
        SHOP.id,
        collector.newest,
        created_from=naive.origin - naive.backfill,
        sync_started=naive.origin,
        until=naive.cursor,
        duplicates=collector.duplicates,
    )
