"""The shipped pytest fixtures give a user's test a running emulator and a client."""

from __future__ import annotations

from typing import Any

import pytest

from taobao_ordersync import MemoryStore, Shop, Syncer, TopClient
from taobao_ordersync.testing import Collector, Emulator, ShopProfile


@pytest.fixture
def top_emulator_options() -> dict[str, Any]:
    return {"shops": 2, "seed": 3, "profile": ShopProfile(orders_per_day=100, history_days=3)}


async def test_user_integration_with_fixtures(top_emulator: Emulator, top_client: TopClient) -> None:
    """A user's sync against the fixture emulator verifies with lost == 0, for each shop."""
    collectors = {}
    syncer = Syncer(top_client, store=MemoryStore(), lag=5)
    top_emulator.pause_activity()
    for state in top_emulator.shops:
        collector = collectors[state.id] = Collector()
        async for trade in syncer.increments(Shop(id=state.id, session=state.session)):
            collector.add(trade)

    for state in top_emulator.shops:
        checkpoint = await syncer.checkpoint(state.id)
        assert checkpoint is not None
        report = top_emulator.verify_sync(checkpoint, collectors[state.id])
        assert 0 == report.lost
        assert report.in_scope > 100
    assert 2 == len(top_emulator.shops)
