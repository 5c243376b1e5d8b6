"""Shared fixtures: the emulator on loopback and a client bound to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from taobao_ordersync import RetryPolicy, TopClient
from taobao_ordersync.testing import Emulator, ShopProfile

pytest_plugins = ["taobao_ordersync.testing.pytest_plugin"]

QUIET = ShopProfile(orders_per_day=40, history_days=10)


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """A quiet one-shop emulator with ten days of history."""
    async with Emulator(shops=1, profile=QUIET, seed=1) as emu:
        yield emu


def client_for(emu: Emulator, **overrides: Any) -> TopClient:
    """A client wired to ``emu`` with fast limits and no retry delays."""
    options: dict[str, Any] = {"url": emu.url, "rate": 2000.0, "retry": RetryPolicy.no_wait()}
    options.update(overrides)
    return TopClient(emu.app_key, emu.app_secret, **options)


@pytest.fixture
def make_emulator() -> Callable[..., AbstractAsyncContextManager[Emulator]]:
    """Factory for emulators with custom knobs, stopped at the end of the block."""

    @asynccontextmanager
    async def factory(**kwargs: Any) -> AsyncIterator[Emulator]:
        kwargs.setdefault("profile", QUIET)
        async with Emulator(**kwargs) as emu:
            yield emu

    return factory
