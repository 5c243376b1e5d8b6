"""The emulator's TMC (消息服务): trade messages over HTTP pull, with chaos and ground truth.

Every change of a permitted seller's trade (a new ``Version`` in ``ShopState``) becomes a
message in the queue of the seller's group (``"default"`` unless ``assign_group`` says
otherwise), available ``delay`` after the change. ``taobao.tmc.messages.consume`` hands out
available messages and holds each for ``redeliver_after`` seconds; a message not confirmed
by then is handed out again (same ``id``). What TOP implies (top-api.md §9) and the chaos
knobs exaggerate: duplicates (the same change again under a new ``id``), no order,
redelivery of confirmed messages, delays, and messages never published at all.

``changes`` is the ground truth: when each change happened and whether a message for it
was published, to measure freshness (change -> handler) against.

``answer_user_permit`` and ``answer_messages`` read the three calls' parameters for the fake
gateway, once its own checks have passed.
"""

from __future__ import annotations

import json
import random
import zlib
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from attrs import define, field, frozen

from taobao_ordersync._time import format_time
from taobao_ordersync.testing._gateway import Refusal, bad_param, read_int
from taobao_ordersync.testing._shop import ShopState, TradeRecord, Version

__all__ = [
    "APP_METHODS",
    "TRADE_TOPICS",
    "USER_METHODS",
    "TmcBroker",
    "TmcChange",
    "TmcChaos",
    "answer_messages",
    "answer_user_permit",
]

#: The trade topics of top-api.md §9 (all prefixed ``taobao_trade_``).
TRADE_TOPICS: Final = frozenset(
    f"taobao_trade_{name}"
    for name in (
        "TradeCreate", "TradeAlipayCreate", "TradeBuyerPay", "TradeBuyerStepPay", "TradeSellerShip",
        "TradePartlySellerShip", "TradeSuccess", "TradeClose", "TradeCloseAndModifyDetailOrder",
        "TradeModifyFee", "TradePartlyRefund", "TradePartlyConfirmPay", "TradeDelayConfirmPay",
        "TradeTimeoutRemind", "TradeRated", "TradeMemoModified", "TradeLogisticsAddressChanged", "TradeChanged",
    )
)  # fmt: skip
REFUND_TOPICS: Final = frozenset(f"taobao_refund_{name}" for name in ("RefundCreated", "RefundSuccess", "RefundClosed"))
KNOWN_TOPICS: Final = TRADE_TOPICS | REFUND_TOPICS
#: The calls an app makes for itself, with no seller's session.
APP_METHODS: Final = frozenset({"taobao.tmc.messages.consume", "taobao.tmc.messages.confirm"})
#: The call a seller's session permits (``taobao.tmc.user.permit``).
USER_METHODS: Final = frozenset({"taobao.tmc.user.permit"})
MAX_CONFIRM: Final = 200  # message ids per confirm call
#: The app key Taobao publishes trade messages under (``pub_app_key``).
PUBLISHER_APP_KEY: Final = "12497914"
_BY_STATUS: Final = {
    "WAIT_SELLER_SEND_GOODS": "taobao_trade_TradeBuyerPay",
    "WAIT_BUYER_CONFIRM_GOODS": "taobao_trade_TradeSellerShip",
    "TRADE_FINISHED": "taobao_trade_TradeSuccess",
    "TRADE_CLOSED": "taobao_trade_TradeClose",
    "TRADE_CLOSED_BY_TAOBAO": "taobao_trade_TradeClose",
}


@frozen(kw_only=True)
class TmcChaos:
    """How badly the message channel behaves (each rate a probability per message).

    Args:
        drop_rate: changes for which no message is ever published.
        duplicate_rate: changes published twice, under two ids (the copy up to ``max_delay`` later).
        redeliver_rate: confirmed messages handed out once more anyway.
        reorder: hand out available messages in random order instead of oldest first.
        max_delay: each message becomes available a uniform 0..``max_delay`` seconds after its change.
        redeliver_after: seconds a consumed, unconfirmed message waits before it is handed out again.
    """

    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    redeliver_rate: float = 0.0
    reorder: bool = False
    max_delay: float = 0.0
    redeliver_after: float = 30.0


@frozen(kw_only=True)
class TmcChange:
    """One trade change of a permitted seller: the ground truth a message announces."""

    shop_id: str
    tid: int
    modified: datetime
    topic: str
    published: bool


@define
class _Message:
    id: int
    topic: str
    content: str
    user_id: int
    user_nick: str
    available_at: datetime
    pub_time: datetime
    deliveries: int = 0


@define
class _Group:
    waiting: list[_Message] = field(factory=list)
    in_flight: dict[int, tuple[_Message, datetime]] = field(factory=dict)
    confirmed: deque[_Message] = field(factory=lambda: deque(maxlen=10_000))


@define
class _Permit:
    user_id: int
    topics: frozenset[str] | None


class TmcBroker:
    """Message queues of one app, fed by the shops' changes (``FakeTop.tmc``, also ``Emulator.tmc``)."""

    def __init__(self, *, chaos: TmcChaos | None = None, seed: int = 0) -> None:
        self.chaos = chaos or TmcChaos()
        self.changes: list[TmcChange] = []
        self.consumed = 0
        self.confirmed = 0
        self._rng = random.Random(f"tmc:{seed}")
        self._permits: dict[str, _Permit] = {}  # shop id -> permit
        self._groups: dict[str, _Group] = {}
        self._group_of: dict[str, str] = {}  # user nick -> group
        self._next_id = 2_100_000_000_000_000_000

    # -- setup -----------------------------------------------------------------------

    def permit(self, shop: ShopState, topics: Iterable[str] | None) -> None:
        """``taobao.tmc.user.permit``: publish this seller's changes from now on (``topics`` overwrite)."""
        self._permits[shop.id] = _Permit(user_id=2_000_000_000 + zlib.crc32(shop.id.encode()), topics=_topics(topics))

    def revoke(self, shop_id: str) -> None:
        """Stop publishing a seller's changes (``taobao.tmc.user.cancel``)."""
        self._permits.pop(shop_id, None)

    def permitted(self, shop_id: str) -> bool:
        return shop_id in self._permits

    def user_id(self, shop_id: str) -> int:
        """The ``user_id`` messages of a permitted seller carry."""
        return self._permits[shop_id].user_id

    def assign_group(self, user_nick: str, group: str) -> None:
        """Route a seller's messages to ``group`` (``taobao.tmc.group.add``); default ``"default"``."""
        self._group_of[user_nick] = group

    def backlog(self, group: str = "default") -> int:
        """Messages waiting or in flight in ``group``."""
        queue = self._groups.get(group)
        return 0 if queue is None else len(queue.waiting) + len(queue.in_flight)

    # -- publication (the ShopState hook) ----------------------------------------------

    def published(self, shop: ShopState, record: TradeRecord, version: Version) -> None:
        """A new version of ``record`` exists: publish its message (or, by chaos, don't)."""
        permit = self._permits.get(shop.id)
        if permit is None:
            return
        previous = record.versions[-2] if len(record.versions) > 1 else None
        topic = _topic(previous, version)
        if permit.topics is not None and topic not in permit.topics:
            return
        chaos = self.chaos
        rng = self._rng
        published = not (chaos.drop_rate and rng.random() < chaos.drop_rate)
        self.changes.append(
            TmcChange(shop_id=shop.id, tid=record.tid, modified=version.modified, topic=topic, published=published)
        )
        if not published:
            return
        content = json.dumps(
            {
                "tid": record.tid,
                "oid": record.tid,
                "seller_nick": shop.nick,
                "buyer_nick": record.data.get("buyer_nick"),
                "status": version.status,
                "type": record.type,
                "payment": record.data.get("payment"),
            },
            ensure_ascii=False,
        )
        copies = 2 if chaos.duplicate_rate and rng.random() < chaos.duplicate_rate else 1
        group = self._groups.setdefault(self._group_of.get(shop.nick, "default"), _Group())
        for _ in range(copies):
            delay = timedelta(seconds=round(rng.uniform(0, chaos.max_delay), 3)) if chaos.max_delay else timedelta(0)
            self._next_id += 1
            group.waiting.append(
                _Message(
                    id=self._next_id,
                    topic=topic,
                    content=content,
                    user_id=permit.user_id,
                    user_nick=shop.nick,
                    available_at=version.modified + delay,
                    pub_time=version.modified + delay,
                )
            )

    # -- the API -----------------------------------------------------------------------

    def consume(self, group_name: str, quantity: int, now: datetime) -> list[dict[str, Any]]:
        """``taobao.tmc.messages.consume``: up to ``quantity`` available messages, held until confirmed."""
        group = self._groups.setdefault(group_name, _Group())
        chaos = self.chaos
        for message_id, (message, deadline) in list(group.in_flight.items()):
            if deadline <= now:  # not confirmed in time: hand it out again
                del group.in_flight[message_id]
                group.waiting.append(message)
        if chaos.redeliver_rate and group.confirmed and self._rng.random() < chaos.redeliver_rate:
            group.waiting.append(self._rng.choice(group.confirmed))
        ready = [message for message in group.waiting if message.available_at <= now]
        if chaos.reorder:
            self._rng.shuffle(ready)
        else:
            ready.sort(key=lambda message: (message.available_at, message.id))
        taken = ready[:quantity]
        chosen = {id(message) for message in taken}
        group.waiting = [message for message in group.waiting if id(message) not in chosen]
        deadline = now + timedelta(seconds=chaos.redeliver_after)
        for message in taken:
            message.deliveries += 1
            group.in_flight[message.id] = (message, deadline)
        self.consumed += len(taken)
        return [
            {
                "id": message.id,
                "topic": message.topic,
                "content": message.content,
                "pub_time": format_time(message.pub_time),
                "pub_app_key": PUBLISHER_APP_KEY,
                "user_id": message.user_id,
                "user_nick": message.user_nick,
            }
            for message in taken
        ]

    def confirm(self, group_name: str, message_ids: Iterable[int]) -> None:
        """``taobao.tmc.messages.confirm``: these messages were handled (unknown ids are ignored)."""
        group = self._groups.setdefault(group_name, _Group())
        for message_id in message_ids:
            held = group.in_flight.pop(message_id, None)
            if held is not None:
                group.confirmed.append(held[0])
                self.confirmed += 1


def _topics(topics: Iterable[str] | None) -> frozenset[str] | None:
    return None if topics is None else frozenset(topics)


def _topic(previous: Version | None, version: Version) -> str:
    if previous is None:
        return "taobao_trade_TradeCreate"
    if version.status != previous.status:
        return _BY_STATUS.get(version.status, "taobao_trade_TradeChanged")
    if version.memo != previous.memo:
        return "taobao_trade_TradeMemoModified"
    return "taobao_trade_TradeChanged"


# -- the API's parameters (the fake gateway calls these once its own checks passed) ------------


def answer_user_permit(broker: TmcBroker, shop: ShopState, params: Mapping[str, str]) -> dict[str, Any]:
    """``taobao.tmc.user.permit`` for ``shop``: its ``topics`` (all when absent), checked."""
    raw = params.get("topics")
    topics = None
    if raw:
        topics = [name.strip() for name in raw.split(",") if name.strip()]
        if len(topics) > 100:
            raise bad_param("topics", "at most 100 topics")
        unknown = sorted(set(topics) - KNOWN_TOPICS)
        if unknown:
            raise bad_param("topics", f"unknown topic {unknown[0]}")
    broker.permit(shop, topics)
    return {"is_success": True}


def answer_messages(broker: TmcBroker, method: str, params: Mapping[str, str], now: datetime) -> dict[str, Any]:
    """``taobao.tmc.messages.consume`` or ``.confirm`` for the group ``group_name`` (``"default"`` when absent)."""
    group = params.get("group_name") or "default"
    if method == "taobao.tmc.messages.consume":
        quantity = read_int(params, "quantity", default=100, low=10, high=200)
        messages = broker.consume(group, quantity, now)
        return {"messages": messages} if messages else {}  # TOP omits empty lists
    raw = params.get("s_message_ids")
    if not raw or not raw.strip():
        raise Refusal(40, "Missing Required Arguments:s_message_ids")
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    if not all(part.isdigit() for part in ids):
        raise Refusal(41, "Invalid Arguments:s_message_ids")
    if len(ids) > MAX_CONFIRM:
        raise bad_param("s_message_ids", f"at most {MAX_CONFIRM} message ids per call")
    broker.confirm(group, (int(part) for part in ids))
    return {"is_success": True}
