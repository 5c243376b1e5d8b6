"""``Database``: the library's schema on one PostgreSQL server, as ``PostgresStore`` uses it.

It connects (asyncpg is imported then, never before), refuses a server too old, creates or migrates
the schema under an advisory lock so that many workers may start at once, runs the named queries of
``sql/`` counting the statements sent, and turns asyncpg's errors into ``CheckpointError``s that name
the server, never the password.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from taobao_ordersync.errors import CheckpointError, ConfigurationError, SchemaVersionError, StoreUnavailableError
from taobao_ordersync.postgres._sql import MIGRATIONS, QUERIES, SCHEMA_VERSION, for_schema

if TYPE_CHECKING:
    import asyncpg

__all__ = ["MIN_SERVER_VERSION", "Database", "check_server_version", "describe_dsn", "import_asyncpg"]

# The oldest PostgreSQL major supported: every version still maintained upstream (15, 16, 17, 18).
MIN_SERVER_VERSION: Final = 15
_IDENTIFIER: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_LOCK_KEY: Final = 0x7A0B_0D5C  # advisory lock for migrations (any fixed number)


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


def import_asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError as exc:
        raise ConfigurationError("PostgresStore needs asyncpg: pip install 'taobao-ordersync[postgres]'") from exc
    return asyncpg


class Database:
    """One schema on one PostgreSQL server: a pool of connections, opened on first use, and the schema's
    queries by name (``sql``: the text of ``sql/*.sql`` with this schema's name in).

    ``schema_version`` is the version ``open()`` brings the schema to: the latest, but for tests of
    the migrations. The arguments are ``PostgresStore``'s.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str,
        pool_size: int,
        connect_timeout: float,
        schema_version: int = SCHEMA_VERSION,
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
        self._schema_version = schema_version
        self._migrations = for_schema(MIGRATIONS, schema)
        self.sql: Mapping[str, str] = for_schema(QUERIES, schema)
        self._pool: asyncpg.Pool | None = None
        self.server_version: str | None = None  # e.g. "15.18", once open
        self.round_trips = 0  # statements sent

    async def open(self) -> None:
        """Connect, refuse a server too old, and create or migrate the schema. Safe to call again."""
        if self._pool is not None:
            return
        asyncpg = import_asyncpg()
        with translated(self.where, "connect"):
            pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size, timeout=self._connect_timeout
            )
        self._pool = pool
        try:
            async with self.connection("connect") as connection:
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

    async def migrate(self) -> int:
        """Bring the schema to its version, one migration after the other; returns the version found."""
        target = self._schema_version
        async with self.connection("migrate") as connection, connection.transaction():
            await connection.execute(self.sql["lock_migrations"], _LOCK_KEY)
            await connection.execute(self.sql["create_schema"])
            await connection.execute(self.sql["create_schema_version"])
            found = int(await connection.fetchval(self.sql["schema_version"]))
            if found > target:
                raise SchemaVersionError(
                    f"{self.where}: schema {self.schema!r} is at version {found}, newer than this library's "
                    f"{target}; upgrade taobao-ordersync on this machine"
                )
            for version in range(found + 1, target + 1):
                await connection.execute(self._migrations[version])
                await connection.execute(self.sql["record_schema_version"], version)
            # BEGIN, the lock, the schema, the version table, the version read and COMMIT; two per migration.
            self.round_trips += 6 + 2 * (target - found)
        return found

    async def connect_listener(self) -> asyncpg.Connection:
        """A dedicated connection (for LISTEN); the caller closes it."""
        driver = import_asyncpg()
        with translated(self.where, "connect"):
            connection: asyncpg.Connection = await driver.connect(self._dsn, timeout=self._connect_timeout)
        return connection

    def channel(self, topic: str) -> str:
        """The NOTIFY channel of ``topic`` for this schema."""
        return f"{self.schema}_{topic}"

    async def fetch(self, name: str, *args: Any) -> list[Any]:
        """The rows of the query named ``name``, in one statement."""
        async with self.connection("query") as connection:
            self.round_trips += 1
            return list(await connection.fetch(self.sql[name], *args))

    async def fetchrow(self, name: str, *args: Any) -> Any:
        """The first row of the query named ``name`` (None: no row), in one statement."""
        async with self.connection("query") as connection:
            self.round_trips += 1
            return await connection.fetchrow(self.sql[name], *args)

    async def fetchval(self, name: str, *args: Any) -> Any:
        """The first value of the query named ``name`` (None: no row), in one statement."""
        async with self.connection("query") as connection:
            self.round_trips += 1
            return await connection.fetchval(self.sql[name], *args)

    @asynccontextmanager
    async def connection(self, what: str) -> AsyncIterator[asyncpg.Connection]:
        """A connection of the pool, for ``what`` (named in errors); its statements are the caller's to count."""
        if self._pool is None:
            await self.open()
        pool = self._pool
        if pool is None:
            raise StoreUnavailableError(f"{self.where}: the store was closed")
        with translated(self.where, what):
            async with pool.acquire(timeout=self._connect_timeout) as connection:
                yield connection


@contextmanager
def translated(where: str, what: str) -> Iterator[None]:
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
        asyncpg = import_asyncpg()
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
