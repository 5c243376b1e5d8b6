"""The shared shop registry in PostgreSQL: shops added and removed, leases claimed, renewed by each
worker's heartbeat (which also shares the app's rate budget) and released, the app-wide ban, and the
NOTIFYs that wake the workers (``sql/registry.sql``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

from attrs import frozen

from taobao_ordersync._lease import LeaseRow, rate_share
from taobao_ordersync.errors import ConfigurationError
from taobao_ordersync.postgres._database import Database
from taobao_ordersync.status import ShopStatus

__all__ = [
    "HEARTBEAT_ROUND_TRIPS",
    "Heartbeat",
    "Report",
    "add_shops",
    "ban",
    "claim",
    "heartbeat",
    "nudge",
    "record_error",
    "release",
    "remove_shops",
    "report_heartbeat_failure",
    "retire",
]

HEARTBEAT_ROUND_TRIPS: Final = 6  # BEGIN, the lock, three statements, COMMIT
Report = ShopStatus  # deprecated name (it was a tuple): a heartbeat reports each held shop's ShopStatus
_SHARE_LOCK_KEY: Final = 0x7A0B_0D5D  # advisory lock serializing heartbeats (with the schema's hash)


@frozen
class Heartbeat:
    """What a worker learns from one heartbeat (internal to the worker)."""

    renewed: frozenset[str]
    live_workers: int
    rate: float  # calls per second this worker may send until its next heartbeat (0: none yet)
    ban_left: float
    next_expiry: float | None  # seconds until the next lease held by someone else runs out
    rows: tuple[LeaseRow, ...]


def _valid_ids(shop_ids: Sequence[object]) -> list[str]:
    ids = [shop_id for shop_id in shop_ids if isinstance(shop_id, str) and shop_id.strip()]
    if not ids or len(ids) != len(shop_ids):
        raise ConfigurationError("shop ids must be non-empty strings")
    return ids


async def _change_shops(db: Database, name: str, *args: Any) -> int:
    """Run the registry change named ``name``, which wakes every worker to rebalance if it changed
    anything (a NOTIFY on the ``shops`` channel, its last argument, in the same statement); returns
    how many shops changed."""
    rows = await db.fetch(name, *args, db.channel("shops"))
    return int(rows[0]["n"])


async def add_shops(db: Database, shop_ids: Sequence[str]) -> int:
    return await _change_shops(db, "add_shops", _valid_ids(shop_ids))


async def remove_shops(db: Database, shop_ids: Sequence[str]) -> int:
    return await _change_shops(db, "remove_shops", _valid_ids(shop_ids))


def _report_columns(reports: Sequence[ShopStatus]) -> list[list[Any]]:
    """The held shops' statuses as the heartbeat's column arrays: id, token, weight, state, behind, error."""
    columns: list[list[Any]] = [[] for _ in range(6)]
    for status in reports:
        if status.lease is None:
            raise ConfigurationError(f"shop {status.shop_id!r}: a heartbeat reports held shops, with their lease")
        behind = status.behind.total_seconds() if status.behind is not None else None
        row = (status.shop_id, status.lease.token, status.lease.weight, status.state, behind, status.last_error)
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


async def heartbeat(
    db: Database, worker_id: str, *, host: str, pid: int, lease: float, budget: float, reports: Sequence[ShopStatus]
) -> Heartbeat:
    columns = _report_columns(reports)
    async with db.connection("heartbeat") as connection, connection.transaction():
        await connection.execute(db.sql["lock_heartbeats"], _SHARE_LOCK_KEY, db.schema)
        summary = await connection.fetchrow(db.sql["heartbeat_summary"], worker_id)
        live = int(summary["others"]) + 1
        rate = rate_share(budget, live, float(summary["others_rate"]))
        renewed = await connection.fetch(db.sql["heartbeat_renew"], worker_id, host, pid, lease, rate, *columns)
        # Leases renewed above are visible here; an expired one shows free, even if it was ours.
        rows = await connection.fetch(db.sql["lease_rows"])
    db.round_trips += HEARTBEAT_ROUND_TRIPS
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
    db: Database, worker_id: str, *, host: str, pid: int, error: str, failing_for: float
) -> None:
    await db.fetch("report_heartbeat_failure", worker_id, host, pid, error, failing_for)


async def claim(db: Database, worker_id: str, candidates: Sequence[str], limit: int, *, lease: float) -> dict[str, int]:
    if limit <= 0 or not candidates:
        return {}
    rows = await db.fetch("claim", worker_id, list(candidates), limit, lease)
    return {row["shop_id"]: int(row["token"]) for row in rows}


async def release(db: Database, worker_id: str, shop_ids: Sequence[str] | None) -> int:
    if shop_ids is None:
        return await _change_shops(db, "release_all", worker_id)
    return await _change_shops(db, "release_some", worker_id, list(shop_ids))


async def retire(db: Database, worker_id: str) -> int:
    await db.fetch("unregister_worker", worker_id)
    return await release(db, worker_id, None)


async def record_error(db: Database, shop_id: str, worker_id: str, error: str) -> None:
    await db.fetch("record_error", shop_id, worker_id, error)


async def ban(db: Database, seconds: float) -> None:
    await db.fetch("ban", seconds, db.channel("ban"))


async def nudge(db: Database) -> None:
    await db.fetch("nudge", db.channel("shops"))
