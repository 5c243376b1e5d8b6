"""The emulator's data: seeded shops whose trades follow Taobao's real lifecycle.

Each trade keeps a light history of versions (modified time, visibility time,
status); the full JSON is kept once and overlaid with a version's fields when
listed. Changes waiting in the future sit in a heap and are applied as the
emulator's clock passes them, so hours of shop activity can pass instantly.
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from attrs import define, field, frozen

from taobao_ordersync._time import format_time

#: Types ``type``-less list calls return (top-api.md §6.2); guarantee_trade = fixed + auction.
DEFAULT_VISIBLE_TYPES = frozenset({"fixed", "auction", "auto_delivery", "ec", "cod", "step"})
_OTHER_TYPES = ("tmall_i18n", "o2o_offlinetrade", "eticket", "instant_trade", "super_market_trade")

_PROVINCES = ("浙江省", "上海", "北京", "广东省", "江苏省", "四川省", "湖北省", "山东省")
_CITIES = ("杭州市", "上海市", "北京市", "深圳市", "南京市", "成都市", "武汉市", "青岛市")
_ITEMS = ("纯棉T恤", "保温杯", "蓝牙耳机", "手机壳", "运动鞋", "茶叶礼盒", "数据线", "双肩包")

# Lifecycle: status -> [(next status, weight, typical delay in seconds)]
_NEXT: dict[str, tuple[tuple[str, int, float], ...]] = {
    "WAIT_BUYER_PAY": (("WAIT_SELLER_SEND_GOODS", 80, 600.0), ("TRADE_CLOSED_BY_TAOBAO", 20, 3 * 3600.0)),
    "WAIT_SELLER_SEND_GOODS": (("WAIT_BUYER_CONFIRM_GOODS", 93, 12 * 3600.0), ("TRADE_CLOSED", 7, 86400.0)),
    "WAIT_BUYER_CONFIRM_GOODS": (("TRADE_FINISHED", 97, 4 * 86400.0), ("TRADE_CLOSED", 3, 3 * 86400.0)),
}
FINAL_STATUSES = frozenset({"TRADE_FINISHED", "TRADE_CLOSED", "TRADE_CLOSED_BY_TAOBAO"})


@frozen(kw_only=True)
class ShopProfile:
    """How a generated shop behaves.

    Args:
        orders_per_day: mean rate of new trades (Poisson).
        history_days: days of past trades generated at start (Taobao lists 90).
        other_type_share: share of trades of types a ``type``-less query hides.
        memo_share: share of trades that also get a seller-memo edit (a change with no new status).
    """

    orders_per_day: float = 1000.0
    history_days: float = 90.0
    other_type_share: float = 0.03
    memo_share: float = 0.1


@frozen
class Version:
    """One state of a trade as the index sees it."""

    modified: datetime
    visible_at: datetime
    status: str
    memo: str | None = None


@define
class TradeRecord:
    """A trade: its JSON (latest), creation time and every version."""

    tid: int
    created: datetime
    type: str
    data: dict[str, Any]
    versions: list[Version] = field(factory=list)

    def view(self, now: datetime) -> Version | None:
        """The version list queries see at ``now`` (the newest already visible)."""
        for version in reversed(self.versions):
            if version.visible_at <= now:
                return version
        return None

    def as_of(self, moment: datetime) -> Version | None:
        """The newest version modified at or before ``moment`` (ground truth)."""
        for version in reversed(self.versions):
            if version.modified <= moment:
                return version
        return None

    def render(self, version: Version) -> dict[str, Any]:
        """The trade's JSON as it was at ``version`` (list and fullinfo replies show some of its fields)."""
        data = dict(self.data)
        data["modified"] = format_time(version.modified)
        data["status"] = version.status
        if version.memo is not None:
            data["seller_memo"] = version.memo
        data["orders"] = [{**order, "status": version.status} for order in self.data["orders"]]
        return data


@define
class ShopState:
    """One shop's trades, indexes and pending lifecycle events."""

    id: str
    session: str
    nick: str
    profile: ShopProfile
    rng: random.Random
    trades: dict[int, TradeRecord] = field(factory=dict)
    by_modified: list[tuple[datetime, int, int]] = field(factory=list)  # (modified, tid, version index)
    by_created: list[tuple[datetime, int]] = field(factory=list)
    # Heap of (when, tiebreak, tid, next status); an empty status is a seller-memo edit.
    pending: list[tuple[datetime, int, int, str]] = field(factory=list)
    next_creation: datetime | None = None
    session_valid: bool = True
    generation: int = 0  # counts new versions: a cached list of the shop's trades is right while it stands
    # Told of every new version (the emulator's TMC publishes a message for it).
    on_version: Callable[[ShopState, TradeRecord, Version], None] | None = None
    _seq: int = 0
    _tid_base: int = 0

    def new_tid(self) -> int:
        self._seq += 1
        return self._tid_base + self._seq * 7919

    def add_version(self, record: TradeRecord, version: Version) -> None:
        record.versions.append(version)
        _add_sorted(self.by_modified, (version.modified, record.tid, len(record.versions) - 1))
        self.generation += 1
        if self.on_version is not None:
            self.on_version(self, record, version)

    def modified_between(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, int, int]]:
        """Index entries (modified, tid, version index) with ``start <= modified <= end``, oldest first."""
        return iter(self.by_modified[self._modified_span(start, end)])

    def modified_newest_first(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, int, int]]:
        """``modified_between``, newest first."""
        return reversed(self.by_modified[self._modified_span(start, end)])

    def created_between(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, int]]:
        """Index entries (created, tid) with ``start <= created <= end``, oldest first."""
        return iter(self.by_created[self._created_span(start, end)])

    def created_newest_first(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, int]]:
        """``created_between``, newest first."""
        return reversed(self.by_created[self._created_span(start, end)])

    def _modified_span(self, start: datetime, end: datetime) -> slice:
        return slice(
            bisect_left(self.by_modified, (start, -1, -1)), bisect_right(self.by_modified, (end, 1 << 80, 1 << 30))
        )

    def _created_span(self, start: datetime, end: datetime) -> slice:
        return slice(bisect_left(self.by_created, (start, -1)), bisect_right(self.by_created, (end, 1 << 80)))


def to_millisecond(moment: datetime) -> datetime:
    """Taobao's backend keeps times in milliseconds; only its replies print whole seconds."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _pick(rng: random.Random, choices: tuple[tuple[str, int, float], ...]) -> tuple[str, int, float]:
    """A weighted choice; ``random.choices`` is slow for two options."""
    roll = rng.random() * sum(weight for _, weight, _ in choices)
    for choice in choices:
        roll -= choice[1]
        if roll < 0:
            return choice
    return choices[-1]


def _add_sorted(items: list[Any], item: Any) -> None:
    # Events arrive in time order, so appending is the common, O(1) case.
    if not items or items[-1] <= item:
        items.append(item)
    else:
        insort(items, item)


def make_shop(index: int, *, profile: ShopProfile, seed: int) -> ShopState:
    """Shop ``index`` (1-based): id ``shop-<i>``, session ``session-<i>``."""
    rng = random.Random(f"{seed}:{index}")
    shop = ShopState(
        id=f"shop-{index}",
        session=f"session-{index}",
        nick=f"测试店铺{index}",
        profile=profile,
        rng=rng,
    )
    # 19-digit trade ids, well above 2**53, distinct per shop.
    shop._tid_base = 4_000_000_000_000_000_000 + index * 10_000_000_000_000
    return shop


class Simulator:
    """Creates and changes trades as time passes, deterministically per seed."""

    def __init__(self, *, visibility_lag: float) -> None:
        self.visibility_lag = visibility_lag

    def _delay(self, rng: random.Random) -> timedelta:
        if self.visibility_lag <= 0:
            return timedelta(0)
        return timedelta(seconds=round(rng.uniform(0, self.visibility_lag), 3))

    def run(self, shop: ShopState, until: datetime, *, applied_at: datetime | None = None) -> int:
        """Apply every creation and lifecycle event of ``shop`` up to ``until``.

        ``applied_at`` is the emulator time at which the events are applied; a change
        is never visible before it exists (a late ticker makes visibility later, not earlier).
        Returns the number of changes made.
        """
        rate = shop.profile.orders_per_day / 86400.0
        changes = 0
        while True:
            next_event = shop.pending[0][0] if shop.pending else None
            creation = shop.next_creation
            if creation is not None and creation <= until and (next_event is None or creation <= next_event):
                self.create(shop, creation, applied_at=applied_at)
                gap = shop.rng.expovariate(rate) if rate > 0 else 1e12
                shop.next_creation = creation + timedelta(seconds=min(gap, 1e9))
            elif next_event is not None and next_event <= until:
                when, _, tid, status = heapq.heappop(shop.pending)
                self.advance_trade(shop, shop.trades[tid], when, status, applied_at=applied_at)
            else:
                return changes
            changes += 1

    def _visible(self, shop: ShopState, modified: datetime, applied_at: datetime | None) -> datetime:
        visible = modified + self._delay(shop.rng)
        return max(visible, applied_at) if applied_at is not None else visible

    def create(
        self, shop: ShopState, created: datetime, *, applied_at: datetime | None = None, trade_type: str | None = None
    ) -> TradeRecord:
        rng = shop.rng
        created = to_millisecond(created)
        if trade_type is None:
            if rng.random() < shop.profile.other_type_share:
                trade_type = rng.choice(_OTHER_TYPES)
            else:
                trade_type = rng.choice(("fixed", "fixed", "fixed", "auction", "step", "cod", "ec", "auto_delivery"))
        tid = shop.new_tid()
        orders: list[dict[str, Any]] = []
        total = Decimal("0.00")
        for i in range(rng.choice((1, 1, 1, 2, 3))):
            price = Decimal(rng.randint(990, 49900)) / 100
            num = rng.randint(1, 3)
            fee = price * num
            total += fee
            oid = tid + i + 1
            orders.append(
                {
                    "oid": oid,
                    "oid_str": str(oid),
                    "title": rng.choice(_ITEMS),
                    "price": f"{price:.2f}",
                    "num": num,
                    "total_fee": f"{fee:.2f}",
                    "payment": f"{fee:.2f}",
                    "refund_status": "NO_REFUND",
                    "num_iid": 600_000_000_000 + rng.randint(1, 999_999),
                    "sku_id": str(rng.randint(10**12, 10**13)),
                }
            )
        post_fee = Decimal(rng.choice((0, 0, 0, 500, 800))) / 100
        province = rng.randrange(len(_PROVINCES))
        data: dict[str, Any] = {
            "tid": tid,
            "tid_str": str(tid),
            "type": trade_type,
            "created": format_time(created),
            "buyer_nick": f"买家{rng.randint(1000, 99999)}",
            "buyer_open_uid": f"AAH{rng.getrandbits(64):016x}",
            "seller_nick": shop.nick,
            "title": shop.nick,
            "num": sum(int(order["num"]) for order in orders) if len(orders) == 1 else 0,
            "total_fee": f"{total:.2f}",
            "post_fee": f"{post_fee:.2f}",
            "discount_fee": "0.00",
            "payment": f"{total + post_fee:.2f}",
            "receiver_state": _PROVINCES[province],
            "receiver_city": _CITIES[province],
            "receiver_name": "*" * rng.randint(2, 3),
            "receiver_mobile": "*******" + f"{rng.randint(0, 9999):04d}",
            "orders": orders,
        }
        record = TradeRecord(tid=tid, created=created, type=trade_type, data=data)
        shop.trades[tid] = record
        _add_sorted(shop.by_created, (created, tid))
        shop.add_version(
            record,
            Version(modified=created, visible_at=self._visible(shop, created, applied_at), status="WAIT_BUYER_PAY"),
        )
        self._schedule(shop, record, created, "WAIT_BUYER_PAY")
        if rng.random() < shop.profile.memo_share:
            when = created + timedelta(seconds=max(1.0, rng.expovariate(1 / 7200.0)))
            heapq.heappush(shop.pending, (to_millisecond(when), rng.getrandbits(30), tid, ""))
        return record

    def _schedule(self, shop: ShopState, record: TradeRecord, since: datetime, status: str) -> None:
        choices = _NEXT.get(status)
        if not choices:
            return
        rng = shop.rng
        status, _, mean = _pick(rng, choices)  # the next status and its typical delay, drawn together
        when = since + timedelta(seconds=max(1.0, rng.expovariate(1 / mean)))
        heapq.heappush(shop.pending, (to_millisecond(when), rng.getrandbits(30), record.tid, status))

    def advance_trade(
        self,
        shop: ShopState,
        record: TradeRecord,
        when: datetime,
        status: str,
        *,
        applied_at: datetime | None = None,
    ) -> None:
        """Apply one scheduled change of ``record`` stamped ``when``: a new ``status``, or a memo edit ("")."""
        current = record.versions[-1]
        modified = max(to_millisecond(when), current.modified)
        if status and current.status in FINAL_STATUSES:
            return  # a race between two scheduled steps: the trade already ended
        memo = f"备注{shop.rng.randint(1, 999)}" if not status else current.memo
        version = Version(
            modified=modified,
            visible_at=self._visible(shop, modified, applied_at),
            status=status or current.status,
            memo=memo,
        )
        shop.add_version(record, version)
        if status:
            self._schedule(shop, record, modified, status)

    def touch(self, shop: ShopState, record: TradeRecord, when: datetime, *, applied_at: datetime) -> None:
        """A change right now that keeps the status (a memo edit): used to move trades mid-paging."""
        current = record.versions[-1]
        modified = max(to_millisecond(when), current.modified)
        # Visible at once: the point is to move it while a reader is paging.
        version = Version(
            modified=modified,
            visible_at=max(modified, applied_at),
            status=current.status,
            memo=f"改{shop.rng.randint(1, 999)}",
        )
        shop.add_version(record, version)
