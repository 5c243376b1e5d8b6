"""``Syncer``: deliver every trade of a shop, at least once, with the fewest calls.

One call of ``increments(shop)`` (or ``batches(shop)``) catches a shop up from its
checkpoint to Taobao's ``now - lag`` and ends. The first call for a shop backfills
trades created in the last ``backfill`` first. The rules it keeps (explained in
``docs/concepts.md``):

* windows are planned on Taobao's clock, end ``lag`` behind it, touch at their
  bounds, never exceed a day, and are split while they hold too many trades;
* each window is counted by its first page, then read from the last page back to
  page 1, so trades changing mid-read cause duplicates, never gaps;
* every trade type is requested;
* a window's end is saved only after its last trade was handed over and the
  consumer asked for more: a crash, an exception or a ``break`` re-reads it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from contextlib import aclosing
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Final, Literal, TypedDict

from attrs import define, evolve, field, frozen

from taobao_ordersync import _options, _wire
from taobao_ordersync._paging import CountProof, SeamCheck, newest_second, page_count, page_plan
from taobao_ordersync._retry import is_transient
from taobao_ordersync._time import SECOND, floor_second
from taobao_ordersync.checkpoint import Checkpoint, Key
from taobao_ordersync.client import TopClient
from taobao_ordersync.errors import (
    BusinessError,
    CheckpointExpiredError,
    ConfigurationError,
    ResponseFormatError,
    TradeUnavailableError,
    WindowTooDenseError,
    WindowTooLargeError,
    leaf_error,
)
from taobao_ordersync.models import Shop, Trade, TradePage
from taobao_ordersync.planner import Window, second_within, split, tile
from taobao_ordersync.stores import CheckpointStore, StoredCheckpoint

if TYPE_CHECKING:
    from taobao_ordersync.audit import AuditProgress, AuditReport, TradeLedger

__all__ = ["HORIZON", "Batch", "ShopProgress", "Syncer", "SyncerOptions"]

HORIZON: Final = _wire.HORIZON
#: Kept between the horizon and our oldest request, so a request planned now is still valid when sent.
HORIZON_MARGIN: Final = timedelta(minutes=10)
#: The first backfill starts this far inside the horizon, so a restart within the hour loses no scope.
BACKFILL_MARGIN: Final = timedelta(hours=1)
MAX_INCREMENT_SPAN: Final = _wire.MAX_INCREMENT_SPAN
#: Listed trades fullinfo did not know that ``ShopProgress.missing`` keeps (the newest tids).
MAX_MISSING_SHOWN: Final = 1000
#: Pauses before asking fullinfo again for a listed trade it does not know yet.
DETAIL_RETRY_DELAYS: tuple[float, ...] = (1.0, 4.0)
#: Default time an audit gives the application's sync to deliver a change (``Syncer.audit(settle=)``).
DEFAULT_SETTLE: Final = timedelta(minutes=15)
#: Reads of a dense second whose ties move, at the least, before giving up for now.
_MIN_PROOF_PASSES: Final = 16

# "push": handed over by a Fleet for a TMC message; "repair": trades an audit delivers again.
Phase = Literal["backfill", "increments", "push", "repair"]
logger = logging.getLogger("taobao_ordersync.syncer")


@frozen(kw_only=True)
class Batch:
    """New trades from one page of one window, already de-duplicated.

    The checkpoint moves past a window when the batch after the window's last one
    is requested (or the iterator is driven to its end).
    """

    shop_id: str
    phase: Phase
    window: Window
    trades: tuple[Trade, ...]


@define
class ShopProgress:
    """Where one shop's sync stands, updated as it runs (for progress displays and status).

    The positions come from the shop's checkpoint (None until it is loaded): ``cursor`` is how
    far the sync has read (creation time during the backfill, then modification time),
    ``target`` where this run stops, ``backfilled_to`` how far the backfill has read (None
    once it is done: ask ``backfill_done``).

    Counters are since this ``Syncer`` was created: ``splits`` counts windows cut because
    they were too big, ``tie_rereads`` seconds read again because a trade of theirs showed
    on two pages (ties that may have moved), ``missing`` the listed trades fullinfo does not
    know yet (their window was not committed; a tid leaves the list once it is fetched).
    """

    shop_id: str
    phase: Phase = "backfill"
    origin: datetime | None = None
    cursor: datetime | None = None
    target: datetime | None = None
    backfill_from: datetime | None = None
    backfilled_to: datetime | None = None
    windows: int = 0
    pages: int = 0
    delivered: int = 0
    duplicates: int = 0
    splits: int = 0
    tie_rereads: int = 0
    calls: int = 0
    missing: list[int] = field(factory=list)

    @property
    def backfill_done(self) -> bool:
        """Whether the shop's backfill is complete (False also before its checkpoint is loaded)."""
        return self.origin is not None and self.backfilled_to is None

    @property
    def position(self) -> datetime | None:
        """The committed position: ``backfilled_to`` during the backfill, then ``cursor``."""
        return self.cursor if self.backfill_done else self.backfilled_to

    @property
    def behind(self) -> timedelta | None:
        """How far the committed position trails the run's target."""
        if self.target is None or self.cursor is None:
            return None
        return max(timedelta(0), self.target - self.cursor)


class SyncerOptions(TypedDict, total=False):
    """The options of ``Syncer``, which ``Fleet`` and ``Worker`` hand on to theirs.

    Their meaning, defaults and checks are ``Syncer``'s (one definition); this names them
    and their types, so mypy checks ``Fleet(..., lag=5)`` as it checks ``Syncer(..., lag=5)``.
    """

    lag: float | timedelta
    overlap: float | timedelta
    backfill: float | timedelta
    max_window_orders: int
    page_size: int
    max_window: float | timedelta
    types: Iterable[str]
    fields: Iterable[str]
    fullinfo: bool
    fullinfo_concurrency: int
    on_expired: Literal["raise", "rebackfill"]
    on_progress: Callable[[ShopProgress], None] | None


def _as_delta(name: str, value: float | timedelta) -> timedelta:
    """A non-negative duration rounded *up* to whole seconds (Taobao's resolution; more is safer)."""
    try:
        if isinstance(value, bool):  # an int to timedelta, but surely not meant as seconds
            raise TypeError
        delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    except (TypeError, ValueError, OverflowError):  # not a number, NaN, too big
        raise ConfigurationError(f"{name} must be seconds or a timedelta, got {value!r}") from None
    if delta < timedelta(0):
        raise ConfigurationError(f"{name} must not be negative")
    return -(-delta // SECOND) * SECOND


class _Refused(Exception):
    """A page after the first stayed refused as too big: the window is read in parts."""


@define
class _Commit:
    checkpoint: Checkpoint


@frozen
class _Reached:
    """Everything up to ``moment`` is handed over; ``carried`` were delivered at ``moment`` itself."""

    moment: datetime
    carried: frozenset[Key]


_Steps = AsyncGenerator[Batch | _Commit, None]


class Syncer:
    """Keeps shops' trades complete, using a ``TopClient`` and a ``CheckpointStore``.

    Args:
        client: the app's client (shared by every shop: one rate limit, one ban gate).
        store: where each shop's checkpoint lives.
        lag: how far behind Taobao's clock windows end (seconds or timedelta). Changes
            become visible to list calls a little after they happen; a window must not
            close before that. Default 10 s.
        overlap: re-read this much before the checkpoint on each run (duplicates only).
        backfill: how far back the first sync reaches by creation time (at most 3 months).
        max_window_orders: split windows holding more trades (Taobao times out above 20,000).
        page_size: trades per call, 1-100.
        max_window: longest increment window (Taobao allows 1 day).
        types: trade types to request; all of them by default.
        fields: trade fields to request from the list calls.
        fullinfo: list only ``tid``/``modified`` and fetch each trade with
            ``taobao.trade.fullinfo.get`` (for fields the list calls do not return).
        fullinfo_concurrency: parallel fullinfo fetches per shop.
        on_expired: ``"raise"`` (default) a ``CheckpointExpiredError`` when a checkpoint
            is older than Taobao's 3-month horizon, or ``"rebackfill"`` to start over.
        on_progress: called with the shop's ``ShopProgress`` after every page.

    ``SyncerOptions`` names these options (all but ``client`` and ``store``) for the
    ``Fleet`` and ``Worker`` that pass them on.

    Raises:
        ConfigurationError: an option has a wrong type or value (it is named).
    """

    def __init__(
        self,
        client: TopClient,
        *,
        store: CheckpointStore,
        lag: float | timedelta = 10.0,
        overlap: float | timedelta = 0.0,
        backfill: float | timedelta = HORIZON,
        max_window_orders: int = _wire.MAX_WINDOW_TRADES,
        page_size: int = _wire.MAX_PAGE_SIZE,
        max_window: float | timedelta = MAX_INCREMENT_SPAN,
        types: Iterable[str] = _wire.ALL_TRADE_TYPES,
        fields: Iterable[str] = _wire.DEFAULT_TRADE_FIELDS,
        fullinfo: bool = False,
        fullinfo_concurrency: int = 8,
        on_expired: Literal["raise", "rebackfill"] = "raise",
        on_progress: Callable[[ShopProgress], None] | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.lag = _as_delta("lag", lag)
        self.overlap = _as_delta("overlap", overlap)
        self.backfill = min(_as_delta("backfill", backfill), HORIZON)
        self.max_window = min(_as_delta("max_window", max_window), MAX_INCREMENT_SPAN)
        if self.max_window < timedelta(seconds=1):
            raise ConfigurationError("max_window must be at least one second")
        self.page_size = _options.whole("page_size", page_size, least=1)
        if page_size > _wire.MAX_PAGE_SIZE:
            raise ConfigurationError(f"page_size must be 1..{_wire.MAX_PAGE_SIZE}, got {page_size}")
        self.max_window_orders = _options.whole("max_window_orders", max_window_orders, least=page_size)
        self.types = _options.names("types", types)
        wanted = _options.names("fields", fields)
        self.fields = tuple(dict.fromkeys(("tid", "modified", "created", *wanted)))
        self.fullinfo = _options.flag("fullinfo", fullinfo)
        self.fullinfo_concurrency = _options.whole("fullinfo_concurrency", fullinfo_concurrency, least=1)
        if on_expired not in ("raise", "rebackfill"):
            raise ConfigurationError(f"on_expired must be 'raise' or 'rebackfill', got {on_expired!r}")
        self.on_expired = on_expired
        _options.callback("on_progress", on_progress)
        self.on_progress = on_progress
        self._progress: dict[str, ShopProgress] = {}

    def __repr__(self) -> str:
        return f"Syncer({self.client!r}, store={self.store!r}, lag={self.lag}, page_size={self.page_size})"

    async def checkpoint(self, shop_id: str) -> Checkpoint | None:
        """The shop's committed position, or None before its first sync."""
        stored = await self.store.load(shop_id)
        return None if stored is None else Checkpoint.from_json(stored.data, shop_id=shop_id)

    def forget(self, shop_id: str) -> ShopProgress | None:
        """Drop a shop's progress (a fleet stopped syncing it); returns what it was, if any."""
        return self._progress.pop(shop_id, None)

    async def audit(
        self,
        shop: Shop,
        ledger: TradeLedger,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        settle: float | timedelta = DEFAULT_SETTLE,
        repair: Callable[[Shop, Batch], Awaitable[None]] | None = None,
        deep: float | timedelta | None = None,
        on_progress: Callable[[AuditProgress], None] | None = None,
    ) -> AuditReport:
        """Check that ``ledger`` (what the application holds) has every trade Taobao has for ``shop``.

        Counts trades per slot of creation time on both sides, coarse first, and narrows
        only where they disagree, down to slots listed tid by tid (see the audit guide).

        Args:
            shop: the shop.
            ledger: the application's trades (a ``TradeLedger``).
            start: the oldest creation time audited (default: Taobao's 3-month horizon, less an hour).
            end: the newest creation time audited (default and latest: ``now - settle``).
            settle: how long the application's sync needs to deliver a change (default 15
                minutes): changes newer than that are ``in_flight``, not losses.
            repair: a handler ``(shop, batch)`` (a ``Fleet`` handler): missing and stale
                trades are handed to it in their newest version (batches of phase
                ``"repair"``, at least once), then checked and re-counted.
            deep: also read every trade modified in this last span (seconds or timedelta,
                at most the horizon) with increment windows and compare versions: finds old
                versions and the missing trades equal counts hide. Costs about one call per
                ``page_size`` changes in the span, plus one per day.
            on_progress: called with an ``AuditProgress`` after every slot.
        """
        from taobao_ordersync.audit import run_audit

        return await run_audit(
            self, shop, ledger, start=start, end=end, settle=settle, repair=repair, deep=deep, on_progress=on_progress
        )

    def progress(self, shop_id: str) -> ShopProgress:
        """The live progress of a shop (created on first use)."""
        return self._progress.setdefault(shop_id, ShopProgress(shop_id=shop_id))

    # -- public iterators ------------------------------------------------------------

    async def increments(self, shop: Shop) -> AsyncGenerator[Trade, None]:
        """Every new or changed trade of ``shop`` since its checkpoint, then stop.

        Consume idempotently: upsert by ``tid`` keeping the newest ``modified``.
        """
        async with aclosing(self.batches(shop)) as batches:
            async for batch in batches:
                for trade in batch.trades:
                    yield trade

    async def batches(self, shop: Shop) -> AsyncGenerator[Batch, None]:
        """Like ``increments`` but one ``Batch`` (a page's new trades) at a time, for bulk writers."""
        if not isinstance(shop, Shop):
            raise ConfigurationError("batches() takes a Shop(id=..., session=...)")
        stored = await self.store.load(shop.id)
        revision = None if stored is None else stored.revision
        async with aclosing(self._steps(shop, stored)) as steps:
            async for step in steps:
                if isinstance(step, _Commit):
                    revision = await self.store.save(shop.id, step.checkpoint.to_json(), expected_revision=revision)
                    self._record(step.checkpoint)
                elif step.trades:
                    yield step

    # -- the plan --------------------------------------------------------------------

    async def _steps(self, shop: Shop, stored: StoredCheckpoint | None) -> _Steps:
        server_now = floor_second(await self.client.server_now())
        horizon = server_now - HORIZON + HORIZON_MARGIN
        if stored is None:
            checkpoint = self._fresh(shop, server_now, horizon)
            yield _Commit(checkpoint)  # fix T0 before any work, so a crash resumes with the same origin
        else:
            checkpoint = Checkpoint.from_json(stored.data, shop_id=shop.id)
            oldest = checkpoint.cursor - self.overlap if checkpoint.backfill_done else checkpoint.origin
            if oldest < horizon:
                if self.on_expired == "raise":
                    raise CheckpointExpiredError(shop.id, oldest, horizon)
                logger.warning(
                    "shop %s: checkpoint %s is past the horizon; backfilling again",
                    shop.id, oldest, extra={"shop_id": shop.id},
                )  # fmt: skip
                checkpoint = self._fresh(shop, server_now, horizon)
                yield _Commit(checkpoint)
        self._record(checkpoint)
        clock: datetime | None = server_now
        if not checkpoint.backfill_done:
            clock = None  # a backfill can take hours: the increments ask the clock again
            async for step in self._backfill(shop, checkpoint, horizon):
                if isinstance(step, _Commit):
                    checkpoint = step.checkpoint
                yield step
        async for step in self._increments(shop, checkpoint, clock):
            yield step

    def _fresh(self, shop: Shop, server_now: datetime, horizon: datetime) -> Checkpoint:
        origin = server_now - self.lag
        start = max(origin - self.backfill, horizon - HORIZON_MARGIN + BACKFILL_MARGIN)
        logger.info("shop %s: first sync; backfilling trades created %s .. %s", shop.id, start, origin)
        return Checkpoint(
            shop_id=shop.id,
            origin=origin,
            cursor=origin,
            backfill_from=start,
            backfilled_to=start,
            boundary=frozenset(),
        )

    def _record(self, checkpoint: Checkpoint) -> None:
        progress = self.progress(checkpoint.shop_id)
        progress.origin = checkpoint.origin
        progress.backfill_from = checkpoint.backfill_from
        progress.backfilled_to = checkpoint.backfilled_to
        progress.cursor = checkpoint.position

    async def _backfill(self, shop: Shop, checkpoint: Checkpoint, horizon: datetime) -> _Steps:
        progress = self.progress(shop.id)
        progress.phase = "backfill"
        progress.target = checkpoint.origin
        resume = checkpoint.backfilled_to or checkpoint.backfill_from
        start = max(resume, horizon)
        if start > resume:
            # Trades created before the horizon can no longer be listed by anyone: record the
            # narrower scope in the checkpoint rather than claim it.
            logger.warning(
                "shop %s: the backfill resumed after Taobao's 3-month horizon passed it; trades created "
                "%s .. %s can no longer be listed and are out of scope",
                shop.id, resume, start,
            )  # fmt: skip
            checkpoint = evolve(checkpoint, backfill_from=start, backfilled_to=start, boundary=frozenset())
            yield _Commit(checkpoint)
        # sold.get has no span limit: one window, split only if Taobao finds it too big.
        windows = [Window(start, checkpoint.origin, self.types)]
        boundary = checkpoint.boundary
        async for step in self._read_windows(shop, "backfill", windows, boundary):
            if isinstance(step, _Reached):
                done = step.moment >= checkpoint.origin
                checkpoint = evolve(
                    checkpoint,
                    backfilled_to=None if done else step.moment,
                    boundary=frozenset() if done else step.carried,
                )
                yield _Commit(checkpoint)
            else:
                yield step

    async def _increments(self, shop: Shop, checkpoint: Checkpoint, server_now: datetime | None) -> _Steps:
        progress = self.progress(shop.id)
        progress.phase = "increments"
        if server_now is None:
            server_now = floor_second(await self.client.server_now())
        target = server_now - self.lag
        progress.target = target
        start = checkpoint.cursor - self.overlap
        if target <= checkpoint.cursor:
            return
        windows = tile(start, target, max_span=self.max_window, types=self.types)
        async for step in self._read_windows(shop, "increments", windows, checkpoint.boundary):
            if isinstance(step, _Reached):
                checkpoint = evolve(checkpoint, cursor=max(step.moment, checkpoint.cursor), boundary=step.carried)
                yield _Commit(checkpoint)
            else:
                yield step

    async def _read_windows(
        self, shop: Shop, phase: Phase, windows: Sequence[Window], boundary: frozenset[Key]
    ) -> AsyncGenerator[Batch | _Reached, None]:
        """Read windows in order, splitting heavy ones; yield batches, and a ``_Reached`` whenever
        everything up to a moment (on the window's time axis) has been handed over."""
        progress = self.progress(shop.id)
        queue = list(reversed(windows))  # a stack: the oldest window on top
        # Keys delivered in the current window, with their second on the window's axis
        # (created for the backfill, modified for increments), to carry the boundary second.
        seen: dict[Key, datetime] = dict.fromkeys(boundary, queue[-1].start) if queue else {}
        while queue:
            window = queue.pop()
            first = await self._first_page(shop, phase, window)
            if first is None or (self._count(first) > self.max_window_orders and window.can_split):
                progress.splits += 1
                queue.extend(reversed(split(window)))
                continue
            try:
                async with aclosing(self._read_pages(shop, phase, window, first, seen)) as steps:
                    async for step in steps:
                        yield step
            except _Refused:
                # A page after the first kept being refused as too big: read the window in parts.
                progress.splits += 1
                queue.extend(reversed(split(window)))
                continue
            progress.windows += 1
            if window._commits:
                carried = frozenset(key for key, at in seen.items() if at == window.end)
                yield _Reached(window.end, carried)
                seen = dict.fromkeys(carried, window.end)

    async def _read_pages(
        self, shop: Shop, phase: Phase, window: Window, first: TradePage, seen: dict[Key, datetime]
    ) -> AsyncGenerator[Batch | _Reached, None]:
        """Page 1 (already read, with the count), then the last page back to page 2 (or 1).

        A second with a trade on two pages (its ties may have moved across a seam) is
        read again on its own before any moment past it is reached. Creation windows
        never shift, so page 1 is not re-read, and after each page everything created
        before the page's newest second has been read: the backfill may commit that
        moment inside a window.
        """
        total = self._count(first)
        if total > self.max_window_orders:
            logger.warning(
                "shop %s: %d trades in the single second %s (type %s); reading all of them",
                shop.id, total, window.start, window.types[0],
            )  # fmt: skip
        stable = phase == "backfill"
        seams = SeamCheck()
        seams.record(1, self._sightings(first, phase))
        yield await self._deliver(shop, phase, window, first, seen)
        plan = page_plan(total, self.page_size, shifting=not stable)
        if plan:
            last = plan[0]
            tail = await self._later_page(shop, phase, window, page_no=last)
            # Past the counted last page only while the window grew since it was counted.
            page_no, extra = last, tail
            while extra.has_next:
                page_no += 1
                if page_no > page_count(self.max_window_orders, self.page_size):
                    if window.can_split:
                        raise _Refused  # it keeps growing (or always says has_next): read it in parts
                    raise ResponseFormatError(
                        f"{self._method(phase)}: has_next past page {page_no - 1} of a one-second window",
                        is_transient=True,
                    )
                extra = await self._later_page(shop, phase, window, page_no=page_no)
                seams.record(page_no, self._sightings(extra, phase))
                yield await self._deliver(shop, phase, window, extra, seen)
            for page_no in plan:
                page = tail if page_no == last else await self._later_page(shop, phase, window, page_no=page_no)
                sightings = self._sightings(page, phase)
                seams.record(page_no, sightings)
                yield await self._deliver(shop, phase, window, page, seen)
                reached = newest_second(sightings) if stable else None
                if reached is not None and window._commits:
                    async for step in self._reread_seconds(shop, phase, window, seams, seen, before=reached):
                        yield step
                    yield _Reached(reached, frozenset(key for key, at in seen.items() if at == reached))
        async for step in self._reread_seconds(shop, phase, window, seams, seen):
            yield step

    async def _reread_seconds(
        self,
        shop: Shop,
        phase: Phase,
        window: Window,
        seams: SeamCheck,
        seen: dict[Key, datetime],
        *,
        before: datetime | None = None,
    ) -> AsyncGenerator[Batch, None]:
        """Read again, on its own, every second with a trade seen on two pages (its ties may have moved)."""
        progress = self.progress(shop.id)
        for second in seams.unsettled(before=before):
            progress.tie_rereads += 1
            logger.debug("shop %s: a trade of %s showed on two pages; reading that second again", shop.id, second)
            async for batch in self._read_completely(shop, phase, second_within(window, second), seen):
                yield batch
            seams.settle(second)

    async def _read_completely(
        self, shop: Shop, phase: Phase, part: Window, seen: dict[Key, datetime]
    ) -> AsyncGenerator[Batch, None]:
        """Every trade of ``part`` (at most one second), whatever order its ties come in.

        One page if it holds them all; else page after page, each carrying the count,
        until ``CountProof`` shows every trade that stays in it was seen.
        """
        first = await self._first_page(shop, phase, part)
        if first is None:  # refused as too big
            for half in split(part):
                async for batch in self._read_completely(shop, phase, half, seen):
                    yield batch
            return
        total = self._count(first)
        yield await self._deliver(shop, phase, part, first, seen)
        if total <= self.page_size:
            return
        proof = CountProof()
        proof.record(total, (trade.tid for trade in first.trades))
        passes = max(_MIN_PROOF_PASSES, 4 * math.ceil(math.log(total)))
        for pass_no in range(1, passes + 1):
            # A new page size each pass: a backend whose tie order depends on LIMIT/OFFSET
            # (and not on chance) then still shows other trades.
            size = self.page_size - pass_no % 3 if self.page_size > 3 else self.page_size
            for page_no in range(page_count(total, size), 0, -1):
                page = await self._list(shop, phase, part, page_no=page_no, use_has_next=False, page_size=size)
                total = self._count(page)
                proof.record(total, (trade.tid for trade in page.trades))
                yield await self._deliver(shop, phase, part, page, seen)
                if proof.proven:
                    return
        raise WindowTooDenseError(
            f"shop {shop.id}: {total} trades share the second {part.start} and their order changes "
            f"on every request; {proof.reads} reads did not show them all (read again later)"
        )

    async def _first_page(self, shop: Shop, phase: Phase, window: Window) -> TradePage | None:
        """Page 1 with its count, or None when Taobao refuses the window as too big."""
        try:
            return await self._list(shop, phase, window, page_no=1, use_has_next=False)
        except WindowTooLargeError:
            if window.can_split:
                return None
            raise WindowTooDenseError(
                f"shop {shop.id}: Taobao cannot list the trades of type {window.types[0]} "
                f"in the single second {window.start}; no smaller window exists"
            ) from None

    async def _later_page(self, shop: Shop, phase: Phase, window: Window, *, page_no: int) -> TradePage:
        """A page after the first; a refusal that outlasts the client's retries splits the window."""
        try:
            return await self._list(shop, phase, window, page_no=page_no, use_has_next=True)
        except WindowTooLargeError:
            if window.can_split:
                raise _Refused from None
            raise

    @staticmethod
    def _count(page: TradePage) -> int:
        if page.total_results is None:  # the client checks it; a count is never assumed to be 0
            raise ResponseFormatError("a list reply without total_results", is_transient=True)
        return page.total_results

    @staticmethod
    def _sightings(page: TradePage, phase: Phase) -> list[tuple[int, datetime]]:
        if phase == "backfill":
            return [(trade.tid, trade.created or trade.modified) for trade in page.trades]
        return [(trade.tid, trade.modified) for trade in page.trades]

    @staticmethod
    def _method(phase: Phase) -> str:
        return "taobao.trades.sold.get" if phase == "backfill" else "taobao.trades.sold.increment.get"

    async def _list(
        self,
        shop: Shop,
        phase: Phase,
        window: Window,
        *,
        page_no: int,
        use_has_next: bool,
        page_size: int | None = None,
    ) -> TradePage:
        self.progress(shop.id).calls += 1
        fetch = (
            partial(self.client.trades_sold, start_created=window.start, end_created=window.end)
            if phase == "backfill"
            else partial(self.client.trades_sold_increment, start_modified=window.start, end_modified=window.end)
        )
        return await fetch(
            shop.session,
            fields=("tid", "modified", "created") if self.fullinfo else self.fields,
            types=window.types,
            page_no=page_no,
            page_size=page_size or self.page_size,
            use_has_next=use_has_next,
        )

    async def _deliver(
        self, shop: Shop, phase: Phase, window: Window, page: TradePage, seen: dict[Key, datetime]
    ) -> Batch:
        """The page's trades not yet delivered in this window, with details when asked for."""
        progress = self.progress(shop.id)
        fresh = self._dedupe(page.trades, seen, progress, by_created=phase == "backfill")
        if self.fullinfo and fresh:
            fresh = await self._fetch_details(shop, fresh)
        progress.pages += 1
        progress.delivered += len(fresh)
        self._notify(progress)
        return Batch(shop_id=shop.id, phase=phase, window=window, trades=tuple(fresh))

    @staticmethod
    def _dedupe(
        trades: Iterable[Trade], seen: dict[Key, datetime], progress: ShopProgress, *, by_created: bool
    ) -> list[Trade]:
        fresh = []
        for trade in trades:
            key = (trade.tid, trade.modified, trade.status)  # a second may hold two versions
            if key in seen:
                progress.duplicates += 1
                continue
            seen[key] = (trade.created or trade.modified) if by_created else trade.modified
            fresh.append(trade)
        return fresh

    async def _fetch_details(self, shop: Shop, listed: Sequence[Trade]) -> list[Trade]:
        """Fetch each listed trade with fullinfo, concurrently; none is ever dropped.

        A listed trade that fullinfo does not know yet (it reads another store than the
        lists) is asked for again after a pause; if it stays unknown the window fails
        with ``TradeUnavailableError`` and is read again later, never committed past it.
        """
        limit = asyncio.Semaphore(self.fullinfo_concurrency)
        progress = self.progress(shop.id)
        unknown: list[int] = []

        async def fetch(trade: Trade) -> Trade | None:
            for delay in (*DETAIL_RETRY_DELAYS, None):
                async with limit:
                    progress.calls += 1
                    try:
                        return await self.client.trade_fullinfo(shop.session, trade.tid, fields=self.fields)
                    except BusinessError as exc:
                        if exc.sub_code != "isv.trade-not-exist":
                            raise
                if delay is None:
                    break
                logger.info("shop %s: trade %d is listed but fullinfo does not know it yet", shop.id, trade.tid)
                await asyncio.sleep(delay)
            unknown.append(trade.tid)
            return None

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(fetch(trade)) for trade in listed]
        except BaseExceptionGroup as failures:
            # Callers get our typed error, not a group: one that retrying cannot fix first.
            raise leaf_error(failures, prefer=lambda exc: not is_transient(exc)) from None
        fetched = {trade.tid for trade in listed} - set(unknown)
        # Only the trades still unknown, and a bounded number of them: this lives as long as the Syncer.
        progress.missing = sorted({*progress.missing, *unknown} - fetched)[-MAX_MISSING_SHOWN:]
        if unknown:
            raise TradeUnavailableError(shop.id, sorted(unknown))
        return [trade for task in tasks if (trade := task.result()) is not None]

    def _notify(self, progress: ShopProgress) -> None:
        if self.on_progress is not None:
            try:
                self.on_progress(progress)
            except Exception:  # a progress display must never abort (or lose) a sync
                logger.exception("shop %s: on_progress callback failed", progress.shop_id)
