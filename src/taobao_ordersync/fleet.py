"""``Fleet``: many shops synced continuously by one process, fairly and in isolation.

A fixed pool of workers takes turns on shops that are due. A turn reads at most
``turn_batches`` batches of one shop, hands each to ``handler(shop, batch)``, and
puts the shop back in line: a three-month backfill or an 11.11 burst advances a
few pages per turn while every other due shop gets its turn in between
(round-robin by turn; the shop's read position survives between turns, so no
call is repeated). A shop that has caught up is polled again after an interval
that adapts to its volume. A failure stays with its shop: an invalid session
pauses the shop until its session is updated; transient trouble (a dense second,
a refused timestamp, a checkpoint from a newer release included) and handler
errors back it off; everyone else keeps syncing. The choice is made on the
exception's type, never its text.

Commit rule: a window is committed only after the handler returned for its last
batch and the shop's next batch was asked for; stopping or cancelling the fleet
commits no partial window.

Push (``taobao_ordersync.tmc``): ``deliver_pushed`` hands trades a message announced
to the same handler, one shop's deliveries never overlapping, with the same
``(tid, modified)`` de-duplication in both directions (a version one path delivered
is not delivered again by the other); it never touches a checkpoint. ``wake(shop,
delay=...)`` asks for an early poll; a push observer may lengthen the interval of a
shop whose messages prove healthy (polling then only reconciles).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Final, Literal, Protocol, Unpack

from attrs import define, evolve, field, frozen

from taobao_ordersync import _options
from taobao_ordersync._time import SECOND, floor_second
from taobao_ordersync.client import TopClient
from taobao_ordersync.clock import Clock, wait_until_set
from taobao_ordersync.errors import (
    AuthenticationError,
    CheckpointConflictError,
    CheckpointCorruptError,
    ConfigurationError,
    InvalidRequestError,
    PermissionDeniedError,
    RateLimitedError,
    SyncError,
    TradeUnavailableError,
    WindowTooDenseError,
    leaf_error,
)
from taobao_ordersync.models import Shop, Trade
from taobao_ordersync.planner import Window
from taobao_ordersync.status import Schedule, ShopStatus
from taobao_ordersync.stores import CheckpointStore
from taobao_ordersync.syncer import Batch, Syncer, SyncerOptions

__all__ = ["Fleet", "FleetEvent", "FleetOptions", "PollPolicy", "PushObserver", "ShopStatus"]

logger = logging.getLogger("taobao_ordersync.fleet")

Handler = Callable[[Shop, Batch], Awaitable[None]]
State = Literal["due", "syncing", "waiting", "backing_off", "paused"]
EventKind = Literal["synced", "paused", "backing_off", "handler_failed", "removed"]
# Errors that retrying cannot fix: the shop waits for an operator (usually a new session via add()).
_PAUSING: Final = (
    AuthenticationError,
    PermissionDeniedError,
    InvalidRequestError,
    CheckpointConflictError,
    CheckpointCorruptError,
    SyncError,
)
# Their subtypes that time does fix (rule 18): a second too dense to list today may be listable
# tomorrow (or after Taobao's index catches up), and a timestamp refused even after the client
# re-measured the clock points at a clock or proxy still settling.
# A listed trade fullinfo does not know yet is a replication delay between Taobao's stores.
_TRANSIENT: Final = (WindowTooDenseError, TradeUnavailableError)
_INVALID_TIMESTAMP: Final = 31
#: Versions remembered per shop, only while push is on, to keep push and polling from delivering
#: one version twice (a fleet without push remembers nothing: memory per shop stays small).
_REMEMBERED: Final = 5_000


class PushObserver(Protocol):
    """What a push consumer (``taobao_ordersync.tmc.TmcConsumer``) learns from the fleet's polls."""

    def poll_finished(self, shop_id: str, missed: int) -> float | None:
        """A poll of ``shop_id`` completed and committed; ``missed`` of its trades were not
        delivered by push first. Return the interval to poll next when push is healthy for
        the shop (polling then only reconciles), or None for the policy's interval."""
        ...

    def shop_removed(self, shop_id: str) -> None:
        """The fleet no longer syncs ``shop_id`` (removed, or its lease moved to another worker)."""
        ...


def typed_error(exc: BaseException) -> BaseException:
    """The error that decides a shop's fate: the one inside an ``ExceptionGroup`` (a task group in
    the sync), preferring one only an operator can fix, since retrying would meet it again."""
    return leaf_error(exc, prefer=needs_operator)


def needs_operator(exc: BaseException) -> bool:
    """Whether a shop failing with ``exc`` pauses until it is updated (else it backs off and retries)."""
    if isinstance(exc, _TRANSIENT):
        return False
    if isinstance(exc, InvalidRequestError) and exc.code == _INVALID_TIMESTAMP:
        return False
    return isinstance(exc, _PAUSING)


@frozen(kw_only=True)
class PollPolicy:
    """How often a caught-up shop is polled again.

    The interval shrinks while polls are heavy (more than ``target_pages`` pages per
    poll, i.e. windows that no longer fit one call) and grows while polls are
    light, between ``min_interval`` and ``max_interval`` seconds; ``jitter`` spreads
    thousands of shops so they do not poll in lockstep. Failures back off from
    ``min_backoff`` doubling to ``max_backoff``.
    """

    min_interval: float = 60.0
    max_interval: float = 600.0
    target_pages: int = 1
    jitter: float = 0.1
    min_backoff: float = 30.0
    max_backoff: float = 1800.0

    def __attrs_post_init__(self) -> None:
        if not 0 < self.min_interval <= self.max_interval:
            raise ConfigurationError("PollPolicy needs 0 < min_interval <= max_interval")
        if not 0 <= self.jitter < 1 or self.target_pages < 1:
            raise ConfigurationError("PollPolicy needs 0 <= jitter < 1 and target_pages >= 1")
        if not 0 < self.min_backoff <= self.max_backoff:
            raise ConfigurationError("PollPolicy needs 0 < min_backoff <= max_backoff")

    def next_interval(self, current: float, pages: int) -> float:
        """The interval after a poll that read ``pages`` pages."""
        grown = current * self.target_pages / pages if pages > self.target_pages else current * 1.5
        return float(min(self.max_interval, max(self.min_interval, grown)))

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row."""
        return min(self.max_backoff, self.min_backoff * 2.0 ** max(0, failures - 1))


@frozen
class FleetEvent:
    """Something the operator may want to know about one shop."""

    shop_id: str
    kind: EventKind
    error: BaseException | None = None


@define
class _Tally:
    """What the fleet keeps of one shop's polls (``status()`` shows it as a ``ShopStatus``)."""

    state: State = "due"
    interval: float = 0.0
    polls: int = 0
    delivered: int = 0
    failures: int = 0
    last_error: str | None = None
    error: BaseException | None = None


class FleetOptions(SyncerOptions, total=False):
    """The options of ``Fleet`` a ``Worker`` hands on to its fleet, with the ``Syncer``'s.

    Their meaning, defaults and checks are ``Fleet``'s and ``Syncer``'s (one definition);
    ``policy`` and ``on_event`` are the ``Worker``'s own arguments.
    """

    concurrency: int
    turn_batches: int
    seed: int | None
    clock: Clock | None


@define
class _Entry:
    shop: Shop
    status: _Tally
    policy: PollPolicy
    due: float = 0.0
    generation: int = 0
    read_generation: int = 0
    batches: AsyncGenerator[Batch, None] | None = None
    poll_pages: int = 0
    queued: bool = False
    removed: bool = False
    waiters: list[asyncio.Future[None]] = field(factory=list)
    read_started: float = 0.0
    early: float | None = None  # a poll starting at or after this monotonic time was asked for
    missed: int = 0  # trades this poll delivered that push had not
    delivering: asyncio.Lock = field(factory=asyncio.Lock)  # one handler call per shop at a time
    delivered: dict[int, tuple[datetime, str | None]] = field(factory=dict)  # tid -> newest (modified, status)


class _Stop(Exception):
    pass


class Fleet:
    """Sync many shops concurrently with one client (one rate limit, one ban gate).

    Args:
        client: the app's ``TopClient``.
        store: the checkpoint store shared by all shops.
        handler: ``async handler(shop, batch)``; a batch counts as done when it returns.
        concurrency: workers, i.e. shops being read at once.
        policy: default ``PollPolicy``; ``add(..., policy=...)`` overrides per shop.
        turn_batches: batches one shop may take per turn before the next shop's turn.
        on_event: called with a ``FleetEvent`` for pauses, back-offs, handler failures, polls.
        seed: seeds the jitter of poll intervals (None: a random seed).
        clock: the clock polls and back-offs are scheduled on (default: the client's).
        **syncer_options: the fleet's one ``Syncer``'s options (``SyncerOptions``: ``lag``,
            ``page_size``, ``fullinfo``, ...), the same for every shop.

    Raises:
        ConfigurationError: an option is unknown or has a wrong type or value (it is named).
    """

    def __init__(
        self,
        client: TopClient,
        *,
        store: CheckpointStore,
        handler: Handler,
        concurrency: int = 16,
        policy: PollPolicy | None = None,
        turn_batches: int = 5,
        on_event: Callable[[FleetEvent], None] | None = None,
        seed: int | None = None,
        clock: Clock | None = None,
        **syncer_options: Unpack[SyncerOptions],
    ) -> None:
        _options.check_known("Fleet", syncer_options, SyncerOptions.__optional_keys__)
        if not callable(handler):
            raise ConfigurationError(f"handler must be an async callable handler(shop, batch), got {handler!r}")
        self.client = client
        self.handler = handler
        self.concurrency = _options.whole("concurrency", concurrency, least=1)
        if policy is not None and not isinstance(policy, PollPolicy):
            raise ConfigurationError(f"policy must be a PollPolicy (or None), got {policy!r}")
        self.policy = policy or PollPolicy()
        self.turn_batches = _options.whole("turn_batches", turn_batches, least=1)
        _options.callback("on_event", on_event)
        self.on_event = on_event
        if seed is not None and type(seed) is not int:
            raise ConfigurationError(f"seed must be an int (or None), got {seed!r}")
        self.clock: Clock = clock or client.clock
        self.syncer = Syncer(client, store=store, **syncer_options)
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._stopping = False
        self._running = False
        self._rng = random.Random(seed)
        self._tick = 0
        self._retired: list[_Entry] = []
        self._observer: PushObserver | None = None

    def __repr__(self) -> str:
        return f"Fleet({len(self._entries)} shops, concurrency={self.concurrency})"

    # -- shops -----------------------------------------------------------------------

    def add(self, shop: Shop, *, policy: PollPolicy | None = None) -> None:
        """Add a shop, or update it (e.g. a new session key, which also un-pauses it)."""
        if not isinstance(shop, Shop):
            raise ConfigurationError("add() takes a Shop(id=..., session=...)")
        entry = self._entries.get(shop.id)
        if entry is None:
            chosen = policy or self.policy
            entry = _Entry(shop=shop, status=_Tally(interval=chosen.min_interval), policy=chosen)
            self._entries[shop.id] = entry
        else:
            entry.shop = shop
            entry.policy = policy or entry.policy
            entry.generation += 1  # a read in progress uses the old session: drop it
            entry.status.failures = 0
            entry.status.last_error = None
            entry.status.error = None
            if entry.status.state == "syncing" or entry.queued:
                return  # its turn is running or coming: it sees the new generation and restarts
        self._schedule(entry, 0.0, "due")

    def remove(self, shop_id: str) -> None:
        """Stop syncing a shop (its checkpoint stays in the store)."""
        entry = self._entries.pop(shop_id, None)
        if entry is not None:
            entry.removed = True
            if entry.batches is None:
                self.syncer.forget(shop_id)  # else once its open read is closed
            self._release(entry, None)
            entry.generation += 1
            self._retired.append(entry)  # its open read is closed by the scheduler, not left to GC
            self._wake.set()
            if self._observer is not None:
                self._observer.shop_removed(shop_id)
            self._emit(FleetEvent(shop_id, "removed"))

    def wake(self, shop_id: str | None = None, *, delay: float = 0.0) -> None:
        """Poll a waiting shop (or every waiting shop) ``delay`` seconds from now at the latest,
        e.g. when a TMC message says it changed.

        A shop reading now polls again after ``delay`` if this read started too early; shops
        backing off or paused are left alone.
        """
        entries = [self._entries[shop_id]] if shop_id is not None else list(self._entries.values())
        at = self.clock.monotonic() + max(0.0, delay)
        for entry in entries:
            if entry.status.state in ("backing_off", "paused"):
                continue
            entry.early = at if entry.early is None else min(entry.early, at)
            if entry.status.state == "waiting" and not entry.queued and entry.due > at:
                self._schedule(entry, max(0.0, delay), "waiting")

    def observe_push(self, observer: PushObserver | None) -> None:
        """Tell ``observer`` of every completed poll (one at a time; ``TmcConsumer`` does this)."""
        self._observer = observer

    async def deliver_pushed(self, shop_id: str, trades: Sequence[Trade]) -> int:
        """Hand trades a push message announced to the handler; never moves a checkpoint.

        Versions already handed over (by polling or push) are left out; the rest go to the
        handler as one ``Batch`` with ``phase="push"`` (its window: the seconds they were
        modified in), never while the handler is busy with the same shop.
        Returns how many trades the handler took. The handler's exceptions propagate (and
        are reported as ``handler_failed``); nothing is remembered as delivered then.
        """
        entry = self._entries.get(shop_id)
        if entry is None:
            raise ConfigurationError(f"shop {shop_id!r} is not in this fleet")
        async with entry.delivering:
            fresh = [trade for trade in trades if not self._known(entry, trade)]
            if not fresh:
                return 0
            start = floor_second(min(trade.modified for trade in fresh))
            end = floor_second(max(trade.modified for trade in fresh)) + SECOND
            batch = Batch(
                shop_id=shop_id,
                phase="push",
                window=Window(start, end, self.syncer.types, commits=False),
                trades=tuple(fresh),
            )
            try:
                await self.handler(entry.shop, batch)
            except Exception as exc:
                self._emit(FleetEvent(shop_id, "handler_failed", exc))
                raise
            self._remember(entry, fresh)
            entry.status.delivered += len(fresh)
            return len(fresh)

    @staticmethod
    def _known(entry: _Entry, trade: Trade) -> bool:
        """Whether this version (or a newer one) of the trade was handed over already.

        Times are whole seconds: two versions in one second (created, then paid at once) print
        the same ``modified``, so within a second only the same status counts as known.
        """
        newest = entry.delivered.get(trade.tid)
        if newest is None:
            return False
        modified, status = newest
        return modified > trade.modified or (modified == trade.modified and status == trade.status)

    @staticmethod
    def _remember(entry: _Entry, trades: Sequence[Trade]) -> None:
        remembered = entry.delivered
        for trade in trades:
            newest = remembered.pop(trade.tid, None)  # re-inserted last: the dict is oldest first
            version = (trade.modified, trade.status)
            remembered[trade.tid] = version if newest is None or newest[0] <= trade.modified else newest
        while len(remembered) > _REMEMBERED:
            del remembered[next(iter(remembered))]

    def shop(self, shop_id: str) -> Shop:
        """The shop as last added (with its current session)."""
        return self._entries[shop_id].shop

    @property
    def shop_ids(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, shop_id: object) -> bool:
        """Whether the fleet syncs this shop (cheaper than ``shop_id in fleet.shop_ids``)."""
        return shop_id in self._entries

    def status(self, shop_id: str) -> ShopStatus:
        """One shop's status now, with its schedule (a snapshot: ask again for a newer one)."""
        entry = self._entries[shop_id]
        tally = entry.status
        progress = self.syncer.progress(shop_id)
        known = progress.cursor is not None
        next_poll_in = (
            max(0.0, entry.due - self.clock.monotonic()) if tally.state in ("waiting", "backing_off") else None
        )
        return ShopStatus(
            shop_id=shop_id,
            state=tally.state,
            phase=("increments" if progress.backfill_done else "backfill") if known else None,
            position=progress.position,
            behind=progress.behind,
            last_error=tally.last_error,
            error=tally.error,
            delivered=tally.delivered,
            calls=progress.calls,
            schedule=Schedule(
                interval=tally.interval, next_poll_in=next_poll_in, polls=tally.polls, failures=tally.failures
            ),
        )

    def statuses(self) -> list[ShopStatus]:
        """Every shop's status, by id."""
        return [self.status(shop_id) for shop_id in self.shop_ids]

    async def next_poll(self, shop_id: str) -> None:
        """Wait until the shop's next poll completes (it has caught up to Taobao's now - lag).

        A poll already completed does not count, nor one completing before this is awaited.
        Raises the shop's error if it is paused instead, and ``asyncio.CancelledError`` if it is
        removed or the fleet stops first.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._entries[shop_id].waiters.append(future)
        await future

    def polled(self, shop_id: str) -> Awaitable[None]:
        """Deprecated name of ``next_poll`` (it waits for the *next* poll); goes in the next release."""
        warnings.warn(
            "Fleet.polled() is deprecated: use Fleet.next_poll() (the same wait)", DeprecationWarning, stacklevel=2
        )
        return self.next_poll(shop_id)

    # -- running ---------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run()`` to return; no partial window is committed."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Sync every shop until ``stop()`` is called or the task is cancelled."""
        if self._running:
            raise ConfigurationError("this Fleet is already running")
        self._running = True
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._schedule_loop())
                for _ in range(self.concurrency):
                    group.create_task(self._worker())
        except* _Stop:
            pass
        finally:
            self._running = False
            self._stopping = False
            for entry in [*self._entries.values(), *self._retired]:
                await self._drop_read(entry)
                self._release(entry, None)
                if entry.status.state == "syncing":
                    entry.status.state = "due"
            self._retired.clear()

    async def _schedule_loop(self) -> None:
        while True:
            if self._stopping:
                raise _Stop
            while self._retired:
                retired = self._retired.pop()
                if retired.status.state != "syncing":
                    await self._drop_read(retired)
            now = self.clock.monotonic()
            while self._heap and self._heap[0][0] <= now:
                due, _, shop_id = heapq.heappop(self._heap)
                entry = self._entries.get(shop_id)
                if entry is None or entry.queued or due != entry.due:
                    continue  # removed, already in line, or rescheduled since
                entry.queued = True
                self._ready.put_nowait(shop_id)
            timeout = self._heap[0][0] - now if self._heap else None
            self._wake.clear()
            await wait_until_set(self._wake, timeout, clock=self.clock)

    def _schedule(self, entry: _Entry, delay: float, state: State) -> None:
        entry.status.state = state
        entry.due = self.clock.monotonic() + delay
        self._tick += 1
        heapq.heappush(self._heap, (entry.due, self._tick, entry.shop.id))
        self._wake.set()

    async def _worker(self) -> None:
        while True:
            shop_id = await self._ready.get()
            entry = self._entries.get(shop_id)
            if entry is None:
                continue
            entry.queued = False
            await self._turn(entry)

    async def _turn(self, entry: _Entry) -> None:
        """Up to ``turn_batches`` batches of one shop, then back in line (or done for now)."""
        status = entry.status
        status.state = "syncing"
        generation = entry.generation
        if entry.batches is not None and entry.read_generation != generation:
            await self._drop_read(entry)  # updated between turns: its read used the old session
        if entry.batches is None:
            entry.batches = self.syncer.batches(entry.shop)
            entry.read_generation = generation
            entry.poll_pages = self.syncer.progress(entry.shop.id).pages
            entry.read_started = self.clock.monotonic()
            entry.missed = 0
        taken = 0
        try:
            while taken < self.turn_batches:
                try:
                    batch = await anext(entry.batches)
                except StopAsyncIteration:
                    self._finish_poll(entry)
                    return
                if entry.generation != generation:
                    await self._drop_read(entry)
                    if not entry.removed:
                        self._schedule(entry, 0.0, "due")
                    return
                try:
                    delivered = await self._deliver_polled(entry, batch)
                except Exception as exc:  # the handler is user code: report, back off, re-read
                    logger.exception(
                        "shop %s: handler failed; the batch will be delivered again",
                        entry.shop.id, extra={"shop_id": entry.shop.id},
                    )  # fmt: skip
                    await self._fail(entry, exc, "handler_failed")
                    return
                status.delivered += delivered
                taken += 1
            if entry.removed:
                await self._drop_read(entry)
            else:
                self._schedule(entry, 0.0, "due")  # more to read: back in line behind the shops waiting
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # decided by type; whatever it is stays with this shop
            error = typed_error(exc)
            if needs_operator(error):
                await self._pause(entry, error)
            else:  # transient trouble, store trouble, or a bug
                logger.warning("shop %s: sync failed: %s", entry.shop.id, error, extra={"shop_id": entry.shop.id})
                await self._fail(entry, error, "backing_off")

    async def _deliver_polled(self, entry: _Entry, batch: Batch) -> int:
        """Hand a polled batch over, less the versions push delivered already."""
        async with entry.delivering:
            fresh = tuple(trade for trade in batch.trades if not self._known(entry, trade))
            if fresh:
                partial = batch if len(fresh) == len(batch.trades) else evolve(batch, trades=fresh)
                await self.handler(entry.shop, partial)
                if self._observer is not None:
                    self._remember(entry, fresh)
            entry.missed += len(fresh)
            return len(fresh)

    def _finish_poll(self, entry: _Entry) -> None:
        entry.batches = None
        status = entry.status
        pages = self.syncer.progress(entry.shop.id).pages - entry.poll_pages
        status.polls += 1
        status.failures = 0
        status.last_error = None
        status.error = None
        status.interval = entry.policy.next_interval(status.interval or entry.policy.min_interval, pages)
        delay = self._jittered(status.interval, entry.policy)
        if entry.early is not None and entry.read_started >= entry.early:
            entry.early = None  # this poll started late enough to read what the wake was for
        if self._observer is not None:
            try:
                relaxed = self._observer.poll_finished(entry.shop.id, entry.missed)
            except Exception:
                logger.exception("push observer failed after a poll of %s", entry.shop.id)
                relaxed = None
            if relaxed is not None:
                delay = max(delay, self._jittered(relaxed, entry.policy))
        if entry.early is not None:  # a wake this poll started too early for (or one during it)
            delay = min(delay, max(0.0, entry.early - self.clock.monotonic()))
        self._schedule(entry, delay, "waiting")
        self._emit(FleetEvent(entry.shop.id, "synced"))
        self._release(entry, None, polled=True)

    @staticmethod
    def _release(entry: _Entry, error: BaseException | None, *, polled: bool = False) -> None:
        """Wake everyone waiting in ``next_poll()`` for this shop."""
        for waiter in entry.waiters:
            if waiter.done():
                continue
            if polled:
                waiter.set_result(None)
            elif error is not None:
                waiter.set_exception(error)
            else:
                waiter.cancel()
        entry.waiters.clear()

    def _jittered(self, seconds: float, policy: PollPolicy) -> float:
        return seconds * (1 + self._rng.uniform(-policy.jitter, policy.jitter))

    async def _pause(self, entry: _Entry, exc: BaseException) -> None:
        await self._drop_read(entry)
        entry.status.state = "paused"
        entry.status.last_error = f"{type(exc).__name__}: {exc}"
        entry.status.error = exc
        logger.warning("shop %s paused until it is updated: %s", entry.shop.id, exc, extra={"shop_id": entry.shop.id})
        self._emit(FleetEvent(entry.shop.id, "paused", exc))
        self._release(entry, exc)

    async def _fail(self, entry: _Entry, exc: BaseException, kind: EventKind) -> None:
        await self._drop_read(entry)
        status = entry.status
        status.failures += 1
        status.last_error = f"{type(exc).__name__}: {exc}"
        status.error = exc
        delay = entry.policy.backoff(status.failures)
        if isinstance(exc, RateLimitedError) and exc.retry_after:
            delay = max(delay, exc.retry_after)  # a long ban: nothing of this app gets through before
        self._schedule(entry, self._jittered(delay, entry.policy), "backing_off")
        self._emit(FleetEvent(entry.shop.id, kind, exc))

    async def _drop_read(self, entry: _Entry) -> None:
        """Abandon the shop's read in progress: its open window is not committed."""
        batches, entry.batches = entry.batches, None
        if batches is not None:
            await batches.aclose()
        if entry.removed:
            self.syncer.forget(entry.shop.id)  # nothing kept per shop outlives its place in the fleet

    def _emit(self, event: FleetEvent) -> None:
        tell(self.on_event, event)


def tell(on_event: Callable[[FleetEvent], None] | None, event: FleetEvent) -> None:
    """Call ``on_event`` (user code) with ``event``; its failure is logged, never raised into the sync."""
    if on_event is not None:
        try:
            on_event(event)
        except Exception:
            logger.exception("on_event callback failed for %s", event)
