"""The audit: does the application hold every order Taobao has for a shop, in its latest state?

``Syncer.audit(shop, ledger)`` (a thin method over ``run_audit``) counts trades per
slot of creation time on both sides, coarse first (the whole range), and narrows
(bisects) only where the counts disagree, down to slots Taobao lists in one page;
those are compared tid by tid. See ``docs/guides/audit.md`` and ``_audit`` (the pure
part: slots, narrowing decisions, diffs).

The application's side is a ``TradeLedger``: three small async queries over the
trades it holds. ``taobao_ordersync.ledgers`` has ready ones for SQL tables.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final, Protocol

from attrs import define, field

from taobao_ordersync._audit import (
    AuditReport,
    Slot,
    SlotDiff,
    diff_listed,
    diff_versions,
    expect_small,
    halves,
    settled,
    should_list,
)
from taobao_ordersync._paging import CountProof, page_count
from taobao_ordersync._time import floor_second
from taobao_ordersync.checkpoint import Checkpoint
from taobao_ordersync.errors import ConfigurationError, WindowTooDenseError, WindowTooLargeError
from taobao_ordersync.models import Shop, Trade, TradePage
from taobao_ordersync.planner import Window
from taobao_ordersync.stores import MemoryStore
from taobao_ordersync.syncer import DEFAULT_SETTLE, HORIZON, Batch, Syncer

__all__ = ["AuditProgress", "AuditReport", "TradeLedger", "audit_many", "run_audit"]

logger = logging.getLogger("taobao_ordersync.audit")

#: The audit starts this far inside Taobao's 3-month horizon, so its oldest slot stays listable.
HORIZON_MARGIN: Final = timedelta(hours=1)
#: tids per ``TradeLedger.versions`` call.
VERSIONS_CHUNK: Final = 500
_MIN_PROOF_PASSES: Final = 16
_LIST_FIELDS: Final = ("tid", "modified", "created")

Handler = Callable[[Shop, Batch], Awaitable[None]]


class TradeLedger(Protocol):
    """The application's side of an audit: what it holds, by ``created`` (Taobao's printed seconds).

    Ranges are half-open, ``start <= created < end``, on the ``created`` the trade was
    delivered with (whole seconds, China Standard Time; ``start``/``end`` are aware
    datetimes). ``modified`` is the newest one held for the tid. The contract suite
    ``taobao_ordersync.testing.ledger_contract`` checks an implementation.
    """

    async def count_created(self, shop_id: str, start: datetime, end: datetime) -> int:
        """How many trades of the shop it holds with ``start <= created < end``."""
        ...

    async def list_created(self, shop_id: str, start: datetime, end: datetime) -> Mapping[int, datetime]:
        """``tid -> modified`` of those trades (called for small ranges only)."""
        ...

    async def versions(self, shop_id: str, tids: Sequence[int]) -> Mapping[int, datetime]:
        """``tid -> modified`` of the given tids it holds (absent ones left out; at most 500 per call)."""
        ...


@define
class AuditProgress:
    """Where one shop's audit stands, updated after every slot (for progress lines)."""

    shop_id: str
    phase: str = "counting"
    slots: int = 0
    pending: int = 0
    listed: int = 0
    calls: int = 0
    missing: int = 0
    stale: int = 0
    extra: int = 0


@define
class _Findings:
    taobao: dict[int, Trade] = field(factory=dict)  # the trade as Taobao listed it, per reported tid
    slot_of: dict[int, Slot] = field(factory=dict)
    expected: dict[Slot, int] = field(factory=dict)  # Taobao's half-open count of each slot with findings
    extras_in: dict[Slot, int] = field(factory=dict)
    missing: set[int] = field(factory=set)
    stale: set[int] = field(factory=set)
    extra: set[int] = field(factory=set)
    in_flight: set[int] = field(factory=set)


class _Audit:
    def __init__(
        self,
        syncer: Syncer,
        shop: Shop,
        ledger: TradeLedger,
        *,
        start: datetime | None,
        end: datetime | None,
        settle: timedelta,
        repair: Handler | None,
        deep: timedelta | None,
        on_progress: Callable[[AuditProgress], None] | None,
    ) -> None:
        self.syncer = syncer
        self.client = syncer.client
        self.shop = shop
        self.ledger = ledger
        self.start = start
        self.end = end
        self.settle = settle
        self.repair = repair
        self.deep = deep
        self.on_progress = on_progress
        self.progress = AuditProgress(shop_id=shop.id)
        self.found = _Findings()
        # Repairs need whole trades: then the listing calls ask for the sync's fields.
        wanted = syncer.fields if repair is not None and not syncer.fullinfo else _LIST_FIELDS
        self.fields = tuple(dict.fromkeys((*_LIST_FIELDS, *wanted)))

    # -- the run ---------------------------------------------------------------------

    async def run(self) -> AuditReport:
        server_now = floor_second(await self.client.server_now())
        self.progress.calls += 1
        as_of = server_now - self.settle
        oldest = server_now - HORIZON + HORIZON_MARGIN
        start = max(floor_second(self.start), oldest) if self.start else oldest
        until = min(floor_second(self.end), as_of) if self.end else as_of
        if until <= start:
            raise ConfigurationError(f"nothing to audit: the range {start} .. {until} is empty")
        logger.info("shop %s: auditing trades created %s .. %s (as of %s)", self.shop.id, start, until, as_of)
        await self._narrow(Slot(start, until), as_of)
        deep_from = None
        if self.deep is not None:
            deep_from = max(server_now - self.deep, oldest)
            await self._deep(deep_from, start, until, as_of)
        await self._recheck()
        repaired: frozenset[int] = frozenset()
        recount: bool | None = None
        if self.repair is not None:
            repaired, recount = await self._repair()
        found = self.found
        return AuditReport(
            shop_id=self.shop.id,
            start=start,
            until=until,
            as_of=as_of,
            missing=found.missing,
            stale=found.stale,
            extra=found.extra,
            in_flight=found.in_flight,
            repaired=repaired,
            slots=self.progress.slots,
            listed=self.progress.listed,
            calls=self.progress.calls,
            deep=self.deep is not None,
            deep_from=deep_from,
            recount_agrees=recount,
        )

    def _notify(self) -> None:
        found = self.found
        self.progress.missing, self.progress.stale, self.progress.extra = (
            len(found.missing),
            len(found.stale),
            len(found.extra),
        )
        if self.on_progress is not None:
            self.on_progress(self.progress)

    # -- counting and narrowing ------------------------------------------------------

    async def _narrow(self, root: Slot, as_of: datetime) -> None:
        """Count the range, then bisect only the slots whose counts disagree (oldest first)."""
        queue: list[tuple[Slot, int | None]] = [(root, None)]  # a stack; the int: the parent's Taobao count
        first = True
        while queue:
            slot, parent = queue.pop()
            self.progress.pending = len(queue)
            small = first or expect_small(parent, self.syncer.page_size)
            first = False
            try:
                page = await self._page(slot, page_size=self.syncer.page_size if small else 1)
            except WindowTooLargeError:
                if not slot.can_split:
                    raise WindowTooDenseError(
                        f"shop {self.shop.id}: Taobao cannot count the trades created in the second {slot.start}"
                    ) from None
                queue.extend((half, None) for half in reversed(halves(slot)))
                continue
            taobao = _count(page)
            self.progress.slots += 1
            listed = small and taobao <= self.syncer.page_size
            if listed:
                # The count call listed the whole slot: compare it tid by tid, whatever the counts say.
                await self._compare(slot, page.trades, as_of)
            else:
                ours = await self.ledger.count_created(self.shop.id, slot.start, slot.end)
                if taobao != ours:
                    logger.debug("shop %s: slot %s: Taobao %d, ledger %d", self.shop.id, slot, taobao, ours)
                    if should_list(taobao, self.syncer.page_size, slot):
                        await self._compare(slot, await self._list_completely(slot, taobao), as_of)
                    else:
                        queue.extend((half, taobao) for half in reversed(halves(slot)))
            self._notify()

    async def _compare(self, slot: Slot, trades: Iterable[Trade], as_of: datetime) -> None:
        trades = list(trades)
        self.progress.listed += 1
        ours = await self.ledger.list_created(self.shop.id, slot.start, slot.end)
        diff = diff_listed(slot, ((t.tid, t.modified, t.created) for t in trades), ours, as_of=as_of)
        self._record(slot, diff, trades)

    def _record(self, slot: Slot, diff: SlotDiff, trades: Iterable[Trade]) -> None:
        found = self.found
        lost = diff.missing | diff.stale
        if lost or diff.extra:
            found.expected[slot] = diff.expected
            found.extras_in[slot] = len(diff.extra)
        for trade in trades:
            if trade.tid in lost and (
                trade.tid not in found.taobao or trade.modified > found.taobao[trade.tid].modified
            ):
                found.taobao[trade.tid] = trade
                found.slot_of[trade.tid] = slot
        found.missing |= diff.missing
        found.stale |= diff.stale - found.missing
        found.extra |= diff.extra
        found.in_flight |= diff.in_flight

    async def _page(self, slot: Slot, *, page_size: int, page_no: int = 1) -> TradePage:
        self.progress.calls += 1
        return await self.client.trades_sold(
            self.shop.session,
            start_created=slot.start,
            end_created=slot.end,
            fields=self.fields if page_size > 1 else ("tid",),
            types=self.syncer.types,
            page_no=page_no,
            page_size=page_size,
        )

    async def _list_completely(self, slot: Slot, total: int) -> list[Trade]:
        """Every trade of ``slot``: one page when it fits, else (a one-second slot) pages with their
        counts until ``CountProof`` holds, whatever order its ties come back in."""
        size = self.syncer.page_size
        first = await self._page(slot, page_size=size)
        trades = {t.tid: t for t in first.trades}
        total = _count(first)
        if total <= size:
            return list(trades.values())
        proof = CountProof()
        proof.record(total, trades.keys())
        passes = max(_MIN_PROOF_PASSES, 4 * math.ceil(math.log(total)))
        for pass_no in range(1, passes + 1):
            size = self.syncer.page_size - pass_no % 3 if self.syncer.page_size > 3 else self.syncer.page_size
            for page_no in range(page_count(total, size), 0, -1):
                page = await self._page(slot, page_size=size, page_no=page_no)
                total = _count(page)
                proof.record(total, (t.tid for t in page.trades))
                for trade in page.trades:
                    if trade.tid not in trades or trade.modified > trades[trade.tid].modified:
                        trades[trade.tid] = trade
                if proof.proven:
                    return list(trades.values())
        raise WindowTooDenseError(
            f"shop {self.shop.id}: {total} trades share the created second {slot.start} and their order "
            f"changes on every request; {proof.reads} reads did not show them all (audit again later)"
        )

    # -- deep mode, re-check, repair -------------------------------------------------

    async def _deep(self, deep_from: datetime, start: datetime, until: datetime, as_of: datetime) -> None:
        """Every trade modified since ``deep_from``, read like the sync reads increments, against the ledger."""
        self.progress.phase = "deep"
        self._notify()
        syncer = self.syncer
        reader = Syncer(
            syncer.client,
            store=MemoryStore(),
            lag=syncer.lag,
            page_size=syncer.page_size,
            max_window_orders=syncer.max_window_orders,
            types=syncer.types,
            fields=self.fields,
            fullinfo=False,
        )
        checkpoint = Checkpoint(
            shop_id=self.shop.id,
            origin=deep_from,
            cursor=deep_from,
            backfill_from=deep_from,
            backfilled_to=None,
            boundary=frozenset(),
        )
        await reader.store.save(self.shop.id, checkpoint.to_json(), expected_revision=None)
        newest: dict[int, Trade] = {}
        try:
            async for trade in reader.increments(self.shop):
                created = trade.created
                if created is None or not start <= floor_second(created) < until:
                    continue  # outside the audited range of creation time
                if trade.tid not in newest or trade.modified > newest[trade.tid].modified:
                    newest[trade.tid] = trade
        finally:
            self.progress.calls += reader.progress(self.shop.id).calls
        tids = list(newest)
        ours = await self._versions(tids)
        diff = diff_versions({tid: t.modified for tid, t in newest.items()}, ours, as_of=as_of)
        for tid in diff.missing | diff.stale:
            created = newest[tid].created
            assert created is not None  # noqa: S101 - filtered above
            second = floor_second(created)
            self.found.slot_of.setdefault(tid, Slot(second, second + timedelta(seconds=1)))
        self._record_deep(diff, newest)
        self._notify()

    def _record_deep(self, diff: SlotDiff, newest: Mapping[int, Trade]) -> None:
        found = self.found
        for tid in diff.missing | diff.stale:
            if tid not in found.taobao or newest[tid].modified > found.taobao[tid].modified:
                found.taobao[tid] = newest[tid]
        found.missing |= diff.missing
        found.stale |= diff.stale - found.missing
        found.in_flight |= diff.in_flight - found.missing - found.stale

    async def _versions(self, tids: Sequence[int]) -> dict[int, datetime]:
        held: dict[int, datetime] = {}
        for at in range(0, len(tids), VERSIONS_CHUNK):
            held.update(await self.ledger.versions(self.shop.id, tids[at : at + VERSIONS_CHUNK]))
        return held

    async def _recheck(self) -> None:
        """Ask the ledger again about every trade found missing or stale: the application's own sync
        may have written it meanwhile (a live change), and that is not a loss."""
        found = self.found
        suspects = sorted(found.missing | found.stale)
        if not suspects:
            return
        self.progress.phase = "re-check"
        newest = {tid: found.taobao[tid].modified for tid in suspects}
        done = settled(suspects, newest, await self._versions(suspects))
        if done:
            logger.info("shop %s: %d trades reached the ledger during the audit", self.shop.id, len(done))
        found.missing -= done
        found.stale -= done
        self._notify()

    async def _repair(self) -> tuple[frozenset[int], bool]:
        """Hand the missing and stale trades to the handler (newest versions), then check and re-count."""
        assert self.repair is not None  # noqa: S101 - only called with a handler
        found = self.found
        lost = sorted(found.missing | found.stale)
        if not lost:
            return frozenset(), True
        self.progress.phase = "repair"
        self._notify()
        trades = [found.taobao[tid] for tid in lost]
        if self.syncer.fullinfo:
            self.progress.calls += len(trades)
            trades = await self._details(trades)
        by_slot: dict[Slot, list[Trade]] = {}
        for trade in trades:
            by_slot.setdefault(found.slot_of[trade.tid], []).append(trade)
        for slot, part in sorted(by_slot.items(), key=lambda item: item[0].start):
            window = Window(slot.start, slot.end, self.syncer.types, commits=False)
            await self.repair(self.shop, Batch(shop_id=self.shop.id, phase="repair", window=window, trades=tuple(part)))
        newest = {t.tid: t.modified for t in trades}
        repaired = settled(lost, newest, await self._versions(lost))
        agrees = True
        for slot, expected in found.expected.items():
            if slot in by_slot:
                held = await self.ledger.count_created(self.shop.id, slot.start, slot.end)
                agrees = agrees and held == expected + found.extras_in.get(slot, 0)
        return repaired, agrees

    async def _details(self, trades: Sequence[Trade]) -> list[Trade]:
        limit = asyncio.Semaphore(self.syncer.fullinfo_concurrency)

        async def fetch(trade: Trade) -> Trade:
            async with limit:
                return await self.client.trade_fullinfo(self.shop.session, trade.tid, fields=self.syncer.fields)

        return list(await asyncio.gather(*(fetch(t) for t in trades)))


def _count(page: TradePage) -> int:
    if page.total_results is None:  # the client checks it; never assumed to be 0
        from taobao_ordersync.errors import ResponseFormatError

        raise ResponseFormatError("a count reply without total_results", is_transient=True)
    return page.total_results


def _as_delta(name: str, value: float | timedelta) -> timedelta:
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta < timedelta(0):
        raise ConfigurationError(f"{name} must not be negative")
    return delta


async def run_audit(
    syncer: Syncer,
    shop: Shop,
    ledger: TradeLedger,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    settle: float | timedelta = DEFAULT_SETTLE,
    repair: Handler | None = None,
    deep: float | timedelta | None = None,
    on_progress: Callable[[AuditProgress], None] | None = None,
) -> AuditReport:
    """Audit one shop; ``Syncer.audit`` documents the arguments."""
    if not isinstance(shop, Shop):
        raise ConfigurationError("audit() takes a Shop(id=..., session=...)")
    for name, moment in (("start", start), ("end", end)):
        if moment is not None and moment.tzinfo is None:
            raise ConfigurationError(f"{name} must be a timezone-aware datetime")
    return await _Audit(
        syncer,
        shop,
        ledger,
        start=start,
        end=end,
        settle=_as_delta("settle", settle),
        repair=repair,
        deep=None if deep is None else _as_delta("deep", deep),
        on_progress=on_progress,
    ).run()


async def audit_many(
    syncer: Syncer,
    shops: Iterable[tuple[Shop, TradeLedger]],
    *,
    concurrency: int = 4,
    **options: object,
) -> list[AuditReport | BaseException]:
    """Audit many shops on one client (one rate budget), ``concurrency`` at a time.

    Returns one entry per shop, in order: its report, or the exception that stopped its
    audit (one shop's failure, e.g. an expired session, never stops the others).
    """
    if concurrency < 1:
        raise ConfigurationError("concurrency must be >= 1")
    limit = asyncio.Semaphore(concurrency)

    async def one(shop: Shop, ledger: TradeLedger) -> AuditReport | BaseException:
        async with limit:
            try:
                return await syncer.audit(shop, ledger, **options)  # type: ignore[arg-type]
            except Exception as exc:  # reported per shop, like a Fleet does
                return exc

    return list(await asyncio.gather(*(one(shop, ledger) for shop, ledger in shops)))
