"""The TradeLedger contract, run against every ledger the library ships."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from taobao_ordersync._time import format_time
from taobao_ordersync.ledgers import SqliteLedger, SqlLedger
from taobao_ordersync.testing import MemoryLedger
from taobao_ordersync.testing.ledger_contract import LedgerRow, MakeLedger, TradeLedgerContract


class TestMemoryLedger(TradeLedgerContract):
    @pytest.fixture
    def make_ledger(self) -> MakeLedger:
        async def make(shop_id: str, rows: list[LedgerRow]) -> MemoryLedger:
            ledger = MemoryLedger()
            ledger.rows[shop_id] = {tid: (created, modified) for tid, created, modified in rows}
            return ledger

        return make


class TestSqliteLedger(TradeLedgerContract):
    """The table `taobao-ordersync sync --out` writes: tid as text, modified as ISO 8601, created in raw."""

    @pytest.fixture
    def make_ledger(self, tmp_path: Path) -> MakeLedger:
        async def make(shop_id: str, rows: list[LedgerRow]) -> SqliteLedger:
            path = tmp_path / f"{shop_id}.sqlite"
            with sqlite3.connect(path) as db:
                db.execute(
                    "CREATE TABLE trades (tid TEXT PRIMARY KEY, modified TEXT NOT NULL, status TEXT NOT NULL, "
                    "raw TEXT NOT NULL)"
                )
                db.executemany(
                    "INSERT INTO trades VALUES (?, ?, 'TRADE_FINISHED', ?)",
                    [
                        (str(tid), modified.isoformat(), json.dumps({"tid": tid, "created": format_time(created)}))
                        for tid, created, modified in rows
                    ],
                )
            db.close()
            return SqliteLedger(path)

        return make


class TestSqlLedgerOverAPlainTable(TradeLedgerContract):
    """A table of one's own (several shops, an integer tid), with the queries the guide shows."""

    @pytest.fixture
    def make_ledger(self, tmp_path: Path) -> MakeLedger:
        path = tmp_path / "orders.sqlite"

        def connect() -> sqlite3.Connection:
            return sqlite3.connect(path)

        async def make(shop_id: str, rows: list[LedgerRow]) -> SqlLedger:
            with sqlite3.connect(path) as db:
                db.execute(
                    "CREATE TABLE orders (shop_id TEXT, tid INTEGER, created TEXT, modified TEXT, "
                    "PRIMARY KEY (shop_id, tid))"
                )
                other = ("another-shop", 1, "2024-11-11 00:00:00", "2024-11-11 00:01:00")
                db.execute("INSERT INTO orders VALUES (?, ?, ?, ?)", other)
                db.executemany(
                    "INSERT INTO orders VALUES (?, ?, ?, ?)",
                    [(shop_id, tid, format_time(created), format_time(modified)) for tid, created, modified in rows],
                )
            db.close()
            return _plain_ledger(connect)

        return make


def _plain_ledger(connect: Callable[[], sqlite3.Connection]) -> SqlLedger:
    return SqlLedger(
        connect,
        count_sql="SELECT count(*) FROM orders WHERE shop_id = :shop_id AND created >= :start AND created < :end",
        list_sql="SELECT tid, modified FROM orders WHERE shop_id = :shop_id AND created >= :start AND created < :end",
        versions_sql="SELECT tid, modified FROM orders WHERE shop_id = :shop_id AND tid IN ({tids})",
    )
