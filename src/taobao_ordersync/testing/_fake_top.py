"""The fake Taobao Open Platform without I/O: a call's parameters and the time in, a reply out.

``FakeTop`` holds the shops and answers one call at a time the way TOP's gateway does:
a chaos fault, if one is drawn (``_chaos``); the checks of every call, in TOP's order, and
the app's call limit (``_gateway``); the seller's session; then the API itself: the order
APIs (``_order_apis``) or the message service (``_tmc``). It reads no clock, opens no
socket and never sleeps: the caller passes the time, and a slow or dropped reply is a
field of the ``TopReply`` for the caller to act on. ``Emulator`` serves it over HTTP on
loopback; unit tests call it directly.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from attrs import evolve, field, frozen

from taobao_ordersync import _wire
from taobao_ordersync._time import CST, format_time
from taobao_ordersync.testing import _tmc
from taobao_ordersync.testing._chaos import Chaos, Dice, Fault
from taobao_ordersync.testing._gateway import (
    CallLimit,
    Refusal,
    check_system_parameters,
    read_flag,
    shop_of_session,
)
from taobao_ordersync.testing._order_apis import (
    LIST_METHODS,
    Listing,
    Row,
    SearchIndex,
    fullinfo_payload,
    list_page,
    read_fullinfo_request,
    read_list_request,
    same_second,
    tids_in_window,
)
from taobao_ordersync.testing._shop import ShopProfile, ShopState, Simulator, make_shop
from taobao_ordersync.testing._tmc import TmcBroker, TmcChaos
from taobao_ordersync.testing._truth import VerifyReport, verify

if TYPE_CHECKING:
    from taobao_ordersync.checkpoint import Checkpoint
    from taobao_ordersync.testing.naive import Collector

__all__ = ["METHODS", "FakeTop", "TopReply", "format_http_date"]

FULLINFO: Final = "taobao.trade.fullinfo.get"
#: Every method the fake answers; another gets code 22.
METHODS: Final = frozenset({"taobao.time.get", FULLINFO} | LIST_METHODS | _tmc.USER_METHODS | _tmc.APP_METHODS)
_BAD_GATEWAY_PAGE: Final = "<html><body><h1>502 Bad Gateway</h1></body></html>"
_TRUNCATED_BODY: Final = '{"trades_sold_incr'


@frozen(kw_only=True)
class TopReply:
    """The gateway's answer to one call: a JSON document, or (by chaos) a broken page or no answer at all.

    Args:
        status: the HTTP status (TOP answers API errors with 200 too).
        document: the JSON document of a JSON reply.
        text: the body of a reply that is not a JSON document (an HTML error page, a cut-off body).
        content_type: the body's media type.
        headers: the ``Date`` header (every reply but a dropped connection carries one).
        delay: seconds to wait before answering (a slow reply).
        drop_connection: close the connection without answering.
    """

    status: int = 200
    document: dict[str, Any] | None = None
    text: str | None = None
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(factory=dict)
    delay: float = 0.0
    drop_connection: bool = False

    @property
    def charset(self) -> str | None:
        """``utf-8`` for a text body, None for a JSON document (JSON is UTF-8 by definition)."""
        return "utf-8" if self.text is not None else None

    def body(self) -> bytes:
        """The bytes to send."""
        if self.document is not None:
            return json.dumps(self.document, ensure_ascii=False).encode()
        return (self.text or "").encode()


class FakeTop:
    """The fake Taobao: its shops and the calls it answers, with no I/O.

    Shop ``i`` (1-based) has id ``shop-i`` and session key ``session-i``. The arguments are
    ``Emulator``'s, plus ``now``: the moment the shops' histories run up to.
    """

    def __init__(
        self,
        *,
        now: datetime,
        shops: int = 1,
        profile: ShopProfile | None = None,
        seed: int = 0,
        app_key: str = "test",
        app_secret: str = "test",
        visibility_lag: float = 0.0,
        chaos: Chaos | None = None,
        tmc: TmcChaos | None = None,
    ) -> None:
        self.app_key = app_key
        self.app_secret = app_secret
        self.seed = seed
        self.calls: Counter[str] = Counter()  # per method, refused and faulted calls included
        self.calls_by_shop: Counter[tuple[str, str]] = Counter()  # per (shop id, method), once the session passed
        self.faults_injected = 0
        self.activity_paused = False
        self.simulator = Simulator(visibility_lag=visibility_lag)
        self.tmc = TmcBroker(chaos=tmc, seed=seed)
        self._dice = Dice(chaos or Chaos(), seed=seed)
        self._limit = CallLimit(self._dice)
        self._index = SearchIndex()
        self._profile = profile or ShopProfile()
        self._shops: dict[str, ShopState] = {}
        self._by_session: dict[str, ShopState] = {}
        self._unknown_to_fullinfo: dict[int, int] = {}
        self._request_no = 0
        for index in range(1, shops + 1):
            self.add_shop(index, now=now)

    @property
    def chaos(self) -> Chaos:
        """The fault injection in force (assign another to change it)."""
        return self._dice.chaos

    @chaos.setter
    def chaos(self, chaos: Chaos) -> None:
        self._dice.chaos = chaos

    @property
    def bans_issued(self) -> int:
        """Code-7 refusals answered so far."""
        return self._limit.bans_issued

    @bans_issued.setter
    def bans_issued(self, count: int) -> None:
        self._limit.bans_issued = count

    # -- shops ----------------------------------------------------------------------------

    def add_shop(self, index: int, *, now: datetime, profile: ShopProfile | None = None) -> ShopState:
        """Create shop ``index`` with its history up to ``now``."""
        shop = make_shop(index, profile=profile or self._profile, seed=self.seed)
        now = now.replace(microsecond=0)
        shop.next_creation = now - timedelta(days=shop.profile.history_days)
        self.simulator.run(shop, now)
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

    def catch_up(self, now: datetime, shop: ShopState | None = None) -> None:
        """Apply every change due by ``now`` to ``shop`` (all shops when None), unless activity is paused."""
        if self.activity_paused:
            return
        for state in [shop] if shop else self._shops.values():
            self.simulator.run(state, now)

    def flash_sale(self, shop_id: str, count: int, *, start: datetime, seconds: int = 3) -> None:
        """Create ``count`` trades spread evenly over ``seconds`` whole seconds from ``start``."""
        shop = self._shops[shop_id]
        begin = start.replace(microsecond=0)
        for i in range(count):
            self.simulator.create(shop, begin + timedelta(milliseconds=i * seconds * 1000 // max(count, 1)))

    def modify(self, shop_id: str, tid: int, *, now: datetime, at: datetime | None = None) -> None:
        """Change one trade at ``now`` (stamped ``at`` if given), keeping its status; visible at once."""
        shop = self._shops[shop_id]
        self.simulator.touch(shop, shop.trades[tid], at or now, applied_at=now)

    def hide_from_fullinfo(self, tid: int, *, times: int = 10**9) -> None:
        """Make fullinfo say ``isv.trade-not-exist`` for ``tid`` the next ``times`` times it is asked for."""
        self._unknown_to_fullinfo[tid] = times

    def expire_session(self, shop_id: str) -> None:
        """Make the shop's session key invalid (code 27) until ``renew_session``."""
        self._shops[shop_id].session_valid = False

    def renew_session(self, shop_id: str) -> str:
        """Issue the shop a new valid session key and return it."""
        shop = self._shops[shop_id]
        self._by_session.pop(shop.session, None)
        shop.session = f"{shop.session.split('~')[0]}~{self._dice.session_key_suffix()}"
        shop.session_valid = True
        self._by_session[shop.session] = shop
        return shop.session

    # -- ground truth ---------------------------------------------------------------------

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
        """``_truth.verify`` for one shop (see ``Emulator.verify``)."""
        return verify(
            self._shops[shop_id],
            received,
            created_from=created_from,
            sync_started=sync_started,
            until=until,
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

    # -- calls ------------------------------------------------------------------------------

    def handle(self, params: Mapping[str, str], *, now: datetime, monotonic: float) -> TopReply:
        """Answer one call.

        Args:
            params: the call's parameters as TOP receives them (query string and form merged).
            now: the gateway's clock: timestamps are checked against it, shop activity is applied
                up to it, windows are listed as of it, and the ``Date`` header shows it.
            monotonic: seconds on a monotonic clock, which times the app's bans and rate limit.
        """
        self._request_no += 1
        request_id = self._dice.request_id(self._request_no)
        headers = {"Date": format_http_date(now)}
        method = params.get("method", "")
        self.calls[method or "?"] += 1

        fault = self._dice.fault() if method in METHODS else None
        if fault is not None and fault is not Fault.SLOW:
            self.faults_injected += 1
        if fault is Fault.DROP:
            return TopReply(drop_connection=True)
        if fault is Fault.BAD_GATEWAY:
            return TopReply(status=502, text=_BAD_GATEWAY_PAGE, content_type="text/html", headers=headers)
        if fault is Fault.TRUNCATED:
            return TopReply(text=_TRUNCATED_BODY, headers=headers)

        try:
            if fault is Fault.ISP_ERROR:
                raise Refusal(15, "Remote service error", "isp.top-remote-service-unavailable", "服务暂不可用")
            payload = self._answer(params, now, monotonic)
            document = _wire.success_body(
                method, {**payload, "request_id": request_id}, simplify=read_flag(params, "simplify")
            )
        except Refusal as refusal:
            document = _wire.error_body(
                refusal.code, refusal.msg, request_id=request_id, sub_code=refusal.sub_code, sub_msg=refusal.sub_msg
            )
        delay = self.chaos.slow_seconds if fault is Fault.SLOW else 0.0
        return TopReply(document=document, headers=headers, delay=delay)

    def _answer(self, params: Mapping[str, str], now: datetime, monotonic: float) -> dict[str, Any]:
        method = check_system_parameters(
            params, methods=METHODS, app_key=self.app_key, app_secret=self.app_secret, now=now
        )
        self._limit.check(monotonic)
        if method == "taobao.time.get":
            return {"time": format_time(now)}
        if method in _tmc.APP_METHODS:  # the app's own calls: no session
            self.catch_up(now)  # every change due by now is published
            return _tmc.answer_messages(self.tmc, method, params, now)
        shop = shop_of_session(params, self._by_session)
        self.calls_by_shop[(shop.id, method)] += 1
        self.catch_up(now, shop)
        if method == FULLINFO:
            return self._fullinfo(shop, params, now)
        if method in _tmc.USER_METHODS:
            return _tmc.answer_user_permit(self.tmc, shop, params)
        return self.list_trades(shop, method, params, now)

    def _fullinfo(self, shop: ShopState, params: Mapping[str, str], now: datetime) -> dict[str, Any]:
        tid, fields = read_fullinfo_request(params)
        hidden = self._unknown_to_fullinfo.get(tid, 0)
        if hidden:
            self._unknown_to_fullinfo[tid] = hidden - 1
        return fullinfo_payload(shop, tid, fields, now, hidden=bool(hidden))

    def list_trades(self, shop: ShopState, method: str, params: Mapping[str, str], now: datetime) -> dict[str, Any]:
        """The payload of a list call on ``shop``: its business parameters checked, then chaos, then the page.

        Raises:
            Refusal: a parameter TOP refuses, a window over 20,000 trades, or a later page refused by chaos.
        """
        request = read_list_request(method, params, now)
        if self._dice.refuses_page(request.page_no):
            self.faults_injected += 1
            raise _window_too_big()
        if self._dice.moves_trades(request.page_no):
            candidates = tids_in_window(shop, request.time_field, request.start, request.end)
            for tid in self._dice.trades_to_move(candidates):
                self.simulator.touch(shop, shop.trades[tid], now, applied_at=now)
        listing = self._index.window(
            shop, request.time_field, request.start, request.end, request.types, request.status, now
        )
        if request.matches is not None:
            matches = request.matches
            listing = Listing.of(row for row in listing.rows() if matches(row[0]))
        if len(listing) > _wire.MAX_WINDOW_TRADES:
            raise _window_too_big()
        if self.chaos.shuffle_ties:
            tied = _tied_by_created if request.time_field == "created" else _tied_by_modified
            listing = Listing.of(self._dice.shuffle_ties(listing.rows(), tied))
        return list_page(listing, request, always_has_next=self.chaos.always_has_next)


def _window_too_big() -> Refusal:
    return Refusal(15, "Remote service error", "isp.top-remote-connection-timeout", "远程服务调用超时")


def _tied_by_created(one: Row, other: Row) -> bool:
    return same_second(one[0].created, other[0].created)


def _tied_by_modified(one: Row, other: Row) -> bool:
    return same_second(one[1].modified, other[1].modified)


def format_http_date(moment: datetime) -> str:
    """RFC 9110 ``Date`` header for ``moment``."""
    utc = moment.astimezone(CST).timestamp()
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(utc))
