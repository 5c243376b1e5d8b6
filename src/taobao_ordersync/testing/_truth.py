"""Ground truth: what a consumer should have received from a shop, compared with what it kept.

The emulator keeps every version of every trade, so it can say which trades a sync owed
(DESIGN §2's scope) and in which version at least. Pure: a shop's state in, a report out.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from attrs import frozen

from taobao_ordersync._time import floor_second
from taobao_ordersync.testing._shop import ShopState

__all__ = ["VerifyReport", "verify"]


@frozen(kw_only=True)
class VerifyReport:
    """What a consumer received, compared with the emulator's ground truth.

    ``duplicates`` counts exact re-deliveries (same tid and modified) the consumer saw.
    """

    in_scope: int
    delivered: int
    missing: tuple[int, ...]
    stale: tuple[int, ...]
    duplicates: int

    @property
    def lost(self) -> int:
        """Trades missing or delivered only in a version older than required."""
        return len(self.missing) + len(self.stale)

    def __str__(self) -> str:
        return (
            f"{self.in_scope} trades in scope, {self.delivered} delivered, {self.lost} lost "
            f"({len(self.missing)} missing, {len(self.stale)} stale), {self.duplicates} duplicates"
        )


def verify(
    shop: ShopState,
    received: Mapping[int, datetime],
    *,
    created_from: datetime,
    sync_started: datetime,
    until: datetime,
    duplicates: int = 0,
) -> VerifyReport:
    """Compare what a consumer kept of ``shop`` (tid -> newest ``modified``) with the truth.

    In scope: trades created in ``[created_from, sync_started]`` and trades modified
    in ``[sync_started, until]``, compared with the backend's millisecond times (a
    trade created at ``sync_started`` + 0.5 s is in scope through its modification).
    Each must have been delivered in a version at least as new as its newest version
    modified at or before ``until``, at the whole-second resolution replies print.
    """
    missing: list[int] = []
    stale: list[int] = []
    in_scope = 0
    for record in shop.trades.values():
        required = record.as_of(until)
        if required is None:
            continue
        created_in = created_from <= record.created <= sync_started
        if not created_in and required.modified < sync_started:
            continue
        in_scope += 1
        got = received.get(record.tid)
        if got is None:
            missing.append(record.tid)
        elif got < floor_second(required.modified):  # replies print whole seconds
            stale.append(record.tid)
    delivered = sum(1 for tid in received if tid in shop.trades)
    return VerifyReport(
        in_scope=in_scope,
        delivered=delivered,
        missing=tuple(missing),
        stale=tuple(stale),
        duplicates=duplicates,
    )
