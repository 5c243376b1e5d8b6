"""``Worker``: one of many processes sharing an app's shops and rate budget through PostgreSQL.

Each worker runs a ``Fleet`` over the shops it leases. A heartbeat every
``lease / 3`` seconds renews its leases (with each shop's state, lag and cost
for ``status``), counts the live workers, takes ``rate / live`` of the app's
budget (no more than the others' reported rates leave, so a newcomer starts as
soon as the others have made room, and a lone worker at once), honours the
app-wide ``ban_until``, and claims or gives back shops so
that every worker holds a fair share (``_lease.rebalance``). A worker that dies
stops renewing; its shops are claimed by the others as soon as the leases run
out. Every checkpoint commit carries the fencing token its read began under, so
a worker that comes back from a long pause cannot commit over the new owner.

With ``run(push=TmcConsumer(worker.fleet))``, the worker also consumes the app's TMC
messages: those of its own shops are delivered as in a ``Fleet``; those of shops another
worker holds go to the ``push_inbox`` table, which that worker drains (woken by NOTIFY,
and at every heartbeat), and are confirmed to TMC once it delivered them.

Session keys are never stored: ``sessions(shop_id)`` (the application's
callback) gives each shop's key when the worker claims it, and again when the
shop's session stops working.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Sequence
from typing import Any, Final, Unpack

from attrs import evolve

from taobao_ordersync import _options
from taobao_ordersync._lease import MIN_SHARE, LeaseRow, rebalance
from taobao_ordersync.client import TopClient
from taobao_ordersync.clock import wait_until_set
from taobao_ordersync.errors import (
    AuthenticationError,
    CheckpointConflictError,
    CheckpointError,
    ConfigurationError,
    HeartbeatFailedError,
    LeaseLostError,
    SessionUnavailableError,
    StoreUnavailableError,
    TaobaoOrderSyncError,
)
from taobao_ordersync.fleet import Fleet, FleetEvent, FleetOptions, Handler, PollPolicy, tell
from taobao_ordersync.models import Shop
from taobao_ordersync.postgres import Heartbeat, PostgresStore, PushedMessage
from taobao_ordersync.status import Lease, ShopStatus
from taobao_ordersync.tmc import TmcConsumer, TmcMessage, tmc_user_permit

__all__ = ["PushInbox", "SessionProvider", "Worker"]

logger = logging.getLogger("taobao_ordersync.worker")

SessionProvider = Callable[[str], Awaitable[str | None] | str | None]
_WEIGHT_SMOOTHING: Final = 0.3  # share of the newest measurement in a shop's weight
_RELEASABLE: Final = frozenset({"waiting", "backing_off", "paused", "due"})
_SESSION_LOOKUPS: Final = 16  # provider calls in flight at once


class PushInbox:
    """The ``PushRelay`` of PostgreSQL workers: TMC messages wait in ``push_inbox`` for the
    worker holding their shop, and are confirmed by the one that consumed them once delivered."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"PushInbox({self.store.where})"

    async def forward(self, shop_id: str, message: TmcMessage) -> bool:
        return await self.store.forward_push(
            PushedMessage(
                message_id=message.id, shop_id=shop_id, tid=message.tid, topic=message.topic, pub_time=message.pub_time
            )
        )

    async def settled(self, message_ids: Collection[int]) -> set[int]:
        return await self.store.push_settled(list(message_ids))

    async def delivered(self, message_ids: Sequence[int]) -> None:
        await self.store.push_delivered(message_ids)

    async def take(self, shop_ids: Sequence[str]) -> list[tuple[str, TmcMessage]]:
        """The messages waiting for these shops, as the consumer takes them."""
        return [
            (row.shop_id, TmcMessage(id=row.message_id, topic=row.topic, content=_content(row), pub_time=row.pub_time))
            for row in await self.store.take_push(shop_ids)
        ]


def _content(row: PushedMessage) -> dict[str, Any]:
    return {} if row.tid is None else {"tid": row.tid}


class Worker:
    """Sync this process's share of the shops registered in PostgreSQL, until stopped.

    Args:
        client: the app's ``TopClient``; its ``rate`` is the whole app's budget, of which
            this worker uses ``rate / live workers``.
        store: the shared ``PostgresStore`` (registry, leases, checkpoints).
        handler: ``async handler(shop, batch)``, as for ``Fleet``.
        sessions: ``sessions(shop_id) -> session key`` (sync or async); None or an
            exception means "not available now": the shop is reported and retried.
        worker_id: a unique name (default: host, pid and a random suffix).
        lease: seconds a lease lasts without renewal; a dead worker's shops move after it.
        heartbeat: seconds between renewals (default ``lease / 3``).
        release_paused_after: seconds a shop may stay paused (an invalid session, no session, a
            bad request) before this worker gives its lease back, and then leaves it to the other
            workers for as long (default: three leases). Another worker, perhaps a newer release or
            one whose provider has a working session, may take it.
        on_event: called with each ``FleetEvent`` (lease losses are ``paused`` events
            carrying ``LeaseLostError``; session trouble carries ``SessionUnavailableError``).
        policy: the fleet's ``PollPolicy``.
        min_stay: seconds a shop stays with this worker before it may be handed over to spread heavy
            shops (a flash sale that made some of its shops heavy later); default ``max(60, 4 x lease)``.
        give_up_after: seconds of failing heartbeats (counted from the last renewal) after which
            ``run()`` ends with ``HeartbeatFailedError`` rather than keep trying (default 300; None:
            never). Past one lease the worker holds nothing, and says so at ``ERROR`` once a lease.
        **fleet_options: the worker's ``Fleet``'s options (``FleetOptions``: ``concurrency``,
            ``turn_batches``, ...) and its ``Syncer``'s (``lag``, ``fullinfo``, ...).

    Raises:
        ConfigurationError: an option is unknown or has a wrong type or value (it is named).
    """

    def __init__(
        self,
        client: TopClient,
        store: PostgresStore,
        handler: Handler,
        sessions: SessionProvider,
        *,
        worker_id: str | None = None,
        lease: float = 30.0,
        heartbeat: float | None = None,
        release_paused_after: float | None = None,
        on_event: Callable[[FleetEvent], None] | None = None,
        policy: PollPolicy | None = None,
        give_up_after: float | None = 300.0,
        min_stay: float | None = None,
        **fleet_options: Unpack[FleetOptions],
    ) -> None:
        _options.check_known("Worker", fleet_options, FleetOptions.__optional_keys__)
        if not isinstance(store, PostgresStore):
            raise ConfigurationError("Worker needs a PostgresStore")
        if not callable(sessions):
            raise ConfigurationError("sessions must be a callable: sessions(shop_id) -> session key")
        lease = _options.seconds("lease", lease)
        self.heartbeat_every = _options.seconds("heartbeat", heartbeat) if heartbeat is not None else lease / 3
        if not self.heartbeat_every < lease:
            raise ConfigurationError("heartbeat must be shorter than the lease")
        self.release_paused_after = (
            _options.seconds("release_paused_after", release_paused_after)
            if release_paused_after is not None
            else 3 * lease
        )
        if give_up_after is not None and not _options.seconds("give_up_after", give_up_after) >= lease:
            raise ConfigurationError("give_up_after must be at least the lease (or None: never give up)")
        self.give_up_after = give_up_after
        self.min_stay = (
            _options.seconds("min_stay", min_stay, positive=False) if min_stay is not None else max(60.0, 4 * lease)
        )
        self.handed_over = 0  # heavy shops given back to spread them
        self.client = client
        self.store = store
        self.sessions = sessions
        self._host = socket.gethostname()
        self.worker_id = worker_id or f"{self._host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease = lease
        self.budget = client.rate  # the whole app's calls per second
        self.on_event = on_event
        self.live_workers = 1
        self.share = 0.0  # calls per second this worker may send (0 until the others have made room)
        self._asked_for_room = False
        self._tokens: dict[str, int] = {}  # the shops held now, with their fencing tokens
        self._sessions: dict[str, str] = {}
        self._unresolved: set[str] = set()
        self._resolving: set[str] = set()
        self._weights: dict[str, float] = {}
        self._paused_since: dict[str, float] = {}  # held shops found paused, since when
        self._left_alone: dict[str, float] = {}  # shops given back while paused: not claimed again before
        self._calls_seen: dict[str, tuple[int, float]] = {}
        self.fleet = Fleet(
            client,
            # Each read commits with the token it began under: a turn still running for a shop this
            # worker has lost is refused by the database, the only judge of who holds a lease.
            store=store.fenced(self.worker_id, self._tokens),
            handler=handler,
            on_event=self._fleet_event,
            policy=policy,
            **fleet_options,
        )
        self.clock = self.fleet.clock  # heartbeats run on the same injected clock as the polls
        self._stopping = asyncio.Event()
        self._nudge = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_renewal: float | None = None
        self._failing_since: float | None = None  # the first failed heartbeat since the last renewal
        self._outcry_at: float | None = None  # the last ERROR about it
        self.heartbeat_error: str | None = None  # "Type: message" of the last heartbeat, while they fail
        self._next_expiry: float | None = None
        self._listener: Any = None
        self.push_inbox = PushInbox(store)
        self._push: TmcConsumer | None = None
        self._push_due: set[str] = set()  # shops with messages in the inbox, as NOTIFY told
        self._push_wake = asyncio.Event()
        self._permitted: set[str] = set()  # shops whose TMC permit this process has sent (or is sending)
        self.heartbeats = 0
        self.bans_notified = 0  # bans other workers shared by NOTIFY

    def __repr__(self) -> str:
        return f"Worker({self.worker_id!r}, {len(self._tokens)} shops, {self.store!r})"

    @property
    def shop_ids(self) -> list[str]:
        """The shops this worker holds a lease on."""
        return sorted(self._tokens)

    @property
    def heartbeat_failing_for(self) -> float | None:
        """Seconds since the last renewal (or the first attempt) while heartbeats fail; None while they work."""
        if self._failing_since is None:
            return None
        since = self._last_renewal if self._last_renewal is not None else self._failing_since
        return self.clock.monotonic() - since

    def stop(self) -> None:
        """Ask ``run()`` to finish: no partial window is committed, and every lease is released."""
        self._stopping.set()
        self._nudge.set()

    async def run(self, *, push: TmcConsumer | None = None) -> None:
        """Heartbeat, claim and sync until ``stop()`` (or cancellation, which skips the release).

        ``push``: a ``TmcConsumer`` of this worker's ``fleet`` to run alongside (its ``relay`` is
        set to ``push_inbox`` when None). Each shop held is permitted once per process
        (``taobao.tmc.user.permit``, one call), so its seller's messages are published.
        """
        if push is not None:
            if push.fleet is not self.fleet:
                raise ConfigurationError("push must be a TmcConsumer of this worker's fleet: TmcConsumer(worker.fleet)")
            if push.relay is None:
                push.relay = self.push_inbox
            elif push.relay is not self.push_inbox:
                raise ConfigurationError("a worker's TmcConsumer relays through worker.push_inbox (leave relay=None)")
        self._push = push
        await self.store.open()
        self._listener = await self._listen()
        self.client.on_ban = self._ban_seen
        fleet = asyncio.create_task(self.fleet.run(), name=f"fleet {self.worker_id}")
        helpers = []
        if push is not None:
            helpers = [
                asyncio.create_task(push.run(), name=f"tmc {self.worker_id}"),
                asyncio.create_task(self._drain_push(push), name=f"push inbox {self.worker_id}"),
            ]
        try:
            # The first heartbeat registers us; shops and budget are taken once the others' reported
            # rates leave room (_lease.rate_share): at once when nobody else is live, else as soon as
            # each of them has lowered its own rate at its heartbeat.
            while not self._stopping.is_set():
                await self._beat(claim=True)
                await self._sleep(self._next_beat_in())
                if fleet.done():
                    fleet.result()  # a crashed fleet ends the worker with its error
                    break
        finally:
            self.client.on_ban = None
            for task in list(self._tasks):  # session lookups must not add shops to a stopping fleet
                task.cancel()
            if push is not None:
                push.stop()
                helpers[1].cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
            self.fleet.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await fleet
            if self._stopping.is_set():
                with contextlib.suppress(CheckpointError):
                    released = await self.store.retire(self.worker_id)
                    logger.info("worker %s released %d shops", self.worker_id, released)
            if self._listener is not None:
                with contextlib.suppress(Exception):
                    await self._listener.close()

    # -- heartbeat ---------------------------------------------------------------------

    async def _beat(self, *, claim: bool) -> None:
        try:
            beat = await self.store.heartbeat(
                self.worker_id,
                host=self._host,
                pid=os.getpid(),
                lease=self.lease,
                budget=self.budget,
                reports=self._reports(),
            )
        except CheckpointError as exc:
            await self._renewal_failed(exc)
            return
        self.heartbeats += 1
        now = self.clock.monotonic()
        failed_for = self.heartbeat_failing_for
        if failed_for is not None:
            (logger.warning if failed_for > self.lease else logger.info)(
                "worker %s: heartbeat renewed again after %.0f s of failures", self.worker_id, failed_for
            )
            self._failing_since = self._outcry_at = self.heartbeat_error = None
        if self._last_renewal is not None and now - self._last_renewal > self.lease:
            # Back after an outage: the others may not have re-registered yet, so the live count is
            # low. Take no shops this beat; the next beat sees them all.
            claim = False
        self._last_renewal = now
        if self._listener is None or self._listener.is_closed():
            self._listener = await self._listen()  # notifications died with the old connection
        self._next_expiry = beat.next_expiry
        for shop_id in set(self._tokens) - beat.renewed:
            self._drop(shop_id, "its lease was taken over or the shop was removed")
        self.live_workers = beat.live_workers
        self.share = beat.rate
        # Nothing to send before the others make room; a sliver keeps the client valid meanwhile.
        self.client.rate = beat.rate or MIN_SHARE * self.budget / beat.live_workers
        self.client.hold(beat.ban_left)
        if beat.rate == 0 and not self._asked_for_room:
            self._asked_for_room = True  # once: wake the others, so they lower their rates now
            with contextlib.suppress(CheckpointError):
                await self.store.nudge()
        if self._push is not None:
            self._permit_soon()
            self._push_due.update(self._tokens)  # a NOTIFY may have been missed: look at every shop held
            self._push_wake.set()
        if claim and beat.rate > 0:
            try:
                released = await self._release_paused()
                await self._rebalance(beat, released)
            except CheckpointError as exc:  # the database went away mid-beat: the next beat tries again
                logger.warning("worker %s: rebalancing failed: %s", self.worker_id, exc)

    async def _rebalance(self, beat: Heartbeat, released: set[str]) -> None:
        self._retry_sessions()
        rows = [LeaseRow(row.shop_id, None, row.weight) if row.shop_id in released else row for row in beat.rows]
        plan = rebalance(rows, self.worker_id, beat.live_workers, min_stay=self.min_stay)
        if plan.idle:
            return
        await self._give_back(plan.release, plan.release_count)
        now = self.clock.monotonic()
        await self._hand_over(plan.hand_over, now)
        self._left_alone = {shop_id: until for shop_id, until in self._left_alone.items() if until > now}
        candidates = [shop_id for shop_id in plan.candidates if shop_id not in self._left_alone]
        # A claim whose reply is lost leaves shops leased to us unknowingly: they expire and move on.
        claimed = await self.store.claim(self.worker_id, candidates, plan.claim, lease=self.lease)
        for shop_id, token in claimed.items():
            self._tokens[shop_id] = token
        self._open_soon(claimed)

    async def _release_paused(self) -> set[str]:
        """Give back the shops paused for ``release_paused_after``: a lease held while doing nothing
        keeps the shop from a worker that might sync it (rule 18)."""
        now = self.clock.monotonic()
        stale: set[str] = set()
        for shop_id in self._tokens:
            if not self._is_paused(shop_id):
                self._paused_since.pop(shop_id, None)
            elif now - self._paused_since.setdefault(shop_id, now) >= self.release_paused_after:
                stale.add(shop_id)
        if not stale:
            return stale
        for shop_id in stale:
            self._forget(shop_id)
            self._left_alone[shop_id] = now + self.release_paused_after
        await self.store.release(self.worker_id, sorted(stale))
        logger.warning(
            "worker %s gave back %d shops paused for %.0f s: %s",
            self.worker_id, len(stale), self.release_paused_after, ", ".join(sorted(stale)),
        )  # fmt: skip
        return stale

    def _is_paused(self, shop_id: str) -> bool:
        if shop_id in self._unresolved:
            return True
        return shop_id in self.fleet and self.fleet.status(shop_id).state == "paused"

    async def _renewal_failed(self, exc: CheckpointError) -> None:
        now = self.clock.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        self.heartbeat_error = f"{type(exc).__name__}: {exc}"
        failing_for = now - (self._last_renewal if self._last_renewal is not None else self._failing_since)
        gave_up = self.give_up_after is not None and failing_for >= self.give_up_after
        if failing_for <= self.lease:
            logger.warning("worker %s: heartbeat failed: %s", self.worker_id, exc)
        else:
            # Our leases have run out: others may take the shops once the database is back.
            for shop_id in list(self._tokens):
                self._drop(shop_id, "its lease could not be renewed")
            if self._outcry_at is None or now - self._outcry_at >= self.lease:
                self._outcry_at = now
                ending = (
                    f"; it gives up in {max(0.0, self.give_up_after - failing_for):.0f} s"
                    if self.give_up_after is not None
                    else ""
                )
                logger.error(
                    "worker %s: no heartbeat for %.0f s, longer than its %.0f s lease: it holds no shop and syncs "
                    "nothing until PostgreSQL accepts its heartbeat again%s. Last error: %s",
                    self.worker_id, failing_for, self.lease, ending, exc,
                )  # fmt: skip
            else:
                logger.warning("worker %s: heartbeat failed: %s", self.worker_id, exc)
        if not isinstance(exc, StoreUnavailableError):  # the database answered: `status` can show it
            with contextlib.suppress(CheckpointError):
                await self.store.report_heartbeat_failure(
                    self.worker_id,
                    host=self._host,
                    pid=os.getpid(),
                    error=f"gave up: {self.heartbeat_error}" if gave_up else self.heartbeat_error,
                    failing_for=failing_for,
                )
        if gave_up:
            raise HeartbeatFailedError(
                f"worker {self.worker_id}: no heartbeat for {failing_for:.0f} s, giving up (give_up_after "
                f"{self.give_up_after:.0f} s); the last error: {exc}"
            ) from exc

    def _next_beat_in(self) -> float:
        # Wake when someone else's lease runs out, so a dead worker's shops move within one lease.
        expiry = self._next_expiry
        every = self.heartbeat_every if self.share > 0 else self.heartbeat_every / 4  # waiting for room: look often
        if expiry is not None and 0 <= expiry < every:
            return expiry + 0.05
        return every

    def _reports(self) -> list[ShopStatus]:
        """Each held shop's status with its lease, as the heartbeat writes it to the registry."""
        now = self.clock.monotonic()
        reports: list[ShopStatus] = []
        for shop_id, token in self._tokens.items():
            if shop_id not in self.fleet:
                if shop_id in self._unresolved:
                    state, error = "paused", f"SessionUnavailableError: no session for shop {shop_id!r}"
                else:
                    state, error = "claimed", None  # its session is being looked up
                lease = Lease(owner=self.worker_id, token=token, weight=self._weights.get(shop_id, 0.0))
                reports.append(ShopStatus(shop_id=shop_id, state=state, last_error=error, lease=lease))
                continue
            status = self.fleet.status(shop_id)
            calls_before, seen_at = self._calls_seen.get(shop_id, (status.calls, now))
            if now > seen_at:
                per_minute = max(0, status.calls - calls_before) * 60.0 / (now - seen_at)
                old = self._weights.get(shop_id, per_minute)
                self._weights[shop_id] = old + _WEIGHT_SMOOTHING * (per_minute - old)
            self._calls_seen[shop_id] = (status.calls, now)
            lease = Lease(owner=self.worker_id, token=token, weight=self._weights.get(shop_id, 0.0))
            reports.append(evolve(status, lease=lease))
        return reports

    async def _give_back(self, candidates: tuple[str, ...], count: int) -> None:
        if count <= 0:
            return
        chosen = [
            shop_id
            for shop_id in candidates
            if shop_id in self._tokens
            and (shop_id not in self.fleet or self.fleet.status(shop_id).state in _RELEASABLE)
        ][:count]
        for shop_id in chosen:
            self._forget(shop_id)
        if chosen:
            await self.store.release(self.worker_id, chosen)
            logger.info("worker %s gave back %d shops to rebalance", self.worker_id, len(chosen))

    async def _hand_over(self, shop_ids: tuple[str, ...], now: float) -> None:
        """Give heavy shops back for a worker short of them; not claimed again by this one for ``min_stay``."""
        chosen = [
            shop_id
            for shop_id in shop_ids
            if shop_id in self._tokens
            and (shop_id not in self.fleet or self.fleet.status(shop_id).state in _RELEASABLE)
        ]
        if not chosen:
            return  # reading now: next heartbeat
        for shop_id in chosen:
            self._forget(shop_id)
            self._left_alone[shop_id] = now + max(self.min_stay, self.lease)
        self.handed_over += len(chosen)
        await self.store.release(self.worker_id, chosen)
        logger.info("worker %s handed over heavy shops %s", self.worker_id, ", ".join(chosen))

    # -- shops -------------------------------------------------------------------------

    def _open_soon(self, shop_ids: Iterable[str]) -> None:
        """Look the shops' sessions up and start them, off the heartbeat: a slow provider must
        never delay the renewals that keep this worker's leases."""
        wanted = [shop_id for shop_id in shop_ids if shop_id not in self._resolving]
        if wanted:
            self._resolving.update(wanted)
            self._spawn(self._open_many(wanted))

    async def _open_many(self, shop_ids: list[str]) -> None:
        lookups = asyncio.Semaphore(_SESSION_LOOKUPS)

        async def open_one(shop_id: str) -> None:
            try:
                async with lookups:
                    await self._open(shop_id)
            finally:
                self._resolving.discard(shop_id)

        await asyncio.gather(*(open_one(shop_id) for shop_id in shop_ids))

    async def _open(self, shop_id: str) -> None:
        session = await self._resolve(shop_id)
        if session is None or shop_id not in self._tokens:
            return  # no session yet (retried next heartbeat), or the shop moved on meanwhile
        if shop_id not in self.fleet or session != self._sessions.get(shop_id):
            self._sessions[shop_id] = session
            self.fleet.add(Shop(id=shop_id, session=session))  # a new session also un-pauses it

    async def _resolve(self, shop_id: str) -> str | None:
        try:
            result = self.sessions(shop_id)
            session = await result if inspect.isawaitable(result) else result
            if not isinstance(session, str) or not session.strip():
                raise SessionUnavailableError(f"the session provider has no session for shop {shop_id!r}")
        except Exception as exc:
            error = exc if isinstance(exc, SessionUnavailableError) else SessionUnavailableError(
                f"the session provider failed for shop {shop_id!r}: {type(exc).__name__}"
            )  # fmt: skip
            first = shop_id not in self._unresolved
            self._unresolved.add(shop_id)
            if first:
                logger.warning("worker %s: %s; retrying every heartbeat", self.worker_id, error)
                tell(self.on_event, FleetEvent(shop_id, "paused", error))  # the fleet does not hold it yet
                with contextlib.suppress(CheckpointError):
                    await self.store.record_error(shop_id, self.worker_id, f"SessionUnavailableError: {error}")
            return None
        self._unresolved.discard(shop_id)
        return session

    def _retry_sessions(self) -> None:
        """Shops without a session, or paused on an invalid one: ask the provider again."""
        self._open_soon(
            shop_id
            for shop_id in self._tokens
            if shop_id in self._unresolved
            or (
                shop_id in self.fleet
                and (status := self.fleet.status(shop_id)).state == "paused"
                and isinstance(status.error, AuthenticationError)
            )
        )

    def _drop(self, shop_id: str, why: str) -> None:
        """Stop syncing a shop this worker no longer holds."""
        if shop_id not in self._tokens:
            return
        logger.warning("worker %s: dropped shop %s: %s", self.worker_id, shop_id, why)
        self._forget(shop_id)

    def _forget(self, shop_id: str) -> None:
        self._tokens.pop(shop_id, None)
        self._sessions.pop(shop_id, None)
        self._unresolved.discard(shop_id)
        self._calls_seen.pop(shop_id, None)
        self._weights.pop(shop_id, None)  # the registry keeps the last one for whoever claims it next
        self._paused_since.pop(shop_id, None)
        if shop_id in self.fleet:
            self.fleet.remove(shop_id)

    def _fleet_event(self, event: FleetEvent) -> None:
        error = event.error
        if event.kind == "paused" and isinstance(error, CheckpointConflictError):
            held = self._tokens.get(event.shop_id)
            if isinstance(error, LeaseLostError) and None not in (error.token, held) and error.token != held:
                # A read left over from a lease this worker lost and has claimed back since: refused by
                # its own old token, as it should be. The read under the current lease goes on.
                logger.info(
                    "worker %s: shop %s: a read from an earlier lease was refused (token %s; held now: %s)",
                    self.worker_id, event.shop_id, error.token, held,
                )  # fmt: skip
            else:
                # Refused by the fencing token (or another writer): the shop is someone else's now.
                logger.warning("worker %s: shop %s: %s", self.worker_id, event.shop_id, error)
                asyncio.get_running_loop().call_soon(self._drop, event.shop_id, "its commit was refused")
        if self.on_event is not None:
            self.on_event(event)  # the fleet guards this call: a failing callback is logged, not raised

    # -- app-wide signals ----------------------------------------------------------------

    def _ban_seen(self, seconds: float) -> None:
        """This worker met a code-7 ban: make every other worker wait too."""
        self._spawn(self._share_ban(seconds))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _share_ban(self, seconds: float) -> None:
        try:
            await self.store.ban(seconds)
        except CheckpointError as exc:
            logger.warning("worker %s: could not share a ban: %s", self.worker_id, exc)

    async def _listen(self) -> Any:
        try:
            connection = await self.store.connect_listener()
        except CheckpointError as exc:
            logger.warning("worker %s: no notifications (%s); relying on heartbeats", self.worker_id, exc)
            return None
        try:
            await connection.add_listener(self.store.channel("ban"), self._ban_notified)
            await connection.add_listener(self.store.channel("shops"), self._shops_notified)
            await connection.add_listener(self.store.channel("push"), self._push_notified)
        except Exception as exc:  # the connection broke at once (asyncpg's own errors): retry next beat
            logger.warning("worker %s: no notifications (%s); relying on heartbeats", self.worker_id, exc)
            with contextlib.suppress(Exception):
                await connection.close()
            return None
        return connection

    def _ban_notified(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self.bans_notified += 1
        with contextlib.suppress(ValueError):
            self.client.hold(float(payload))

    def _shops_notified(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self._nudge.set()  # shops were added, removed or released: rebalance now

    # -- push ----------------------------------------------------------------------------

    def _push_notified(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        if self._push is not None and payload in self.fleet:
            self._push_due.add(payload)
            self._push_wake.set()

    async def _drain_push(self, consumer: TmcConsumer) -> None:
        """Deliver what other workers consumed for the shops this one holds."""
        while True:
            await self._push_wake.wait()
            self._push_wake.clear()
            due = sorted(shop_id for shop_id in self._push_due if shop_id in self.fleet)
            self._push_due.clear()
            try:
                waiting = await self.push_inbox.take(due)
            except CheckpointError as exc:  # the next heartbeat looks again
                logger.warning("worker %s: could not read the push inbox: %s", self.worker_id, exc)
                continue
            try:
                await consumer.take_relayed(waiting)
            except Exception:  # a bug must not stop the draining: the rows wait for the next heartbeat
                logger.exception("worker %s: delivering from the push inbox failed", self.worker_id)

    def _permit_soon(self) -> None:
        """Permit each held shop's seller once per process, so TMC publishes its messages."""
        for shop_id in self.fleet.shop_ids:
            if shop_id not in self._permitted:
                self._permitted.add(shop_id)
                self._spawn(self._permit(shop_id))

    async def _permit(self, shop_id: str) -> None:
        if shop_id not in self.fleet:  # moved on meanwhile: whoever holds it now permits it
            self._permitted.discard(shop_id)
            return
        try:
            await tmc_user_permit(self.client, self.fleet.shop(shop_id).session)
        except TaobaoOrderSyncError as exc:  # tried again at the next heartbeat
            self._permitted.discard(shop_id)
            logger.warning("worker %s: TMC permit for shop %s failed: %s", self.worker_id, shop_id, exc)

    async def _sleep(self, seconds: float) -> None:
        self._nudge.clear()
        await wait_until_set(self._nudge, seconds, clock=self.clock)
