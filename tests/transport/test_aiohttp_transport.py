"""The aiohttp edge: AiohttpTransport sends the form, passes replies through untouched, translates exceptions.

aioresponses patches aiohttp's session, so these are the only tests that need it: what the client
does with a reply is tested on a ScriptedTransport (test_client_retries.py, test_client_replies.py).
"""

from __future__ import annotations

import aiohttp
import pytest
import yarl
from aioresponses import aioresponses

from taobao_ordersync import (
    AiohttpTransport,
    ConnectError,
    RawResponse,
    RetryPolicy,
    TopClient,
    TransportError,
    TransportTimeout,
)
from taobao_ordersync.testing import FakeClock

URL = "https://gw.example.invalid/router/rest"
SESSION = "6100a1b2c3-seller-session"
FORM = {"method": "taobao.time.get", "session": SESSION, "sign": "0A1B2C"}


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (200, b'{"time_get_response": {"time": "2023-11-15 06:13:20"}}', "application/json"),
        (200, b'{"time_get_response": {"time": "2023-11-15 06:13:20"}}', "text/javascript"),  # not parsed by aiohttp
        (200, b'{"time_get_resp', "application/json"),  # truncated: read as bytes, judged by the client
        (502, b"<html>Bad Gateway</html>", "text/html"),  # an HTTP error is a reply, not an aiohttp exception
    ],
)
async def test_a_reply_passes_through_untouched(status: int, body: bytes, content_type: str) -> None:
    """Status, raw body and Date header come back as they were, whatever the content type; the form is the POST body."""
    date = "Tue, 14 Nov 2023 22:13:20 GMT"
    transport = AiohttpTransport()
    with aioresponses() as mocked:
        mocked.post(URL, status=status, body=body, content_type=content_type, headers={"Date": date})
        try:
            raw = await transport.post(URL, FORM)
        finally:
            await transport.aclose()
        (sent,) = mocked.requests[("POST", yarl.URL(URL))]

    assert RawResponse(status=status, body=body, date=date) == raw
    assert FORM == sent.kwargs["data"]
    assert "gzip" == sent.kwargs["headers"]["Accept-Encoding"]


async def test_a_reply_without_a_date_header_has_no_date() -> None:
    """No Date header is None, not an empty string the clock recovery would try to read."""
    transport = AiohttpTransport()
    with aioresponses() as mocked:
        mocked.post(URL, status=200, body=b"{}")
        try:
            raw = await transport.post(URL, FORM)
        finally:
            await transport.aclose()

    assert raw.date is None


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (aiohttp.ClientConnectionError("refused"), ConnectError),
        (aiohttp.ServerDisconnectedError(), ConnectError),
        (aiohttp.ClientPayloadError("body cut short"), ConnectError),
        (TimeoutError(), TransportTimeout),
        (aiohttp.ServerTimeoutError("read timed out"), TransportTimeout),  # a connection error and a timeout
        (aiohttp.InvalidURL("https://gw.example.invalid:port/"), TransportError),  # another ClientError
    ],
)
async def test_aiohttp_exceptions_become_transport_errors(raised: Exception, expected: type[Exception]) -> None:
    """No aiohttp or timeout exception escapes: each is the TransportError the retry policy knows, naming the URL
    and never the form (it holds the session key)."""
    transport = AiohttpTransport()
    with aioresponses() as mocked:
        mocked.post(URL, exception=raised)
        try:
            with pytest.raises(TransportError) as caught:
                await transport.post(URL, FORM)
        finally:
            await transport.aclose()

    assert expected is type(caught.value)
    assert caught.value.__cause__ is raised
    assert URL in str(caught.value)
    assert SESSION not in str(caught.value)


async def test_transport_errors_are_translated() -> None:
    """Through TopClient's default transport: aiohttp and timeout exceptions become our transport errors."""
    client = TopClient("app", "s3cr3t", url=URL, retry=RetryPolicy.no_wait(max_tries=1), clock=FakeClock())
    with aioresponses() as mocked:
        mocked.post(URL, exception=aiohttp.ClientConnectionError("refused"))
        mocked.post(URL, exception=TimeoutError())
        async with client:
            with pytest.raises(ConnectError):
                await client.time()
            with pytest.raises(TransportTimeout) as caught:
                await client.time()

    assert isinstance(caught.value, TimeoutError)


async def test_a_borrowed_session_stays_open_and_an_owned_one_is_closed() -> None:
    """aclose closes the session the transport made (twice is fine), never one it was lent."""
    owned = AiohttpTransport()
    with aioresponses() as mocked:
        mocked.post(URL, status=200, body=b"{}")
        await owned.post(URL, FORM)
        session = owned._session
        await owned.aclose()
        await owned.aclose()

    async with aiohttp.ClientSession() as lent:
        borrowing = AiohttpTransport(session=lent)
        await borrowing.aclose()
        lent_closed = lent.closed

    assert session is not None
    assert session.closed
    assert lent_closed is False
