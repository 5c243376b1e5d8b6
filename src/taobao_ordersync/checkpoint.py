"""``Checkpoint``: a shop's committed sync position, and its versioned JSON form (pure).

``Syncer.checkpoint(shop_id)`` returns one; the emulator's ``verify_sync`` takes one.

The stored document is small, versioned and free of secrets (no session key)::

    {"format": 2, "shop_id": "...", "origin": "...", "cursor": "...",
     "backfill_from": "...", "backfilled_to": "..." | null,
     "boundary": [[tid, "modified", "status" | null], ...]}

``origin`` is T0 (server time minus lag at the first sync); ``backfilled_to`` is
the creation-time progress of the backfill (``None`` once it is complete);
``cursor`` is the modification time up to which increments are complete;
``boundary`` holds the trades already delivered in the cursor's own second, so the
touching next window does not deliver them again. Times are whole seconds, so a version
is known by its status too: a trade created and paid within one second shows the same
``modified`` twice, and the paid version must not pass for the one delivered.
Format 1 (boundary ``[tid, "modified"]``) is still read: its keys have no status, so their
trades are delivered once more (a duplicate, never a loss).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final

from attrs import frozen

from taobao_ordersync._time import format_time, parse_time
from taobao_ordersync.errors import CheckpointCorruptError, CheckpointVersionError

__all__ = ["Checkpoint"]

FORMAT: Final = 2
_READABLE: Final = (1, 2)
#: Boundary keys kept at most; beyond this, duplicates are allowed (never losses).
MAX_BOUNDARY: Final = 2000

Key = tuple[int, datetime, str | None]  # (tid, modified, status): one version of a trade


def _order(key: Key) -> tuple[int, datetime, str]:
    tid, modified, status = key
    return tid, modified, status or ""


def _key(entry: Any) -> Key:
    """A boundary entry: ``[tid, modified, status]`` (format 2) or ``[tid, modified]`` (format 1)."""
    if not isinstance(entry, list) or len(entry) not in (2, 3):
        raise TypeError(f"boundary entry {entry!r} is not [tid, modified, status]")
    status = entry[2] if len(entry) == 3 else None
    if status is not None and not isinstance(status, str):
        raise TypeError(f"boundary status {status!r} is not a string")
    return _exact_int(entry[0]), parse_time(entry[1]), status


def _exact_int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"trade id {value!r} is not an integer")
    return value


@frozen(kw_only=True)
class Checkpoint:
    """Where a shop's sync stands: everything before it was handed over (read it, do not build it).

    Attributes:
        shop_id: the shop.
        origin: T0, Taobao's time less ``lag`` at the shop's first sync; the backfill reads
            trades created up to it, the increments trades modified from it on.
        cursor: how far the increments have read, by modification time (``origin`` until they start).
        backfill_from: the oldest creation time the backfill reads.
        backfilled_to: how far the backfill has read, by creation time; None once it is done
            (``backfill_done``).
        boundary: ``(tid, modified, status)`` of the trades already delivered in the committed position's
            own second, so the touching next window does not deliver them again.
    """

    shop_id: str
    origin: datetime
    cursor: datetime
    backfill_from: datetime
    backfilled_to: datetime | None
    boundary: frozenset[Key] = frozenset()

    @property
    def backfill_done(self) -> bool:
        """Whether the backfill has read every trade created up to ``origin`` (increments follow)."""
        return self.backfilled_to is None

    @property
    def position(self) -> datetime:
        """How far the sync has read: ``backfilled_to`` (creation time) during the backfill, then
        ``cursor`` (modification time)."""
        return self.cursor if self.backfilled_to is None else self.backfilled_to

    def to_json(self) -> str:
        keys = sorted(self.boundary, key=_order) if len(self.boundary) <= MAX_BOUNDARY else []
        document: dict[str, Any] = {
            "format": FORMAT,
            "shop_id": self.shop_id,
            "origin": format_time(self.origin),
            "cursor": format_time(self.cursor),
            "backfill_from": format_time(self.backfill_from),
            "backfilled_to": None if self.backfilled_to is None else format_time(self.backfilled_to),
            "boundary": [[tid, format_time(modified), status] for tid, modified, status in keys],
        }
        return json.dumps(document, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, *, shop_id: str) -> Checkpoint:
        try:
            document = json.loads(text)
            if not isinstance(document, dict):
                raise TypeError("not an object")
            found = document.get("format")
            if type(found) is int and found > FORMAT:
                raise CheckpointVersionError(shop_id, found=found, known=FORMAT)
            if type(found) is not int or found not in _READABLE:
                raise CheckpointCorruptError(f"shop {shop_id!r}: checkpoint format {found!r} is not {FORMAT}")
            if document["shop_id"] != shop_id:
                raise ValueError(f"it belongs to shop {document['shop_id']!r}")
            backfilled_to = document["backfilled_to"]
            return cls(
                shop_id=shop_id,
                origin=parse_time(document["origin"]),
                cursor=parse_time(document["cursor"]),
                backfill_from=parse_time(document["backfill_from"]),
                backfilled_to=None if backfilled_to is None else parse_time(backfilled_to),
                boundary=frozenset(_key(entry) for entry in document["boundary"]),
            )
        except (CheckpointCorruptError, CheckpointVersionError):
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CheckpointCorruptError(f"shop {shop_id!r}: stored checkpoint is unreadable: {exc}") from exc
