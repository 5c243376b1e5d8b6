"""TMC (消息服务): trade messages for freshness in seconds, with polling as the proof.

Taobao pushes a message when a seller's trade changes (``taobao_trade_*`` topics). The
channel is at least once, unordered, redelivers what is not confirmed, and proves nothing
about what it dropped. So a ``TmcConsumer`` uses it for speed only:

* each message of a shop in a ``Fleet`` becomes a delivery through the fleet's handler,
  either at once with ``taobao.trade.fullinfo.get`` (one call per change) or through an
  early poll of the shop (about ``lag`` later; one call per up to 100 changes), chosen per
  shop by its message rate and the push budget, or by you;
* a message is confirmed only after the trade it announced was handed to the handler (and
  the handler returned), so a crash gets it redelivered;
* in a PostgreSQL ``Worker``, a message for a shop another worker holds is forwarded to it
  through the database (a ``PushRelay``) and confirmed once that worker delivered it;
* push never moves a checkpoint. Polling keeps running as reconciliation, every
  ``reconcile_interval`` while push is healthy for the shop, at the policy's pace when it is
  not; it never delivers a version push delivered. A lost message costs freshness, never
  an order.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Literal, Protocol

from attrs import define, field, frozen

from taobao_ordersync import _wire
from taobao_ordersync._time import SECOND, floor_second, from_epoch, parse_time
from taobao_ordersync.client import TopClient
from taobao_ordersync.clock import wait_until_set
from taobao_ordersync.errors import ConfigurationError, ResponseFormatError, TaobaoOrderSyncError
from taobao_ordersync.fleet import Fleet

__all__ = [
    "PushMode",
    "PushRelay",
    "TmcConsumer",
    "TmcMessage",
    "TmcStats",
    "tmc_confirm",
    "tmc_consume",
    "tmc_user_permit",
]

logger = logging.getLogger("taobao_ordersync.tmc")

PushMode = Literal["auto", "fullinfo", "poll"]
MAX_CONFIRM: Final = 200
_CONFIRMED_MEMORY: Final = 50_000


# -- the three TMC APIs -----------------------------------------------------------------


@frozen(kw_only=True)
class TmcMessage:
    """One message of ``taobao.tmc.messages.consume``.

    ``content`` is the decoded JSON of the message (``{}`` when it was not a JSON object);
    ``tid`` is its trade id when it names one.
    """

    id: int
    topic: str
    content: Mapping[str, Any] = field(factory=dict, repr=False)
    pub_time: datetime | None = None
    user_id: int | None = None
    user_nick: str | None = None
    raw: Mapping[str, Any] = field(factory=dict, repr=False, eq=False)

    @property
    def tid(self) -> int | None:
        value = self.content.get("tid")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
        return None


def _message(item: Any) -> TmcMessage:
    if not isinstance(item, dict):
        raise ResponseFormatError("a TMC message that is not an object", is_transient=True)
    raw_id = item.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, int | str) or not str(raw_id).isdigit():
        raise ResponseFormatError(f"a TMC message without a numeric id: {raw_id!r}", is_transient=True)
    content: Any = item.get("content")
    if isinstance(content, str):
        try:
            content = json.loads(content)
        except json.JSONDecodeError:
            content = None
    if not isinstance(content, dict):
        logger.warning("TMC message %s: content is not a JSON object; its shop is polled instead", raw_id)
        content = {}
    pub_time = None
    if isinstance(item.get("pub_time"), str):
        try:
            pub_time = parse_time(item["pub_time"])
        except ValueError:
            pub_time = None
    user_id = item.get("user_id")
    nick = item.get("user_nick")
    return TmcMessage(
        id=int(raw_id),
        topic=str(item.get("topic") or ""),
        content=content,
        pub_time=pub_time,
        user_id=int(user_id) if isinstance(user_id, int | str) and str(user_id).isdigit() else None,
        user_nick=nick if isinstance(nick, str) and nick else None,
        raw=item,
    )


async def tmc_user_permit(client: TopClient, session: str, *, topics: Iterable[str] | None = None) -> None:
    """``taobao.tmc.user.permit``: publish this seller's messages to the app.

    ``topics`` (at most 100) overwrite the seller's topic list; omit it to inherit the
    topics the app subscribed in the console.
    """
    wanted = None if topics is None else tuple(topics)
    if wanted is not None and not 1 <= len(wanted) <= 100:
        raise ConfigurationError("topics must name 1..100 topics (or be None to inherit the app's)")
    await client.call("taobao.tmc.user.permit", {"topics": wanted}, session=session)


async def tmc_consume(client: TopClient, *, group_name: str = "default", quantity: int = 100) -> list[TmcMessage]:
    """``taobao.tmc.messages.consume``: up to ``quantity`` (10-200) messages of the app's group.

    Each is handed out again after a while unless confirmed with ``tmc_confirm``.
    """
    if not 10 <= quantity <= 200:
        raise ConfigurationError(f"quantity must be 10..200, got {quantity}")
    reply = await client.call("taobao.tmc.messages.consume", {"group_name": group_name, "quantity": quantity})
    return [_message(item) for item in _wire.unwrap_list(reply.get("messages"))]


async def tmc_confirm(client: TopClient, message_ids: Iterable[int], *, group_name: str = "default") -> None:
    """``taobao.tmc.messages.confirm``: these messages were handled (at most 200 per call)."""
    ids = [str(message_id) for message_id in message_ids]
    if not 1 <= len(ids) <= MAX_CONFIRM:
        raise ConfigurationError(f"confirm 1..{MAX_CONFIRM} message ids per call, got {len(ids)}")
    await client.call("taobao.tmc.messages.confirm", {"group_name": group_name, "s_message_ids": ids})


# -- the consumer ---------------------------------------------------------------------


class PushRelay(Protocol):
    """Where a consumer sends the messages of shops its fleet does not hold, and learns when
    their holders delivered them (a PostgreSQL ``Worker``'s push inbox)."""

    async def forward(self, shop_id: str, message: TmcMessage) -> bool:
        """Hand the message to whoever holds ``shop_id``; False when no one ever will (the
        shop is not registered): the consumer then confirms it and drops it."""
        ...

    async def settled(self, message_ids: Collection[int]) -> set[int]:
        """Which of these forwarded messages were delivered (or dropped with their shop), so
        the consumer may confirm them."""
        ...

    async def delivered(self, message_ids: Sequence[int]) -> None:
        """Messages another consumer forwarded, which this consumer has now delivered."""
        ...


@define
class TmcStats:
    """What a ``TmcConsumer`` did since it was created."""

    consumed: int = 0
    confirmed: int = 0
    fetched: int = 0  # fullinfo calls
    pushed: int = 0  # trades the handler took from push
    early_polls: int = 0  # messages turned into an early poll
    coalesced: int = 0  # messages a fetch already covered (duplicates, redeliveries)
    unmapped: int = 0  # messages of sellers not in the fleet (confirmed, ignored)
    forwarded: int = 0  # messages relayed to the worker holding their shop
    relayed: int = 0  # messages taken from the relay (another worker consumed them)
    consume_calls: int = 0
    confirm_calls: int = 0
    failures: int = 0


@define
class _ShopPush:
    arrivals: deque[float] = field(factory=deque)  # monotonic times of recent messages
    messages_since_poll: int = 0
    waiting: list[tuple[TmcMessage, datetime]] = field(factory=list)  # (message, the cursor that covers it)
    fetched: OrderedDict[int, datetime] = field(factory=OrderedDict)  # tid -> server time a fetch began
    locks: dict[int, asyncio.Lock] = field(factory=dict)


class TmcConsumer:
    """Consume one TMC group for a ``Fleet``: push for speed, the fleet's polling as the proof.

    Run it next to the fleet::

        consumer = TmcConsumer(fleet, shop_for={"seller nick": "my-shop"})
        async with asyncio.TaskGroup() as group:
            group.create_task(fleet.run())
            group.create_task(consumer.run())

    Args:
        fleet: the fleet whose handler receives the trades (its client makes the calls).
        group_name: the TMC group to consume (``"default"`` unless you made groups).
        shop_for: which fleet shop a message belongs to: a mapping from seller nick (or
            ``user_id`` as a string) to shop id, or a function of the message returning the
            shop id (or None). Default: the seller nick is the shop id.
        mode: ``"fullinfo"`` (fetch each changed trade: freshest, a call per change),
            ``"poll"`` (an early poll of the shop about ``lag`` later: a call per up to 100
            changes), or ``"auto"``: fullinfo while the shop's messages arrive slower than
            ``hot_rate`` a minute and the push budget allows, early polls otherwise.
        push_rate: fullinfo calls per second push may spend (default: half the client's
            rate); messages beyond it become early polls, so a flood never starves polling.
        hot_rate: messages a minute above which ``"auto"`` polls a shop early instead.
        reconcile_interval: seconds between a shop's polls while push is healthy for it (its
            messages keep coming, or polling finds nothing push missed).
        quantity: messages per consume call (10-200).
        idle_wait: seconds to wait after an empty consume (each consume is a call).
        fetch_concurrency: fullinfo calls in flight at once.
        max_pending: messages held unconfirmed before consuming pauses.
        relay: where messages of shops this fleet does not hold go (a PostgreSQL ``Worker``
            passes its push inbox; ``Worker.run(push=...)`` checks it); None: they are
            confirmed and ignored.
    """

    def __init__(
        self,
        fleet: Fleet,
        *,
        group_name: str = "default",
        shop_for: Mapping[str, str] | Callable[[TmcMessage], str | None] | None = None,
        mode: PushMode = "auto",
        push_rate: float | None = None,
        hot_rate: float = 30.0,
        reconcile_interval: float = 300.0,
        quantity: int = 100,
        idle_wait: float = 1.0,
        fetch_concurrency: int = 4,
        max_pending: int = 5_000,
        relay: PushRelay | None = None,
    ) -> None:
        if mode not in ("auto", "fullinfo", "poll"):
            raise ConfigurationError("mode must be 'auto', 'fullinfo' or 'poll'")
        if not 10 <= quantity <= 200:
            raise ConfigurationError(f"quantity must be 10..200, got {quantity}")
        if fetch_concurrency < 1 or max_pending < quantity:
            raise ConfigurationError("fetch_concurrency must be >= 1 and max_pending >= quantity")
        if not (hot_rate > 0 and reconcile_interval > 0 and idle_wait >= 0):
            raise ConfigurationError("hot_rate and reconcile_interval must be > 0, idle_wait >= 0 seconds")
        self.fleet = fleet
        self.client: TopClient = fleet.client
        self.group_name = group_name
        self.mode: PushMode = mode
        self.push_rate = push_rate if push_rate is not None else fleet.client.rate / 2
        if self.push_rate < 0:
            raise ConfigurationError("push_rate must not be negative")
        self.hot_rate = hot_rate
        self.reconcile_interval = reconcile_interval
        self.quantity = quantity
        self.idle_wait = idle_wait
        self.stats = TmcStats()
        self._shop_for = shop_for
        self._modes: dict[str, PushMode] = {}
        self._shops: dict[str, _ShopPush] = {}
        self._fetching = asyncio.Semaphore(fetch_concurrency)
        self._max_pending = max_pending
        self.relay = relay
        self._pending: set[int] = set()  # message ids held by us, not yet confirmed
        self._forwarded: dict[int, str] = {}  # relayed to their shop's holder: confirmed once it delivered
        self._from_relay: set[int] = set()  # another consumer's messages this one delivers
        self._relay_done: dict[int, None] = {}  # delivered, to be reported through the relay (in order)
        self._to_confirm: list[int] = []
        self._confirmed: OrderedDict[int, None] = OrderedDict()
        self._tokens = self.push_rate
        self._tokens_at = self.fleet.clock.monotonic()
        self._channel_ok = False
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"TmcConsumer(group_name={self.group_name!r}, mode={self.mode!r}, push_rate={self.push_rate})"

    # -- choices ---------------------------------------------------------------------

    def set_mode(self, shop_id: str, mode: PushMode | None) -> None:
        """Choose how one shop's messages become deliveries (None: back to the consumer's mode)."""
        if mode is None:
            self._modes.pop(shop_id, None)
        elif mode in ("auto", "fullinfo", "poll"):
            self._modes[shop_id] = mode
        else:
            raise ConfigurationError("mode must be 'auto', 'fullinfo' or 'poll'")

    def mode_of(self, shop_id: str) -> Literal["fullinfo", "poll"]:
        """How the next message of this shop will be handled (before the budget is consulted)."""
        mode = self._modes.get(shop_id, self.mode)
        if mode != "auto":
            return mode
        state = self._shops.get(shop_id)
        recent = 0 if state is None else len(state.arrivals)
        return "poll" if recent > self.hot_rate else "fullinfo"

    @property
    def pending(self) -> int:
        """Messages received and not yet confirmed."""
        return len(self._pending)

    # -- running ---------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run()`` to return (messages not yet confirmed will be redelivered by TMC)."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until ``stop()`` or cancellation."""
        self.fleet.observe_push(self)
        self._stopping.clear()
        try:
            while not self._stopping.is_set():
                got = 0
                if len(self._pending) + self.quantity <= self._max_pending:
                    got = await self._consume_once()
                try:
                    await self._flush()
                except TaobaoOrderSyncError as exc:  # kept: confirmed with the next flush
                    self.stats.failures += 1
                    logger.warning("TMC confirm failed (%s); trying again", exc)
                if not got:
                    await wait_until_set(self._stopping, self.idle_wait, clock=self.fleet.clock)
        finally:
            self.fleet.observe_push(None)
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await asyncio.shield(self._flush())
            except TaobaoOrderSyncError as exc:
                logger.warning("TMC: could not confirm %d handled messages: %s", len(self._to_confirm), exc)

    async def _consume_once(self) -> int:
        self.stats.consume_calls += 1
        try:
            messages = await tmc_consume(self.client, group_name=self.group_name, quantity=self.quantity)
        except TaobaoOrderSyncError as exc:
            self.stats.failures += 1
            self._channel_ok = False
            logger.warning("TMC consume failed (%s); polling carries on at its normal pace", exc)
            return 0
        self._channel_ok = True
        self.stats.consumed += len(messages)
        for message in messages:
            await self._accept(message)
        return len(messages)

    async def _flush(self) -> None:
        if self.relay is not None:
            if self._relay_done:
                done = list(self._relay_done)
                await self.relay.delivered(done)
                for message_id in done:
                    del self._relay_done[message_id]
            if self._forwarded:
                for message_id in await self.relay.settled(list(self._forwarded)):
                    if self._forwarded.pop(message_id, None) is not None:
                        self._confirm(message_id)
        while self._to_confirm:
            chunk = self._to_confirm[:MAX_CONFIRM]
            self.stats.confirm_calls += 1
            await tmc_confirm(self.client, chunk, group_name=self.group_name)
            del self._to_confirm[: len(chunk)]
            self.stats.confirmed += len(chunk)
            for message_id in chunk:
                self._confirmed[message_id] = None
            while len(self._confirmed) > _CONFIRMED_MEMORY:
                self._confirmed.popitem(last=False)

    def _confirm(self, message_id: int) -> None:
        """The trade this message announced was handed over: confirm it (to TMC, or through the
        relay when another consumer took it from TMC)."""
        self._pending.discard(message_id)
        if message_id in self._from_relay:
            self._from_relay.discard(message_id)
            self._relay_done[message_id] = None
        else:
            self._to_confirm.append(message_id)

    # -- one message -----------------------------------------------------------------

    def _shop_id(self, message: TmcMessage) -> str | None:
        chooser = self._shop_for
        if chooser is None:
            return message.user_nick
        if callable(chooser):
            return chooser(message)
        for key in (message.user_nick, None if message.user_id is None else str(message.user_id)):
            if key is not None and key in chooser:
                return chooser[key]
        return None

    async def _accept(self, message: TmcMessage) -> None:
        if message.id in self._pending:
            return  # redelivered while we still work on it: that work confirms it
        if message.id in self._confirmed:
            self.stats.coalesced += 1
            self._confirm(message.id)  # we confirmed it already; TMC sent it again
            return
        shop_id = self._shop_id(message)
        if shop_id is None or shop_id not in self.fleet:
            await self._elsewhere(shop_id, message)
            return
        self._pending.add(message.id)
        await self._dispatch(shop_id, message)

    async def take_relayed(self, messages: Iterable[tuple[str, TmcMessage]]) -> int:
        """Deliver messages another consumer forwarded for shops this fleet holds (a ``Worker``
        calls this with its push inbox); each is reported delivered through the relay. Returns
        how many were taken (those already in hand or of shops not held are skipped)."""
        taken = 0
        for shop_id, message in messages:
            # Skipped: in hand, delivered (its row is marked so with the next flush), or not ours. A
            # message this consumer forwarded itself (its shop was not open here yet) is taken too.
            in_hand = message.id in self._pending and message.id not in self._forwarded
            if in_hand or message.id in self._from_relay or message.id in self._relay_done:
                continue
            if shop_id not in self.fleet:
                continue
            taken += 1
            self.stats.relayed += 1
            self._from_relay.add(message.id)
            self._pending.add(message.id)
            if message.id in self._confirmed:
                self._confirm(message.id)  # this consumer delivered and confirmed it itself
            else:
                await self._dispatch(shop_id, message)
        return taken

    async def _elsewhere(self, shop_id: str | None, message: TmcMessage) -> None:
        """A message of a shop this fleet does not hold: relay it to the shop's holder, or drop it."""
        if shop_id is not None and self.relay is not None:
            try:
                forwarded = await self.relay.forward(shop_id, message)
            except TaobaoOrderSyncError as exc:  # left unconfirmed: TMC hands it out again
                self.stats.failures += 1
                logger.warning("TMC message %d: could not relay it to shop %s's worker: %s", message.id, shop_id, exc)
                return
            if forwarded:
                self.stats.forwarded += 1
                self._pending.add(message.id)
                self._forwarded[message.id] = shop_id
                return
        self.stats.unmapped += 1
        logger.debug("TMC message %d of %s: no such shop; confirmed", message.id, message.user_nick)
        self._to_confirm.append(message.id)

    async def _moved(self, shop_id: str, message: TmcMessage) -> None:
        """The shop left the fleet while its message was in hand."""
        self._pending.discard(message.id)
        if message.id in self._from_relay:
            self._from_relay.discard(message.id)  # still undelivered in the relay: for the shop's next holder
            return
        await self._elsewhere(shop_id, message)

    async def _dispatch(self, shop_id: str, message: TmcMessage) -> None:
        state = self._shops.setdefault(shop_id, _ShopPush())
        now = self.fleet.clock.monotonic()
        state.arrivals.append(now)
        while state.arrivals and state.arrivals[0] < now - 60:
            state.arrivals.popleft()
        state.messages_since_poll += 1
        tid = message.tid
        if tid is not None and self.mode_of(shop_id) == "fullinfo" and self._take_token():
            task = asyncio.create_task(self._fetch(shop_id, tid, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            await self._poll_early(shop_id, message)

    def _take_token(self) -> bool:
        now = self.fleet.clock.monotonic()
        self._tokens = min(max(self.push_rate, 1.0), self._tokens + (now - self._tokens_at) * self.push_rate)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def _poll_early(self, shop_id: str, message: TmcMessage) -> None:
        """Confirm once the shop's committed cursor is past the change: a poll delivered it."""
        if shop_id not in self.fleet:
            await self._moved(shop_id, message)
            return
        try:
            now = await self.client.server_now()  # may measure Taobao's clock: a call that can fail
        except TaobaoOrderSyncError as exc:  # left unconfirmed: TMC (or the relay) hands it out again
            self.stats.failures += 1
            self._pending.discard(message.id)
            self._from_relay.discard(message.id)
            logger.info("TMC message %d (shop %s): %s; left for a redelivery", message.id, shop_id, exc)
            return
        self.stats.early_polls += 1
        announced = floor_second(message.pub_time if message.pub_time is not None else now)
        covering = announced + SECOND  # the change is at announced.xxx at the latest
        self._shops.setdefault(shop_id, _ShopPush()).waiting.append((message, covering))
        self._wake_for(shop_id, covering, now)

    def _wake_for(self, shop_id: str, covering: datetime, now: datetime) -> None:
        """Poll the shop once its window (ending ``lag`` behind Taobao's clock) reaches ``covering``."""
        ready = covering + self.fleet.syncer.lag
        self.fleet.wake(shop_id, delay=max(0.0, (ready - now).total_seconds()))

    async def _fetch(self, shop_id: str, tid: int, message: TmcMessage) -> None:
        """Fetch the trade with fullinfo and hand it over, unless a fetch begun after the change did."""
        state = self._shops.setdefault(shop_id, _ShopPush())
        lock = state.locks.setdefault(tid, asyncio.Lock())
        try:
            async with lock:
                announced = floor_second(message.pub_time) if message.pub_time is not None else None
                began = state.fetched.get(tid)
                if announced is not None and began is not None and began >= announced + SECOND:
                    self.stats.coalesced += 1  # a duplicate or a redelivery: the newest state was handed over
                    self._confirm(message.id)
                    return
                shop = self.fleet.shop(shop_id)
                async with self._fetching:
                    began = await self.client.server_now()  # the earliest Taobao's clock can show
                    self.stats.fetched += 1
                    trade = await self.client.trade_fullinfo(shop.session, tid, fields=self.fleet.syncer.fields)
                self.stats.pushed += await self.fleet.deliver_pushed(shop_id, [trade])
                state.fetched[tid] = began
                state.fetched.move_to_end(tid)
                while len(state.fetched) > 10_000:
                    state.fetched.popitem(last=False)
                self._confirm(message.id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # fullinfo or the handler failed: the shop's poll delivers it instead
            self.stats.failures += 1
            logger.info("TMC message %d (shop %s, trade %d): %s; polling the shop", message.id, shop_id, tid, exc)
            await self._poll_early(shop_id, message)
        finally:
            if not lock.locked() and tid in state.locks and state.locks[tid] is lock:
                del state.locks[tid]

    # -- the fleet's side (PushObserver) --------------------------------------------

    def poll_finished(self, shop_id: str, missed: int) -> float | None:
        """Confirm what the poll covered; say whether the shop may poll at the reconciliation pace."""
        state = self._shops.setdefault(shop_id, _ShopPush())
        progress = self.fleet.syncer.progress(shop_id)
        if progress.backfill_done and progress.cursor is not None and progress.phase == "increments":
            cursor = progress.cursor
            still = []
            for message, covering in state.waiting:
                if covering <= cursor:
                    self._confirm(message.id)
                else:
                    still.append((message, covering))
            state.waiting = still
            if still:  # this poll started too early for some: another one when they are readable
                estimate = self.client.clock_estimate
                clock = self.fleet.clock
                now = from_epoch(clock.time()) if estimate is None else estimate.now(clock.monotonic())
                self._wake_for(shop_id, min(covering for _, covering in still), now)
        heard = state.messages_since_poll > 0
        state.messages_since_poll = 0
        healthy = self._channel_ok and (heard or missed == 0)
        return self.reconcile_interval if healthy else None

    def shop_removed(self, shop_id: str) -> None:
        """The fleet stopped syncing the shop: what waits for its polls goes elsewhere (its
        fetches in flight find it gone and do the same)."""
        state = self._shops.pop(shop_id, None)
        if state is None:
            return
        for message, _ in state.waiting:
            task = asyncio.get_running_loop().create_task(self._moved(shop_id, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
