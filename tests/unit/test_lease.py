"""The pure rebalancing rule: every worker applying it converges to fair, heavy-spread shares."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taobao_ordersync._lease import LeaseRow, heavy_threshold, rate_share, rebalance


def settle(weights: dict[str, float], workers: list[str], owners: dict[str, str | None], seed: int) -> None:
    """Let workers heartbeat in random order until nobody wants to change anything."""
    rng = random.Random(seed)
    for _ in range(50):
        changed = False
        for me in rng.sample(workers, len(workers)):
            rows = [LeaseRow(shop, owners[shop], weight) for shop, weight in weights.items()]
            plan = rebalance(rows, me, len(workers))
            for shop in plan.release[: plan.release_count]:
                owners[shop] = None
                changed = True
            for shop in plan.candidates[: plan.claim]:
                owners[shop] = me
                changed = True
        if not changed:
            return
    raise AssertionError("rebalancing did not settle")


@given(
    shops=st.integers(min_value=0, max_value=120),
    heavy=st.integers(min_value=0, max_value=12),
    workers=st.integers(min_value=1, max_value=6),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_shares_are_even_and_heavy_shops_spread(shops: int, heavy: int, workers: int, seed: int) -> None:
    """After settling every shop has one owner, counts differ by at most 1, heavy shops are spread."""
    # Heavy means well above the mean: keep the big ones few enough to count as heavy.
    heavy = min(heavy, shops // 4)
    weights = {f"s{i}": 1.0 for i in range(shops)} | {f"big{i}": 1000.0 for i in range(heavy)}
    names = [f"w{i}" for i in range(workers)]
    owners: dict[str, str | None] = dict.fromkeys(weights)

    settle(weights, names, owners, seed)

    assert all(owner is not None for owner in owners.values())
    counts = [sum(1 for owner in owners.values() if owner == name) for name in names]
    bigs = [sum(1 for shop, owner in owners.items() if owner == name and shop.startswith("big")) for name in names]
    assert max(counts) - min(counts) <= 1
    assert max(bigs) <= math.ceil(heavy / workers) + 1  # never piled on one worker


def test_a_new_worker_gets_its_share_and_the_others_give_back() -> None:
    """Two workers hold 100 shops; a third joins: the old ones give back, the new one claims, 34/33/33."""
    weights = {f"s{i:03}": 1.0 for i in range(100)}
    owners: dict[str, str | None] = {shop: ("a" if i < 50 else "b") for i, shop in enumerate(weights)}

    settle(weights, ["a", "b", "c"], owners, seed=1)

    counts = sorted(sum(1 for owner in owners.values() if owner == name) for name in "abc")
    assert [33, 33, 34] == counts


def test_shops_of_a_worker_whose_lease_still_runs_are_left_alone() -> None:
    """A worker that just stopped heartbeating still holds its leases: the others claim only free shops."""
    weights = {f"s{i}": 1.0 for i in range(30)}
    owners: dict[str, str | None] = {shop: ("a" if i % 3 == 0 else None) for i, shop in enumerate(weights)}

    settle(weights, ["b", "c"], owners, seed=2)

    assert 10 == sum(1 for owner in owners.values() if owner == "a")
    assert {"a", "b", "c"} == set(owners.values())


def test_unknown_weights_make_nothing_heavy() -> None:
    assert math.inf == heavy_threshold([0.0, 0.0])
    assert math.inf == heavy_threshold([])
    assert 6.0 == heavy_threshold([1.0, 3.0])


def test_idle_when_balanced_busy_when_not() -> None:
    """Balanced: nothing to do. A free shop: claim it. Over the share: give back the lightest."""
    assert rebalance([LeaseRow("a", "w1"), LeaseRow("b", "w2")], "w1", 2).idle

    free = rebalance([LeaseRow("a", "w1"), LeaseRow("b", None)], "w1", 1)
    assert (1, ("b",)) == (free.claim, free.candidates)

    over = rebalance([LeaseRow("a", "w1", 5.0), LeaseRow("b", "w1", 1.0)], "w1", 2)
    assert (1, "b") == (over.release_count, over.release[0])


@given(
    events=st.lists(st.tuples(st.sampled_from(["beat", "join", "leave"]), st.integers(0, 5)), max_size=60),
    budget=st.sampled_from([10.0, 200.0, 1000.0 / 3]),
)
def test_rate_shares_never_sum_above_the_budget(events: list[tuple[str, int]], budget: float) -> None:
    """Workers join, leave and heartbeat one at a time (heartbeats are serialized in the database):
    the rates they report never add up to more than the budget, and once everyone has beaten twice
    each has budget / live."""
    rates: dict[int, float] = {0: 0.0}

    def beat(me: int) -> None:
        others = sum(rate for worker, rate in rates.items() if worker != me)
        rates[me] = rate_share(budget, len(rates), others)

    for kind, who in events:
        if kind == "join" and who not in rates:
            rates[who] = 0.0
            beat(who)
        elif kind == "leave" and who in rates and len(rates) > 1:
            del rates[who]
        elif kind == "beat" and who in rates:
            beat(who)
        assert sum(rates.values()) <= budget * (1 + 1e-9)
    for _ in range(2):
        for worker in sorted(rates):
            beat(worker)
    assert all(rate == pytest.approx(budget / len(rates)) for rate in rates.values())


def test_a_lone_worker_takes_the_whole_budget_at_once_and_a_newcomer_waits_for_the_others() -> None:
    assert 200.0 == rate_share(200.0, 1, 0.0)
    assert 0.0 == rate_share(200.0, 2, 200.0)  # the first has not lowered its rate yet
    assert 100.0 == rate_share(200.0, 2, 100.0)
    assert 0.0 == rate_share(200.0, 2, 199.9)  # a sliver is not worth starting on


def settle_moves(
    weights: dict[str, float], workers: list[str], owners: dict[str, str | None], seed: int, held: dict[str, float]
) -> int:
    """As ``settle``, with hand-overs: a worker never claims back, in the same round, a shop it handed
    over; ``held`` is each shop's time with its owner (reset on a move). Returns the moves."""
    rng = random.Random(seed)
    moves = 0
    for _ in range(60):
        changed = False
        handed: dict[str, str] = {}
        for me in rng.sample(workers, len(workers)):
            rows = [LeaseRow(shop, owners[shop], weight, held[shop]) for shop, weight in weights.items()]
            plan = rebalance(rows, me, len(workers), min_stay=10.0)
            for shop in plan.hand_over:
                assert held[shop] >= 10.0  # never before its minimum stay
                owners[shop] = None
                handed[shop] = me
                changed = True
            for shop in plan.release[: plan.release_count]:
                owners[shop] = None
                changed = True
            claimable = [shop for shop in plan.candidates if owners[shop] is None and handed.get(shop) != me]
            for shop in claimable[: plan.claim]:
                owners[shop] = me
                held[shop] = 0.0
                moves += 1
                changed = True
        for shop in held:
            held[shop] += 5.0  # a heartbeat or so between rounds
        if not changed:
            return moves
    raise AssertionError("rebalancing did not settle")


@given(
    shops=st.integers(min_value=8, max_value=80),
    hot=st.integers(min_value=1, max_value=8),
    workers=st.integers(min_value=2, max_value=5),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_shops_that_turn_heavy_later_spread_out_and_then_stay(shops: int, hot: int, workers: int, seed: int) -> None:
    """Shares settle on light shops; then some of one worker's shops turn heavy (a flash sale): they
    spread (no worker below its even share of heavy shops), counts stay within one, and once spread
    nothing moves again, even as the weights wobble within the margin."""
    hot = max(1, min(hot, shops // 8))  # a sale on a few shops: they stay well above the mean
    names = [f"w{i}" for i in range(workers)]
    weights = {f"s{i:03}": 1.0 for i in range(shops)}
    owners: dict[str, str | None] = dict.fromkeys(weights)
    held = dict.fromkeys(weights, 0.0)
    settle_moves(weights, names, owners, seed, held)
    victim = owners["s000"]
    sale = [shop for shop, owner in owners.items() if owner == victim][:hot]
    for shop in sale:
        weights[shop] = 1000.0

    settle_moves(weights, names, owners, seed, held)

    assert all(owner is not None for owner in owners.values())
    counts = [sum(1 for owner in owners.values() if owner == name) for name in names]
    assert max(counts) - min(counts) <= 1
    bigs = [sum(1 for shop in sale if owners[shop] == name) for name in names]
    assert min(bigs) >= len(sale) // workers
    for shop in sale:  # the sale wobbles: within the margin, nothing moves
        weights[shop] *= 0.8
    for me in names:
        rows = [LeaseRow(shop, owners[shop], weight, held[shop]) for shop, weight in weights.items()]
        assert rebalance(rows, me, workers, min_stay=10.0).idle


def test_a_heavy_shop_stays_its_minimum_time_before_it_moves() -> None:
    rows = [LeaseRow("big1", "a", 1000.0, 5.0), LeaseRow("big2", "a", 1000.0, 5.0)]
    rows += [LeaseRow(f"s{i}", "a" if i < 3 else "b", 1.0, 100.0) for i in range(8)]
    assert rebalance(rows, "a", 2, min_stay=10.0).idle
    later = [LeaseRow(row.shop_id, row.owner, row.weight, 20.0) for row in rows]
    assert ("big1",) == rebalance(later, "a", 2, min_stay=10.0).hand_over
