"""The push inbox: TMC messages a worker consumed for a shop another worker holds wait here for that
worker, and are confirmed to TMC by their consumer once delivered (``sql/push.sql``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from attrs import frozen

from taobao_ordersync.postgres._database import Database

__all__ = ["PushedMessage", "backlog", "delivered", "forward", "settled", "take"]


@frozen(kw_only=True)
class PushedMessage:
    """A TMC message in the push inbox: what its shop's holder needs to deliver it."""

    message_id: int
    shop_id: str
    tid: int | None
    topic: str
    pub_time: datetime | None


async def forward(db: Database, message: PushedMessage) -> bool:
    rows = await db.fetch(
        "forward_push",
        message.message_id, message.shop_id, message.tid, message.topic, message.pub_time, db.channel("push"),
    )  # fmt: skip
    return bool(rows)


async def take(db: Database, shop_ids: Sequence[str], *, limit: int) -> list[PushedMessage]:
    if not shop_ids:
        return []
    rows = await db.fetch("take_push", list(shop_ids), limit)
    return [
        PushedMessage(
            message_id=int(row["message_id"]),
            shop_id=row["shop_id"],
            tid=row["tid"],
            topic=row["topic"],
            pub_time=row["pub_time"],
        )
        for row in rows
    ]


async def delivered(db: Database, message_ids: Sequence[int]) -> None:
    await db.fetch("push_delivered", list(message_ids))


async def settled(db: Database, message_ids: Sequence[int]) -> set[int]:
    rows = await db.fetch("push_settled", list(message_ids))
    return {int(row["message_id"]) for row in rows}


async def backlog(db: Database) -> int:
    return int(await db.fetchval("push_backlog"))
