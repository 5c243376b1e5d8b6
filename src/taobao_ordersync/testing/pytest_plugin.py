"""Pytest fixtures for testing your integration against the TOP emulator.

Opt in from your ``conftest.py``::

    pytest_plugins = ["taobao_ordersync.testing.pytest_plugin"]

then ask for ``top_emulator`` (a running one-shop ``Emulator``) or ``top_client``
(a ``TopClient`` bound to it, retrying without delays). Tune the shop with a
``top_emulator_options`` fixture of your own returning ``Emulator`` keyword
arguments. Async fixtures need pytest-asyncio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from taobao_ordersync._retry import RetryPolicy
from taobao_ordersync.client import TopClient
from taobao_ordersync.testing._shop import ShopProfile
from taobao_ordersync.testing.emulator import Emulator


@pytest.fixture
def top_emulator_options() -> dict[str, Any]:
    """Keyword arguments for ``Emulator``; override this fixture to change the shop."""
    return {"shops": 1, "seed": 0, "profile": ShopProfile(orders_per_day=200, history_days=7)}


@pytest_asyncio.fixture
async def top_emulator(top_emulator_options: dict[str, Any]) -> AsyncIterator[Emulator]:
    """A running emulator on a free loopback port, stopped after the test."""
    async with Emulator(**top_emulator_options) as emulator:
        yield emulator


@pytest_asyncio.fixture
async def top_client(top_emulator: Emulator) -> AsyncIterator[TopClient]:
    """A ``TopClient`` for ``top_emulator``: generous rate, no retry delays, fresh clock each call."""
    async with TopClient(
        top_emulator.app_key,
        top_emulator.app_secret,
        url=top_emulator.url,
        rate=1000.0,
        retry=RetryPolicy.no_wait(),
        clock_refresh=0,
    ) as client:
        yield client
