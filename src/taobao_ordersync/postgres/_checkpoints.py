"""Checkpoints in PostgreSQL: one versioned document per shop, saved by compare-and-set, and with a
fence only while the saving worker's lease still holds the shop (``sql/checkpoints.sql``)."""

from __future__ import annotations

from taobao_ordersync.errors import CheckpointConflictError, LeaseLostError
from taobao_ordersync.postgres._database import Database
from taobao_ordersync.stores import StoredCheckpoint

__all__ = ["load", "save", "shop_ids"]


async def load(db: Database, shop_id: str) -> StoredCheckpoint | None:
    row = await db.fetchrow("load_checkpoint", shop_id)
    return None if row is None else StoredCheckpoint(data=row["data"], revision=int(row["revision"]))


async def save(
    db: Database, shop_id: str, data: str, *, expected_revision: int | None, fence: tuple[str, int] | None
) -> int:
    """The new revision; ``LeaseLostError`` when ``fence``'s ``(owner, token)`` no longer holds the shop,
    ``CheckpointConflictError`` when the stored revision is not ``expected_revision``."""
    args: list[object] = [shop_id, data, *(fence or ())]
    if expected_revision is None:
        query = "insert_checkpoint" if fence is None else "insert_checkpoint_fenced"
    else:
        query = "update_checkpoint" if fence is None else "update_checkpoint_fenced"
        args.append(expected_revision)
    revision = await db.fetchval(query, *args)
    if revision is None and fence is not None:
        owner, token = fence
        holder = await db.fetchrow("lease_holder", shop_id)
        if holder is None or (holder["owner"], holder["token"]) != (owner, token):
            now_held = "nobody" if holder is None or holder["owner"] is None else repr(holder["owner"])
            raise LeaseLostError(
                f"shop {shop_id!r}: commit refused, fencing token {token} of {owner!r} is stale "
                f"(the shop is now held by {now_held}); the window will be read again by its owner",
                token=token,
            )
    if revision is None:
        raise CheckpointConflictError(
            f"shop {shop_id!r}: checkpoint is no longer at revision {expected_revision} (None: absent); "
            "another worker is syncing this shop"
        )
    return int(revision)


async def shop_ids(db: Database) -> list[str]:
    rows = await db.fetch("checkpointed_shops")
    return [row["shop_id"] for row in rows]
