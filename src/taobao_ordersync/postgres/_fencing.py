"""Fenced commits, as a worker's fleet makes them: ``FencedStore`` saves each checkpoint with the
fencing token of the read it belongs to, which ``FencedRevision`` carries from the read's load to its
save, and PostgreSQL refuses a token that no longer holds the shop (``PostgresStore.save_fenced``)."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Protocol, Self

from taobao_ordersync.errors import LeaseLostError
from taobao_ordersync.stores import StoredCheckpoint

__all__ = ["FenceableStore", "FencedRevision", "FencedStore"]


class FenceableStore(Protocol):
    """What ``FencedStore`` needs of a store (``PostgresStore`` is one): loads, and saves that with a
    ``fence=(owner, token)`` commit only while that lease still holds the shop."""

    async def load(self, shop_id: str) -> StoredCheckpoint | None: ...

    async def save_fenced(
        self, shop_id: str, data: str, *, expected_revision: int | None, fence: tuple[str, int] | None
    ) -> int: ...


class FencedRevision(int):
    """A revision handed out by ``FencedStore``: an ``int`` that also carries the fencing token of
    the read it belongs to, so that the read's next save commits with that token and no other."""

    shop_id: str
    token: int

    def __new__(cls, revision: int, *, shop_id: str, token: int) -> Self:
        value = super().__new__(cls, revision)
        value.shop_id = shop_id
        value.token = token
        return value


# Reads of a shop with no checkpoint yet, by (store, shop): the token each began under. A read loads
# and makes its first save (which fixes the checkpoint's origin) in one step of its task, so the
# context of that task is where its token waits: two reads in two tasks never see each other's.
_ABSENT_READS: ContextVar[Mapping[tuple[int, str], int] | None] = ContextVar("taobao_absent_reads", default=None)


class FencedStore:
    """The ``CheckpointStore`` a worker's fleet uses: every save carries the fencing token of its read.

    The token is taken when a read starts (``load``) and travels with the read itself: the revision
    ``load`` and ``save`` return is a ``FencedRevision`` holding it, which the read hands back to its
    next ``save``. (A read of a shop with no checkpoint has no revision yet: its token waits in its
    task's context until its first save.) So a read begun under an old lease commits with the old
    token, and the database refuses it, even if this same worker has claimed the shop again since and
    a newer read stands on the same revision with a newer token; that newer read commits undisturbed.
    """

    def __init__(self, store: FenceableStore, owner: str, tokens: Mapping[str, int]) -> None:
        self.store = store
        self.owner = owner
        self._tokens = tokens  # the worker's current leases

    def __repr__(self) -> str:
        return f"FencedStore({self.store!r}, owner={self.owner!r})"

    async def load(self, shop_id: str) -> StoredCheckpoint | None:
        token = self._tokens.get(shop_id)
        stored = await self.store.load(shop_id)
        if stored is None and token is not None:
            # A new mapping, never a change to the one other tasks may share.
            _ABSENT_READS.set({**(_ABSENT_READS.get() or {}), (id(self), shop_id): token})
        if stored is None or token is None:
            return stored
        return StoredCheckpoint(
            data=stored.data, revision=FencedRevision(stored.revision, shop_id=shop_id, token=token)
        )

    async def save(self, shop_id: str, data: str, *, expected_revision: int | None) -> int:
        token: int | None
        if expected_revision is None:
            key = (id(self), shop_id)
            reads = _ABSENT_READS.get() or {}
            token = reads.get(key)
            if token is not None:
                _ABSENT_READS.set({k: v for k, v in reads.items() if k != key})  # this read's first step
        elif isinstance(expected_revision, FencedRevision) and expected_revision.shop_id == shop_id:
            token = expected_revision.token
        else:
            token = None  # a revision no read of this view handed out
        if token is None:
            raise LeaseLostError(f"shop {shop_id!r}: worker {self.owner!r} holds no lease on it; commit refused")
        revision = await self.store.save_fenced(
            shop_id, data, expected_revision=int(expected_revision) if expected_revision is not None else None,
            fence=(self.owner, token),
        )  # fmt: skip
        return FencedRevision(revision, shop_id=shop_id, token=token)
