"""TopClient against scripted replies: retries, bans, clock recovery, signing, redaction.

A ScriptedTransport stands in for the network; everything above the Transport seam is real.
What aiohttp itself does (exceptions, status, body, headers) is tested in test_aiohttp_transport.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from taobao_ordersync import (
    AuthenticationError,
    ConnectError,
    InvalidRequestError,
    RateLimitedError,
    RawResponse,
    ResponseFormatError,
    RetryPolicy,
    TopClient,
    WindowTooLargeError,
)
from taobao_ordersync._time import CST
from taobao_ordersync.signing import SIGN_METHODS, SignMethod, sign
from taobao_ordersync.testing import FakeClock, ScriptedRequest, ScriptedTransport, json_reply

URL = "https://gw.example.invalid/router/rest"
SECRET = "s3cr3t-app-secret"
SESSION = "6100a1b2c3-seller-session"
TIME_OK = {"time_get_response": {"time": "2023-11-15 06:13:20", "request_id": "r1"}}


BAD_GATEWAY = RawResponse(status=502, body=b"<html>Bad Gateway</html>")


def error(code: int, msg: str, *, date: str | None = None, **extra: str) -> RawResponse:
    return json_reply({"error_response": {"code": code, "msg": msg, "request_id": "rid", **extra}}, date=date)


def time_ok(request: ScriptedRequest) -> RawResponse:
    """A function script: every request gets Taobao's time (the clock fixture's "now")."""
    return json_reply(TIME_OK)


@pytest.fixture
def clock() -> FakeClock:
    # 2023-11-14 22:13:20 UTC = 2023-11-15 06:13:20 CST, so TIME_OK means "no skew".
    return FakeClock(start=1_700_000_000.0)


def client_over(transport: ScriptedTransport, clock: FakeClock, **options: Any) -> TopClient:
    """The real client on the fake clock, answered by ``transport``; four tries unless ``retry`` says otherwise."""
    options.setdefault("retry", RetryPolicy.no_wait(max_tries=4))
    return TopClient("app", SECRET, url=URL, simplify=False, transport=transport, clock=clock, **options)


async def test_transient_failures_are_retried_until_success(clock: FakeClock) -> None:
    """502, an isp.* error, a non-JSON body and a dropped connection are retried."""
    # Each kind is followed by another try of the same call: a kind not retried would end that call early.
    transport = ScriptedTransport(
        [
            error(15, "Remote service error", sub_code="isp.top-remote-service-unavailable"),
            RawResponse(status=200, body=b'{"time_get_resp'),
            ConnectError("cannot reach the gateway: ServerDisconnectedError"),
            BAD_GATEWAY,
            BAD_GATEWAY,
            json_reply(TIME_OK),
        ]
    )
    async with client_over(transport, clock) as client:
        with pytest.raises(ResponseFormatError, match="HTTP 502"):
            await client.time()  # 4 tries: the fourth still fails
        assert 4 == client.call_counts["taobao.time.get"]
        moment = await client.time()

    assert "2023-11-15 06:13:20" == moment.strftime("%Y-%m-%d %H:%M:%S")
    assert 6 == client.call_counts["taobao.time.get"]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (error(27, "Invalid session", sub_code="invalid-sessionkey"), AuthenticationError),
        (error(25, "Invalid Signature"), InvalidRequestError),
        (error(15, "Remote service error", sub_code="isv.invalid-parameter:page_size"), InvalidRequestError),
        (RawResponse(status=404, body=b"no such path"), ResponseFormatError),
    ],
)
async def test_permanent_errors_are_not_retried(
    clock: FakeClock, response: RawResponse, expected: type[Exception]
) -> None:
    """Auth, signature and invalid-request errors fail after exactly one call."""
    transport = ScriptedTransport([response])
    async with client_over(transport, clock) as client:
        with pytest.raises(expected):
            await client.call("taobao.trades.sold.get", {"fields": "tid"}, session=SESSION)

    assert 1 == client.call_counts["taobao.trades.sold.get"]


@pytest.mark.parametrize("sign_method", SIGN_METHODS)
async def test_every_request_is_signed_with_the_app_secret(clock: FakeClock, sign_method: SignMethod) -> None:
    """The form sent carries the system and business parameters and a sign over all of them, made with the
    app secret by the configured method (the gateway refuses anything else with code 25)."""
    transport = ScriptedTransport([json_reply({"trades_sold_get_response": {"total_results": 0}})])
    async with client_over(transport, clock, sign_method=sign_method) as client:
        await client.call("taobao.trades.sold.get", {"fields": "tid", "page_no": 2}, session=SESSION)

    (request,) = transport.requests
    form = dict(request.form)
    signature = form.pop("sign")
    assert {
        "method": "taobao.trades.sold.get",
        "app_key": "app",
        "timestamp": "2023-11-15 06:13:20",  # nothing measured yet: the (fake) wall clock, in CST
        "v": "2.0",
        "format": "json",
        "sign_method": sign_method,
        "session": SESSION,
        "fields": "tid",
        "page_no": "2",
    } == form
    assert sign(form, SECRET, sign_method) == signature


async def test_oversized_list_window_is_not_retried(clock: FakeClock) -> None:
    """A list window Taobao times out on raises WindowTooLargeError after one call (split, never retry)."""
    from datetime import datetime

    start = datetime(2023, 11, 15, tzinfo=CST)
    transport = ScriptedTransport([error(15, "Remote service error", sub_code="isp.top-remote-connection-timeout")])
    async with client_over(transport, clock) as client:
        with pytest.raises(WindowTooLargeError):
            await client.trades_sold_increment(SESSION, start_modified=start, end_modified=start)

    assert 1 == client.call_counts["taobao.trades.sold.increment.get"]


async def test_ban_pauses_the_whole_client_then_retries(clock: FakeClock) -> None:
    """Code 7 with 'N more seconds' sleeps N + margin on the injected clock, then succeeds."""
    ban = error(
        7,
        "App Call Limited",
        sub_code="accesscontrol.limited-by-api-access-count",
        sub_msg="This ban will last for 5 more seconds",
    )
    transport = ScriptedTransport([ban, json_reply(TIME_OK)])
    retry = RetryPolicy(max_tries=1, base_delay=0, max_delay=0, ban_margin=1.0)
    async with client_over(transport, clock, retry=retry) as client:
        await client.time()

    assert [6.0] == clock.sleeps
    assert 1 == client.bans


async def test_long_ban_raises_with_retry_after(clock: FakeClock) -> None:
    """A quota ban longer than max_ban_wait surfaces as RateLimitedError(retry_after=N), no sleep."""
    ban = error(
        7,
        "App Call Limited",
        sub_code="accesscontrol.limited-by-app-access-count",
        sub_msg="This ban will last for 31062 more seconds",
    )
    transport = ScriptedTransport([ban])
    async with client_over(transport, clock) as client:
        with pytest.raises(RateLimitedError) as caught:
            await client.time()

    assert 31062.0 == caught.value.retry_after
    assert [] == clock.sleeps


async def test_long_ban_fails_every_call_fast_until_it_ends(clock: FakeClock) -> None:
    """After a long ban, other calls of the client raise at once without sending, until the ban is over."""
    ban = error(7, "App Call Limited", sub_msg="This ban will last for 600 more seconds")
    transport = ScriptedTransport([ban, json_reply(TIME_OK)])
    async with client_over(transport, clock) as client:
        with pytest.raises(RateLimitedError):
            await client.time()
        with pytest.raises(RateLimitedError) as fast:
            await client.time()
        sent_during_ban = client.call_counts["taobao.time.get"]
        clock.advance(700)
        await client.time()

    assert 1 == sent_during_ban
    assert fast.value.retry_after is not None
    assert 590 < fast.value.retry_after <= 601


async def test_ban_gate_holds_concurrent_calls(clock: FakeClock) -> None:
    """While one call is banned, every other call of the client waits for the gate too."""
    ban = error(7, "App Call Limited", sub_msg="This ban will last for 3 more seconds")
    transport = ScriptedTransport([ban, *3 * [json_reply(TIME_OK)]])
    async with client_over(transport, clock, retry=RetryPolicy.no_wait()) as client:
        await client.time()
        sleeps_after_ban = list(clock.sleeps)
        await asyncio.gather(client.time(), client.time())

    assert [3.0] == sleeps_after_ban
    assert 3 == client.call_counts["taobao.time.get"] - 1


async def test_code_31_recovers_from_the_date_header(clock: FakeClock) -> None:
    """A refused timestamp re-measures the clock from the reply's Date header and retries once."""
    # Taobao is 20 minutes ahead of our clock: 22:33:20 UTC instead of 22:13:20.
    refused = error(31, "Invalid timestamp", date="Tue, 14 Nov 2023 22:33:20 GMT")
    ahead = {"time_get_response": {"time": "2023-11-15 06:33:20", "request_id": "r2"}}
    transport = ScriptedTransport([refused, json_reply(ahead)])
    async with client_over(transport, clock) as client:
        estimate = await client.measure_clock()

    sent = [request.form for request in transport.requests]
    # Anchored on the monotonic clock: read at monotonic time, the estimate is 20 minutes ahead of the wall.
    ahead_of_wall = estimate.now(clock.monotonic()).timestamp() - clock.time()
    assert abs(ahead_of_wall - 1200) <= estimate.uncertainty
    assert "2023-11-15 06:13:20" == sent[0]["timestamp"]
    assert sent[1]["timestamp"].startswith("2023-11-15 06:33:2")


@pytest.mark.parametrize("step", [-120.0, 120.0])
async def test_a_wall_clock_step_does_not_move_taobaos_clock(clock: FakeClock, step: float) -> None:
    """NTP steps the wall clock after a measurement: Taobao's "now" stays where it was (rule 16).

    Anchored on the wall clock, a step back planned windows behind Taobao and a step forward
    (a VM resumed) planned them ahead of it, committing a cursor past trades not yet listed.
    """
    async with client_over(ScriptedTransport(time_ok), clock) as client:
        before = await client.server_now()
        clock.step_wall(step)
        after = await client.server_now()

    assert before == after


async def test_the_signing_timestamp_survives_a_wall_clock_step(clock: FakeClock) -> None:
    """The wall clock steps back 700 s after a measurement: requests are still signed with Taobao's time,
    not refused for a timestamp more than 10 minutes off."""
    transport = ScriptedTransport(time_ok)
    async with client_over(transport, clock) as client:
        await client.measure_clock()
        clock.step_wall(-700)
        await client.time()

    assert transport.requests[-1].form["timestamp"].startswith("2023-11-15 06:13:2")


async def test_clock_is_measured_again_when_wall_and_monotonic_disagree(clock: FakeClock) -> None:
    """A wall clock that moved more than a second against monotonic time since the measurement means
    one of them jumped (NTP, a suspended VM): Taobao's clock is measured again long before clock_refresh."""
    async with client_over(ScriptedTransport(time_ok), clock) as client:
        await client.server_now()
        clock.step_wall(0.5)  # within a second: NTP slewing, no new measurement
        await client.server_now()
        measured = client.call_counts["taobao.time.get"]
        clock.step_wall(1.0)
        await client.server_now()

    assert 1 == measured
    assert 2 == client.call_counts["taobao.time.get"]


async def test_code_31_twice_gives_up(clock: FakeClock) -> None:
    """A second refusal after recovery raises instead of looping."""
    # A list, not a function: a client that loops fails on the third request instead of hanging.
    transport = ScriptedTransport(2 * [error(31, "Invalid timestamp")])
    async with client_over(transport, clock) as client:
        with pytest.raises(InvalidRequestError):
            await client.time()

    assert 2 == client.call_counts["taobao.time.get"]


async def test_secrets_never_appear_in_repr_errors_or_logs(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """The app secret and session keys are absent from reprs, exception text and log records."""
    caplog.set_level(logging.DEBUG)
    transport = ScriptedTransport([BAD_GATEWAY, error(27, "Invalid session", sub_code="invalid-sessionkey")])
    async with client_over(transport, clock) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.call("taobao.trades.sold.get", {"fields": "tid"}, session=SESSION)

    texts = [repr(client), str(caught.value), repr(caught.value), caplog.text]
    for text in texts:
        assert SECRET not in text
        assert SESSION not in text


async def test_closed_client_refuses_calls(clock: FakeClock) -> None:
    """Use after aclose() is a clear error, sends nothing; aclose() closes the transport and is idempotent."""
    from taobao_ordersync import ConfigurationError

    transport = ScriptedTransport([])
    client = client_over(transport, clock)
    await client.aclose()
    await client.aclose()

    with pytest.raises(ConfigurationError, match="closed"):
        await client.time()
    assert transport.is_closed
    assert [] == transport.requests


@pytest.mark.parametrize(
    "kwargs",
    [
        {"app_key": ""},
        {"app_secret": " "},
        {"url": "ftp://x"},
        {"sign_method": "sha1"},
        {"rate": 0},
        {"timeout": -1},
    ],
)
def test_bad_configuration_is_a_clear_error(kwargs: dict[str, Any]) -> None:
    """Invalid constructor arguments raise ConfigurationError (a ValueError) at once."""
    from taobao_ordersync import ConfigurationError

    options: dict[str, Any] = {"app_key": "k", "app_secret": "s", **kwargs}
    with pytest.raises(ConfigurationError):
        TopClient(**options)


async def test_bans_are_reported_and_a_held_client_waits_before_sending(clock: FakeClock) -> None:
    """on_ban hears of every ban met (with the pause it causes); hold(), a ban met elsewhere, makes
    the next call wait on the injected clock before it sends anything."""
    reported: list[float] = []
    ban = error(7, "App Call Limited", sub_msg="This ban will last for 5 more seconds")
    # Banned again once the first ban is over: news again.
    transport = ScriptedTransport([ban, ban, json_reply(TIME_OK), json_reply(TIME_OK)])
    retry = RetryPolicy(max_tries=1, base_delay=0, max_delay=0, ban_margin=1.0)
    async with client_over(transport, clock, retry=retry, on_ban=reported.append) as client:
        await client.time()
        assert [6.0, 6.0] == reported
        sent = client.call_counts["taobao.time.get"]
        client.hold(30)  # another worker met a ban
        assert 30 == client.held_for
        await client.time()

    assert 30.0 == clock.sleeps[-1]
    assert 0 == client.held_for
    assert sent + 1 == client.call_counts["taobao.time.get"]


async def test_rate_can_be_reshared_but_not_zeroed(clock: FakeClock) -> None:
    from taobao_ordersync import ConfigurationError

    client = client_over(ScriptedTransport([]), clock)
    client.rate = 2.5

    assert 2.5 == client.rate
    with pytest.raises(ConfigurationError):
        client.rate = 0
    assert 2.5 == client.rate


async def test_retries_log_quietly_and_giving_up_warns(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """Routine retries are INFO (noise under chaos); the failure that outlasts them is a WARNING."""
    caplog.set_level(logging.INFO, logger="taobao_ordersync.client")
    transport = ScriptedTransport(4 * [BAD_GATEWAY])
    async with client_over(transport, clock) as client:
        with pytest.raises(ResponseFormatError):
            await client.time()

    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert 3 == len(retries)
    assert {logging.INFO} == {r.levelno for r in retries}
    assert 1 == len(warnings)
    assert "still failing after 4 tries" in warnings[0].getMessage()
