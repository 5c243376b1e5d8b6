"""ScriptedTransport: answers in script order, records what it got, and says so when the script runs out."""

from __future__ import annotations

import asyncio

import pytest

from taobao_ordersync import ConnectError, RawResponse
from taobao_ordersync.testing import ScriptedRequest, ScriptedTransport, json_reply

URL = "https://gw.example.invalid/router/rest"
FORM = {"method": "taobao.time.get", "session": "6100a1b2c3-seller-session", "sign": "0A1B2C"}


async def test_a_list_script_answers_in_order_and_raises_its_exceptions() -> None:
    """Each request takes the next reply; an exception in the list is raised in its turn."""
    first = RawResponse(status=502, body=b"bad gateway")
    refused = ConnectError("cannot reach the gateway")
    last = json_reply({"time": "2023-11-15 06:13:20"}, date="Tue, 14 Nov 2023 22:13:20 GMT")
    transport = ScriptedTransport([first, refused, last])

    answered = await transport.post(URL, FORM)
    with pytest.raises(ConnectError) as caught:
        await transport.post(URL, FORM)
    remaining_before_last = transport.remaining
    final = await transport.post(URL, {**FORM, "method": "taobao.trades.sold.get"})

    assert first is answered
    assert refused is caught.value
    assert 1 == remaining_before_last
    assert RawResponse(status=200, body=b'{"time": "2023-11-15 06:13:20"}', date=last.date) == final
    assert 0 == transport.remaining
    assert ["taobao.time.get", "taobao.time.get", "taobao.trades.sold.get"] == [r.method for r in transport.requests]
    assert ScriptedRequest(url=URL, form=FORM) == transport.requests[0]


async def test_a_request_after_the_script_ran_out_fails_and_names_itself() -> None:
    """The client sent more than the test scripted: an AssertionError says which request, not a silent reply."""
    transport = ScriptedTransport([json_reply({})])
    await transport.post(URL, FORM)

    with pytest.raises(AssertionError, match=r"request 2 \(taobao.time.get\) came after all 1 scripted replies"):
        await transport.post(URL, FORM)
    assert 2 == len(transport.requests)


async def test_a_function_script_answers_every_request_plain_or_async() -> None:
    """A function gets each recorded request and may answer, await, or raise."""

    def answer(request: ScriptedRequest) -> RawResponse:
        if request.form.get("page_no") == "9":
            raise ConnectError("dropped")
        return json_reply({"method": request.method})

    async def answer_later(request: ScriptedRequest) -> RawResponse:
        await asyncio.sleep(0)
        return answer(request)

    for script in (answer, answer_later):
        transport = ScriptedTransport(script)

        replies = [await transport.post(URL, FORM) for _ in range(3)]
        with pytest.raises(ConnectError):
            await transport.post(URL, {**FORM, "page_no": "9"})

        assert 3 * [b'{"method": "taobao.time.get"}'] == [reply.body for reply in replies]
        assert 4 == len(transport.requests)
        assert "9" == transport.requests[-1].form["page_no"]


async def test_the_session_key_is_recorded_but_never_shown() -> None:
    """A test can read the session key sent; repr (and so a failing assert's message) shows the signature, not it."""
    transport = ScriptedTransport([json_reply({})])
    await transport.post(URL, FORM)

    request = transport.requests[0]
    assert FORM["session"] == request.form["session"]
    assert FORM["session"] not in repr(request)
    assert FORM["session"] not in repr(transport.requests)
    assert "'sign': '0A1B2C'" in repr(request)


async def test_aclose_is_recorded_and_idempotent() -> None:
    """is_closed tells a test that the client released its transport."""
    transport = ScriptedTransport([])
    opened = transport.is_closed

    await transport.aclose()
    await transport.aclose()

    assert opened is False
    assert transport.is_closed is True
