"""Sharing shops among workers (pure): which shops one worker should claim or give back.

Every worker runs the same rule on the same snapshot of the shop table, so the
shares converge without a coordinator. Shops fall in two classes: *heavy* ones
(their recent call rate is well above the mean, e.g. a big seller on 11.11) and
the rest. Each worker aims at an even share of each class, so heavy shops
spread out instead of piling on the first worker to start, and a worker that
joins takes its share within a heartbeat or two.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final

from attrs import frozen

__all__ = ["HEAVY_FACTOR", "LeaseRow", "Rebalance", "heavy_threshold", "rebalance"]

# A shop is heavy when it costs this many times the mean shop (and more than nothing).
HEAVY_FACTOR: Final = 3.0


@frozen
class LeaseRow:
    """One shop as the registry shows it: who holds it (if anyone) and what it costs."""

    shop_id: str
    owner: str | None  # None: free (never claimed, released, or its lease ran out)
    weight: float = 0.0  # recent calls per minute


@frozen
class Rebalance:
    """What one worker should do now: claim up to ``claim[k]`` of ``candidates[k]``, release ``release``."""

    claim: tuple[int, int]  # (normal, heavy)
    candidates: tuple[tuple[str, ...], tuple[str, ...]]
    release: tuple[tuple[str, ...], tuple[str, ...]]  # own shops it may give back, most expendable first
    release_count: tuple[int, int]

    @property
    def idle(self) -> bool:
        return not any(self.claim) and not any(self.release_count)


def heavy_threshold(weights: Iterable[float]) -> float:
    """Weight above which a shop counts as heavy (infinite when nothing is known yet)."""
    values = list(weights)
    mean = sum(values) / len(values) if values else 0.0
    return HEAVY_FACTOR * mean if mean > 0 else math.inf


def rebalance(rows: Sequence[LeaseRow], me: str, live_workers: int) -> Rebalance:
    """This worker's fair share of ``rows`` with ``live_workers`` workers alive (itself included).

    Per class of ``n`` shops over ``w`` workers the aim is ``n // w`` shops each and one
    more for ``n % w`` of them. A worker claims up to the floor, takes one of the
    extras only when free shops exceed what the others still need for their floor,
    and gives back above the ceiling, or at the ceiling when more workers hold an
    extra than there are extras (the last of them by name gives way, so workers that
    see the same rows never all give back at once).
    """
    live = max(1, live_workers)
    threshold = heavy_threshold(row.weight for row in rows)
    holders = {row.owner for row in rows if row.owner is not None} | {me}
    unseen = max(0, live - len(holders))
    claim = [0, 0]
    release_count = [0, 0]
    candidates: list[tuple[str, ...]] = []
    release: list[tuple[str, ...]] = []
    for heavy in (False, True):
        group = [row for row in rows if (row.weight > threshold) is heavy]
        floor, extras = divmod(len(group), live)
        held = Counter(row.owner for row in group if row.owner is not None)
        mine = held.pop(me, 0)
        free = sorted((row for row in group if row.owner is None), key=lambda row: (-row.weight, row.shop_id))
        others_need = sum(max(0, floor - count) for count in held.values()) + unseen * floor
        if mine < floor:
            claim[heavy] = min(len(free), floor - mine)
        elif mine == floor and extras and len(free) > others_need:
            extra_holders = sum(1 for count in held.values() if count > floor)
            claim[heavy] = 1 if extra_holders < extras else 0
        if mine > floor + 1:
            release_count[heavy] = mine - floor - 1
        elif mine == floor + 1:
            # Too many workers hold an extra: the last ones by name give theirs back.
            extra_holders_by_name = sorted([name for name, count in held.items() if count > floor] + [me])
            release_count[heavy] = 1 if extra_holders_by_name.index(me) >= extras else 0
        candidates.append(tuple(row.shop_id for row in free))
        # Give back the lightest first: they are the cheapest to move.
        release.append(
            tuple(row.shop_id for row in sorted(group, key=lambda row: (row.weight, row.shop_id)) if row.owner == me)
        )
    return Rebalance(
        claim=(claim[0], claim[1]),
        candidates=(candidates[0], candidates[1]),
        release=(release[0], release[1]),
        release_count=(release_count[0], release_count[1]),
    )
