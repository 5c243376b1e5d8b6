"""The checkpoint-store contract run against the bundled stores, plus SqliteStore specifics."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path

import pytest
from tests.conftest import SqliteConnections

from taobao_ordersync.errors import CheckpointConflictError, CheckpointCorruptError
from taobao_ordersync.stores import MemoryStore, SqliteStore, StoredCheckpoint
from taobao_ordersync.testing.store_contract import CheckpointStoreContract

GARBAGE = bytes(range(256)) * 16

OPERATIONS: dict[str, Callable[[SqliteStore], Awaitable[object]]] = {
    "load": lambda store: store.load("shop"),
    "save": lambda store: store.save("shop", "{}", expected_revision=None),
    "shop_ids": lambda store: store.shop_ids(),
}


class TestMemoryStore(CheckpointStoreContract):
    @pytest.fixture
    async def store(self) -> MemoryStore:
        """A fresh MemoryStore."""
        return MemoryStore()


class TestSqliteStore(CheckpointStoreContract):
    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        """Where this test's SQLite file lives (not created yet)."""
        return tmp_path / "checkpoints.sqlite3"

    @pytest.fixture
    async def store(self, path: Path) -> SqliteStore:
        """A fresh SqliteStore on a new file."""
        return SqliteStore(path)

    async def test_document_survives_a_new_instance(self, store: SqliteStore, path: Path) -> None:
        """A new SqliteStore on the same file (a restart) loads the document and continues its revisions."""
        await store.save("shop", '{"n":1}', expected_revision=None)

        restarted = SqliteStore(path)

        assert StoredCheckpoint(data='{"n":1}', revision=1) == await restarted.load("shop")
        assert 2 == await restarted.save("shop", '{"n":2}', expected_revision=1)

    async def test_two_instances_on_one_file_conflict(self, store: SqliteStore, path: Path) -> None:
        """Two stores on one file (two processes) see each other's saves and cannot overwrite them blindly."""
        await store.save("shop", '{"n":1}', expected_revision=None)
        other = SqliteStore(path)
        await other.save("shop", '{"n":"other"}', expected_revision=1)

        with pytest.raises(CheckpointConflictError):
            await store.save("shop", '{"n":"stale"}', expected_revision=1)

        assert StoredCheckpoint(data='{"n":"other"}', revision=2) == await store.load("shop")

    @pytest.fixture
    def garbage_path(self, path: Path) -> Path:
        """The store's path, already holding bytes that are not a SQLite database."""
        path.write_bytes(GARBAGE)
        return path

    @pytest.mark.parametrize("operation", list(OPERATIONS))
    async def test_non_sqlite_file_raises_corrupt_error_with_path(self, garbage_path: Path, operation: str) -> None:
        """A file that is not a SQLite database raises CheckpointCorruptError naming it, and is left alone."""
        store = SqliteStore(garbage_path)

        with pytest.raises(CheckpointCorruptError, match=re.escape(str(garbage_path))) as caught:
            await OPERATIONS[operation](store)

        assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
        assert GARBAGE == await asyncio.to_thread(garbage_path.read_bytes)

    async def test_shop_ids_lists_saved_shops_sorted(self, store: SqliteStore) -> None:
        """shop_ids() lists every saved shop once, in sorted order."""
        assert [] == await store.shop_ids()
        for shop_id in ["店铺", "b-shop", "a-shop", "B-shop"]:
            await store.save(shop_id, "{}", expected_revision=None)
        await store.save("a-shop", "[]", expected_revision=1)

        assert ["B-shop", "a-shop", "b-shop", "店铺"] == await store.shop_ids()

    async def test_waiting_on_a_locked_file_does_not_block_the_event_loop(self, store: SqliteStore, path: Path) -> None:
        """While another connection holds the file locked, a load waits off the loop and finishes after release."""
        await store.save("shop", '{"n":1}', expected_revision=None)

        with closing(sqlite3.connect(path, isolation_level=None)) as locker:
            locker.execute("BEGIN EXCLUSIVE")
            load = asyncio.create_task(store.load("shop"))
            # A load blocking the loop would keep this sleep from returning until it gave up (30 s).
            await asyncio.sleep(0.2)
            assert not load.done()
            locker.execute("COMMIT")

        assert StoredCheckpoint(data='{"n":1}', revision=1) == await asyncio.wait_for(load, timeout=10)

    async def test_connections_are_closed_on_errors(self, path: Path, sqlite_connections: SqliteConnections) -> None:
        """A conflict and a file that is not SQLite raise, and every connection opened is closed."""
        store = SqliteStore(path)
        await store.save("shop", "{}", expected_revision=None)
        with pytest.raises(CheckpointConflictError):
            await store.save("shop", "{}", expected_revision=7)
        await asyncio.to_thread(path.write_bytes, GARBAGE)
        for operation in OPERATIONS.values():
            with pytest.raises(CheckpointCorruptError):
                await operation(SqliteStore(path))

        assert 5 == len(sqlite_connections.opened)
        sqlite_connections.assert_all_closed()

    async def test_a_cancelled_operation_closes_its_connection(
        self, store: SqliteStore, path: Path, sqlite_connections: SqliteConnections
    ) -> None:
        """Cancelling a load that waits on a locked file: its thread finishes and closes the connection."""
        await store.save("shop", '{"n":1}', expected_revision=None)
        with closing(sqlite3.connect(path, isolation_level=None)) as locker:
            locker.execute("BEGIN EXCLUSIVE")
            load = asyncio.create_task(store.load("shop"))
            await asyncio.sleep(0.2)
            load.cancel()
            with pytest.raises(asyncio.CancelledError):
                await load
            locker.execute("COMMIT")

        # The thread cannot be interrupted; once the lock is gone it reads, and closes on its way out.
        for _ in range(1000):
            if all(opened.closed for opened in sqlite_connections.opened):
                break
            await asyncio.sleep(0.01)
        assert 3 == len(sqlite_connections.opened)  # the save, the locker, the cancelled load
        sqlite_connections.assert_all_closed()
