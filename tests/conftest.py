"""Shared fixtures: the emulator on loopback and a client bound to it; no SQLite connection left open."""

from __future__ import annotations

import gc
import sqlite3
import traceback
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
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


class _Opened:
    """One connection opened during a test: where, and whether ``close()`` was called."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.ref = weakref.ref(connection)  # weak: a leaked connection is still garbage-collected
        self.where = "".join(traceback.format_list(traceback.extract_stack(limit=12)[:-3]))
        self.closed = False


class _TrackedConnection(sqlite3.Connection):
    """A ``sqlite3.Connection`` that reports ``close()`` to its ``_Opened`` record."""

    opened: _Opened

    def close(self) -> None:
        self.opened.closed = True
        super().close()


class SqliteConnections:
    """Every ``sqlite3.connect`` during one test, in this process (the code under test's threads included)."""

    def __init__(self) -> None:
        self.opened: list[_Opened] = []

    def connect(self, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("factory", _TrackedConnection)
        connection = _REAL_CONNECT(*args, **kwargs)
        if isinstance(connection, _TrackedConnection):
            connection.opened = _Opened(connection)
            self.opened.append(connection.opened)
        return connection

    def assert_all_closed(self) -> None:
        """Fail naming where each connection was opened that was not closed.

        Python 3.13+ warns (ResourceWarning) about a connection garbage-collected without close();
        the ``close()`` bookkeeping catches the same leak on 3.11 and 3.12, which say nothing.
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            gc.collect()  # finalise the leaked connections now, in this test, not in a later one
        unclosed = [opened for opened in self.opened if not opened.closed]
        self.opened = [opened for opened in self.opened if opened.closed]  # report each leak once
        for opened in unclosed:
            connection = opened.ref()
            if connection is not None:
                connection.close()  # keep the leak from being reported again by a later test
        resource_warnings = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert not unclosed, "SQLite connections never closed, opened at:\n" + "\n".join(o.where for o in unclosed)
        assert [] == [message for message in resource_warnings if "sqlite3" in message]


_REAL_CONNECT = sqlite3.connect


@pytest.fixture(autouse=True)
def sqlite_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[SqliteConnections]:
    """Every test: each SQLite connection opened during it must be closed by its end (on 3.11 to 3.13 alike)."""
    connections = SqliteConnections()
    monkeypatch.setattr(sqlite3, "connect", connections.connect)
    yield connections
    if connections.opened:
        connections.assert_all_closed()
