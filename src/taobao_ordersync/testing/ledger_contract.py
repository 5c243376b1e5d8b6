"""A reusable pytest contract for ``TradeLedger`` implementations (the application's side of an audit).

Subclass ``TradeLedgerContract`` in your own test suite and provide a ``make_ledger``
fixture: an async function that stores the given rows for a shop in a fresh, empty
table of yours and returns your ledger over it::

    import pytest

    from taobao_ordersync.testing.ledger_contract import LedgerRow, TradeLedgerContract

    from myapp.audit import OrdersLedger


    class TestOrdersLedger(TradeLedgerContract):
        @pytest.fixture
        def make_ledger(self, db):
            async def make(shop_id: str, rows: list[LedgerRow]) -> OrdersLedger:
                await db.insert_orders(shop_id, rows)  # tid, created, modified per row
                return OrdersLedger(db)

            return make

Each row is ``(tid, created, modified)``: aware datetimes in whole seconds, as Taobao
prints them. The tests need pytest-asyncio, like ``store_contract``. This module
imports pytest, so only import it from tests; the library never does.
"""

# Assertions are the point of a test suite:
# ruff: noqa: S101

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from taobao_ordersync._time import CST
from taobao_ordersync.audit import TradeLedger

__all__ = ["LedgerRow", "MakeLedger", "TradeLedgerContract"]

LedgerRow = tuple[int, datetime, datetime]
MakeLedger = Callable[[str, list[LedgerRow]], Awaitable[TradeLedger]]

SHOP = "contract-shop"
BASE = datetime(2024, 11, 11, 0, 0, 0, tzinfo=CST)
BIG = 4_000_000_000_000_000_001  # above 2**53: lost through a float


def _row(tid: int, created_s: int, modified_s: int | None = None) -> LedgerRow:
    created = BASE + timedelta(seconds=created_s)
    return tid, created, created + timedelta(seconds=modified_s if modified_s is not None else 60)


class TradeLedgerContract:
    """Behaviour every ``TradeLedger`` must have; subclass it and override ``make_ledger``.

    The class name does not start with ``Test``, so pytest collects only your subclass.
    """

    pytestmark = pytest.mark.asyncio

    @pytest.fixture
    def make_ledger(self) -> MakeLedger:
        """Override: an async ``(shop_id, rows) -> TradeLedger`` holding exactly ``rows``."""
        raise NotImplementedError(
            f"{type(self).__name__} must override the `make_ledger` fixture (see the module docstring)"
        )

    async def test_empty_ledger_counts_and_lists_nothing(self, make_ledger: MakeLedger) -> None:
        """A ledger without rows counts 0, lists nothing and knows no tid."""
        ledger = await make_ledger(SHOP, [])

        assert 0 == await ledger.count_created(SHOP, BASE, BASE + timedelta(days=90))
        assert {} == dict(await ledger.list_created(SHOP, BASE, BASE + timedelta(days=90)))
        assert {} == dict(await ledger.versions(SHOP, [1, 2, 3]))

    async def test_ranges_are_half_open_on_created(self, make_ledger: MakeLedger) -> None:
        """``start <= created < end``: a trade created at ``start`` counts, one created at ``end`` does not."""
        ledger = await make_ledger(SHOP, [_row(1, 0), _row(2, 59), _row(3, 60), _row(4, -1)])
        start, end = BASE, BASE + timedelta(seconds=60)

        assert 2 == await ledger.count_created(SHOP, start, end)
        assert {1, 2} == set(await ledger.list_created(SHOP, start, end))
        assert 1 == await ledger.count_created(SHOP, end, end + timedelta(seconds=1))

    async def test_touching_ranges_count_every_trade_once(self, make_ledger: MakeLedger) -> None:
        """Counts of touching ranges add up to the count of their union (no second counted twice)."""
        rows = [_row(tid, tid * 37 % 3600) for tid in range(1, 200)]
        ledger = await make_ledger(SHOP, rows)
        cuts = [BASE + timedelta(seconds=s) for s in (0, 1, 600, 601, 1800, 3599, 3600)]

        parts = [await ledger.count_created(SHOP, a, b) for a, b in itertools.pairwise(cuts)]

        assert len(rows) == sum(parts) == await ledger.count_created(SHOP, cuts[0], cuts[-1])

    async def test_list_gives_modified_of_each_trade(self, make_ledger: MakeLedger) -> None:
        """``list_created`` maps each tid to the ``modified`` held, as an aware datetime."""
        rows = [_row(1, 10, 5), _row(2, 20, 86_400), _row(3, 30, 0)]
        ledger = await make_ledger(SHOP, rows)

        listed = dict(await ledger.list_created(SHOP, BASE, BASE + timedelta(hours=1)))

        assert {tid: modified for tid, _, modified in rows} == listed
        assert all(moment.tzinfo is not None for moment in listed.values())

    async def test_versions_of_held_tids_only(self, make_ledger: MakeLedger) -> None:
        """``versions`` returns the held tids asked for and leaves out unknown ones."""
        rows = [_row(tid, tid) for tid in range(1, 11)]
        ledger = await make_ledger(SHOP, rows)

        held = dict(await ledger.versions(SHOP, [2, 4, 99, 6]))

        assert {tid: modified for tid, _, modified in rows if tid in (2, 4, 6)} == held

    async def test_versions_of_500_tids_at_once(self, make_ledger: MakeLedger) -> None:
        """The audit asks for up to 500 tids per call."""
        rows = [_row(tid, tid % 3000) for tid in range(1, 601)]
        ledger = await make_ledger(SHOP, rows)

        held = await ledger.versions(SHOP, list(range(51, 551)))

        assert set(range(51, 551)) == set(held)

    async def test_tids_above_2_to_53_are_exact(self, make_ledger: MakeLedger) -> None:
        """Taobao's 19-digit tids come back exactly (never through a float)."""
        rows = [_row(BIG, 5), _row(BIG + 1, 6)]
        ledger = await make_ledger(SHOP, rows)

        assert {BIG, BIG + 1} == set(await ledger.list_created(SHOP, BASE, BASE + timedelta(minutes=1)))
        assert {BIG + 1} == set(await ledger.versions(SHOP, [BIG + 1, BIG + 2]))

    async def test_bounds_are_instants_whatever_their_zone(self, make_ledger: MakeLedger) -> None:
        """A bound given in UTC means the same instant as in China Standard Time."""
        ledger = await make_ledger(SHOP, [_row(1, 0), _row(2, 30)])
        start = BASE.astimezone(UTC) + timedelta(seconds=1)

        assert 1 == await ledger.count_created(SHOP, start, start + timedelta(minutes=1))

    async def test_ranges_spanning_months(self, make_ledger: MakeLedger) -> None:
        """Counts over 90 days, across month ends and midnight, see every trade in range."""
        rows = [_row(tid, tid * 86_399) for tid in range(1, 91)]  # one a day, just before midnight
        ledger = await make_ledger(SHOP, rows)

        assert 90 == await ledger.count_created(SHOP, BASE, BASE + timedelta(days=91))
        assert 30 == await ledger.count_created(SHOP, BASE + timedelta(days=30), BASE + timedelta(days=60))
