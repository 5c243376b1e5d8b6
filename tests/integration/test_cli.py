"""The CLI end to end: a real emulator process, real commands, messages and exit codes."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import SqliteConnections

from taobao_ordersync import RetryPolicy, TopClient, Trade, cli


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    """`taobao-ordersync emulator` in its own process, on a free loopback port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "taobao_ordersync", "emulator", "--port", "0", "--orders-per-day", "30", "--shops", "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("TOP emulator serving at http://127.0.0.1:"), first
        credentials = process.stdout.readline()
        assert "app_key=test app_secret=test" in credentials
        yield first.split()[-1]
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sync_args(url: str, tmp_path: Path, *extra: str, secret: str = "test", session: str = "session-1") -> list[str]:  # noqa: S107
    return [
        "sync", "--url", url, "--app-key", "test", "--app-secret", secret, "--session", session,
        "--shop-id", "shop-1", "--store", str(tmp_path / "checkpoints.sqlite3"), *extra,
    ]  # fmt: skip


def test_sync_writes_ndjson_and_a_checkpoint(
    emulator_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sync prints one JSON trade per line, reports on stderr, and status shows the checkpoint."""
    code, out, err = run(sync_args(emulator_url, tmp_path), capsys)
    status_code, status, _ = run(["status", "--store", str(tmp_path / "checkpoints.sqlite3")], capsys)

    trades = [json.loads(line) for line in out.splitlines()]
    assert 0 == code
    assert len(trades) > 1000
    assert all(isinstance(trade["tid"], int) for trade in trades)
    assert "shop-1:" in err
    assert 0 == status_code
    assert "shop-1" in status
    assert "increments" in status


def test_sync_upserts_into_sqlite(emulator_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--out upserts trades into a SQLite table, one row per tid."""
    out_file = tmp_path / "trades.sqlite3"
    code, out, _ = run(sync_args(emulator_url, tmp_path, "--out", str(out_file)), capsys)
    with closing(sqlite3.connect(out_file)) as db:
        rows = db.execute("SELECT count(*), count(DISTINCT tid) FROM trades").fetchone()

    assert 0 == code
    assert "" == out
    assert rows[0] == rows[1]
    assert rows[0] > 1000


def test_missing_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No app key anywhere: exit 3 and a one-line hint naming the flag and the variable."""
    monkeypatch.delenv("TAOBAO_ORDERSYNC_APP_KEY", raising=False)
    monkeypatch.delenv("TAOBAO_APP_KEY", raising=False)
    code, _, err = run(["sync", "--shop-id", "s", "--store", str(tmp_path / "c.db")], capsys)

    assert cli.CONFIG == code
    assert "missing app key: pass --app-key or set $TAOBAO_ORDERSYNC_APP_KEY" in err
    assert "Traceback" not in err
    assert 1 == len(err.strip().splitlines())


def env_sync_args(url: str, tmp_path: Path) -> list[str]:
    return ["sync", "--url", url, "--shop-id", "shop-1", "--store", str(tmp_path / "checkpoints.sqlite3")]


def test_the_old_variable_names_still_work_with_a_warning(
    emulator_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only $TAOBAO_APP_KEY, $TAOBAO_APP_SECRET and $TAOBAO_SESSION set: they are read, and each
    warning names the old and the new name."""
    for new, old in cli.OLD_ENV.items():
        monkeypatch.delenv(new, raising=False)
        monkeypatch.setenv(old, "session-1" if old == "TAOBAO_SESSION" else "test")

    code, _, _ = run(env_sync_args(emulator_url, tmp_path), capsys)

    assert cli.OK == code
    assert [
        f"${old} is deprecated and goes in the next release: set ${new} instead" for new, old in cli.OLD_ENV.items()
    ] == [record.getMessage() for record in caplog.records if "deprecated" in record.getMessage()]


def test_the_new_variable_names_win_over_the_old(
    emulator_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both set (the old ones wrong): the new names are used, and nothing warns."""
    for new, old in cli.OLD_ENV.items():
        monkeypatch.setenv(new, "session-1" if new == cli.ENV_SESSION else "test")
        monkeypatch.setenv(old, "stale")

    code, _, _ = run(env_sync_args(emulator_url, tmp_path), capsys)

    assert cli.OK == code
    assert not [record for record in caplog.records if "deprecated" in record.getMessage()]


def test_invalid_session(emulator_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown session key: exit 4, re-authorise hint, and the key itself is not printed."""
    code, _, err = run(sync_args(emulator_url, tmp_path, session="expired-key-123"), capsys)

    assert cli.AUTH == code
    assert "Invalid session" in err
    assert "authorise" in err
    assert "expired-key-123" not in err


def test_wrong_secret(emulator_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong secret: the gateway answers 25 Invalid Signature; exit 5 with a hint; no secret shown."""
    code, _, err = run(sync_args(emulator_url, tmp_path, secret="not-the-secret"), capsys)

    assert cli.REQUEST == code
    assert "Invalid Signature" in err
    assert "app secret" in err
    assert "not-the-secret" not in err


def test_sqlite_output_is_closed_when_the_sync_fails(
    emulator_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], sqlite_connections: SqliteConnections
) -> None:
    """--out with a wrong secret: exit 5, and the output file's connection (and the store's) are closed."""
    out_file = tmp_path / "trades.sqlite3"
    code, _, _ = run(sync_args(emulator_url, tmp_path, "--out", str(out_file), secret="not-the-secret"), capsys)

    assert cli.REQUEST == code
    assert 2 <= len(sqlite_connections.opened)  # the output file and at least one checkpoint load
    sqlite_connections.assert_all_closed()


def test_out_file_that_is_not_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sqlite_connections: SqliteConnections
) -> None:
    """--out naming a file that is not a SQLite database: exit 3 naming it; the connection tried is closed."""
    out_file = tmp_path / "trades.sqlite3"
    out_file.write_bytes(b"this is not a database" * 100)
    args = sync_args("http://127.0.0.1:9/router/rest", tmp_path, "--out", str(out_file))
    code, _, err = run(args, capsys)

    assert cli.CONFIG == code
    assert "trades.sqlite3: not a usable SQLite file" in err
    assert 1 == len(sqlite_connections.opened)
    sqlite_connections.assert_all_closed()


async def test_cancelled_sync_closes_its_output_after_the_write_in_flight(
    emulator_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_connections: SqliteConnections
) -> None:
    """Ctrl+C (the task cancelled) during a write: the write still in its thread finishes, then the file is closed."""
    writing, release = threading.Event(), threading.Event()
    in_flight: list[Trade] = []
    upsert = cli._SqliteSink._upsert

    def slow_upsert(sink: cli._SqliteSink, trades: Sequence[Trade]) -> None:
        if trades and not writing.is_set():
            in_flight.extend(trades)
            writing.set()
            release.wait(timeout=10)
        upsert(sink, trades)

    monkeypatch.setattr(cli._SqliteSink, "_upsert", slow_upsert)
    out_file = tmp_path / "trades.sqlite3"
    args = cli.build_parser().parse_args(sync_args(emulator_url, tmp_path, "--out", str(out_file), "--follow"))
    sync = asyncio.create_task(cli._sync(args))
    assert await asyncio.to_thread(writing.wait, 10)
    sync.cancel()
    # Closing waits for the write, which blocks the loop: let it go from another thread.
    threading.Timer(0.2, release.set).start()

    with pytest.raises(asyncio.CancelledError):
        await sync

    sqlite_connections.assert_all_closed()
    with closing(sqlite3.connect(out_file)) as db:
        stored = {tid for (tid,) in db.execute("SELECT tid FROM trades")}
    assert {str(trade.tid) for trade in in_flight} <= stored  # the batch in flight was written, not cut off


def test_malformed_store(emulator_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint file that is not SQLite: exit 7 naming the file."""
    (tmp_path / "checkpoints.sqlite3").write_bytes(b"this is not a database" * 100)
    code, _, err = run(sync_args(emulator_url, tmp_path), capsys)

    assert cli.STORE == code
    assert "checkpoints.sqlite3" in err
    assert "Traceback" not in err


def test_unreachable_gateway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listening at the URL: exit 6 with a hint about the URL (after bounded retries, here
    without their waits)."""

    def impatient(app_key: str, secret: str, **options: Any) -> TopClient:
        return TopClient(app_key, secret, retry=RetryPolicy.no_wait(), **options)

    monkeypatch.setattr(cli, "_top_client", impatient)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = run(sync_args(f"http://127.0.0.1:{port}/router/rest", tmp_path), capsys)

    assert cli.NETWORK == code
    assert "cannot reach" in err
    assert "gateway URL" in err


def test_status_without_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """status on a missing file: exit 3 naming it."""
    code, _, err = run(["status", "--store", str(tmp_path / "none.db")], capsys)

    assert cli.CONFIG == code
    assert "none.db" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse usage errors keep their conventional exit code 2."""
    with pytest.raises(SystemExit) as caught:
        cli.main(["demo", "--shops", "0"])

    assert 2 == caught.value.code
    assert "at least 1" in capsys.readouterr().err


def test_small_demo_verifies(capsys: pytest.CaptureFixture[str]) -> None:
    """A small demo run ends with a `verified: ... 0 lost ...` line and exit 0."""
    code, out, _ = run(["demo", "--orders-per-day", "20", "--sale", "1500", "--seed", "5"], capsys)

    last = out.strip().splitlines()[-1]
    assert 0 == code
    assert last.startswith("verified: ")
    assert " 0 lost, " in last
    assert "x minimum)" in last


def test_demo_with_several_shops_runs_through_the_fleet(capsys: pytest.CaptureFixture[str]) -> None:
    """demo --shops 3 verifies every shop."""
    code, out, _ = run(["demo", "--shops", "3", "--orders-per-day", "15", "--sale", "600", "--seed", "6"], capsys)

    assert 0 == code
    assert 3 == out.count(" 0 lost (0 missing, 0 stale)")
    assert out.strip().splitlines()[-1].startswith("verified: ")


def test_demo_tmc_shows_freshness_with_push_and_with_polling(capsys: pytest.CaptureFixture[str]) -> None:
    """demo --tmc prints change -> handler p50/p99 for push and for polling alone, push the fresher, 0 lost."""
    args = ["demo", "--tmc", "--seconds", "3", "--interval", "4", "--lag", "1", "--shops", "2"]
    code, out, _ = run([*args, "--orders-per-day", "43200", "--seed", "8"], capsys)

    lines = {line.split()[0]: line for line in out.splitlines() if "change -> handler" in line}
    assert 0 == code
    assert {"push", "polling"} == set(lines)
    p50 = {name: float(line.split(" p50 ")[1].split(" s")[0]) for name, line in lines.items()}
    assert p50["push"] < p50["polling"], out
    assert out.strip().splitlines()[-1] == "verified: 0 lost"


def test_module_entry_point() -> None:
    """`python -m taobao_ordersync --version` works."""
    result = subprocess.run([sys.executable, "-m", "taobao_ordersync", "--version"], capture_output=True, text=True)

    assert 0 == result.returncode
    assert result.stdout.startswith("taobao-ordersync ")
