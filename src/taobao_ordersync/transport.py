"""The HTTP edge: the only module that talks to aiohttp's client.

``Transport`` is the seam (POST a form, get status, body and ``Date`` back);
``AiohttpTransport`` implements it and translates every aiohttp or timeout
exception into our ``TransportError`` family.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

import aiohttp
from attrs import frozen

from taobao_ordersync.errors import ConnectError, TransportError, TransportTimeout

__all__ = ["AiohttpTransport", "RawResponse", "Transport"]


@frozen
class RawResponse:
    """What came back: HTTP status, raw body and the ``Date`` header (if any)."""

    status: int
    body: bytes
    date: str | None = None


class Transport(Protocol):
    """Protocol: sends one form POST and returns the raw reply."""

    async def post(self, url: str, form: Mapping[str, str]) -> RawResponse:
        """POST ``form`` (URL-encoded, UTF-8) to ``url``."""
        ...

    async def aclose(self) -> None:
        """Release connections; idempotent."""
        ...


class AiohttpTransport:
    """``Transport`` over one ``aiohttp.ClientSession``, owned or borrowed.

    A borrowed session (``session=``) is left open on ``aclose``.
    """

    def __init__(self, *, session: aiohttp.ClientSession | None = None, timeout: float = 30.0) -> None:
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def post(self, url: str, form: Mapping[str, str]) -> RawResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(
                url,
                data=dict(form),
                timeout=self._timeout,
                headers={"Accept-Encoding": "gzip"},
            ) as response:
                body = await response.read()
                return RawResponse(status=response.status, body=body, date=response.headers.get("Date"))
        except TimeoutError as exc:
            raise TransportTimeout(f"no answer from {url} within {self._timeout.total:g} s") from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise ConnectError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"request to {url} failed: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()
            # Let aiohttp close its SSL transports before the loop ends.
            await asyncio.sleep(0)
