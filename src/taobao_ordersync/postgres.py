"""``PostgresStore``: checkpoints, the shared shop registry and leases in PostgreSQL.

Needs the ``postgres`` extra (``pip install 'taobao-ordersync[postgres]'``, which
brings asyncpg); asyncpg is imported when a store first connects, never before.

Everything lives in one PostgreSQL schema (``taobao_ordersync`` by default) that
the library creates and migrates itself, under an advisory lock so that many
workers may start at once:

- ``checkpoints``: one versioned JSON document per shop, saved by compare-and-set;
- ``shops``: the registry, and for each shop its lease: ``owner``, ``lease_until``
  and the fencing ``token`` handed out by a sequence at every claim;
- ``workers``: live workers and their heartbeats (the rate budget is shared among them);
- ``app``: the app-wide ``ban_until`` every worker honours;
- ``schema_version``: the migrations applied.

A save made through ``fenced()`` commits only while the row in ``shops`` still
carries the worker's name and token, checked under a share lock in the same
statement; a worker that lost its lease (a long pause, a partition) is refused
with ``LeaseLostError`` and can never move the new owner's checkpoint.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import urlsplit

from attrs import frozen

from taobao_ordersync._checkpoint import Checkpoint
from taobao_ordersync._lease import LeaseRow, rate_share
from taobao_ordersync.errors import (
    CheckpointConflictError,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointVersionError,
    ConfigurationError,
    LeaseLostError,
    SchemaVersionError,
    StoreUnavailableError,
)
from taobao_ordersync.stores import StoredCheckpoint

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "HEARTBEAT_ROUND_TRIPS",
    "MIN_SERVER_VERSION",
    "SCHEMA_VERSION",
    "FencedRevision",
    "FencedStore",
    "PostgresStore",
    "RegisteredShop",
    "Report",
    "ShopSummary",
    "WorkerRecord",
]

SCHEMA_VERSION: Final = 2
# The oldest PostgreSQL major supported: every version still maintained upstream (15, 16, 17, 18).
MIN_SERVER_VERSION: Final = 15
HEARTBEAT_ROUND_TRIPS: Final = 6  # BEGIN, the lock, three statements, COMMIT
Report = tuple[str, int, float, str | None, float | None, str | None]  # a held shop, as a heartbeat tells it
_IDENTIFIER: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_LOCK_KEY: Final = 0x7A0B_0D5C  # advisory lock for migrations (any fixed number)
_SHARE_LOCK_KEY: Final = 0x7A0B_0D5D  # advisory lock serializing heartbeats (with the schema's hash)

# Migration n brings the schema from version n - 1 to n. Never edit a released one: add the next.
_MIGRATIONS: Final[Mapping[int, str]] = {
    1: """
        CREATE TABLE {s}.checkpoints (
            shop_id    text PRIMARY KEY,
            revision   bigint NOT NULL,
            data       text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE {s}.shops (
            shop_id     text PRIMARY KEY,
            added_at    timestamptz NOT NULL DEFAULT now(),
            owner       text,
            token       bigint NOT NULL DEFAULT 0,
            lease_until timestamptz,
            claimed_at  timestamptz,
            weight      double precision NOT NULL DEFAULT 0,
            state       text,
            behind      double precision,
            last_error  text,
            reported_at timestamptz
        );
        CREATE INDEX shops_owner ON {s}.shops (owner);
        CREATE SEQUENCE {s}.fencing_tokens;
        CREATE TABLE {s}.workers (
            worker_id  text PRIMARY KEY,
            host       text NOT NULL,
            pid        integer NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now(),
            seen_at    timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            rate       double precision
        );
        CREATE TABLE {s}.app (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            ban_until timestamptz NOT NULL DEFAULT '-infinity'
        );
        INSERT INTO {s}.app DEFAULT VALUES;
    """,
    # A worker whose heartbeats the database refuses says so here, for `status`.
    2: """
        ALTER TABLE {s}.workers ADD COLUMN last_error text, ADD COLUMN failing_since timestamptz;
    """,
}


@frozen
class RegisteredShop:
    """One shop of the registry, as ``shops()`` and ``taobao-ordersync status`` show it.

    ``lease_left`` is seconds until the owner's lease runs out (negative: expired);
    ``behind`` how far the shop trailed Taobao's ``now - lag`` at its owner's last report.
    """

    shop_id: str
    owner: str | None
    lease_left: float | None
    token: int
    weight: float
    state: str | None
    behind: float | None
    last_error: str | None
    checkpoint: Checkpoint | None


@frozen
class ShopSummary:
    """The registry at a glance (``taobao-ordersync status``), from the registry alone: no checkpoint
    is read. ``states`` counts shops by their owner's last report (``free``: no live lease), largest
    first; ``most_behind`` and ``errors`` hold ``(shop_id, owner, behind or last_error)``."""

    shops: int
    states: tuple[tuple[str, int], ...]
    most_behind: tuple[tuple[str, str | None, float], ...]
    errors: tuple[tuple[str, str | None, str], ...]
    error_count: int


@frozen
class WorkerRecord:
    """One registered worker: ``alive`` while its heartbeat keeps ``expires_at`` ahead.

    ``last_error`` and ``failing_for`` (seconds) are set while the database answers the worker but
    refuses its heartbeats (``"gave up: ..."`` once it gave up); a successful heartbeat clears them.
    """

    worker_id: str
    host: str
    pid: int
    alive: bool
    seen_ago: float
    rate: float | None
    shops: int
    last_error: str | None = None
    failing_for: float | None = None


@frozen
class Heartbeat:
    """What a worker learns from one heartbeat (internal to the worker)."""

    renewed: frozenset[str]
    live_workers: int
    rate: float  # calls per second this worker may send until its next heartbeat (0: none yet)
    ban_left: float
    next_expiry: float | None  # seconds until the next lease held by someone else runs out
    rows: tuple[LeaseRow, ...]


def describe_dsn(dsn: str) -> str:
    """``host:port/database`` of a DSN, never its password (for messages)."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "the configured PostgreSQL server"
    database = parts.path.lstrip("/") or "postgres"
    return f"postgresql://{host}:{port}/{database}"


def check_server_version(major: int, version: str, where: str) -> None:
    """Refuse a PostgreSQL server older than ``MIN_SERVER_VERSION`` with a message naming its version."""
    if major < MIN_SERVER_VERSION:
        raise StoreUnavailableError(
            f"{where} runs PostgreSQL {version}; taobao-ordersync needs PostgreSQL {MIN_SERVER_VERSION} or newer "
            f"(the versions maintained upstream): upgrade the server or point the DSN at a newer one"
        )


def _version_text(version: Any) -> str:
    """asyncpg's ``ServerVersion`` as PostgreSQL prints it: ``15.18`` (``9.6.24`` before 10)."""
    if version.major >= 10:
        return f"{version.major}.{version.micro}"
    return f"{version.major}.{version.minor}.{version.micro}"


def _import_asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError as exc:
        raise ConfigurationError("PostgresStore needs asyncpg: pip install 'taobao-ordersync[postgres]'") from exc
    return asyncpg


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
        if not str(dsn).startswith(("postgres://", "postgresql://")):
            raise ConfigurationError("dsn must be a postgresql://user@host:port/database URI")
        if not _IDENTIFIER.fullmatch(schema):
            raise ConfigurationError(f"schema must be a lower-case SQL identifier, got {schema!r}")
        if pool_size < 1 or not connect_timeout > 0:
            raise ConfigurationError("pool_size must be >= 1 and connect_timeout > 0")
        self._dsn = dsn
        self.schema = schema
        self.where = describe_dsn(dsn)
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self.server_version: str | None = None  # e.g. "15.18", once open
        self.round_trips = 0  # statements sent, for benchmarks and tuning
        self.fencing_refusals = 0

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
        if self._pool is not None:
            return
        asyncpg = _import_asyncpg()
        with self._translated("connect"):
            pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size, timeout=self._connect_timeout
            )
        self._pool = pool
        try:
            async with self._connection("connect") as connection:
                self.server_version = _version_text(connection.get_server_version())
                check_server_version(connection.get_server_version().major, self.server_version, self.where)
            await self.migrate()
        except BaseException:
            self._pool = None
            await pool.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def connect_listener(self) -> asyncpg.Connection:
        """A dedicated connection (for LISTEN); the caller closes it."""
        driver = _import_asyncpg()
        with self._translated("connect"):
            connection: asyncpg.Connection = await driver.connect(self._dsn, timeout=self._connect_timeout)
        return connection

    def channel(self, topic: str) -> str:
        """The NOTIFY channel of ``topic`` for this schema."""
        return f"{self.schema}_{topic}"

    async def migrate(self) -> int:
        """Bring the schema to ``SCHEMA_VERSION``; returns the version found before."""
        s = self.schema
        async with self._connection("migrate") as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            await connection.execute(f"CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL)")
            found = int(await connection.fetchval(f"SELECT coalesce(max(version), 0) FROM {s}.schema_version"))
            if found > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.where}: schema {s!r} is at version {found}, newer than this library's "
                    f"{SCHEMA_VERSION}; upgrade taobao-ordersync on this machine"
                )
            for version in range(found + 1, SCHEMA_VERSION + 1):
                await connection.execute(_MIGRATIONS[version].format(s=s))
                await connection.execute(f"INSERT INTO {s}.schema_version (version) VALUES ($1)", version)
            # BEGIN, the lock, the schema, the version table, the version read and COMMIT; two per migration.
            self.round_trips += 6 + 2 * (SCHEMA_VERSION - found)
        return found

    # -- CheckpointStore ---------------------------------------------------------------

    async def load(self, shop_id: str) -> StoredCheckpoint | None:
        row = await self._fetchrow(f"SELECT data, revision FROM {self.schema}.checkpoints WHERE shop_id = $1", shop_id)
        return None if row is None else StoredCheckpoint(data=row["data"], revision=int(row["revision"]))

    async def save(self, shop_id: str, data: str, *, expected_revision: int | None) -> int:
        return await self.save_fenced(shop_id, data, expected_revision=expected_revision, fence=None)

    async def save_fenced(
        self, shop_id: str, data: str, *, expected_revision: int | None, fence: tuple[str, int] | None
    ) -> int:
        """``save``, and with ``fence=(owner, token)`` only while that lease still holds the shop."""
        s = self.schema
        guard = ""
        args: list[object] = [shop_id, data]
        if fence is not None:
            # The share lock on the lease row makes a concurrent claim wait for this commit (or this
            # commit see the claim): the new owner always loads what the old one last committed.
            guard = f" AND EXISTS (SELECT 1 FROM {s}.shops WHERE shop_id = $1 AND owner = $3 AND token = $4 FOR SHARE)"
            args += fence
        if expected_revision is None:
            query = (
                f"INSERT INTO {s}.checkpoints (shop_id, revision, data) SELECT $1, 1, $2 WHERE true{guard} "
                "ON CONFLICT (shop_id) DO NOTHING RETURNING revision"
            )
        else:
            args.append(expected_revision)
            query = (
                f"UPDATE {s}.checkpoints SET data = $2, revision = revision + 1, updated_at = now() "
                f"WHERE shop_id = $1 AND revision = ${len(args)}{guard} RETURNING revision"
            )
        revision = await self._fetchval(query, *args)
        if revision is None and fence is not None:
            owner, token = fence
            holder = await self._fetchrow(f"SELECT owner, token FROM {s}.shops WHERE shop_id = $1", shop_id)
            if holder is None or (holder["owner"], holder["token"]) != (owner, token):
                self.fencing_refusals += 1
                now_held = "nobody" if holder is None or holder["owner"] is None else repr(holder["owner"])
                raise LeaseLostError(
                    f"shop {shop_id!r}: commit refused, fencing token {token} of {owner!r} is stale "
                    f"(the shop is now held by {now_held}); the window will be read again by its owner",
                    token=token,
                )
        if revision is None:
            raise CheckpointConflictError(
                f"shop {shop_id!r}: checkpoint is no longer at revision {expected_revision} (None: absent); "
                "another worker is syncing this shop"
            )
        return int(revision)

    def fenced(self, owner: str, tokens: Mapping[str, int]) -> FencedStore:
        """A ``CheckpointStore`` view whose saves carry ``owner``'s current token for each shop."""
        return FencedStore(self, owner, tokens)

    async def shop_ids(self) -> list[str]:
        """Every shop with a checkpoint."""
        rows = await self._fetch(f"SELECT shop_id FROM {self.schema}.checkpoints ORDER BY shop_id")
        return [row["shop_id"] for row in rows]

    # -- registry --------------------------------------------------------------------

    async def add_shops(self, *shop_ids: str) -> int:
        """Register shops for the workers to sync; returns how many were new."""
        ids = _valid_ids(shop_ids)
        return await self._change_shops(
            f"INSERT INTO {self.schema}.shops (shop_id) SELECT unnest($1::text[]) "
            "ON CONFLICT (shop_id) DO NOTHING RETURNING shop_id",
            ids,
        )

    async def remove_shops(self, *shop_ids: str) -> int:
        """Unregister shops (their owners drop them at the next heartbeat; checkpoints stay)."""
        ids = _valid_ids(shop_ids)
        return await self._change_shops(
            f"DELETE FROM {self.schema}.shops WHERE shop_id = ANY($1::text[]) RETURNING shop_id", ids
        )

    async def shops(self) -> list[RegisteredShop]:
        """Every registered shop with its lease, owner's last report and checkpoint."""
        s = self.schema
        rows = await self._fetch(
            f"SELECT s.shop_id, s.owner, s.token, s.weight, s.state, s.behind, s.last_error, "
            f"extract(epoch FROM s.lease_until - now())::float8 AS lease_left, c.data "
            f"FROM {s}.shops s LEFT JOIN {s}.checkpoints c USING (shop_id) ORDER BY s.shop_id"
        )
        shops = []
        for row in rows:
            checkpoint = None
            if row["data"] is not None:
                try:
                    checkpoint = Checkpoint.from_json(row["data"], shop_id=row["shop_id"])
                except (CheckpointCorruptError, CheckpointVersionError):  # shown as unknown, not an error
                    checkpoint = None
            shops.append(
                RegisteredShop(
                    shop_id=row["shop_id"],
                    owner=row["owner"],
                    lease_left=row["lease_left"],
                    token=int(row["token"]),
                    weight=float(row["weight"]),
                    state=row["state"],
                    behind=row["behind"],
                    last_error=row["last_error"],
                    checkpoint=checkpoint,
                )
            )
        return shops

    async def summary(self, *, limit: int = 10) -> ShopSummary:
        """Counts per state, the ``limit`` shops most behind and the ``limit`` latest errors, without
        reading a checkpoint (three indexed or aggregate statements, whatever the number of shops)."""
        s = self.schema
        live = "lease_until > now()"
        states = await self._fetch(
            f"SELECT CASE WHEN {live} THEN coalesce(state, 'claimed') ELSE 'free' END AS state, count(*) AS n "
            f"FROM {s}.shops GROUP BY 1 ORDER BY n DESC, state"
        )
        behind = await self._fetch(
            f"SELECT shop_id, owner, behind FROM {s}.shops WHERE {live} AND behind IS NOT NULL "
            "ORDER BY behind DESC, shop_id LIMIT $1",
            limit,
        )
        errors = await self._fetch(
            f"SELECT shop_id, CASE WHEN {live} THEN owner END AS owner, last_error, count(*) OVER () AS total "
            f"FROM {s}.shops WHERE last_error IS NOT NULL ORDER BY reported_at DESC NULLS LAST, shop_id LIMIT $1",
            limit,
        )
        return ShopSummary(
            shops=sum(int(row["n"]) for row in states),
            states=tuple((row["state"], int(row["n"])) for row in states),
            most_behind=tuple((row["shop_id"], row["owner"], float(row["behind"])) for row in behind),
            errors=tuple((row["shop_id"], row["owner"], row["last_error"]) for row in errors),
            error_count=int(errors[0]["total"]) if errors else 0,
        )

    async def workers(self) -> list[WorkerRecord]:
        """Registered workers, live ones first."""
        s = self.schema
        rows = await self._fetch(
            f"SELECT w.worker_id, w.host, w.pid, w.rate, w.expires_at > now() AS alive, "
            f"extract(epoch FROM now() - w.seen_at)::float8 AS seen_ago, "
            f"(SELECT count(*) FROM {s}.shops s WHERE s.owner = w.worker_id AND s.lease_until > now()) AS shops, "
            f"w.last_error, extract(epoch FROM now() - w.failing_since)::float8 AS failing_for "
            f"FROM {s}.workers w ORDER BY alive DESC, worker_id"
        )
        return [
            WorkerRecord(
                worker_id=row["worker_id"],
                host=row["host"],
                pid=int(row["pid"]),
                alive=bool(row["alive"]),
                seen_ago=float(row["seen_ago"]),
                rate=row["rate"],
                shops=int(row["shops"]),
                last_error=row["last_error"],
                failing_for=row["failing_for"],
            )
            for row in rows
        ]

    # -- leases (used by Worker) -------------------------------------------------------

    async def heartbeat(
        self,
        worker_id: str,
        *,
        host: str,
        pid: int,
        lease: float,
        budget: float,
        reports: Sequence[Report],
    ) -> Heartbeat:
        """Register the worker, take its share of the app's ``budget``, renew its leases with each
        shop's report, and read the registry.

        ``reports`` holds ``(shop_id, token, weight, state, behind, last_error)`` per held shop. The
        share is ``_lease.rate_share``: ``budget / live workers``, but no more than the other live
        workers' reported rates leave; it is recorded as this worker's rate in the same transaction,
        and heartbeats are serialized (an advisory lock), so the recorded rates never add up to more
        than the budget. Four statements in one transaction.
        """
        s = self.schema
        columns: list[list[Any]] = [list(column) for column in zip(*reports, strict=True)] or [[] for _ in range(6)]
        async with self._connection("heartbeat") as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _SHARE_LOCK_KEY, s)
            # ban_until is '-infinity' until the first ban, and before PostgreSQL 17 an infinite
            # timestamp minus a finite one is an error: subtract from a finite one only.
            summary = await connection.fetchrow(
                f"SELECT (SELECT count(*) FROM {s}.workers WHERE expires_at > now() AND worker_id <> $1) AS others, "
                f"(SELECT coalesce(sum(rate), 0)::float8 FROM {s}.workers "
                f" WHERE expires_at > now() AND worker_id <> $1) AS others_rate, "
                f"(SELECT extract(epoch FROM greatest(ban_until, now()) - now())::float8 FROM {s}.app) AS ban_left, "
                f"(SELECT extract(epoch FROM min(lease_until) - now())::float8 FROM {s}.shops "
                f" WHERE owner IS DISTINCT FROM $1 AND lease_until > now()) AS next_expiry",
                worker_id,
            )
            live = int(summary["others"]) + 1
            rate = rate_share(budget, live, float(summary["others_rate"]))
            renewed = await connection.fetch(
                f"""
                WITH me AS (
                    INSERT INTO {s}.workers (worker_id, host, pid, expires_at, rate)
                    VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5)
                    ON CONFLICT (worker_id) DO UPDATE SET seen_at = now(), expires_at = excluded.expires_at,
                        rate = excluded.rate, host = excluded.host, pid = excluded.pid,
                        last_error = NULL, failing_since = NULL
                )
                UPDATE {s}.shops AS s SET lease_until = now() + make_interval(secs => $4), weight = u.weight,
                    state = u.state, behind = u.behind, last_error = u.last_error, reported_at = now()
                FROM unnest($6::text[], $7::bigint[], $8::float8[], $9::text[], $10::float8[], $11::text[])
                    AS u(shop_id, token, weight, state, behind, last_error)
                WHERE s.shop_id = u.shop_id AND s.owner = $1 AND s.token = u.token
                RETURNING s.shop_id
                """,
                worker_id, host, pid, lease, rate, *columns,
            )  # fmt: skip
            # Leases renewed above are visible here; an expired one shows free, even if it was ours.
            rows = await connection.fetch(
                f"SELECT shop_id, CASE WHEN lease_until > now() THEN owner END AS owner, weight, "
                f"extract(epoch FROM now() - claimed_at)::float8 AS held_for FROM {s}.shops"
            )
        self.round_trips += HEARTBEAT_ROUND_TRIPS
        return Heartbeat(
            renewed=frozenset(row["shop_id"] for row in renewed),
            live_workers=live,
            rate=rate,
            ban_left=max(0.0, float(summary["ban_left"] or 0.0)),
            next_expiry=summary["next_expiry"],
            rows=tuple(
                LeaseRow(
                    row["shop_id"],
                    row["owner"],
                    float(row["weight"]),
                    row["held_for"] if row["held_for"] is not None else math.inf,
                )
                for row in rows
            ),
        )

    async def report_heartbeat_failure(
        self, worker_id: str, *, host: str, pid: int, error: str, failing_for: float
    ) -> None:
        """Show in ``status`` that this worker's heartbeats fail, and since when (the database answers,
        but refuses them). The worker is registered if it never was, but not made live."""
        await self._fetch(
            f"INSERT INTO {self.schema}.workers AS w (worker_id, host, pid, expires_at, last_error, failing_since) "
            "VALUES ($1, $2, $3, now(), $4, now() - make_interval(secs => $5)) "
            "ON CONFLICT (worker_id) DO UPDATE SET seen_at = now(), host = excluded.host, pid = excluded.pid, "
            "last_error = excluded.last_error, failing_since = coalesce(w.failing_since, excluded.failing_since) "
            "RETURNING 1",
            worker_id, host, pid, error, failing_for,
        )  # fmt: skip

    async def claim(self, worker_id: str, candidates: Sequence[str], limit: int, *, lease: float) -> dict[str, int]:
        """Take up to ``limit`` free shops of ``candidates``; returns each claimed shop's new fencing token."""
        if limit <= 0 or not candidates:
            return {}
        s = self.schema
        rows = await self._fetch(
            f"""
            WITH picked AS (
                SELECT shop_id FROM {s}.shops
                WHERE shop_id = ANY($2::text[]) AND (owner IS NULL OR lease_until IS NULL OR lease_until <= now())
                ORDER BY array_position($2::text[], shop_id)
                LIMIT $3
                FOR UPDATE SKIP LOCKED
            )
            UPDATE {s}.shops AS s SET owner = $1, token = nextval('{s}.fencing_tokens'),
                lease_until = now() + make_interval(secs => $4), claimed_at = now(), state = 'claimed',
                last_error = NULL, behind = NULL
            FROM picked WHERE s.shop_id = picked.shop_id
            RETURNING s.shop_id, s.token
            """,
            worker_id, list(candidates), limit, lease,
        )  # fmt: skip
        return {row["shop_id"]: int(row["token"]) for row in rows}

    async def release(self, worker_id: str, shop_ids: Sequence[str] | None = None) -> int:
        """Give shops back (all of the worker's when ``shop_ids`` is None) so others claim them at once."""
        query = f"UPDATE {self.schema}.shops SET owner = NULL, lease_until = NULL, state = 'released' WHERE owner = $1"
        if shop_ids is None:
            return await self._change_shops(query + " RETURNING shop_id", worker_id)
        return await self._change_shops(
            query + " AND shop_id = ANY($2::text[]) RETURNING shop_id", worker_id, list(shop_ids)
        )

    async def _change_shops(self, change: str, *args: Any) -> int:
        """Run a registry change (a statement ``RETURNING shop_id``) and, if it changed anything, wake
        every worker to rebalance (NOTIFY, in the same statement); returns how many shops changed."""
        channel = f"${len(args) + 1}"
        rows = await self._fetch(
            f"WITH changed AS ({change}) SELECT count(*) AS n, "
            f"CASE WHEN count(*) > 0 THEN pg_notify({channel}, 'changed') END FROM changed",
            *args, self.channel("shops"),
        )  # fmt: skip
        return int(rows[0]["n"])

    async def nudge(self) -> None:
        """Wake every worker to heartbeat now (a newcomer waiting for the others to lower their rates)."""
        await self._fetch("SELECT pg_notify($1, 'nudge')", self.channel("shops"))

    async def retire(self, worker_id: str) -> int:
        """Graceful exit: unregister the worker, then release every lease so others claim them at once.

        In that order: the others, woken by the release's NOTIFY, already count one worker less.
        """
        await self._fetch(f"DELETE FROM {self.schema}.workers WHERE worker_id = $1 RETURNING 1", worker_id)
        return await self.release(worker_id)

    async def record_error(self, shop_id: str, worker_id: str, error: str) -> None:
        """Show a shop's trouble (e.g. no session) in ``status`` before the next heartbeat."""
        await self._fetch(
            f"UPDATE {self.schema}.shops SET last_error = $3, state = 'paused' "
            "WHERE shop_id = $1 AND owner = $2 RETURNING 1",
            shop_id, worker_id, error,
        )  # fmt: skip

    async def ban(self, seconds: float) -> None:
        """Pause the whole app for ``seconds``: every worker learns it by NOTIFY and heartbeat."""
        await self._fetch(
            f"WITH u AS (UPDATE {self.schema}.app SET ban_until = greatest(ban_until, "
            "now() + make_interval(secs => $1)) RETURNING 1) SELECT pg_notify($2, $1::text) FROM u",
            seconds, self.channel("ban"),
        )  # fmt: skip

    # -- plumbing --------------------------------------------------------------------

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        async with self._connection("query") as connection:
            self.round_trips += 1
            return list(await connection.fetch(query, *args))

    async def _fetchrow(self, query: str, *args: Any) -> Any:
        async with self._connection("query") as connection:
            self.round_trips += 1
            return await connection.fetchrow(query, *args)

    async def _fetchval(self, query: str, *args: Any) -> Any:
        async with self._connection("query") as connection:
            self.round_trips += 1
            return await connection.fetchval(query, *args)

    @asynccontextmanager
    async def _connection(self, what: str) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            await self.open()
        pool = self._pool
        if pool is None:
            raise StoreUnavailableError(f"{self.where}: the store was closed")
        with self._translated(what):
            async with pool.acquire(timeout=self._connect_timeout) as connection:
                yield connection

    def _translated(self, what: str) -> AbstractContextManager[None]:
        return _translated(self.where, what)


@contextmanager
def _translated(where: str, what: str) -> Iterator[None]:
    """asyncpg and socket errors become ``CheckpointError``s that name the server, never the password."""
    try:
        yield
    except (CheckpointError, ConfigurationError):
        raise
    except ValueError as exc:
        if what != "connect":
            raise
        raise ConfigurationError(f"invalid PostgreSQL DSN for {where}: {exc}") from exc  # a malformed DSN or option
    except Exception as exc:
        asyncpg = _import_asyncpg()
        unreachable = (
            OSError,
            TimeoutError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError,
            asyncpg.InvalidAuthorizationSpecificationError,
            asyncpg.InvalidCatalogNameError,
        )
        if isinstance(exc, unreachable):
            raise StoreUnavailableError(f"{where}: cannot {what}: {str(exc) or type(exc).__name__}") from exc
        if isinstance(exc, asyncpg.PostgresError):
            raise CheckpointError(f"{where}: {what} failed: {exc}") from exc
        raise


def _valid_ids(shop_ids: Sequence[object]) -> list[str]:
    ids = [shop_id for shop_id in shop_ids if isinstance(shop_id, str) and shop_id.strip()]
    if not ids or len(ids) != len(shop_ids):
        raise ConfigurationError("shop ids must be non-empty strings")
    return ids


class FencedRevision(int):
    """A revision handed out by ``FencedStore``: an ``int`` that also carries the fencing token of
    the read it belongs to, so that the read's next save commits with that token and no other."""

    shop_id: str
    token: int

    def __new__(cls, revision: int, *, shop_id: str, token: int) -> Self:
        value = super().__new__(cls, revision)
        value.shop_id = shop_id
        value.token = token
        return value


# Reads of a shop with no checkpoint yet, by (store, shop): the token each began under. A read loads
# and makes its first save (which fixes the checkpoint's origin) in one step of its task, so the
# context of that task is where its token waits: two reads in two tasks never see each other's.
_ABSENT_READS: ContextVar[Mapping[tuple[int, str], int] | None] = ContextVar("taobao_absent_reads", default=None)


class FencedStore:
    """The ``CheckpointStore`` a worker's fleet uses: every save carries the fencing token of its read.

    The token is taken when a read starts (``load``) and travels with the read itself: the revision
    ``load`` and ``save`` return is a ``FencedRevision`` holding it, which the read hands back to its
    next ``save``. (A read of a shop with no checkpoint has no revision yet: its token waits in its
    task's context until its first save.) So a read begun under an old lease commits with the old
    token, and the database refuses it, even if this same worker has claimed the shop again since and
    a newer read stands on the same revision with a newer token; that newer read commits undisturbed.
    """

    def __init__(self, store: PostgresStore, owner: str, tokens: Mapping[str, int]) -> None:
        self.store = store
        self.owner = owner
        self._tokens = tokens  # the worker's current leases

    def __repr__(self) -> str:
        return f"FencedStore({self.store!r}, owner={self.owner!r})"

    async def load(self, shop_id: str) -> StoredCheckpoint | None:
        token = self._tokens.get(shop_id)
        stored = await self.store.load(shop_id)
        if stored is None and token is not None:
            # A new mapping, never a change to the one other tasks may share.
            _ABSENT_READS.set({**(_ABSENT_READS.get() or {}), (id(self), shop_id): token})
        if stored is None or token is None:
            return stored
        return StoredCheckpoint(
            data=stored.data, revision=FencedRevision(stored.revision, shop_id=shop_id, token=token)
        )

    async def save(self, shop_id: str, data: str, *, expected_revision: int | None) -> int:
        token: int | None
        if expected_revision is None:
            key = (id(self), shop_id)
            reads = _ABSENT_READS.get() or {}
            token = reads.get(key)
            if token is not None:
                _ABSENT_READS.set({k: v for k, v in reads.items() if k != key})  # this read's first step
        elif isinstance(expected_revision, FencedRevision) and expected_revision.shop_id == shop_id:
            token = expected_revision.token
        else:
            token = None  # a revision no read of this view handed out
        if token is None:
            raise LeaseLostError(f"shop {shop_id!r}: worker {self.owner!r} holds no lease on it; commit refused")
        revision = await self.store.save_fenced(
            shop_id, data, expected_revision=int(expected_revision) if expected_revision is not None else None,
            fence=(self.owner, token),
        )  # fmt: skip
        return FencedRevision(revision, shop_id=shop_id, token=token)
