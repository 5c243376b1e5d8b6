"""The SQL files of taobao_ordersync.postgres: migrations numbered 1..SCHEMA_VERSION, every named query
run by the code, and every upgrade path ending at the schema a fresh install makes."""

from __future__ import annotations

import ast
import re
from importlib.resources import files
from pathlib import Path

import pytest

from taobao_ordersync import postgres
from taobao_ordersync.postgres import SCHEMA_VERSION, PostgresStore
from taobao_ordersync.postgres._database import Database
from taobao_ordersync.postgres._sql import MIGRATIONS, QUERIES
from taobao_ordersync.testing.postgres import LocalPostgres

from .conftest import new_schema, run_sql

pytestmark = pytest.mark.every_postgres  # the upgrade paths are DDL a server version may change

SQL = files(postgres) / "sql"


def test_migrations_are_numbered_one_to_schema_version_without_gaps() -> None:
    """Each file of sql/migrations is NNNN_<what>.sql; their numbers are 1, 2, ... SCHEMA_VERSION, all loaded."""
    names = sorted(entry.name for entry in (SQL / "migrations").iterdir())

    assert [] == [name for name in names if not re.fullmatch(r"\d{4}_[a-z0-9_]+\.sql", name)]
    assert list(range(1, SCHEMA_VERSION + 1)) == [int(name[:4]) for name in names]
    assert list(range(1, SCHEMA_VERSION + 1)) == list(MIGRATIONS)


def test_every_named_query_is_run_by_the_code() -> None:
    """No query of sql/*.sql is left over: each name is a string in the package's code."""
    package = Path(postgres.__file__).parent
    strings = {
        node.value
        for path in package.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }

    assert set() == QUERIES.keys() - strings


async def describe(store: PostgresStore) -> list[tuple[str, str, str]]:
    """The schema's tables, columns, constraints, indexes and sequences, and the rows of its small
    tables, with its name written ``S`` so that two schemas compare."""
    rows = await run_sql(
        store,
        """
        SELECT 'column', table_name || '.' || column_name,
            concat_ws(' ', ordinal_position, data_type, is_nullable, column_default)
        FROM information_schema.columns WHERE table_schema = $1
        UNION ALL
        SELECT 'constraint', conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = $1::regnamespace
        UNION ALL
        SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = $1
        UNION ALL
        SELECT 'sequence', sequence_name, data_type FROM information_schema.sequences WHERE sequence_schema = $1
        """,
        store.schema,
    )
    app = await run_sql(store, f"SELECT * FROM {store.schema}.app")
    versions = await run_sql(store, f"SELECT version FROM {store.schema}.schema_version ORDER BY version")
    return sorted(
        [(kind, name.replace(store.schema, "S"), text.replace(store.schema, "S")) for kind, name, text in rows]
        + [("row", "app", repr(dict(row))) for row in app]
        + [("row", "schema_version", str(row["version"])) for row in versions]
    )


@pytest.mark.parametrize("start", range(1, SCHEMA_VERSION))
async def test_every_upgrade_path_ends_at_the_fresh_schema(postgres_server: LocalPostgres, start: int) -> None:
    """A schema a release left at version ``start``, migrated at open, is the schema a new install makes."""
    async with PostgresStore(postgres_server.dsn, schema=new_schema()) as fresh:
        expected = await describe(fresh)
    schema = new_schema()
    old = Database(postgres_server.dsn, schema=schema, pool_size=1, connect_timeout=10, schema_version=start)
    try:
        await old.open()
        assert start == await old.migrate()  # the version found: the old release's
    finally:
        await old.close()

    async with PostgresStore(postgres_server.dsn, schema=schema) as upgraded:
        assert expected == await describe(upgraded)
