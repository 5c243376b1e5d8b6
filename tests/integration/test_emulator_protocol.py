"""The emulator validates like TOP, through raw HTTP and through the real client."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest
from tests.conftest import client_for

from taobao_ordersync import (
    AuthenticationError,
    BusinessError,
    InvalidRequestError,
    TopClient,
    WindowTooLargeError,
)
from taobao_ordersync._time import format_time
from taobao_ordersync._wire import signed_params
from taobao_ordersync.testing import Emulator, ShopProfile
from taobao_ordersync.testing._shop import DEFAULT_VISIBLE_TYPES as DEFAULT_VISIBLE


async def post(emu: Emulator, form: dict[str, str], *, get: bool = False) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        if get:
            async with http.get(emu.url, params=form) as response:
                assert 200 == response.status
                return json.loads(await response.read())  # type: ignore[no-any-return]
        async with http.post(emu.url, data=form) as response:
            assert 200 == response.status
            return json.loads(await response.read())  # type: ignore[no-any-return]


def form_for(emu: Emulator, method: str, params: dict[str, Any], **overrides: Any) -> dict[str, str]:
    options: dict[str, Any] = {
        "app_key": emu.app_key,
        "secret": emu.app_secret,
        "sign_method": "md5",
        "timestamp": emu.now(),
        "session": emu.shops[0].session,
    }
    options.update(overrides)
    return signed_params(method, params, **options)


def code_of(document: dict[str, Any]) -> tuple[int, str | None]:
    error = document["error_response"]
    assert error["request_id"]
    return error["code"], error.get("sub_code")


async def test_get_and_post_with_split_parameters(emulator: Emulator) -> None:
    """GET with a query string, and POST with system params in the query and the rest in the body."""
    form = form_for(emulator, "taobao.time.get", {})
    via_get = await post(emulator, form, get=True)
    system = {k: form.pop(k) for k in ("method", "app_key", "timestamp", "sign", "sign_method", "v")}
    async with aiohttp.ClientSession() as http, http.post(emulator.url, params=system, data=form) as response:
        split = json.loads(await response.read())

    assert "time" in via_get["time_get_response"]
    assert "time" in split["time_get_response"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda f: f.pop("method"), (21, None)),
        (lambda f: f.update(method="taobao.nope.get"), (22, None)),
        (lambda f: f.pop("app_key"), (28, None)),
        (lambda f: f.update(app_key="other"), (29, None)),
        (lambda f: f.pop("timestamp"), (30, None)),
        (lambda f: f.update(timestamp="yesterday"), (31, None)),
        (lambda f: f.pop("v"), (32, None)),
        (lambda f: f.update(v="3.0"), (34, None)),
        (lambda f: f.update(format="yaml"), (23, None)),
        (lambda f: f.pop("sign"), (24, None)),
        (lambda f: f.update(sign="00FF"), (25, None)),
    ],
)
async def test_platform_validation_codes(emulator: Emulator, mutate: Any, expected: tuple[int, None]) -> None:
    """Each missing or bad system parameter gets TOP's code (HTTP 200, request_id)."""
    form = form_for(emulator, "taobao.trades.sold.get", {"fields": "tid"})
    mutate(form)

    assert expected == code_of(await post(emulator, form))


async def test_timestamp_skew_and_epoch_millis(emulator: Emulator) -> None:
    """A timestamp 11 minutes off is refused (31); epoch milliseconds are accepted."""
    skewed = form_for(emulator, "taobao.time.get", {}, timestamp=emulator.now() - timedelta(minutes=11))
    millis = form_for(emulator, "taobao.time.get", {})
    millis["timestamp"] = str(int(emulator.now().timestamp() * 1000))
    del millis["sign"]
    from taobao_ordersync.signing import sign

    millis["sign"] = sign(millis, emulator.app_secret, "md5")

    assert (31, None) == code_of(await post(emulator, skewed))
    assert "time_get_response" in await post(emulator, millis)


@pytest.mark.parametrize(
    ("params", "session", "expected"),
    [
        ({"fields": "tid"}, None, (26, "session-is-blank")),
        ({"fields": "tid"}, "stolen", (27, "invalid-sessionkey")),
        ({}, "session-1", (40, None)),
        ({"fields": "tid", "page_size": "101"}, "session-1", (41, None)),
        ({"fields": "tid", "page_no": "0"}, "session-1", (41, None)),
    ],
)
async def test_business_validation(
    emulator: Emulator, params: dict[str, str], session: str | None, expected: tuple[int, str | None]
) -> None:
    """Sessions, required fields and page limits are checked like TOP."""
    form = form_for(emulator, "taobao.trades.sold.get", params, session=session)

    assert expected == code_of(await post(emulator, form))


async def test_increment_window_rules(emulator: Emulator) -> None:
    """Increment calls need both bounds, a span of at most a day, and the last 3 months."""
    now = emulator.now()
    cases = {
        "missing": {"fields": "tid", "start_modified": format_time(now)},
        "too long": {"fields": "tid", "start_modified": format_time(now - timedelta(days=1, seconds=1)),
                     "end_modified": format_time(now)},
        "too old": {"fields": "tid", "start_modified": format_time(now - timedelta(days=91)),
                    "end_modified": format_time(now - timedelta(days=90, hours=12))},
        "malformed": {"fields": "tid", "start_modified": "2024/01/01", "end_modified": format_time(now)},
    }  # fmt: skip
    codes = {}
    for name, params in cases.items():
        codes[name] = code_of(await post(emulator, form_for(emulator, "taobao.trades.sold.increment.get", params)))

    assert (40, None) == codes["missing"]
    assert (15, "isv.invalid-parameter:start_modified-and-end_modified") == codes["too long"]
    assert (15, "isv.invalid-parameter:start_modified") == codes["too old"]
    assert (41, None) == codes["malformed"]


@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
@pytest.mark.parametrize("simplify", [True, False])
async def test_client_reads_every_shape(emulator: Emulator, sign_method: Any, simplify: bool) -> None:
    """All sign methods and both envelope shapes give the same trades through the client."""
    async with client_for(emulator, sign_method=sign_method, simplify=simplify) as client:
        now = await client.server_now()
        page = await client.trades_sold(
            "session-1", start_created=now - timedelta(days=5), end_created=now, page_size=7, page_no=2
        )
        trade = await client.trade_fullinfo("session-1", page.trades[0].tid)

    assert 7 == len(page.trades)
    assert page.total_results is not None and page.total_results > 7
    assert [t.created for t in page.trades] == sorted((t.created for t in page.trades), reverse=True)
    assert trade.tid == page.trades[0].tid
    assert trade.tid > 2**53
    assert trade.orders


async def test_fields_and_has_next(emulator: Emulator) -> None:
    """Only requested fields come back; use_has_next swaps total_results for has_next."""
    async with client_for(emulator) as client:
        now = await client.server_now()
        window = {"start_created": now - timedelta(days=5), "end_created": now}
        counted = await client.trades_sold("session-1", **window, fields=("tid", "modified"), page_size=5)
        last = -(-(counted.total_results or 0) // 5)
        tail = await client.trades_sold("session-1", **window, page_size=5, page_no=last, use_has_next=True)
        before = await client.trades_sold("session-1", **window, page_size=5, page_no=last - 1, use_has_next=True)

    assert {"tid", "modified"} == set(counted.trades[0].raw)
    assert tail.total_results is None
    assert tail.has_next is False
    assert before.has_next is True


async def test_default_type_filter_hides_other_types(make_emulator: Any) -> None:
    """Without `type`, non-default trade types are missing; the client's full list finds them."""
    async with make_emulator(
        seed=3, profile=ShopProfile(orders_per_day=200, history_days=3, other_type_share=0.2)
    ) as emu:
        now = emu.now()
        window = {"start_created": format_time(now - timedelta(days=2)), "end_created": format_time(now)}
        default = await post(emu, form_for(emu, "taobao.trades.sold.get", {"fields": "tid", **window}))
        async with client_for(emu) as client:
            full = await client.trades_sold(
                "session-1", start_created=now - timedelta(days=2), end_created=now, page_size=1
            )

    hidden = default["trades_sold_get_response"]["total_results"]
    assert full.total_results is not None
    assert full.total_results > hidden


async def test_errors_through_the_client(emulator: Emulator) -> None:
    """Expired sessions, unknown trades and wrong secrets surface as typed errors."""
    async with client_for(emulator) as client:
        with pytest.raises(BusinessError) as missing:
            await client.trade_fullinfo("session-1", 123)
        emulator.expire_session("shop-1")
        with pytest.raises(AuthenticationError):
            await client.trade_fullinfo("session-1", 123)
    async with TopClient(emulator.app_key, "wrong", url=emulator.url) as wrong:
        with pytest.raises(InvalidRequestError) as bad_sign:
            await wrong.time()

    assert "isv.trade-not-exist" == missing.value.sub_code
    assert 25 == bad_sign.value.code


async def test_oversized_window_is_refused(make_emulator: Any) -> None:
    """More than 20,000 trades in one window fails like Taobao under load."""
    async with make_emulator(seed=4, profile=ShopProfile(orders_per_day=0, history_days=0)) as emu:
        emu.flash_sale("shop-1", 20_001, seconds=2, start=emu.now() - timedelta(seconds=10))
        async with client_for(emu) as client:
            now = await client.server_now()
            with pytest.raises(WindowTooLargeError):
                await client.trades_sold_increment(
                    "session-1", start_modified=now - timedelta(minutes=1), end_modified=now + timedelta(seconds=5)
                )


async def test_clock_offset_is_measured(make_emulator: Any) -> None:
    """An emulator 5 minutes behind is seen 5 minutes behind, and calls still verify."""
    async with make_emulator(seed=5, clock_offset=-300) as emu, client_for(emu) as client:
        estimate = await client.measure_clock()
        server_now = await client.server_now()

    ahead_of_wall = estimate.offset - estimate.wall_gap
    assert abs(ahead_of_wall + 300) <= estimate.uncertainty + 0.05
    assert abs((emu.now() - server_now).total_seconds()) < 2


async def test_client_recovers_when_local_clock_is_far_off(make_emulator: Any) -> None:
    """With Taobao 20 minutes ahead, time.get is refused (31) once, then recovered from Date."""
    async with make_emulator(seed=6, clock_offset=1200) as emu, client_for(emu) as client:
        server_now = await client.server_now()

    assert abs((emu.now() - server_now).total_seconds()) < 3
    assert 2 == emu.calls["taobao.time.get"]


def test_now_is_aware(emulator: Emulator) -> None:
    """The emulator's clock is timezone-aware."""
    assert isinstance(emulator.now(), datetime)
    assert emulator.now().utcoffset() == timedelta(hours=8)


async def test_any_field_subset_top_allows(emulator: Emulator) -> None:
    """fields=tid (the seed article's count call) and fields without orders.oid read through the client."""
    async with client_for(emulator) as client:
        now = await client.server_now()
        window = {"start_created": now - timedelta(days=5), "end_created": now}
        tids_only = await client.trades_sold("session-1", **window, fields=("tid",), page_size=100)
        full = await client.trades_sold("session-1", **window, page_size=100)
        titles = await client.trades_sold("session-1", **window, fields=("tid", "modified", "orders.title"))

    assert tids_only.total_results == full.total_results
    assert tids_only.trades == ()
    assert tids_only.tids == tuple(trade.tid for trade in full.trades)
    assert len(tids_only.tids) > 1
    order = titles.trades[0].orders[0]
    assert order.oid is None
    assert order.title


@pytest.mark.parametrize("spelling", ["true", "True", "TRUE"])
async def test_booleans_in_any_case(emulator: Emulator, spelling: str) -> None:
    """TOP's gateway reads booleans case-insensitively (Python SDKs send `True`): use_has_next and
    simplify are honoured however they are spelled."""
    now = emulator.now()
    params = {
        "fields": "tid,modified",
        "start_created": now - timedelta(days=5),
        "end_created": now,
        "page_size": "5",
        "use_has_next": spelling,
    }
    document = await post(emulator, form_for(emulator, "taobao.trades.sold.get", params))
    simplified = await post(emulator, form_for(emulator, "taobao.trades.sold.get", {**params, "simplify": spelling}))

    inner = document["trades_sold_get_response"]
    assert "has_next" in inner and "total_results" not in inner
    assert "trades_sold_get_response" not in simplified
    assert isinstance(simplified["trades"], list)


async def test_optional_filters(emulator: Emulator) -> None:
    """buyer_nick filters exactly; ext_type, tag and rate_status take their documented values
    (the emulator's trades are ordinary and unrated) and refuse others."""
    shop = emulator.shops[0]
    buyer = next(iter(shop.trades.values())).data["buyer_nick"]
    async with client_for(emulator) as client:
        now = await client.server_now()
        window = {"start_created": now - timedelta(days=20), "end_created": now}

        async def count(**filters: str) -> int:
            inner = await client.call(
                "taobao.trades.sold.get",
                {**window, "fields": ("tid",), "page_size": 100, **filters},
                session=shop.session,
            )
            return int(inner["total_results"])

        everything = await count()
        by_buyer = await count(buyer_nick=buyer)
        service = await count(ext_type="service")
        cards = await count(tag="time_card")
        unrated = await count(rate_status="RATE_UNBUYER")
        rated = await count(rate_status="RATE_BUYER_SELLER")
        with pytest.raises(InvalidRequestError, match="ext_type"):
            await count(ext_type="bogus")

    expected_buyer = sum(
        1 for record in shop.trades.values() if record.data["buyer_nick"] == buyer and record.type in DEFAULT_VISIBLE
    )
    assert 0 < by_buyer == expected_buyer < everything
    assert 0 == service == cards == rated
    assert unrated == everything
