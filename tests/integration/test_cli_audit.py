"""`taobao-ordersync audit` on the SQLite file `sync --out` writes, against the emulator process."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from tests.integration.test_cli import emulator_url, run, sync_args

from taobao_ordersync import cli

__all__ = ["emulator_url"]  # the module-scoped fixture, shared with test_cli


def audit_args(url: str, out: Path, *extra: str) -> list[str]:
    return [
        "audit", "--url", url, "--app-key", "test", "--app-secret", "test", "--session", "session-1",
        "--shop-id", "shop-1", "--out", str(out), *extra,
    ]  # fmt: skip


def test_audit_reports_deletes_repairs_and_exit_codes(
    emulator_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Clean: exit 0. Rows deleted: exit 12 naming them. --repair: still 12 (they were missing),
    rows back, and the next audit exits 0. An extra row alone: exit 13. JSON on stdout with --json -."""
    out = tmp_path / "trades.sqlite3"
    assert 0 == run(sync_args(emulator_url, tmp_path, "--out", str(out)), capsys)[0]

    clean, table, _ = run(audit_args(emulator_url, out), capsys)
    with closing(sqlite3.connect(out)) as db, db:
        gone = [row[0] for row in db.execute("SELECT tid FROM trades ORDER BY json_extract(raw, '$.created') LIMIT 3")]
        db.execute(f"DELETE FROM trades WHERE tid IN ({','.join('?' * len(gone))})", gone)  # noqa: S608
    found, report, _ = run(audit_args(emulator_url, out, "--json", "-"), capsys)
    repaired, repair_table, _ = run(audit_args(emulator_url, out, "--repair"), capsys)
    after, _, _ = run(audit_args(emulator_url, out), capsys)
    with closing(sqlite3.connect(out)) as db, db:
        raw = db.execute("SELECT raw FROM trades ORDER BY json_extract(raw, '$.created') LIMIT 1").fetchone()[0]
        db.execute(
            "INSERT INTO trades VALUES ('42', '2000-01-01T00:00:00+08:00', 'X', ?)", (raw.replace('"tid"', '"x"'),)
        )
    extra, _, _ = run(audit_args(emulator_url, out), capsys)

    assert (cli.OK, cli.AUDIT_LOST, cli.AUDIT_LOST, cli.OK, cli.AUDIT_EXTRA) == (clean, found, repaired, after, extra)
    assert "shop-1" in table and "missing" in table
    document = json.loads(report)
    assert sorted(gone) == sorted(document["shops"][0]["missing"])
    assert "3" in repair_table.splitlines()[1].split()  # the repaired column


def test_audit_errors_are_one_line(emulator_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No SQLite file, or --sessions without {shop}: exit 3, one line, no traceback."""
    code, _, err = run(audit_args(emulator_url, tmp_path / "none.sqlite3"), capsys)
    sessions = tmp_path / "sessions.json"
    sessions.write_text('{"shop-1": "session-1"}')
    code2, _, err2 = run(
        ["audit", "--app-key", "k", "--app-secret", "s", "--sessions", str(sessions), "--out", "x.sqlite"], capsys
    )

    assert (cli.CONFIG, cli.CONFIG) == (code, code2)
    assert "no SQLite file" in err and "{shop}" in err2
    assert 1 == len(err.strip().splitlines()) and "Traceback" not in err + err2
