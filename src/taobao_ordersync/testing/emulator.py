"""A faithful Taobao Open Platform emulator for the order APIs, served on loopback.

What it emulates, and the assumptions behind each rule, are listed in
``docs/emulator.md``. In short: ``/router/rest`` (GET and POST, query and form
merged), TOP's validation order and error codes, the three signing methods,
``taobao.time.get``, ``taobao.trades.sold.get``, ``taobao.trades.sold.increment.get``
and ``taobao.trade.fullinfo.get`` with default and ``simplify=true`` envelopes;
result orderings recomputed on every request (so trades move between pages);
a search index that sees changes only after a visibility lag; a clock that may
disagree with the caller's; seeded chaos; and ground truth to verify against.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from itertools import groupby
from types import TracebackType
from typing import Any, Final, Self

from aiohttp import web
from attrs import define, evolve, frozen

from taobao_ordersync import _wire
from taobao_ordersync._checkpoint import Checkpoint
from taobao_ordersync._time import CST, floor_second, format_time, from_epoch, parse_time, parse_timestamp_param
from taobao_ordersync.signing import SIGN_METHODS, sign
from taobao_ordersync.testing._shop import (
    DEFAULT_VISIBLE_TYPES,
    ShopProfile,
    ShopState,
    Simulator,
    TradeRecord,
    Version,
    make_shop,
)
from taobao_ordersync.testing._tmc import KNOWN_TOPICS, TmcBroker, TmcChaos
from taobao_ordersync.testing.naive import Collector

__all__ = ["Chaos", "Emulator", "ShopProfile", "TmcChaos", "VerifyReport"]

MAX_WINDOW_TRADES: Final = _wire.MAX_WINDOW_TRADES
_EXT_TYPES: Final = frozenset({"ershou", "service", "mark"})
_TAGS: Final = frozenset({"time_card", "fee_card"})
_RATE_STATUSES: Final = frozenset(
    {"RATE_UNBUYER", "RATE_UNSELLER", "RATE_BUYER_UNSELLER", "RATE_UNBUYER_SELLER", "RATE_BUYER_SELLER"}
)
_UNRATED: Final = frozenset({"RATE_UNBUYER", "RATE_UNSELLER"})  # neither side has rated
_TMC_APP_METHODS: Final = frozenset({"taobao.tmc.messages.consume", "taobao.tmc.messages.confirm"})
_METHODS: Final = frozenset(
    {"taobao.time.get", "taobao.trades.sold.get", "taobao.trades.sold.increment.get", "taobao.trade.fullinfo.get"}
    | {"taobao.tmc.user.permit"}
    | _TMC_APP_METHODS
)
_MAX_CONFIRM: Final = 200


@frozen(kw_only=True)
class Chaos:
    """Seeded fault injection. Every rate is a probability per request.

    Args:
        error_rate: transient failures: ``isp.*`` errors, HTTP 502 pages, truncated
            bodies and dropped connections, in equal shares.
        ban_rate: code-7 bans for the whole app.
        ban_seconds: how long each injected ban lasts (stated in ``sub_msg`` like Taobao does).
        rate_limit: calls per second per app before a 1-second code-7 ban (None: unlimited).
        move_while_paging: chance that a list page request first modifies a few trades
            of the window being read (a seller editing orders while we page).
        slow_rate: responses delayed by ``slow_seconds``.
        slow_seconds: the delay of a slow response.
        shuffle_ties: return the trades that share a second in a fresh random order on
            every list request (TOP documents no tie-break; backends reorder ties per
            ``LIMIT``/``OFFSET``), so offset paging may split such a second unsafely.
        refuse_later_pages: chance that a list request for page 2 or later is refused as too
            big (``isp.top-remote-connection-timeout``) although its page 1 was listed, as an
            overloaded Taobao does under 11.11 load.
        always_has_next: every ``use_has_next`` reply says ``has_next=true`` (a broken proxy or
            gateway): a reader that trusts it never stops.
    """

    error_rate: float = 0.0
    ban_rate: float = 0.0
    ban_seconds: int = 1
    rate_limit: float | None = None
    move_while_paging: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 0.5
    shuffle_ties: bool = False
    refuse_later_pages: float = 0.0
    always_has_next: bool = False


@frozen(kw_only=True)
class VerifyReport:
    """What a consumer received, compared with the emulator's ground truth.

    ``duplicates`` counts exact re-deliveries (same tid and modified) the consumer saw.
    """

    in_scope: int
    delivered: int
    missing: tuple[int, ...]
    stale: tuple[int, ...]
    duplicates: int

    @property
    def lost(self) -> int:
        """Trades missing or delivered only in a version older than required."""
        return len(self.missing) + len(self.stale)

    def __str__(self) -> str:
        return (
            f"{self.in_scope} trades in scope, {self.delivered} delivered, {self.lost} lost "
            f"({len(self.missing)} missing, {len(self.stale)} stale), {self.duplicates} duplicates"
        )


class _Refusal(Exception):
    """An error_response to send (internal control flow)."""

    def __init__(self, code: int, msg: str, sub_code: str | None = None, sub_msg: str | None = None) -> None:
        super().__init__(msg)
        self.code, self.msg, self.sub_code, self.sub_msg = code, msg, sub_code, sub_msg


def _bad_param(name: str, why: str) -> _Refusal:
    return _Refusal(15, "Remote service error", f"isv.invalid-parameter:{name}", why)


@define
class _CacheEntry:
    generation: int
    computed_at: datetime
    settled: bool
    tids: list[tuple[int, Version]]


class Emulator:
    """The fake Taobao: state, ground truth and an ``aiohttp.web`` server on loopback.

    Use it as an async context manager::

        async with Emulator(shops=3, seed=7) as emu:
            async with TopClient(emu.app_key, emu.app_secret, url=emu.url) as client:
                ...

    Shop ``i`` (1-based) has id ``shop-i`` and session key ``session-i``.

    Args:
        shops: how many generated shops.
        profile: how busy they are and how much history they start with.
        seed: makes data, chaos and timing decisions repeatable.
        app_key, app_secret: the credentials the emulator accepts.
        clock_offset: seconds the emulator's clock is ahead of this machine's (negative: behind).
        visibility_lag: max seconds before a change shows in list results (uniform 0..max).
        chaos: fault injection.
        tmc: how the TMC message channel misbehaves (``emu.tmc`` is its broker and ground truth).
        port: 0 picks a free port.
    """

    def __init__(
        self,
        *,
        shops: int = 1,
        profile: ShopProfile | None = None,
        seed: int = 0,
        app_key: str = "test",
        app_secret: str = "test",
        clock_offset: float = 0.0,
        visibility_lag: float = 0.0,
        chaos: Chaos | None = None,
        tmc: TmcChaos | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.app_key = app_key
        self.app_secret = app_secret
        self.clock_offset = clock_offset
        self.chaos = chaos or Chaos()
        self.seed = seed
        self.calls: Counter[str] = Counter()
        self.calls_by_shop: Counter[tuple[str, str]] = Counter()
        self.bans_issued = 0
        self.activity_paused = False
        self.faults_injected = 0
        self._rng = random.Random(f"chaos:{seed}")
        self._host = host
        self._port = port
        self._simulator = Simulator(visibility_lag=visibility_lag)
        self._profile = profile or ShopProfile()
        self._shops: dict[str, ShopState] = {}
        self._by_session: dict[str, ShopState] = {}
        self._ban_until = 0.0
        self._bucket = 0.0
        self._bucket_at = 0.0
        self._cache: dict[tuple[Any, ...], _CacheEntry] = {}
        self._runner: web.AppRunner | None = None
        self._request_no = 0
        self._unknown_to_fullinfo: dict[int, int] = {}
        self.tmc = TmcBroker(chaos=tmc, seed=seed)
        for index in range(1, shops + 1):
            self.add_shop(index)

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Serve on ``host:port`` (a free port when 0)."""
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        if self._port == 0:
            sockets: Any = getattr(site._server, "sockets", None)
            self._port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop serving. Safe to call more than once."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def url(self) -> str:
        """The gateway URL to give ``TopClient(url=...)``."""
        return f"http://{self._host}:{self._port}/router/rest"

    def app(self) -> web.Application:
        """The ``aiohttp.web`` application (for embedding in another server or test)."""
        application = web.Application()
        application.router.add_route("GET", "/router/rest", self._handle)
        application.router.add_route("POST", "/router/rest", self._handle)
        return application

    # -- time and shops --------------------------------------------------------------

    def now(self) -> datetime:
        """The emulator's clock (this machine's clock plus ``clock_offset``)."""
        return from_epoch(time.time() + self.clock_offset)

    def add_shop(self, index: int, *, profile: ShopProfile | None = None) -> ShopState:
        """Create shop ``index`` with its history up to now."""
        shop = make_shop(index, profile=profile or self._profile, seed=self.seed)
        now = self.now().replace(microsecond=0)
        shop.next_creation = now - timedelta(days=shop.profile.history_days)
        self._simulator.run(shop, now)
        shop.on_version = self.tmc.published  # a message for every change of a permitted seller
        self._shops[shop.id] = shop
        self._by_session[shop.session] = shop
        return shop

    @property
    def shops(self) -> list[ShopState]:
        """The shops (``.id``, ``.session``, ``.trades``)."""
        return list(self._shops.values())

    def shop(self, shop_id: str) -> ShopState:
        """One shop by id."""
        return self._shops[shop_id]

    def pause_activity(self) -> None:
        """Stop all shop activity (and mid-read moves): the state to verify a final sync against."""
        self.activity_paused = True
        self.chaos = evolve(self.chaos, move_while_paging=0.0)

    def catch_up(self, shop: ShopState | None = None) -> None:
        """Apply every change due by now (done before each request; call it after ``advance``)."""
        if self.activity_paused:
            return
        now = self.now()
        for state in [shop] if shop else self._shops.values():
            self._simulator.run(state, now)

    def advance(self, seconds: float) -> None:
        """Jump the emulator's clock forward; the shops' activity over the jump happens at once."""
        self.clock_offset += seconds
        self.catch_up()

    def flash_sale(self, shop_id: str, count: int, *, seconds: int = 3, start: datetime | None = None) -> None:
        """Create ``count`` trades spread evenly over ``seconds`` whole seconds from ``start`` (default now).

        Their creation times have milliseconds, like Taobao's backend, while replies print
        whole seconds: every second of a big sale is a long run of ties.
        """
        shop = self._shops[shop_id]
        begin = (start or self.now()).replace(microsecond=0)
        for i in range(count):
            self._simulator.create(shop, begin + timedelta(milliseconds=i * seconds * 1000 // max(count, 1)))

    def modify(self, shop_id: str, tid: int, *, at: datetime | None = None) -> None:
        """Change one trade now (or stamped ``at``), keeping its status."""
        shop = self._shops[shop_id]
        now = self.now()
        self._simulator.touch(shop, shop.trades[tid], at or now, applied_at=now)

    def hide_from_fullinfo(self, tid: int, *, times: int = 10**9) -> None:
        """Make ``taobao.trade.fullinfo.get`` say ``isv.trade-not-exist`` for a listed trade, the next
        ``times`` times it is asked for (its store lagging behind the lists' index)."""
        self._unknown_to_fullinfo[tid] = times

    def expire_session(self, shop_id: str) -> None:
        """Make the shop's session key invalid (code 27) until ``renew_session``."""
        self._shops[shop_id].session_valid = False

    def renew_session(self, shop_id: str) -> str:
        """Issue the shop a new valid session key and return it."""
        shop = self._shops[shop_id]
        self._by_session.pop(shop.session, None)
        shop.session = f"{shop.session.split('~')[0]}~{self._rng.getrandbits(32):08x}"
        shop.session_valid = True
        self._by_session[shop.session] = shop
        return shop.session

    # -- ground truth ----------------------------------------------------------------

    def verify(
        self,
        shop_id: str,
        received: Mapping[int, datetime],
        *,
        created_from: datetime,
        sync_started: datetime,
        until: datetime,
        duplicates: int = 0,
    ) -> VerifyReport:
        """Compare what a consumer kept (tid -> newest ``modified``) with the truth.

        In scope: trades created in ``[created_from, sync_started]`` and trades modified
        in ``[sync_started, until]``, compared with the backend's millisecond times (a
        trade created at ``sync_started`` + 0.5 s is in scope through its modification).
        Each must have been delivered in a version at least as new as its newest version
        modified at or before ``until``, at the whole-second resolution replies print.
        """
        shop = self._shops[shop_id]
        missing: list[int] = []
        stale: list[int] = []
        in_scope = 0
        for record in shop.trades.values():
            required = record.as_of(until)
            if required is None:
                continue
            created_in = created_from <= record.created <= sync_started
            if not created_in and required.modified < sync_started:
                continue
            in_scope += 1
            got = received.get(record.tid)
            if got is None:
                missing.append(record.tid)
            elif got < floor_second(required.modified):  # replies print whole seconds
                stale.append(record.tid)
        delivered = sum(1 for tid in received if tid in shop.trades)
        return VerifyReport(
            in_scope=in_scope,
            delivered=delivered,
            missing=tuple(missing),
            stale=tuple(stale),
            duplicates=duplicates,
        )

    def verify_sync(self, checkpoint: Checkpoint, collector: Collector) -> VerifyReport:
        """``verify`` what ``collector`` kept, in the scope a finished sync's checkpoint states."""
        if not checkpoint.backfill_done:
            raise ValueError("the backfill of this checkpoint is not complete; nothing to verify yet")
        return self.verify(
            checkpoint.shop_id,
            collector.newest,
            created_from=checkpoint.backfill_from,
            sync_started=checkpoint.origin,
            until=checkpoint.cursor,
            duplicates=collector.duplicates,
        )

    # -- HTTP ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        params: dict[str, str] = dict(request.query)
        if request.method == "POST":
            form = await request.post()
            params.update({key: value for key, value in form.items() if isinstance(value, str)})
        self._request_no += 1
        request_id = f"{self._request_no:x}{self._rng.getrandbits(40):010x}"
        now = self.now()
        headers = {"Date": format_http_date(now)}
        method = params.get("method", "")
        self.calls[method or "?"] += 1

        fault = self._fault() if method in _METHODS else None
        if fault == "drop":
            transport = request.transport
            if transport is not None:
                transport.close()
            return web.Response(status=200)
        if fault == "slow":
            await asyncio.sleep(self.chaos.slow_seconds)
        if fault == "502":
            return web.Response(
                status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html",
                headers=headers,
            )  # fmt: skip
        if fault == "truncated":
            return web.Response(status=200, text='{"trades_sold_incr', content_type="application/json", headers=headers)

        simplify = _flag(params, "simplify")
        try:
            if fault == "isp":
                raise _Refusal(15, "Remote service error", "isp.top-remote-service-unavailable", "服务暂不可用")
            payload = self._dispatch(params, now)
            body = _wire.success_body(method, {**payload, "request_id": request_id}, simplify=simplify)
        except _Refusal as refusal:
            body = _wire.error_body(
                refusal.code, refusal.msg, request_id=request_id, sub_code=refusal.sub_code, sub_msg=refusal.sub_msg
            )
        return web.Response(
            body=json.dumps(body, ensure_ascii=False).encode(), content_type="application/json", headers=headers
        )

    def _fault(self) -> str | None:
        chaos = self.chaos
        rng = self._rng
        if chaos.slow_rate and rng.random() < chaos.slow_rate:
            return "slow"
        if chaos.error_rate and rng.random() < chaos.error_rate:
            self.faults_injected += 1
            return rng.choice(("isp", "502", "truncated", "drop"))
        return None

    def _dispatch(self, params: dict[str, str], now: datetime) -> dict[str, Any]:
        method = params.get("method")
        if not method:
            raise _Refusal(21, "Missing Method")
        if method not in _METHODS:
            raise _Refusal(22, "Invalid Method")
        if not params.get("app_key"):
            raise _Refusal(28, "Missing App Key")
        if params["app_key"] != self.app_key:
            raise _Refusal(29, "Invalid App Key")
        self._check_timestamp(params.get("timestamp"), now)
        version = params.get("v")
        if not version:
            raise _Refusal(32, "Missing Version")
        if version != _wire.API_VERSION:
            if version.replace(".", "").isdigit():
                raise _Refusal(34, "Unsupported Version")
            raise _Refusal(33, "Invalid Version")
        if params.get("format", "xml") != "json":
            raise _Refusal(23, "Invalid Format", sub_msg="the emulator answers format=json only")
        self._check_signature(params)
        self._throttle()
        if method == "taobao.time.get":
            return {"time": format_time(now)}
        if method in _TMC_APP_METHODS:  # app-level: no session
            self.catch_up()  # every change due by now is published
            return self._tmc_call(method, params, now)
        shop = self._session_shop(params)
        self.calls_by_shop[(shop.id, method)] += 1
        self.catch_up(shop)
        if method == "taobao.trade.fullinfo.get":
            return self._fullinfo(shop, params, now)
        if method == "taobao.tmc.user.permit":
            return self._tmc_permit(shop, params)
        return self._list(shop, method, params, now)

    def _check_timestamp(self, raw: str | None, now: datetime) -> None:
        if not raw:
            raise _Refusal(30, "Missing Timestamp")
        try:
            stamp = parse_timestamp_param(raw)
        except ValueError:
            raise _Refusal(31, "Invalid timestamp") from None
        if abs((stamp - now).total_seconds()) > 600:
            raise _Refusal(31, "Invalid timestamp")

    def _check_signature(self, params: dict[str, str]) -> None:
        given = params.get("sign")
        if not given:
            raise _Refusal(24, "Missing Signature")
        sign_method = params.get("sign_method", "md5")
        if sign_method not in SIGN_METHODS:
            raise _Refusal(25, "Invalid Signature", sub_msg=f"unknown sign_method {sign_method}")
        expected = sign(params, self.app_secret, sign_method)
        if given.upper() != expected:
            raise _Refusal(25, "Invalid Signature")

    def _throttle(self) -> None:
        chaos = self.chaos
        wall = time.monotonic()
        if wall < self._ban_until:
            self._ban(max(1, round(self._ban_until - wall)))
        if chaos.ban_rate and self._rng.random() < chaos.ban_rate:
            self._ban_until = wall + chaos.ban_seconds
            self._ban(chaos.ban_seconds)
        if chaos.rate_limit:
            # Token bucket with one second of burst.
            self._bucket = min(chaos.rate_limit, self._bucket + (wall - self._bucket_at) * chaos.rate_limit)
            self._bucket_at = wall
            if self._bucket < 1:
                self._ban_until = wall + 1
                self._ban(1)
            self._bucket -= 1

    def _ban(self, seconds: int) -> None:
        self.bans_issued += 1
        raise _Refusal(
            7,
            "App Call Limited",
            "accesscontrol.limited-by-api-access-count",
            f"This ban will last for {seconds} more seconds",
        )

    def _session_shop(self, params: dict[str, str]) -> ShopState:
        session = params.get("session")
        if not session:
            raise _Refusal(26, "Missing Session", "session-is-blank")
        shop = self._by_session.get(session)
        if shop is None or not shop.session_valid:
            raise _Refusal(
                27, "Invalid session", "invalid-sessionkey", "非法或过期的SessionKey参数，请使用有效的SessionKey参数"
            )
        return shop

    # -- business APIs ---------------------------------------------------------------

    @staticmethod
    def _fields(params: dict[str, str]) -> frozenset[str]:
        fields = params.get("fields", "")
        if not fields.strip():
            raise _Refusal(40, "Missing Required Arguments:fields")
        return frozenset(name.strip() for name in fields.split(",") if name.strip())

    @staticmethod
    def _int(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
        raw = params.get(name)
        if raw is None or raw == "":
            return default
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise _Refusal(41, f"Invalid Arguments:{name}")
        return int(raw)

    @classmethod
    def _required_time(cls, params: dict[str, str], name: str) -> datetime:
        moment = cls._time(params, name)
        if moment is None:
            raise _Refusal(40, f"Missing Required Arguments:{name}")
        return moment

    @staticmethod
    def _time(params: dict[str, str], name: str) -> datetime | None:
        raw = params.get(name)
        if not raw:
            return None
        try:
            return parse_time(raw)
        except ValueError:
            raise _Refusal(41, f"Invalid Arguments:{name}") from None

    @staticmethod
    def _render(record: TradeRecord, version: Version, fields: frozenset[str]) -> dict[str, Any]:
        data = record.render(version)
        shown = {name: value for name, value in data.items() if name in fields and name != "orders"}
        order_fields = {name.split(".", 1)[1] for name in fields if name.startswith("orders.")}
        if "orders" in fields or order_fields:
            orders = data["orders"]
            if order_fields:
                orders = [{k: v for k, v in order.items() if k in order_fields} for order in orders]
            shown["orders"] = orders
        return shown

    def _tmc_permit(self, shop: ShopState, params: dict[str, str]) -> dict[str, Any]:
        raw = params.get("topics")
        topics = None
        if raw:
            topics = [name.strip() for name in raw.split(",") if name.strip()]
            if len(topics) > 100:
                raise _bad_param("topics", "at most 100 topics")
            unknown = sorted(set(topics) - KNOWN_TOPICS)
            if unknown:
                raise _bad_param("topics", f"unknown topic {unknown[0]}")
        self.tmc.permit(shop, topics)
        return {"is_success": True}

    def _tmc_call(self, method: str, params: dict[str, str], now: datetime) -> dict[str, Any]:
        group = params.get("group_name") or "default"
        if method == "taobao.tmc.messages.consume":
            quantity = self._int(params, "quantity", 100, 10, 200)
            messages = self.tmc.consume(group, quantity, now)
            return {"messages": messages} if messages else {}  # TOP omits empty lists
        raw = params.get("s_message_ids")
        if not raw or not raw.strip():
            raise _Refusal(40, "Missing Required Arguments:s_message_ids")
        ids = [part.strip() for part in raw.split(",") if part.strip()]
        if not all(part.isdigit() for part in ids):
            raise _Refusal(41, "Invalid Arguments:s_message_ids")
        if len(ids) > _MAX_CONFIRM:
            raise _bad_param("s_message_ids", f"at most {_MAX_CONFIRM} message ids per call")
        self.tmc.confirm(group, (int(part) for part in ids))
        return {"is_success": True}

    def _fullinfo(self, shop: ShopState, params: dict[str, str], now: datetime) -> dict[str, Any]:
        fields = self._fields(params)
        raw_tid = params.get("tid")
        if not raw_tid:
            raise _Refusal(40, "Missing Required Arguments:tid")
        if not raw_tid.isdigit():
            raise _Refusal(41, "Invalid Arguments:tid")
        record = shop.trades.get(int(raw_tid))
        version = record.versions[-1] if record else None
        hidden = self._unknown_to_fullinfo.get(int(raw_tid), 0)
        if hidden:
            self._unknown_to_fullinfo[int(raw_tid)] = hidden - 1
        if hidden or record is None or version is None or record.versions[0].visible_at > now:
            raise _Refusal(15, "Remote service error", "isv.trade-not-exist", "交易订单不存在")
        # fullinfo reads the trade store, not the search index: always the newest state.
        return {"trade": self._render(record, version, fields)}

    def _list(self, shop: ShopState, method: str, params: dict[str, str], now: datetime) -> dict[str, Any]:
        fields = self._fields(params)
        page_size = self._int(params, "page_size", 40, 1, 100)
        page_no = self._int(params, "page_no", 1, 1, 10**9)
        use_has_next = _flag(params, "use_has_next")
        types = self._types(params.get("type"))
        status = params.get("status") or None
        matches = self._filters(params)
        if method == "taobao.trades.sold.increment.get":
            start = self._required_time(params, "start_modified")
            end = self._required_time(params, "end_modified")
            if end < start:
                raise _bad_param("end_modified", "end_modified must not be before start_modified")
            if end - start > _wire.MAX_INCREMENT_SPAN:
                raise _bad_param("start_modified-and-end_modified", "时间跨度不能超过一天")
            if start < now - _wire.HORIZON:
                raise _bad_param("start_modified", "只能查询三个月内的增量订单")
            key_kind = "modified"
        else:
            start = self._time(params, "start_created") or now - _wire.HORIZON
            end = self._time(params, "end_created") or now
            if end < start:
                raise _bad_param("end_created", "end_created must not be before start_created")
            start = max(start, now - _wire.HORIZON)  # only the last three months are listed
            key_kind = "created"
        if page_no > 1 and self.chaos.refuse_later_pages and self._rng.random() < self.chaos.refuse_later_pages:
            self.faults_injected += 1
            raise _Refusal(15, "Remote service error", "isp.top-remote-connection-timeout", "远程服务调用超时")
        if page_no > 1 and self.chaos.move_while_paging and self._rng.random() < self.chaos.move_while_paging:
            self._move_some(shop, key_kind, start, end, now)
        rows = self._matching(shop, key_kind, start, end, types, status, now)
        if matches is not None:
            rows = [(tid, version) for tid, version in rows if matches(shop.trades[tid])]
        if len(rows) > MAX_WINDOW_TRADES:
            raise _Refusal(15, "Remote service error", "isp.top-remote-connection-timeout", "远程服务调用超时")
        if self.chaos.shuffle_ties:
            rows = self._shuffled_ties(shop, rows, key_kind)
        first = (page_no - 1) * page_size
        page = rows[first : first + page_size]
        result: dict[str, Any] = {"trades": [self._render(shop.trades[tid], v, fields) for tid, v in page]}
        if not result["trades"]:
            del result["trades"]  # TOP omits empty lists
        if use_has_next:
            result["has_next"] = self.chaos.always_has_next or first + page_size < len(rows)
        else:
            result["total_results"] = len(rows)
        return result

    def _shuffled_ties(
        self, shop: ShopState, rows: list[tuple[int, Version]], key_kind: str
    ) -> list[tuple[int, Version]]:
        """``rows`` with each run of trades sharing a printed second in a fresh random order."""

        def second(row: tuple[int, Version]) -> datetime:
            tid, version = row
            return floor_second(version.modified if key_kind == "modified" else shop.trades[tid].created)

        shuffled: list[tuple[int, Version]] = []
        for _, run in groupby(rows, key=second):
            ties = list(run)
            self._rng.shuffle(ties)
            shuffled.extend(ties)
        return shuffled

    @staticmethod
    def _filters(params: dict[str, str]) -> Callable[[TradeRecord], bool] | None:
        """The optional filters of both list APIs, or None when none is given.

        ``buyer_nick`` and ``buyer_open_uid`` (``buyer_open_id`` on sold.get) match exactly.
        ``ext_type``, ``tag`` and ``rate_status`` take one documented value each (another is
        refused as TOP refuses an invalid parameter); the emulator's trades are ordinary
        ones (no second-hand, service or card marks) that neither side has rated yet.
        """
        equal: dict[str, str] = {}
        for name, key in (
            ("buyer_nick", "buyer_nick"),
            ("buyer_open_uid", "buyer_open_uid"),
            ("buyer_open_id", "buyer_open_uid"),
        ):
            if params.get(name):
                equal[key] = params[name]
        excluded = False
        for name, allowed, matching in (
            ("ext_type", _EXT_TYPES, frozenset[str]()),
            ("tag", _TAGS, frozenset[str]()),
            ("rate_status", _RATE_STATUSES, _UNRATED),
        ):
            wanted = params.get(name)
            if not wanted:
                continue
            if wanted not in allowed:
                raise _bad_param(name, f"{name} must be one of {', '.join(sorted(allowed))}")
            excluded = excluded or wanted not in matching
        if not equal and not excluded:
            return None

        def matches(record: TradeRecord) -> bool:
            return not excluded and all(record.data.get(key) == wanted for key, wanted in equal.items())

        return matches

    @staticmethod
    def _types(raw: str | None) -> frozenset[str]:
        if not raw:
            return DEFAULT_VISIBLE_TYPES
        names = {name.strip() for name in raw.split(",") if name.strip()}
        if "guarantee_trade" in names:
            names |= {"fixed", "auction"}
        return frozenset(names)

    def _matching(
        self,
        shop: ShopState,
        key_kind: str,
        start: datetime,
        end: datetime,
        types: frozenset[str],
        status: str | None,
        now: datetime,
    ) -> list[tuple[int, Version]]:
        """The window's trades as the search index sees them now, newest first."""
        key = (shop.id, key_kind, start, end, types, status)
        cached = self._cache.get(key)
        if cached and cached.generation == shop.generation and (cached.settled or cached.computed_at == now):
            return cached.tids
        rows: list[tuple[datetime, int, Version]] = []
        # Cached rows stay right until the shop changes, unless a version still becomes visible later.
        settled = shop.visible_by is None or shop.visible_by <= now
        if key_kind == "modified":
            for modified, tid, index in shop.modified_between(start, end):
                record = shop.trades[tid]
                version = record.view(now)
                if version is not record.versions[index]:
                    continue
                if record.type in types and (status is None or version.status == status):
                    rows.append((modified, tid, version))
        else:
            for created, tid in shop.created_between(start, end):
                record = shop.trades[tid]
                version = record.view(now)
                if version is not None and record.type in types and (status is None or version.status == status):
                    rows.append((created, tid, version))
        # Sorted by the printed (whole-second) time only; ties by tid unless chaos reshuffles them.
        rows.sort(key=lambda row: (floor_second(row[0]), row[1]), reverse=True)
        tids = [(tid, version) for _, tid, version in rows]
        self._cache[key] = _CacheEntry(generation=shop.generation, computed_at=now, settled=settled, tids=tids)
        if len(self._cache) > 256:
            self._cache.pop(next(iter(self._cache)))
        return tids

    def _move_some(self, shop: ShopState, key_kind: str, start: datetime, end: datetime, now: datetime) -> None:
        candidates = (
            [tid for _, tid, _ in shop.modified_between(start, end)]
            if key_kind == "modified"
            else [tid for _, tid in shop.created_between(start, end)]
        )
        for tid in self._rng.sample(candidates, min(len(candidates), self._rng.randint(1, 3))):
            self._simulator.touch(shop, shop.trades[tid], now, applied_at=now)


def _flag(params: dict[str, str], name: str) -> bool:
    """A boolean parameter: TOP's Java gateway reads ``true`` in any case (SDKs send ``True``)."""
    return params.get(name, "").strip().lower() == "true"


def format_http_date(moment: datetime) -> str:
    """RFC 9110 ``Date`` header for ``moment``."""
    utc = moment.astimezone(CST).timestamp()
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(utc))
