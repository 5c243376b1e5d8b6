"""Sharing shops among workers (pure): which shops one worker should claim or give back.

Every worker runs the same rule on its snapshot of the shop table, so the
shares converge without a coordinator. Shops fall in two classes: *heavy* ones
(their recent call rate is well above the mean, e.g. a big seller on 11.11) and
the rest. Each worker aims at an even share of shops and holds no more than
its share of heavy ones, so heavy shops spread out instead of piling on the
first worker to start, and a worker that joins takes its share within a
heartbeat or two.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Final

from attrs import frozen

__all__ = ["HEAVY_FACTOR", "MIN_SHARE", "LeaseRow", "Rebalance", "heavy_threshold", "rate_share", "rebalance"]

# A shop is heavy when it costs this many times the mean shop (and more than nothing).
HEAVY_FACTOR: Final = 3.0
# A held shop counts as heavy for handing it over only above the threshold by this factor more.
HAND_OVER_MARGIN: Final = 1.5
# A worker starts (claims, sends) only once it may have this share of its even share of the budget.
MIN_SHARE: Final = 0.01


@frozen
class LeaseRow:
    """One shop as the registry shows it: who holds it (if anyone) and what it costs."""

    shop_id: str
    owner: str | None  # None: free (never claimed, released, or its lease ran out)
    weight: float = 0.0  # recent calls per minute
    held_for: float = math.inf  # seconds since its owner claimed it


@frozen
class Rebalance:
    """What one worker should do now: claim up to ``claim`` of ``candidates`` (in that order),
    and give back ``release_count`` of ``release`` (most expendable first); ``hand_over``: heavy
    shops to give back for another worker to take (not to be claimed again by this one for a while)."""

    claim: int
    candidates: tuple[str, ...]
    release_count: int
    release: tuple[str, ...]
    hand_over: tuple[str, ...] = ()

    @property
    def idle(self) -> bool:
        return not self.claim and not self.release_count and not self.hand_over


def rate_share(budget: float, live_workers: int, others: float) -> float:
    """The calls per second one worker may take at its heartbeat: its even share ``budget / live``,
    but never more than the other live workers leave (``others``: the rates they reported at their
    last heartbeat, each the most it sends). 0 means "wait": a newcomer gets its share once the
    others have lowered theirs, and none of the budget goes unused in between (no fixed settling
    time). Heartbeats are serialized, so the reported rates never add up to more than the budget.
    """
    even = budget / max(1, live_workers)
    share = min(even, budget - others)
    return share if share >= MIN_SHARE * even else 0.0


def heavy_threshold(weights: Iterable[float]) -> float:
    """Weight above which a shop counts as heavy (infinite when nothing is known yet)."""
    values = list(weights)
    mean = sum(values) / len(values) if values else 0.0
    return HEAVY_FACTOR * mean if mean > 0 else math.inf


def rebalance(rows: Sequence[LeaseRow], me: str, live_workers: int, *, min_stay: float = 0.0) -> Rebalance:
    """This worker's fair share of ``rows`` with ``live_workers`` workers alive (itself included).

    Counts: with ``n`` shops over ``w`` workers each aims at ``n // w`` and ``n % w`` of
    them at one more. A worker claims up to that floor, takes one of the extras only when
    the free shops exceed what the others still need for their floor, and gives back
    above the ceiling; at the ceiling it gives one back only while another worker is
    short and nothing is free (the last extra holders by name give way, so workers that
    see the same rows never all give back at once).

    Heavy shops are claimed first, each worker up to its own even share of them, so they
    spread instead of piling on the first worker to start. Only claims look at weight:
    a shop whose weight changes later is never taken away for it, so shops hovering
    around the threshold do not bounce between workers. (Counts are kept exact; heavy
    shares may end one over when the light shops run out first.)

    Over time (nothing to claim or give back for the counts): while another live worker holds
    fewer heavy shops than its even share, a worker holding at least two more than that one,
    counting its own only above ``HAND_OVER_MARGIN`` times the threshold, hands over its heaviest
    one held for ``min_stay`` seconds or more (one per heartbeat); a worker below its even share
    of heavy shops that sees one free takes it and gives back its lightest light shop, so the
    counts stay even.
    """
    live = max(1, live_workers)
    threshold = heavy_threshold(row.weight for row in rows)
    holders = {row.owner for row in rows if row.owner is not None} | {me}
    unseen = max(0, live - len(holders))
    floor, extras = divmod(len(rows), live)
    held: Counter[str] = Counter(row.owner for row in rows if row.owner is not None)
    mine = held.pop(me, 0)
    free = [row for row in rows if row.owner is None]
    others_need = sum(max(0, floor - count) for count in held.values()) + unseen * floor
    extra_holders = sorted([name for name, count in held.items() if count > floor])

    claim = _room(mine, held, floor, extras, len(free), unseen)
    release_count = 0
    if mine > floor + 1 or (mine > floor and not extras):
        release_count = mine - floor - (1 if extras else 0)
    elif mine == floor + 1 and others_need > len(free):
        release_count = 1 if sorted([*extra_holders, me]).index(me) >= extras else 0

    heavy_rows = [row for row in rows if row.weight > threshold]
    heavy_floor, heavy_extras = divmod(len(heavy_rows), live)
    heavy_held: Counter[str] = Counter(row.owner for row in heavy_rows if row.owner is not None)
    heavy_held.pop(me, None)
    heavy_free = sum(1 for row in heavy_rows if row.owner is None)
    my_heavy = sorted((row for row in heavy_rows if row.owner == me), key=_lightest)
    my_normal = sorted((row for row in rows if row.owner == me and row.weight <= threshold), key=_lightest)
    heavy_room = _room(len(my_heavy), heavy_held, heavy_floor, heavy_extras, heavy_free, live - 1 - len(heavy_held))
    order = [*my_normal, *my_heavy]  # light shops are the cheapest to move
    # The heaviest free shops first, no more of them than this worker's heavy room, then the
    # others; heavy shops beyond the room come last, so no shop is ever left without an owner.
    by_weight = sorted(free, key=lambda row: (-row.weight, row.shop_id))
    heavy_free_rows = [row for row in by_weight if row.weight > threshold]
    normal_free_rows = [row for row in by_weight if row.weight <= threshold]
    candidates = [*heavy_free_rows[:heavy_room], *normal_free_rows, *heavy_free_rows[heavy_room:]]
    if not claim and not release_count and not free and live > 1:
        hand_over = _hand_over(rows, me, live, threshold, heavy_floor, min_stay)
        if hand_over:
            return Rebalance(claim=0, candidates=(), release_count=0, release=(), hand_over=hand_over)
    if not claim and not release_count and heavy_free_rows and len(my_heavy) < heavy_floor and my_normal:
        # Short of heavy shops while one is free (handed over): take it, give back a light one.
        return Rebalance(
            claim=1,
            candidates=(heavy_free_rows[0].shop_id,),
            release_count=1,
            release=tuple(row.shop_id for row in my_normal),
        )
    return Rebalance(
        claim=min(claim, len(candidates)),
        candidates=tuple(row.shop_id for row in candidates),
        release_count=release_count,
        release=tuple(row.shop_id for row in order),
    )


def _hand_over(
    rows: Sequence[LeaseRow], me: str, live: int, threshold: float, heavy_floor: int, min_stay: float
) -> tuple[str, ...]:
    """My heaviest movable shop, if another live worker holds fewer heavy shops than its even share
    (and so takes it) and I hold at least two more than it, counting mine only well above the threshold."""
    strict = threshold * HAND_OVER_MARGIN
    mine = [row for row in rows if row.owner == me and row.weight > strict]
    heavy: defaultdict[str, int] = defaultdict(int)
    owners = {row.owner for row in rows if row.owner is not None and row.owner != me}
    for row in rows:
        if row.owner is not None and row.owner != me and row.weight > threshold:
            heavy[row.owner] += 1
    # Workers holding no shop at all do not show in the rows: count them as holding no heavy one.
    fewest = 0 if len(owners) < live - 1 else min((heavy[owner] for owner in owners), default=0)
    if fewest >= heavy_floor or len(mine) - fewest < 2:
        return ()
    movable = sorted((row for row in mine if row.held_for >= min_stay), key=lambda row: (-row.weight, row.shop_id))
    return (movable[0].shop_id,) if movable else ()


def _room(mine: int, others: Counter[str], floor: int, extras: int, free: int, unseen: int) -> int:
    """How many more shops of a kind one worker may claim: up to the floor, then one extra
    while free shops exceed the others' shortfall and an extra is still unheld."""
    if mine > floor:
        return 0
    room = min(free, floor - mine)
    shortfall = sum(max(0, floor - count) for count in others.values()) + max(0, unseen) * floor
    extra_holders = sum(1 for count in others.values() if count > floor)
    if extras and free - room > shortfall and extra_holders < extras:
        room += 1
    return room


def _lightest(row: LeaseRow) -> tuple[float, str]:
    return (row.weight, row.shop_id)
