"""The registry as ``taobao-ordersync status`` shows it: shops with their leases and checkpoints, a
summary that reads no checkpoint, and the workers (``sql/status.sql``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from attrs import frozen

from taobao_ordersync.checkpoint import Checkpoint
from taobao_ordersync.errors import CheckpointCorruptError, CheckpointVersionError
from taobao_ordersync.postgres._database import Database
from taobao_ordersync.status import Lease, ShopStatus, phase_of

__all__ = ["RegisteredShop", "ShopSummary", "WorkerRecord", "shops", "statuses", "summary", "workers"]


@frozen
class RegisteredShop:
    """Deprecated (``PostgresStore.statuses()`` gives ``ShopStatus``): one shop of the registry.

    ``lease_left`` is seconds until the owner's lease runs out (negative: expired);
    ``behind`` how far the shop trailed Taobao's ``now - lag`` at its owner's last report.
    """

    shop_id: str
    owner: str | None
    lease_left: float | None
    token: int
    weight: float
    state: str | None
    behind: float | None
    last_error: str | None
    checkpoint: Checkpoint | None


@frozen
class ShopSummary:
    """The registry at a glance (``taobao-ordersync status``), from the registry alone: no checkpoint
    is read. ``states`` counts shops by their owner's last report (``free``: no live lease), largest
    first; ``most_behind`` and ``errors`` hold ``(shop_id, owner, behind or last_error)``."""

    shops: int
    states: tuple[tuple[str, int], ...]
    most_behind: tuple[tuple[str, str | None, float], ...]
    errors: tuple[tuple[str, str | None, str], ...]
    error_count: int


@frozen
class WorkerRecord:
    """One registered worker: ``alive`` while its heartbeat keeps ``expires_at`` ahead.

    ``last_error`` and ``failing_for`` (seconds) are set while the database answers the worker but
    refuses its heartbeats (``"gave up: ..."`` once it gave up); a successful heartbeat clears them.
    """

    worker_id: str
    host: str
    pid: int
    alive: bool
    seen_ago: float
    rate: float | None
    shops: int
    last_error: str | None = None
    failing_for: float | None = None


async def statuses(db: Database) -> list[ShopStatus]:
    found = []
    for row in await db.fetch("shops"):
        checkpoint = _checkpoint(row)
        found.append(
            ShopStatus(
                shop_id=row["shop_id"],
                state=row["state"],
                phase=None if checkpoint is None else phase_of(checkpoint),
                position=None if checkpoint is None else checkpoint.position,
                behind=None if row["behind"] is None else timedelta(seconds=row["behind"]),
                last_error=row["last_error"],
                lease=Lease(
                    owner=row["owner"],
                    seconds_left=row["lease_left"],
                    token=int(row["token"]),
                    weight=float(row["weight"]),
                ),
                checkpoint=checkpoint,
            )
        )
    return found


def _checkpoint(row: Any) -> Checkpoint | None:
    if row["data"] is None:
        return None
    try:
        return Checkpoint.from_json(row["data"], shop_id=row["shop_id"])
    except (CheckpointCorruptError, CheckpointVersionError):  # shown as unknown, not an error
        return None


async def shops(db: Database) -> list[RegisteredShop]:
    return [
        RegisteredShop(
            shop_id=row["shop_id"],
            owner=row["owner"],
            lease_left=row["lease_left"],
            token=int(row["token"]),
            weight=float(row["weight"]),
            state=row["state"],
            behind=row["behind"],
            last_error=row["last_error"],
            checkpoint=_checkpoint(row),
        )
        for row in await db.fetch("shops")
    ]


async def summary(db: Database, *, limit: int) -> ShopSummary:
    states = await db.fetch("shop_states")
    behind = await db.fetch("shops_most_behind", limit)
    errors = await db.fetch("latest_shop_errors", limit)
    return ShopSummary(
        shops=sum(int(row["n"]) for row in states),
        states=tuple((row["state"], int(row["n"])) for row in states),
        most_behind=tuple((row["shop_id"], row["owner"], float(row["behind"])) for row in behind),
        errors=tuple((row["shop_id"], row["owner"], row["last_error"]) for row in errors),
        error_count=int(errors[0]["total"]) if errors else 0,
    )


async def workers(db: Database) -> list[WorkerRecord]:
    rows = await db.fetch("workers")
    return [
        WorkerRecord(
            worker_id=row["worker_id"],
            host=row["host"],
            pid=int(row["pid"]),
            alive=bool(row["alive"]),
            seen_ago=float(row["seen_ago"]),
            rate=row["rate"],
            shops=int(row["shops"]),
            last_error=row["last_error"],
            failing_for=row["failing_for"],
        )
        for row in rows
    ]
