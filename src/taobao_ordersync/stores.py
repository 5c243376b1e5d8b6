"""Checkpoint stores: where each shop's sync position lives between runs.

A store is a tiny key-value map with compare-and-set: the library owns the
versioned JSON document, the store only keeps it. ``save`` must refuse to
overwrite a revision it was not given, so two workers can never move one shop's
checkpoint backwards or over each other.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from attrs import frozen

from taobao_ordersync.errors import CheckpointConflictError, CheckpointCorruptError, CheckpointError

__all__ = ["CheckpointStore", "MemoryStore", "SqliteStore", "StoredCheckpoint"]


@frozen
class StoredCheckpoint:
    """A stored document and its revision (1 for the first save, +1 per save)."""

    data: str
    revision: int


class CheckpointStore(Protocol):
    """Protocol: async load and compare-and-set save of one JSON document per shop."""

    async def load(self, shop_id: str) -> StoredCheckpoint | None:
        """The shop's document, or None if it was never saved."""
        ...

    async def save(self, shop_id: str, data: str, *, expected_revision: int | None) -> int:
        """Store ``data`` if the current revision is ``expected_revision`` (None: absent).

        Returns the new revision. Raises ``CheckpointConflictError`` otherwise.
        """
        ...


class MemoryStore:
    """A ``CheckpointStore`` in a dict: for tests, demos and short-lived processes."""

    def __init__(self) -> None:
        self._items: dict[str, StoredCheckpoint] = {}

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._items)} shops)"

    async def load(self, shop_id: str) -> StoredCheckpoint | None:
        return self._items.get(shop_id)

    async def save(self, shop_id: str, data: str, *, expected_revision: int | None) -> int:
        current = self._items.get(shop_id)
        if (current.revision if current else None) != expected_revision:
            raise CheckpointConflictError(
                f"shop {shop_id!r}: checkpoint is at revision {current.revision if current else None}, "
                f"not {expected_revision}; another worker is syncing this shop"
            )
        revision = (expected_revision or 0) + 1
        self._items[shop_id] = StoredCheckpoint(data=data, revision=revision)
        return revision

    async def shop_ids(self) -> list[str]:
        """Every shop with a checkpoint."""
        return sorted(self._items)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    shop_id    TEXT PRIMARY KEY,
    revision   INTEGER NOT NULL,
    data       TEXT NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""


class SqliteStore:
    """A ``CheckpointStore`` in a SQLite file (stdlib ``sqlite3``, run off the event loop).

    Each operation opens its own short connection in a worker thread, so the
    store is safe to share between tasks and never blocks the loop.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._ready = False

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            if not self._ready:
                connection.execute(_SCHEMA)
                self._ready = True
        except BaseException:
            connection.close()
            raise
        return connection

    def _load(self, shop_id: str) -> StoredCheckpoint | None:
        with self._session() as connection:
            row = connection.execute("SELECT data, revision FROM checkpoints WHERE shop_id = ?", (shop_id,)).fetchone()
        return None if row is None else StoredCheckpoint(data=row[0], revision=int(row[1]))

    def _save(self, shop_id: str, data: str, expected: int | None) -> int:
        with self._session() as connection:
            if expected is None:
                cursor = connection.execute(
                    "INSERT OR IGNORE INTO checkpoints (shop_id, revision, data) VALUES (?, 1, ?)", (shop_id, data)
                )
            else:
                cursor = connection.execute(
                    "UPDATE checkpoints SET data = ?, revision = revision + 1, "
                    "updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE shop_id = ? AND revision = ?",
                    (data, shop_id, expected),
                )
        if cursor.rowcount != 1:
            raise CheckpointConflictError(
                f"shop {shop_id!r}: checkpoint is no longer at revision {expected} (None: absent); "
                "another worker is syncing this shop"
            )
        return (expected or 0) + 1

    def _shop_ids(self) -> list[str]:
        with self._session() as connection:
            return [row[0] for row in connection.execute("SELECT shop_id FROM checkpoints ORDER BY shop_id")]

    @contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """One short-lived connection; sqlite3 errors become ``CheckpointError``s."""
        try:
            connection = self._connect()
            try:
                yield connection
            finally:
                connection.close()
        except sqlite3.OperationalError as exc:
            # Locked, unopenable or read-only files are store trouble, not corruption.
            raise CheckpointError(f"{self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise CheckpointCorruptError(f"{self.path}: not a usable SQLite checkpoint file: {exc}") from exc
        except sqlite3.Error as exc:
            raise CheckpointError(f"{self.path}: {exc}") from exc

    async def load(self, shop_id: str) -> StoredCheckpoint | None:
        return await asyncio.to_thread(self._load, shop_id)

    async def save(self, shop_id: str, data: str, *, expected_revision: int | None) -> int:
        return await asyncio.to_thread(self._save, shop_id, data, expected_revision)

    async def shop_ids(self) -> list[str]:
        """Every shop with a checkpoint."""
        return await asyncio.to_thread(self._shop_ids)
