"""Ready ``TradeLedger``s: the application's side of an audit, over SQL tables.

* ``SqlLedger``: any DB-API 2 driver (``sqlite3``, ``psycopg``, ...) and three queries
  you write for your own schema (see ``docs/guides/audit.md``).
* ``SqliteLedger``: the table ``taobao-ordersync sync --out FILE`` writes.

Each query runs in a worker thread on a connection of its own, closed afterwards, so
the event loop never waits on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from taobao_ordersync._time import CST, format_time, parse_time
from taobao_ordersync.errors import ConfigurationError

__all__ = ["SqlLedger", "SqliteLedger"]


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str | bytes):
        raise ConfigurationError(f"a ledger returned the tid {value!r}: expected an int or its digits")
    return int(value)


def _as_time(value: Any) -> datetime:
    """A ``modified`` from a row: a datetime (naive ones are CST), Taobao's text, or ISO 8601."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=CST)
    if isinstance(value, str):
        try:
            return parse_time(value)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigurationError(f"a ledger returned the time {value!r}: not a time") from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=CST)
    raise ConfigurationError(f"a ledger returned the time {value!r}: not a time")


class SqlLedger:
    """A ``TradeLedger`` over a table of yours, through any DB-API 2 driver.

    Args:
        connect: returns a new DB-API connection (called per query, in a thread).
        count_sql: counts the shop's trades with ``start <= created < end``.
        list_sql: selects ``tid, modified`` of the same trades.
        versions_sql: selects ``tid, modified`` of the tids in ``{tids}``, which is
            replaced by a comma-separated list of integers (safe to inline: ints only).
        times: how ``start``/``end`` are passed: ``"text"`` as Taobao's
            ``yyyy-MM-dd HH:mm:ss`` (China Standard Time; compares correctly as text), or
            ``"datetime"`` as aware datetimes.

    Queries take named parameters ``shop_id``, ``start`` and ``end`` in the driver's
    style (``:start`` for sqlite3, ``%(start)s`` for psycopg). Rows give ``tid`` as an
    int or its digits and ``modified`` as a datetime or text.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        count_sql: str,
        list_sql: str,
        versions_sql: str,
        times: Literal["text", "datetime"] = "text",
    ) -> None:
        if times not in ("text", "datetime"):
            raise ConfigurationError("times must be 'text' or 'datetime'")
        if "{tids}" not in versions_sql:
            raise ConfigurationError("versions_sql must contain {tids}")
        self._connect = connect
        self.count_sql = count_sql
        self.list_sql = list_sql
        self.versions_sql = versions_sql
        self.times = times

    def __repr__(self) -> str:
        return f"{type(self).__name__}(times={self.times!r})"

    def _params(self, shop_id: str, start: datetime, end: datetime) -> dict[str, Any]:
        if self.times == "text":
            return {"shop_id": shop_id, "start": format_time(start), "end": format_time(end)}
        return {"shop_id": shop_id, "start": start.astimezone(CST), "end": end.astimezone(CST)}

    def _query(self, sql: str, params: Mapping[str, Any]) -> list[Any]:
        with contextlib.closing(self._connect()) as connection:
            cursor = connection.cursor()
            try:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
            finally:
                cursor.close()

    async def count_created(self, shop_id: str, start: datetime, end: datetime) -> int:
        rows = await asyncio.to_thread(self._query, self.count_sql, self._params(shop_id, start, end))
        return int(rows[0][0]) if rows else 0

    async def list_created(self, shop_id: str, start: datetime, end: datetime) -> dict[int, datetime]:
        rows = await asyncio.to_thread(self._query, self.list_sql, self._params(shop_id, start, end))
        return _newest(rows)

    async def versions(self, shop_id: str, tids: Sequence[int]) -> dict[int, datetime]:
        if not tids:
            return {}
        listed = ",".join(str(int(tid)) for tid in tids)
        sql = self.versions_sql.replace("{tids}", listed)
        rows = await asyncio.to_thread(self._query, sql, {"shop_id": shop_id})
        return _newest(rows)


def _newest(rows: Sequence[Any]) -> dict[int, datetime]:
    held: dict[int, datetime] = {}
    for tid_value, modified_value in rows:
        tid, modified = _as_int(tid_value), _as_time(modified_value)
        if tid not in held or modified > held[tid]:
            held[tid] = modified
    return held


class SqliteLedger(SqlLedger):
    """The ``trades`` table ``taobao-ordersync sync --out FILE`` writes (one shop per file).

    The table keeps ``tid``, ``modified`` and the trade's JSON (``raw``), whose
    ``created`` is Taobao's text; an index on it is created on first use when the file
    is writable (the counts then read the index, not the table).
    """

    def __init__(self, path: str | Path, *, table: str = "trades") -> None:
        if not table.isidentifier():
            raise ConfigurationError(f"table must be a plain SQL name, got {table!r}")
        self.path = Path(path)
        if not self.path.exists():
            raise ConfigurationError(f"no SQLite file at {self.path}")
        created = "json_extract(raw, '$.created')"
        super().__init__(
            self._open,
            count_sql=f"SELECT count(*) FROM {table} WHERE {created} >= :start AND {created} < :end",  # noqa: S608
            list_sql=f"SELECT tid, modified FROM {table} WHERE {created} >= :start AND {created} < :end",  # noqa: S608
            versions_sql=f"SELECT tid, modified FROM {table} WHERE tid IN ({{tids}})",  # noqa: S608
        )
        self._table = table
        self._indexed = False

    def __repr__(self) -> str:
        return f"SqliteLedger({str(self.path)!r})"

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30)
        if not self._indexed:
            self._indexed = True
            with contextlib.suppress(sqlite3.OperationalError):  # read-only: count without the index
                connection.execute(
                    f"CREATE INDEX IF NOT EXISTS {self._table}_created "
                    f"ON {self._table} (json_extract(raw, '$.created'))"
                )
                connection.commit()
        return connection

    async def versions(self, shop_id: str, tids: Sequence[int]) -> dict[int, datetime]:
        # The CLI stores tids as text: quote them so the primary key is used.
        if not tids:
            return {}
        listed = ",".join(f"'{int(tid)}'" for tid in tids)
        sql = self.versions_sql.replace("{tids}", listed)
        rows = await asyncio.to_thread(self._query, sql, {})
        return _newest(rows)
