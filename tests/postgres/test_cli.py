"""The PostgreSQL commands of the CLI: shops add/remove/list, status, and their errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from taobao_ordersync import cli
from taobao_ordersync.postgres import PostgresStore
from taobao_ordersync.testing.postgres import LocalPostgres

from .conftest import new_schema, run_sql

pytestmark = pytest.mark.every_postgres  # cheap, and all of it is SQL a server version may change


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_shops_add_list_remove_and_status(postgres_server: LocalPostgres, capsys: pytest.CaptureFixture[str]) -> None:
    """The registry round trip through the CLI, and a status table with one line per shop."""
    where = ["--postgres", postgres_server.dsn, "--schema", new_schema()]

    assert (0, "added 3 shops (0 were registered already)\n") == run(["shops", "add", *where, "a", "b", "c"], capsys)[
        :2
    ]
    assert (0, "added 0 shops (1 were registered already)\n") == run(["shops", "add", *where, "a"], capsys)[:2]
    assert (0, "removed 1 shops\n") == run(["shops", "remove", *where, "b"], capsys)[:2]
    code, out, _ = run(["shops", "list", *where], capsys)
    assert 0 == code
    assert ["a\t-\tfree", "c\t-\tfree"] == out.splitlines()

    code, out, _ = run(["status", "--shops", *where], capsys)

    assert 0 == code
    lines = out.splitlines()
    assert "0 live workers, 2 shops" == lines[0]
    assert ["a", "c"] == [line.split()[0] for line in lines[2:]]


def test_status_summarizes_without_reading_checkpoints(
    postgres_server: LocalPostgres, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """For tens of thousands of shops: counts per state, the most behind and the errors, from one
    summary of the registry; no checkpoint is parsed (details with --shops)."""
    schema = new_schema()
    where = ["--postgres", postgres_server.dsn, "--schema", schema]

    async def prepare() -> None:
        async with PostgresStore(postgres_server.dsn, schema=schema) as store:
            await store.add_shops(*(f"s{i:02}" for i in range(30)))
            await store.save("s00", "{}", expected_revision=None)
            await store.claim("w", [f"s{i:02}" for i in range(12)], 12, lease=60)
            await run_sql(
                store,
                f"UPDATE {schema}.shops SET state = 'waiting', behind = 10 * length(shop_id) + "
                "substr(shop_id, 2)::int WHERE owner IS NOT NULL RETURNING 1",
            )
            await store.record_error("s03", "w", "AuthenticationError: session expired")

    asyncio.run(prepare())

    def no_parsing(*args: object, **kwargs: object) -> None:
        raise AssertionError("status parsed a checkpoint")

    monkeypatch.setattr("taobao_ordersync.checkpoint.Checkpoint.from_json", no_parsing)
    code, out, _ = run(["status", *where], capsys)

    assert 0 == code, out
    lines = out.splitlines()
    assert "0 live workers, 30 shops" == lines[0]
    assert "shops by state: free 18, waiting 11, paused 1" in lines
    assert any(line.split()[:1] == ["s11"] for line in lines)  # the most behind first
    assert any("s03" in line and "session expired" in line for line in lines)
    assert not any(line.startswith("s2") for line in lines)  # no line per shop


def test_dsn_from_the_environment(
    postgres_server: LocalPostgres, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cli.ENV_POSTGRES, postgres_server.dsn)
    schema = new_schema()

    assert 0 == run(["shops", "add", "--schema", schema, "a"], capsys)[0]
    assert (0, "a\t-\tfree\n") == run(["shops", "list", "--schema", schema], capsys)[:2]
    code, out, _ = run(["status", "--schema", schema], capsys)
    assert (0, "0 live workers, 1 shops") == (code, out.splitlines()[0])


def test_missing_dsn_is_a_configuration_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(cli.ENV_POSTGRES, raising=False)

    code, _, err = run(["shops", "list"], capsys)

    assert cli.CONFIG == code
    assert f"pass --postgres or set ${cli.ENV_POSTGRES}" in err


def test_unreachable_database_is_one_line_without_password(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["status", "--postgres", "postgresql://app:s3cret@127.0.0.1:9/orders"], capsys)

    assert cli.STORE == code
    assert 1 == len(err.splitlines())
    assert "127.0.0.1:9/orders" in err
    assert "s3cret" not in err


def test_worker_with_an_unreadable_sessions_file_stops_at_once(
    tmp_path: Path, postgres_server: LocalPostgres, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong --sessions path or content is reported before anything connects."""
    monkeypatch.setenv(cli.ENV_KEY, "test")
    monkeypatch.setenv(cli.ENV_SECRET, "test")
    bad = tmp_path / "sessions.json"
    bad.write_text(json.dumps(["not", "a", "mapping"]))
    base = ["worker", "--postgres", postgres_server.dsn, "--url", "http://127.0.0.1:9/router/rest"]

    missing = run([*base, "--sessions", str(tmp_path / "nope.json")], capsys)
    wrong = run([*base, "--sessions", str(bad)], capsys)

    assert cli.CONFIG == missing[0]
    assert "not a readable JSON file" in missing[2]
    assert cli.CONFIG == wrong[0]
    assert "expected a JSON object" in wrong[2]


async def test_session_file_is_reread_when_it_changes_and_a_broken_rewrite_is_an_error(tmp_path: Path) -> None:
    """The worker's --sessions file: new keys are picked up; a half-written file raises (and the
    worker reports the shop as without session) instead of silently serving stale keys."""
    path = tmp_path / "sessions.json"
    path.write_text(json.dumps({"a": "key-1"}))
    sessions = cli._SessionFile(path, recheck=0)
    assert "key-1" == await sessions("a")
    assert None is await sessions("b")

    path.write_text(json.dumps({"a": "key-2", "b": "key-3"}))
    assert ("key-2", "key-3") == (await sessions("a"), await sessions("b"))

    path.write_text('{"a": ')
    with pytest.raises(cli.ConfigurationError, match="not a readable JSON file"):
        await sessions("a")


def test_a_worker_whose_heartbeat_keeps_failing_exits_with_its_own_code(
    postgres_server: LocalPostgres,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Every heartbeat refused by the database: after --give-up-after the worker exits with code 11 and
    says why; `status` shows the worker and its heartbeat error."""
    schema = new_schema()
    where = ["--postgres", postgres_server.dsn, "--schema", schema]
    assert 0 == run(["shops", "add", *where, "a"], capsys)[0]

    async def break_heartbeats() -> None:
        async with PostgresStore(postgres_server.dsn, schema=schema) as store:
            await run_sql(store, f"ALTER TABLE {schema}.app RENAME TO app_gone")

    asyncio.run(break_heartbeats())
    sessions = tmp_path / "sessions.json"
    sessions.write_text(json.dumps({"a": "session"}))
    monkeypatch.setenv(cli.ENV_KEY, "key")
    monkeypatch.setenv(cli.ENV_SECRET, "secret")
    worker = ["--sessions", str(sessions), "--url", "http://127.0.0.1:9/router/rest", "--worker-id", "doomed"]

    code, _, err = run(["worker", *where, *worker, "--lease", "1", "--give-up-after", "2"], capsys)

    assert 11 == cli.HEARTBEAT == code
    assert "no heartbeat for" in err and "does not exist" in err
    code, out, _ = run(["status", *where], capsys)
    assert 0 == code
    assert "0 live workers, 1 shops" == out.splitlines()[0]
    assert any("doomed" in line and "heartbeat failing" in line for line in out.splitlines()), out
