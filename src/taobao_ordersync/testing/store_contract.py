"""A reusable pytest contract for ``CheckpointStore`` implementations.

Subclass ``CheckpointStoreContract`` in your own test suite and provide a
``store`` fixture that returns a fresh, empty store; every test below then runs
against it::

    import uuid

    import pytest

    from taobao_ordersync.testing.store_contract import CheckpointStoreContract

    from myapp.stores import RedisStore


    class TestRedisStore(CheckpointStoreContract):
        @pytest.fixture
        async def store(self) -> RedisStore:
            # a key prefix of its own keeps each test's store empty
            return RedisStore("redis://localhost:6379/15", prefix=f"test-{uuid.uuid4()}:")

The tests are coroutines and need pytest-asyncio. With ``asyncio_mode = "auto"``
a plain ``@pytest.fixture`` works as above; in strict mode decorate the fixture
with ``@pytest_asyncio.fixture`` instead (the tests are already marked). A
yielding fixture is fine too, e.g. to close a connection pool afterwards.

This module imports pytest, so only import it from tests; the library never does.
"""

# Assertions are the point of a test suite:
# ruff: noqa: S101

from __future__ import annotations

import asyncio
import json

import pytest

from taobao_ordersync.errors import CheckpointConflictError
from taobao_ordersync.stores import CheckpointStore, StoredCheckpoint

__all__ = ["CheckpointStoreContract"]

SHOP = "contract-shop"
OTHER = "contract-other-shop"
DOCUMENT = '{"format":1,"shop_id":"contract-shop","cursor":"2024-11-11 00:00:00","boundary":[]}'
UNICODE = '{"shop_id":"旗舰店 🛒","note":"naïve café — Ω≈ç√ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢","tab":"\t","newline":"\n","trailing":"  "}'


def _large_document(size: int = 200_000) -> str:
    """A JSON document of at least ``size`` characters, mostly ASCII with some multi-byte text."""
    boundary: list[list[object]] = []
    document = ""
    while len(document) < size:
        boundary.extend([tid, f"2024-11-11 00:00:00 店{tid % 97}"] for tid in range(len(boundary), len(boundary) + 500))
        document = json.dumps({"format": 1, "shop_id": SHOP, "boundary": boundary}, ensure_ascii=False)
    return document


class CheckpointStoreContract:
    """Behaviour every ``CheckpointStore`` must have; subclass it and override ``store``.

    The class name does not start with ``Test``, so pytest collects only your subclass.
    """

    pytestmark = pytest.mark.asyncio

    @pytest.fixture
    def store(self) -> CheckpointStore:
        """Override: a fresh, empty store for each test."""
        raise NotImplementedError(
            f"{type(self).__name__} must override the `store` fixture with one returning a fresh, empty store"
        )

    # -- load and first save ---------------------------------------------------------

    async def test_load_of_unknown_shop_returns_none(self, store: CheckpointStore) -> None:
        """Loading a shop that was never saved returns None."""
        assert None is await store.load(SHOP)

    async def test_first_save_with_none_returns_revision_1(self, store: CheckpointStore) -> None:
        """The first save of a shop passes expected_revision=None and gets revision 1."""
        assert 1 == await store.save(SHOP, DOCUMENT, expected_revision=None)

    async def test_load_returns_saved_data_and_revision(self, store: CheckpointStore) -> None:
        """Load returns exactly the saved document and the revision save returned."""
        revision = await store.save(SHOP, DOCUMENT, expected_revision=None)

        assert StoredCheckpoint(data=DOCUMENT, revision=revision) == await store.load(SHOP)

    async def test_save_with_current_revision_returns_next_revision(self, store: CheckpointStore) -> None:
        """A save given the current revision stores the new document at revision + 1."""
        first = await store.save(SHOP, DOCUMENT, expected_revision=None)

        second = await store.save(SHOP, "{}", expected_revision=first)

        assert first + 1 == second
        assert StoredCheckpoint(data="{}", revision=second) == await store.load(SHOP)

    # -- compare-and-set conflicts -------------------------------------------------------

    async def test_save_with_stale_revision_conflicts_and_changes_nothing(self, store: CheckpointStore) -> None:
        """A save with an older revision raises CheckpointConflictError and keeps the stored document."""
        first = await store.save(SHOP, DOCUMENT, expected_revision=None)
        second = await store.save(SHOP, '{"n":2}', expected_revision=first)

        with pytest.raises(CheckpointConflictError):
            await store.save(SHOP, '{"n":"stale"}', expected_revision=first)

        assert StoredCheckpoint(data='{"n":2}', revision=second) == await store.load(SHOP)

    async def test_save_with_future_revision_conflicts_and_changes_nothing(self, store: CheckpointStore) -> None:
        """A save with a revision the store has not reached raises CheckpointConflictError and changes nothing."""
        first = await store.save(SHOP, DOCUMENT, expected_revision=None)

        with pytest.raises(CheckpointConflictError):
            await store.save(SHOP, '{"n":"future"}', expected_revision=first + 1)

        assert StoredCheckpoint(data=DOCUMENT, revision=first) == await store.load(SHOP)

    async def test_save_with_none_over_existing_document_conflicts(self, store: CheckpointStore) -> None:
        """A save with expected_revision=None when a document exists raises and keeps the document."""
        first = await store.save(SHOP, DOCUMENT, expected_revision=None)

        with pytest.raises(CheckpointConflictError):
            await store.save(SHOP, '{"n":"second first"}', expected_revision=None)

        assert StoredCheckpoint(data=DOCUMENT, revision=first) == await store.load(SHOP)

    async def test_save_with_revision_when_absent_conflicts(self, store: CheckpointStore) -> None:
        """A save with a revision (1, or 0) when no document exists raises and stores nothing."""
        for revision in (1, 0):
            with pytest.raises(CheckpointConflictError):
                await store.save(SHOP, DOCUMENT, expected_revision=revision)

        assert None is await store.load(SHOP)

    # -- keys and data ---------------------------------------------------------------------

    async def test_shops_are_independent(self, store: CheckpointStore) -> None:
        """Saving one shop neither creates, changes nor conflicts with another."""
        await store.save(SHOP, DOCUMENT, expected_revision=None)

        assert None is await store.load(OTHER)
        assert 1 == await store.save(OTHER, "{}", expected_revision=None)
        assert 2 == await store.save(OTHER, "[]", expected_revision=1)
        assert StoredCheckpoint(data=DOCUMENT, revision=1) == await store.load(SHOP)
        assert StoredCheckpoint(data="[]", revision=2) == await store.load(OTHER)

    async def test_shop_ids_are_exact_strings(self, store: CheckpointStore) -> None:
        """Shop ids differing only by case, prefix, whitespace or script are distinct keys."""
        shop_ids = ["shop", "Shop", "SHOP", "shop-1", "shop-10", "shop ", "店铺", "店铺1"]

        for index, shop_id in enumerate(shop_ids):
            assert 1 == await store.save(shop_id, f'{{"i":{index}}}', expected_revision=None)

        for index, shop_id in enumerate(shop_ids):
            assert StoredCheckpoint(data=f'{{"i":{index}}}', revision=1) == await store.load(shop_id)

    async def test_unicode_data_round_trips_exactly(self, store: CheckpointStore) -> None:
        """Non-ASCII text, astral characters and whitespace come back unchanged."""
        await store.save(SHOP, UNICODE, expected_revision=None)

        assert StoredCheckpoint(data=UNICODE, revision=1) == await store.load(SHOP)

    async def test_large_document_round_trips_exactly(self, store: CheckpointStore) -> None:
        """A document over 200 KB is stored and loaded without truncation, then replaced in full."""
        large = _large_document()
        assert len(large) >= 200_000

        await store.save(SHOP, large, expected_revision=None)
        assert StoredCheckpoint(data=large, revision=1) == await store.load(SHOP)

        await store.save(SHOP, DOCUMENT, expected_revision=1)
        assert StoredCheckpoint(data=DOCUMENT, revision=2) == await store.load(SHOP)

    # -- concurrency and monotonicity -----------------------------------------------------

    async def test_racing_saves_with_same_revision_let_exactly_one_win(self, store: CheckpointStore) -> None:
        """Ten concurrent saves expecting the same revision: one wins with revision 2, nine conflict."""
        await store.save(SHOP, DOCUMENT, expected_revision=None)
        documents = [f'{{"worker":{worker}}}' for worker in range(10)]

        results = await asyncio.gather(
            *(store.save(SHOP, document, expected_revision=1) for document in documents), return_exceptions=True
        )

        winners = [(document, result) for document, result in zip(documents, results, strict=True) if result == 2]
        assert 1 == len(winners)
        assert 9 == sum(isinstance(result, CheckpointConflictError) for result in results)
        assert StoredCheckpoint(data=winners[0][0], revision=2) == await store.load(SHOP)

    async def test_racing_first_saves_let_exactly_one_win(self, store: CheckpointStore) -> None:
        """Ten concurrent first saves (expected_revision=None): one wins with revision 1, nine conflict."""
        documents = [f'{{"worker":{worker}}}' for worker in range(10)]

        results = await asyncio.gather(
            *(store.save(SHOP, document, expected_revision=None) for document in documents), return_exceptions=True
        )

        winners = [(document, result) for document, result in zip(documents, results, strict=True) if result == 1]
        assert 1 == len(winners)
        assert 9 == sum(isinstance(result, CheckpointConflictError) for result in results)
        assert StoredCheckpoint(data=winners[0][0], revision=1) == await store.load(SHOP)

    async def test_revision_never_goes_backwards(self, store: CheckpointStore) -> None:
        """Across many sequential saves each revision is the previous + 1, and no old one is accepted again."""
        revision = await store.save(SHOP, '{"n":0}', expected_revision=None)

        for n in range(1, 50):
            new = await store.save(SHOP, f'{{"n":{n}}}', expected_revision=revision)
            assert revision + 1 == new
            revision = new
            assert StoredCheckpoint(data=f'{{"n":{n}}}', revision=revision) == await store.load(SHOP)

        for old in (None, 1, revision // 2, revision - 1):
            with pytest.raises(CheckpointConflictError):
                await store.save(SHOP, '{"n":"old"}', expected_revision=old)
        assert StoredCheckpoint(data='{"n":49}', revision=50) == await store.load(SHOP)
