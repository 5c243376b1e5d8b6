"""The emulator's core without a socket: parameters and the time in, a reply out.

``FakeTop`` is driven directly: every call is signed like the client signs it, the gateway's
clock and the monotonic clock are passed in, and nothing sleeps. The loopback tests in
``tests/integration/test_emulator_protocol.py`` cover the HTTP adapter on top of it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from taobao_ordersync import _wire
from taobao_ordersync._time import CST, format_time
from taobao_ordersync.testing import Chaos, ShopProfile, TmcChaos
from taobao_ordersync.testing._fake_top import FakeTop, TopReply
from taobao_ordersync.testing._shop import TradeRecord

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=CST)
STILL = ShopProfile(orders_per_day=0, history_days=0)  # no history, no new trades: each test makes its own
SOLD = "taobao.trades.sold.get"
INCREMENT = "taobao.trades.sold.increment.get"
FULLINFO = "taobao.trade.fullinfo.get"


ALL_TYPES = ",".join(_wire.ALL_TRADE_TYPES)


def make_top(**options: Any) -> FakeTop:
    """A fake with one shop and one trade (created at NOW); shop activity paused, so only each test's changes happen."""
    options.setdefault("profile", STILL)
    options.setdefault("seed", 1)
    top = FakeTop(now=NOW, **options)
    top.pause_activity()
    return top


def form(method: str, params: dict[str, Any] | None = None, *, now: datetime = NOW, **system: Any) -> dict[str, str]:
    """A call's parameters as the client sends them: signed with md5 for app test/test, session-1."""
    options: dict[str, Any] = {"app_key": "test", "secret": "test", "sign_method": "md5", "timestamp": now}
    options["session"] = "session-1"
    options.update(system)
    return _wire.signed_params(method, params or {}, **options)


def call(top: FakeTop, params: dict[str, str], *, now: datetime = NOW, monotonic: float = 100.0) -> dict[str, Any]:
    """The inner JSON object of the reply without its request_id (the error_response itself for an error)."""
    reply = top.handle(params, now=now, monotonic=monotonic)
    assert reply.document is not None, reply
    if "error_response" in reply.document:
        return reply.document["error_response"]  # type: ignore[no-any-return]
    inner = dict(reply.document[_wire.response_key(params["method"])])
    assert inner.pop("request_id")
    return inner


def code_of(inner: dict[str, Any]) -> tuple[int, str | None]:
    return inner["code"], inner.get("sub_code")


def trades_of(inner: dict[str, Any]) -> list[dict[str, Any]]:
    return _wire.unwrap_list(inner.get("trades"))


def sale(top: FakeTop, *moments: datetime) -> list[TradeRecord]:
    """Trades created at ``moments``, in that order (tids rise in creation order)."""
    shop = top.shop("shop-1")
    return [top.simulator.create(shop, moment, trade_type="fixed") for moment in moments]


def window(start: datetime, end: datetime, **params: Any) -> dict[str, Any]:
    return {"fields": "tid,created,modified,status", "start_created": start, "end_created": end, **params}


# -- the gateway: TOP's checks, first failure wins -------------------------------------------


def test_time_get_answers_the_gateway_clock_with_a_date_header() -> None:
    """time.get is the clock passed in, floored to the second; every reply carries it as ``Date``."""
    top = make_top()
    moment = NOW + timedelta(seconds=7, milliseconds=600)

    reply = top.handle(form("taobao.time.get", now=moment), now=moment, monotonic=0.0)

    assert reply.document is not None
    assert {"time": "2026-03-01 12:00:07"} == {"time": reply.document["time_get_response"]["time"]}
    assert "Sun, 01 Mar 2026 04:00:07 GMT" == reply.headers["Date"]
    assert (200, "application/json", 0.0, False) == (
        reply.status,
        reply.content_type,
        reply.delay,
        reply.drop_connection,
    )


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        # Each case breaks the named check and every check after it; the named one must answer.
        (lambda f: f.update(method="", app_key="", sign=""), (21, None)),
        (lambda f: f.update(method="taobao.nope", app_key="", sign=""), (22, None)),
        (lambda f: f.update(app_key="other", timestamp="", sign=""), (29, None)),
        (lambda f: f.update(timestamp=format_time(NOW - timedelta(minutes=11)), v="", sign=""), (31, None)),
        (lambda f: f.update(v="3.0", format="xml", sign=""), (34, None)),
        (lambda f: f.update(v="two", format="xml", sign=""), (33, None)),
        (lambda f: f.pop("format") and f.update(sign=""), (23, None)),
        (lambda f: f.update(sign="00FF", session="", fields=""), (25, None)),
        (lambda f: f.update(sign_method="sha1", session="", fields=""), (25, None)),
    ],
)
def test_system_checks_run_in_tops_order(spoil: Any, expected: tuple[int, str | None]) -> None:
    """Method, app key, timestamp, version, format, then signature; the first that fails is answered."""
    top = make_top()
    params = form(SOLD, {"fields": "tid"})
    spoil(params)

    assert expected == code_of(call(top, params))


def test_session_is_checked_after_the_signature_and_before_the_fields() -> None:
    """A signed call without a session gets 26, with an unknown one 27, even with no ``fields``."""
    top = make_top()

    assert (26, "session-is-blank") == code_of(call(top, form(SOLD, {}, session=None)))
    assert (27, "invalid-sessionkey") == code_of(call(top, form(SOLD, {}, session="stolen")))
    assert (40, None) == code_of(call(top, form(SOLD, {})))


def test_a_ban_is_answered_after_the_signature_and_before_the_session() -> None:
    """A ban in force refuses a signed call with no session (7), and a badly signed call still gets 25."""
    top = make_top(chaos=Chaos(ban_rate=1.0, ban_seconds=30))
    first = call(top, form(SOLD, {}, session=None), monotonic=1000.0)
    top.chaos = Chaos()
    bad_sign = {**form(SOLD, {}, session=None), "sign": "00"}

    assert (7, "accesscontrol.limited-by-api-access-count") == code_of(first)
    assert "This ban will last for 30 more seconds" == first["sub_msg"]
    assert (25, None) == code_of(call(top, bad_sign, monotonic=1001.0))
    assert "This ban will last for 20 more seconds" == call(top, form(SOLD, {}), monotonic=1010.0)["sub_msg"]
    assert (40, None) == code_of(call(top, form(SOLD, {}), monotonic=1030.0))  # the ban is over
    assert 2 == top.bans_issued


def test_rate_limit_is_a_one_second_bucket_on_the_monotonic_clock() -> None:
    """At 2 calls/s, a third call in the same instant starts a 1-second ban; a second later calls pass again."""
    top = make_top(chaos=Chaos(rate_limit=2))
    answers = [call(top, form("taobao.time.get"), monotonic=50.0) for _ in range(3)]
    later = call(top, form("taobao.time.get"), monotonic=51.0)

    assert ["time", "time", "code"] == [next(iter(answer)) for answer in answers]
    assert "This ban will last for 1 more seconds" == answers[2]["sub_msg"]
    assert "time" in later


# -- the list APIs --------------------------------------------------------------------------


def test_a_list_page_with_total_results_then_has_next() -> None:
    """Newest first; total_results counts the window; with use_has_next, has_next is false on the last page."""
    top = make_top()
    base = NOW - timedelta(minutes=10)
    made = sale(top, *(base + timedelta(seconds=s) for s in range(5)))
    params = window(base, NOW - timedelta(minutes=1), page_size="2")

    first = call(top, form(SOLD, {**params, "page_no": "1"}))
    middle = call(top, form(SOLD, {**params, "page_no": "2", "use_has_next": "true"}))
    last = call(top, form(SOLD, {**params, "page_no": "3", "use_has_next": "True"}))
    past = call(top, form(SOLD, {**params, "page_no": "4"}))

    assert [made[4].tid, made[3].tid] == [trade["tid"] for trade in trades_of(first)]
    assert 5 == first["total_results"] and "has_next" not in first
    assert [made[2].tid, made[1].tid] == [trade["tid"] for trade in trades_of(middle)]
    assert middle["has_next"] is True and "total_results" not in middle
    assert [made[0].tid] == [trade["tid"] for trade in trades_of(last)]
    assert last["has_next"] is False
    assert "trades" not in past  # TOP omits empty lists
    assert {"tid", "created", "modified", "status"} == set(trades_of(first)[0])


def test_ties_on_a_printed_second_are_ordered_by_tid_not_by_milliseconds() -> None:
    """Trades created later in a second but with smaller tids come after; the seconds stay newest first."""
    top = make_top()
    second = NOW.replace(microsecond=0) - timedelta(minutes=5)
    early, late = sale(top, second + timedelta(milliseconds=900), second + timedelta(milliseconds=100))
    (next_second,) = sale(top, second + timedelta(seconds=1, milliseconds=50))

    listed = trades_of(call(top, form(SOLD, window(second - timedelta(seconds=1), second + timedelta(seconds=2)))))

    assert late.tid > early.tid
    assert [next_second.tid, late.tid, early.tid] == [trade["tid"] for trade in listed]


def test_increment_lists_each_trade_once_in_its_newest_visible_version() -> None:
    """A trade changed within the window shows once, at its new ``modified``; one changed after it, not at all."""
    top = make_top()
    base = NOW - timedelta(minutes=10)
    moved_in, moved_out, still = sale(top, base, base + timedelta(seconds=1), base + timedelta(seconds=2))
    shop = top.shop("shop-1")
    top.simulator.touch(shop, moved_in, base + timedelta(seconds=30), applied_at=base + timedelta(seconds=30))
    top.simulator.touch(shop, moved_out, NOW, applied_at=NOW)
    params = {"fields": "tid,modified", "start_modified": base, "end_modified": base + timedelta(minutes=1)}

    listed = trades_of(call(top, form(INCREMENT, params)))

    assert [moved_in.tid, still.tid] == [trade["tid"] for trade in listed]
    assert format_time(base + timedelta(seconds=30)) == listed[0]["modified"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"fields": "tid", "start_modified": NOW}, (40, None)),
        ({"fields": "tid", "start_modified": "2026/03/01", "end_modified": NOW}, (41, None)),
        ({"fields": "tid", "start_modified": NOW, "end_modified": NOW - timedelta(seconds=1)},
         (15, "isv.invalid-parameter:end_modified")),
        ({"fields": "tid", "start_modified": NOW - timedelta(days=1, seconds=1), "end_modified": NOW},
         (15, "isv.invalid-parameter:start_modified-and-end_modified")),
        ({"fields": "tid", "start_modified": NOW - timedelta(days=91), "end_modified": NOW - timedelta(days=90.5)},
         (15, "isv.invalid-parameter:start_modified")),
        ({"fields": "", "page_size": "500"}, (40, None)),  # fields are checked before page_size
        ({"fields": "tid", "page_size": "500", "start_modified": "x"}, (41, None)),
        ({"fields": "tid", "rate_status": "RATE_NEVER", "start_modified": "x"},
         (15, "isv.invalid-parameter:rate_status")),  # the filters before the window
    ],
)  # fmt: skip
def test_increment_parameters_are_checked_in_order(params: dict[str, Any], expected: tuple[int, str | None]) -> None:
    """Both bounds required and well-formed, end not before start, at most a day, within three months."""
    assert expected == code_of(call(make_top(), form(INCREMENT, params)))


def test_a_window_over_twenty_thousand_trades_is_refused_and_twenty_thousand_is_listed() -> None:
    """The 20,000-trade limit counts after the type filter, on every page."""
    top = make_top()
    start = NOW - timedelta(minutes=10)
    top.flash_sale("shop-1", 20_000, start=start, seconds=10)
    params = {"fields": "tid", "start_modified": start, "end_modified": start + timedelta(minutes=1), "type": ALL_TYPES}

    exact = call(top, form(INCREMENT, {**params, "page_no": "3"}))
    top.flash_sale("shop-1", 1, start=start)
    over = call(top, form(INCREMENT, {**params, "page_no": "3"}))

    assert 20_000 == exact["total_results"]
    assert (15, "isp.top-remote-connection-timeout") == code_of(over)


def test_a_change_shows_in_lists_once_visible_and_in_fullinfo_at_once() -> None:
    """Lists read a lagging index (a cached page is not served once a version surfaces); fullinfo reads the store."""
    top = make_top()
    (trade,) = sale(top, NOW - timedelta(minutes=5))
    shop = top.shop("shop-1")
    top.simulator.advance_trade(shop, trade, NOW, "WAIT_SELLER_SEND_GOODS", applied_at=NOW + timedelta(seconds=3))
    params = window(NOW - timedelta(minutes=6), NOW - timedelta(minutes=1))
    details = {"fields": "tid,status", "tid": str(trade.tid)}

    def status_listed(at: datetime) -> str:
        (listed,) = trades_of(call(top, form(SOLD, params, now=at), now=at))
        return str(listed["status"])

    before = status_listed(NOW + timedelta(seconds=1))
    fullinfo = call(top, form(FULLINFO, details, now=NOW + timedelta(seconds=1)), now=NOW + timedelta(seconds=1))
    after = status_listed(NOW + timedelta(seconds=3))

    assert "WAIT_BUYER_PAY" == before
    assert {"tid": trade.tid, "status": "WAIT_SELLER_SEND_GOODS"} == fullinfo["trade"]
    assert "WAIT_SELLER_SEND_GOODS" == after


def test_fullinfo_refuses_unknown_not_yet_visible_and_hidden_trades() -> None:
    """isv.trade-not-exist for a tid the shop lacks, one not visible yet, and one hidden (counting down)."""
    top = make_top()
    (trade,) = sale(top, NOW - timedelta(minutes=5))
    (future,) = sale(top, NOW + timedelta(minutes=5))
    top.hide_from_fullinfo(trade.tid, times=1)

    def ask(tid: int) -> dict[str, Any]:
        return call(top, form(FULLINFO, {"fields": "tid", "tid": str(tid)}))

    missing = "isv.trade-not-exist"
    assert (15, missing) == code_of(ask(123))
    assert (15, missing) == code_of(ask(future.tid))
    assert (15, missing) == code_of(ask(trade.tid))
    assert {"tid": trade.tid} == ask(trade.tid)["trade"]
    assert (40, None) == code_of(call(top, form(FULLINFO, {"fields": "tid"})))
    assert (41, None) == code_of(call(top, form(FULLINFO, {"fields": "tid", "tid": "12a"})))


def test_a_renewed_session_replaces_the_old_one() -> None:
    """After expire_session the key gets 27; renew_session issues a new key that works, and the old one stays dead."""
    top = make_top()
    top.expire_session("shop-1")
    expired = call(top, form("taobao.trade.fullinfo.get", {"fields": "tid", "tid": "1"}))
    renewed = top.renew_session("shop-1")

    assert (27, "invalid-sessionkey") == code_of(expired)
    assert renewed.startswith("session-1~")
    assert (27, "invalid-sessionkey") == code_of(call(top, form(SOLD, {"fields": "tid"})))
    assert "total_results" in call(top, form(SOLD, {"fields": "tid"}, session=renewed))
    assert 1 == top.calls_by_shop[("shop-1", SOLD)]


# -- chaos decisions ------------------------------------------------------------------------


def test_error_faults_come_in_four_kinds_and_are_counted() -> None:
    """error_rate=1: every call is an isp error, a 502 page, a cut-off body or a dropped connection."""
    top = make_top(chaos=Chaos(error_rate=1.0))
    replies = [top.handle(form("taobao.time.get"), now=NOW, monotonic=0.0) for _ in range(40)]

    def kind(reply: TopReply) -> str:
        if reply.drop_connection:
            return "drop"
        if reply.status == 502:
            return "502"
        if reply.document is None:
            return "truncated"
        return str(reply.document["error_response"]["sub_code"])

    kinds = {kind(reply) for reply in replies}
    assert {"drop", "502", "truncated", "isp.top-remote-service-unavailable"} == kinds
    assert 40 == top.faults_injected == top.calls["taobao.time.get"]
    cut_off = next(reply for reply in replies if kind(reply) == "truncated")
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut_off.body())
    bad_gateway = next(reply for reply in replies if kind(reply) == "502")
    assert ("text/html", "utf-8") == (bad_gateway.content_type, bad_gateway.charset)


def test_a_slow_reply_is_answered_with_its_delay_for_the_caller_to_wait() -> None:
    """The core never sleeps: a slow reply carries ``slow_seconds`` and the normal answer."""
    top = make_top(chaos=Chaos(slow_rate=1.0, slow_seconds=2.5))

    reply = top.handle(form("taobao.time.get"), now=NOW, monotonic=0.0)

    assert 2.5 == reply.delay
    assert reply.document is not None and "time_get_response" in reply.document
    assert 0 == top.faults_injected


def test_faults_only_hit_known_methods() -> None:
    """An unknown method gets code 22 even when every call should fail."""
    top = make_top(chaos=Chaos(error_rate=1.0))

    assert (22, None) == code_of(call(top, form("taobao.nope.get")))


def test_later_pages_refused_by_chaos_and_trades_moved_while_paging() -> None:
    """refuse_later_pages spares page 1; move_while_paging edits 1-3 trades of the window before page 2."""
    top = make_top(chaos=Chaos(refuse_later_pages=1.0))
    start = NOW - timedelta(minutes=10)
    top.flash_sale("shop-1", 30, start=start, seconds=10)
    params = {"fields": "tid,modified", "start_modified": start, "end_modified": start + timedelta(minutes=1)}
    params.update(page_size="10", type=ALL_TYPES)

    page_one = call(top, form(INCREMENT, {**params, "page_no": "1"}))
    page_two = call(top, form(INCREMENT, {**params, "page_no": "2"}))
    top.chaos = Chaos(move_while_paging=1.0)
    shop = top.shop("shop-1")
    versions_before = sum(len(record.versions) for record in shop.trades.values())
    moved_page = call(top, form(INCREMENT, {**params, "page_no": "2"}))
    moved = sum(len(record.versions) for record in shop.trades.values()) - versions_before

    assert 30 == page_one["total_results"]
    assert (15, "isp.top-remote-connection-timeout") == code_of(page_two)
    assert 1 == top.faults_injected
    assert 1 <= moved <= 3
    assert 30 - moved == moved_page["total_results"]  # changed now: out of the window


def test_shuffled_ties_keep_each_second_but_not_its_order() -> None:
    """shuffle_ties reorders the trades within a printed second on each request, never across seconds."""
    top = make_top(chaos=Chaos(shuffle_ties=True))
    start = NOW.replace(microsecond=0) - timedelta(minutes=10)
    top.flash_sale("shop-1", 40, start=start, seconds=2)
    params = window(start, start + timedelta(seconds=5), page_size="100", fields="tid,created", type=ALL_TYPES)

    readings = [trades_of(call(top, form(SOLD, params))) for _ in range(3)]

    orders = [[trade["tid"] for trade in listed] for listed in readings]
    for listed in readings:
        seconds = [trade["created"] for trade in listed]
        assert sorted(seconds, reverse=True) == seconds
    assert 1 < len({tuple(order) for order in orders})
    assert all(sorted(order) == sorted(orders[0]) for order in orders)


def test_always_has_next_says_true_on_the_last_page() -> None:
    """A broken gateway's has_next: true after the last trade too."""
    top = make_top(chaos=Chaos(always_has_next=True))
    sale(top, NOW - timedelta(minutes=5))
    params = window(NOW - timedelta(minutes=6), NOW, use_has_next="true", page_no="9")

    assert call(top, form(SOLD, params))["has_next"] is True


# -- TMC through the core -------------------------------------------------------------------


def test_tmc_consume_holds_a_message_until_confirmed_or_redelivers_it() -> None:
    """A permitted seller's change is consumed once, handed out again after ``redeliver_after`` unless confirmed."""
    top = make_top(tmc=TmcChaos(redeliver_after=10))
    (trade,) = sale(top, NOW - timedelta(minutes=5))
    assert {"is_success": True} == call(top, form("taobao.tmc.user.permit", {"topics": ""}))
    top.modify("shop-1", trade.tid, now=NOW)

    def consume(at: datetime) -> list[dict[str, Any]]:
        inner = call(top, form("taobao.tmc.messages.consume", {"quantity": 10}, now=at, session=None), now=at)
        return _wire.unwrap_list(inner.get("messages"))

    (message,) = consume(NOW + timedelta(seconds=1))
    held = consume(NOW + timedelta(seconds=5))
    (again,) = consume(NOW + timedelta(seconds=12))
    confirm = {"s_message_ids": str(again["id"])}
    confirmed = call(top, form("taobao.tmc.messages.confirm", confirm, now=NOW + timedelta(seconds=13), session=None))
    after = consume(NOW + timedelta(seconds=30))

    assert trade.tid == json.loads(message["content"])["tid"]
    assert "taobao_trade_TradeMemoModified" == message["topic"]
    assert [] == held
    assert message["id"] == again["id"]
    assert {"is_success": True} == confirmed
    assert [] == after
    assert (1, 1) == (top.tmc.confirmed, len(top.tmc.changes))


def test_tmc_parameters_are_checked() -> None:
    """Unknown topics, a quantity out of 10-200 and confirms without ids or with non-numeric ids are refused."""
    top = make_top()

    def app_call(method: str, params: dict[str, Any]) -> tuple[int, str | None]:
        return code_of(call(top, form(method, params, session=None)))

    assert (15, "isv.invalid-parameter:topics") == code_of(
        call(top, form("taobao.tmc.user.permit", {"topics": "taobao_trade_Nope"}))
    )
    assert (41, None) == app_call("taobao.tmc.messages.consume", {"quantity": 5})
    assert (40, None) == app_call("taobao.tmc.messages.confirm", {})
    assert (41, None) == app_call("taobao.tmc.messages.confirm", {"s_message_ids": "1,x"})
    assert (15, "isv.invalid-parameter:s_message_ids") == app_call(
        "taobao.tmc.messages.confirm", {"s_message_ids": ",".join(map(str, range(201)))}
    )
