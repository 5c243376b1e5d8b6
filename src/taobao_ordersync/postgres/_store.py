"""``PostgresStore``: the one class users see. Each call is the work of one module: ``_database``
(connecting, migrating), ``_checkpoints``, ``_registry`` (leases, heartbeats, bans), ``_status``,
``_fencing`` and ``_push`` (the push inbox)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

from taobao_ordersync.errors import LeaseLostError
from taobao_ordersync.postgres import _checkpoints, _push, _registry, _status
from taobao_ordersync.postgres._database import Database
from taobao_ordersync.postgres._fencing import FencedStore
from taobao_ordersync.postgres._push import PushedMessage
from taobao_ordersync.postgres._registry import Heartbeat
from taobao_ordersync.postgres._status import RegisteredShop, ShopSummary, WorkerRecord
from taobao_ordersync.status import ShopStatus
from taobao_ordersync.stores import StoredCheckpoint

if TYPE_CHECKING:
    import asyncpg

__all__ = ["PostgresStore"]


class PostgresStore:
    """A ``CheckpointStore`` in PostgreSQL, plus the registry and leases workers share.

    Use it as an async context manager, or call ``open()`` and ``close()``::

        async with PostgresStore("postgresql://app@db/orders") as store:
            await store.add_shops("shop-1", "shop-2")

    Args:
        dsn: a libpq connection URI; its password never appears in messages.
        schema: the PostgreSQL schema holding the library's tables (created if missing).
        pool_size: connections kept open.
        connect_timeout: seconds to wait for the server before ``StoreUnavailableError``.
    """

    def __init__(
        self, dsn: str, *, schema: str = "taobao_ordersync", pool_size: int = 4, connect_timeout: float = 10.0
    ) -> None:
        self._db = Database(dsn, schema=schema, pool_size=pool_size, connect_timeout=connect_timeout)
        self.fencing_refusals = 0  # saves refused because their lease was lost

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding the library's tables."""
        return self._db.schema

    @property
    def where(self) -> str:
        """The server and database, ``postgresql://host:port/database``, without user or password."""
        return self._db.where

    @property
    def server_version(self) -> str | None:
        """The server's PostgreSQL version, e.g. ``"15.18"``, once open."""
        return self._db.server_version

    @property
    def round_trips(self) -> int:
        """Statements sent, for benchmarks and tuning."""
        return self._db.round_trips

    def __repr__(self) -> str:
        return f"PostgresStore({self.where!r}, schema={self.schema!r})"

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect, and create or migrate the schema. Safe to call again."""
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def connect_listener(self) -> asyncpg.Connection:
        """A dedicated connection (for LISTEN); the caller closes it."""
        return await self._db.connect_listener()

    def channel(self, topic: str) -> str:
        """The NOTIFY channel of ``topic`` for this schema."""
        return self._db.channel(topic)

    async def migrate(self) -> int:
        """Bring the schema to ``SCHEMA_VERSION``; returns the version found before."""
        return await self._db.migrate()

    # -- CheckpointStore ---------------------------------------------------------------

    async def load(self, shop_id: str) -> StoredCheckpoint | None:
        return await _checkpoints.load(self._db, shop_id)

    async def save(self, shop_id: str, data: str, *, expected_revision: int | None) -> int:
        return await self.save_fenced(shop_id, data, expected_revision=expected_revision, fence=None)

    async def save_fenced(
        self, shop_id: str, data: str, *, expected_revision: int | None, fence: tuple[str, int] | None
    ) -> int:
        """``save``, and with ``fence=(owner, token)`` only while that lease still holds the shop."""
        try:
            return await _checkpoints.save(self._db, shop_id, data, expected_revision=expected_revision, fence=fence)
        except LeaseLostError:
            self.fencing_refusals += 1
            raise

    def fenced(self, owner: str, tokens: Mapping[str, int]) -> FencedStore:
        """A ``CheckpointStore`` view whose saves carry ``owner``'s current token for each shop."""
        return FencedStore(self, owner, tokens)

    async def shop_ids(self) -> list[str]:
        """Every shop with a checkpoint."""
        return await _checkpoints.shop_ids(self._db)

    # -- registry --------------------------------------------------------------------

    async def add_shops(self, *shop_ids: str) -> int:
        """Register shops for the workers to sync; returns how many were new."""
        return await _registry.add_shops(self._db, shop_ids)

    async def remove_shops(self, *shop_ids: str) -> int:
        """Unregister shops (their owners drop them at the next heartbeat; checkpoints stay)."""
        return await _registry.remove_shops(self._db, shop_ids)

    async def statuses(self) -> list[ShopStatus]:
        """Every registered shop's status, with its lease and its checkpoint's position, by id."""
        return await _status.statuses(self._db)

    async def shops(self) -> list[RegisteredShop]:
        """Deprecated: ``statuses()`` (one ``ShopStatus`` per shop, as every runner reports it)."""
        warnings.warn(
            "PostgresStore.shops() is deprecated: use statuses() (ShopStatus, with .lease)", DeprecationWarning, 2
        )
        return await _status.shops(self._db)

    async def summary(self, *, limit: int = 10) -> ShopSummary:
        """Counts per state, the ``limit`` shops most behind and the ``limit`` latest errors, without
        reading a checkpoint (three indexed or aggregate statements, whatever the number of shops)."""
        return await _status.summary(self._db, limit=limit)

    async def workers(self) -> list[WorkerRecord]:
        """Registered workers, live ones first."""
        return await _status.workers(self._db)

    # -- leases (used by Worker) -------------------------------------------------------

    async def heartbeat(
        self,
        worker_id: str,
        *,
        host: str,
        pid: int,
        lease: float,
        budget: float,
        reports: Sequence[ShopStatus],
    ) -> Heartbeat:
        """Register the worker, take its share of the app's ``budget``, renew its leases with each
        shop's report, and read the registry.

        ``reports`` holds ``(shop_id, token, weight, state, behind, last_error)`` per held shop. The
        share is ``_lease.rate_share``: ``budget / live workers``, but no more than the other live
        workers' reported rates leave; it is recorded as this worker's rate in the same transaction,
        and heartbeats are serialized (an advisory lock), so the recorded rates never add up to more
        than the budget. Four statements in one transaction.
        """
        return await _registry.heartbeat(
            self._db, worker_id, host=host, pid=pid, lease=lease, budget=budget, reports=reports
        )

    async def report_heartbeat_failure(
        self, worker_id: str, *, host: str, pid: int, error: str, failing_for: float
    ) -> None:
        """Show in ``status`` that this worker's heartbeats fail, and since when (the database answers,
        but refuses them). The worker is registered if it never was, but not made live."""
        await _registry.report_heartbeat_failure(
            self._db, worker_id, host=host, pid=pid, error=error, failing_for=failing_for
        )

    async def claim(self, worker_id: str, candidates: Sequence[str], limit: int, *, lease: float) -> dict[str, int]:
        """Take up to ``limit`` free shops of ``candidates``; returns each claimed shop's new fencing token."""
        return await _registry.claim(self._db, worker_id, candidates, limit, lease=lease)

    async def release(self, worker_id: str, shop_ids: Sequence[str] | None = None) -> int:
        """Give shops back (all of the worker's when ``shop_ids`` is None) so others claim them at once."""
        return await _registry.release(self._db, worker_id, shop_ids)

    async def nudge(self) -> None:
        """Wake every worker to heartbeat now (a newcomer waiting for the others to lower their rates)."""
        await _registry.nudge(self._db)

    async def retire(self, worker_id: str) -> int:
        """Graceful exit: unregister the worker, then release every lease so others claim them at once.

        In that order: the others, woken by the release's NOTIFY, already count one worker less.
        """
        return await _registry.retire(self._db, worker_id)

    async def record_error(self, shop_id: str, worker_id: str, error: str) -> None:
        """Show a shop's trouble (e.g. no session) in ``status`` before the next heartbeat."""
        await _registry.record_error(self._db, shop_id, worker_id, error)

    async def ban(self, seconds: float) -> None:
        """Pause the whole app for ``seconds``: every worker learns it by NOTIFY and heartbeat."""
        await _registry.ban(self._db, seconds)

    # -- push inbox ------------------------------------------------------------------

    async def forward_push(self, message: PushedMessage) -> bool:
        """Leave a TMC message for the worker holding its shop, and wake it (NOTIFY); False when
        the shop is not registered (no worker will ever deliver it)."""
        return await _push.forward(self._db, message)

    async def take_push(self, shop_ids: Sequence[str], *, limit: int = 5_000) -> list[PushedMessage]:
        """Messages waiting for these shops (held by the caller), oldest first."""
        return await _push.take(self._db, shop_ids, limit=limit)

    async def push_delivered(self, message_ids: Sequence[int]) -> None:
        """The holder delivered these messages' trades: their consumers may confirm them."""
        await _push.delivered(self._db, message_ids)

    async def push_settled(self, message_ids: Sequence[int]) -> set[int]:
        """Which of these forwarded messages may be confirmed: delivered (their rows are deleted
        now) or gone with their shop."""
        return await _push.settled(self._db, message_ids)

    async def push_backlog(self) -> int:
        """Messages in the push inbox not yet delivered by their shops' holders."""
        return await _push.backlog(self._db)
