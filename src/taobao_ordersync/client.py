"""``TopClient``: signed, rate-limited, retried calls to the TOP gateway.

One client per app key. It owns (or borrows) one HTTP session, one rate limiter
shared by every shop using it, one ban gate, and Taobao's clock estimate.
This is the only module that imports ``backoff``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

import aiohttp
import backoff

from taobao_ordersync import _wire
from taobao_ordersync._convert import ListQuery, structure_fullinfo, structure_page, structure_time
from taobao_ordersync._limiter import RateLimiter
from taobao_ordersync._retry import RetryPolicy, is_transient
from taobao_ordersync._time import from_epoch
from taobao_ordersync.clock import Clock, ClockEstimate, SystemClock
from taobao_ordersync.errors import (
    ApiError,
    ConfigurationError,
    InvalidRequestError,
    RateLimitedError,
    TaobaoOrderSyncError,
)
from taobao_ordersync.models import Trade, TradePage
from taobao_ordersync.signing import SIGN_METHODS, SignMethod
from taobao_ordersync.transport import AiohttpTransport, RawResponse, Transport

__all__ = ["DEFAULT_URL", "TopClient"]

DEFAULT_URL: Final = "https://eco.taobao.com/router/rest"
_INVALID_TIMESTAMP: Final = 31
_CLOCKS_AGREE: Final = 1.0  # seconds wall and monotonic time may drift apart before a new measurement

logger = logging.getLogger("taobao_ordersync.client")

_T = TypeVar("_T")


def _require_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty string")
    return value


class TopClient:
    """An async client for the Taobao Open Platform order APIs.

    Use it as an async context manager (or call ``aclose()``)::

        async with TopClient(app_key="...", app_secret="...") as client:
            now = await client.server_now()

    Args:
        app_key: the application's key.
        app_secret: the application's secret (never logged or shown).
        url: the gateway; the sandbox or the emulator's ``url`` for tests.
        sign_method: ``"md5"``, ``"hmac"`` or ``"hmac-sha256"``.
        rate: calls per second for this app, shared by everything using the client.
        burst: calls allowed back to back; 1 means evenly spaced, no start-up burst.
        retry: the retry policy; ``RetryPolicy.no_wait()`` in tests.
        timeout: seconds for one HTTP exchange.
        clock_refresh: seconds between re-measurements of Taobao's clock.
        simplify: ask for ``simplify=true`` replies (smaller bodies); ``Trade.raw`` has the same shape either way.
        session: an ``aiohttp.ClientSession`` to borrow instead of owning one.
        transport: a custom ``Transport`` (overrides ``session`` and ``timeout``).
        clock: the local clock (a fake one in tests).
        on_ban: called with the seconds every call will now wait whenever this client
            meets a code-7 ban (a ``Worker`` uses it to pause the other processes too).
    """

    def __init__(
        self,
        app_key: str,
        app_secret: str,
        *,
        url: str = DEFAULT_URL,
        sign_method: SignMethod = "hmac-sha256",
        rate: float = 10.0,
        burst: int = 1,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        clock_refresh: float = 600.0,
        simplify: bool = True,
        session: aiohttp.ClientSession | None = None,
        transport: Transport | None = None,
        clock: Clock | None = None,
        on_ban: Callable[[float], None] | None = None,
    ) -> None:
        self._app_key = _require_text("app_key", app_key)
        self._secret = _require_text("app_secret", app_secret)
        if not str(url).startswith(("http://", "https://")):
            raise ConfigurationError(f"url must be an http(s) URL, got {url!r}")
        if sign_method not in SIGN_METHODS:
            raise ConfigurationError(f"sign_method must be one of {', '.join(SIGN_METHODS)}, got {sign_method!r}")
        if not rate > 0 or burst < 1:
            raise ConfigurationError("rate must be > 0 calls per second and burst >= 1")
        if not timeout > 0:
            raise ConfigurationError("timeout must be > 0 seconds")
        self.url = url
        self.sign_method: SignMethod = sign_method
        self._rate = float(rate)
        self._burst = burst
        self.on_ban = on_ban
        self.simplify = simplify
        self._retry = retry or RetryPolicy()
        self._clock: Clock = clock or SystemClock()
        self._clock_refresh = clock_refresh
        self._transport: Transport = transport or AiohttpTransport(session=session, timeout=timeout)
        # One limiter per client, never module level, kept for the client's life (a new rate changes it).
        self._limiter = RateLimiter(self._rate, burst, clock=self._clock)
        self._ban_until = 0.0
        self._estimate: ClockEstimate | None = None
        self._clock_lock = asyncio.Lock()
        self._closed = False
        self._calls: Counter[str] = Counter()
        self.bans = 0

    def __repr__(self) -> str:
        return f"TopClient(app_key={self._app_key!r}, url={self.url!r}, sign_method={self.sign_method!r})"

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session (if owned). Safe to call more than once."""
        if not self._closed:
            self._closed = True
            await self._transport.aclose()

    @property
    def app_key(self) -> str:
        """The application key this client signs with."""
        return self._app_key

    @property
    def rate(self) -> float:
        """Calls per second this client may send; set it to re-share an app's budget.

        The client keeps its one limiter: calls already waiting and calls made after the change
        queue together, a lower rate applies from the next call out, and no second ever holds
        more than the higher of the two rates' calls.
        """
        return self._rate

    @rate.setter
    def rate(self, rate: float) -> None:
        if not rate > 0:
            raise ConfigurationError("rate must be > 0 calls per second")
        if rate != self._rate:
            self._rate = float(rate)
            self._limiter.rate = self._rate

    def hold(self, seconds: float) -> None:
        """Pause every call of this client for ``seconds`` (a ban another process met)."""
        if seconds > 0:
            self._ban_until = max(self._ban_until, self._clock.monotonic() + seconds)

    @property
    def held_for(self) -> float:
        """Seconds every call of this client still waits for a ban (0 when none)."""
        return max(0.0, self._ban_until - self._clock.monotonic())

    @property
    def clock(self) -> Clock:
        """The local clock this client reads (a ``Fleet`` and a ``Worker`` schedule on it too)."""
        return self._clock

    @property
    def call_counts(self) -> Mapping[str, int]:
        """HTTP requests sent so far, by API method (retries included)."""
        return dict(self._calls)

    @property
    def clock_estimate(self) -> ClockEstimate | None:
        """The last measurement of Taobao's clock, if any."""
        return self._estimate

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigurationError("this TopClient is closed; create a new one")

    # -- server clock ----------------------------------------------------------------

    async def server_now(self) -> datetime:
        """A moment Taobao's clock has surely reached (estimate minus its uncertainty).

        Plan windows on this, never on the local clock (design rule 2). It runs on the
        monotonic clock: a step of the wall clock does not move it (rule 16).
        """
        estimate = await self._fresh_estimate()
        return estimate.earliest(self._clock.monotonic())

    async def measure_clock(self) -> ClockEstimate:
        """Measure Taobao's clock now with ``taobao.time.get``."""
        async with self._clock_lock:
            return await self._measure()

    def _fresh(self) -> ClockEstimate | None:
        """The current estimate, unless it is due for a new measurement."""
        estimate = self._estimate
        if estimate is None:
            return None
        monotonic = self._clock.monotonic()
        # Wall and monotonic time disagree about what passed since the measurement: one of them jumped
        # (an NTP step, or a VM resumed whose monotonic clock stood still while suspended). Measure again.
        drift = estimate.wall_drift(wall=self._clock.time(), monotonic=monotonic)
        if monotonic - estimate.measured_at >= self._clock_refresh or abs(drift) > _CLOCKS_AGREE:
            return None
        return estimate

    async def _fresh_estimate(self) -> ClockEstimate:
        if (estimate := self._fresh()) is not None:
            return estimate
        async with self._clock_lock:
            if (estimate := self._fresh()) is not None:
                return estimate
            return await self._measure()

    async def _measure(self) -> ClockEstimate:
        sent = self._clock.monotonic()
        server = await self._request("taobao.time.get", {}, session=None, read=structure_time)
        received = self._clock.monotonic()
        estimate = ClockEstimate.from_round_trip(sent=sent, received=received, server=server, wall_gap=self._wall_gap())
        self._estimate = estimate
        logger.debug(
            "taobao clock %+.3f s from our wall clock (+/- %.3f s)",
            estimate.offset - estimate.wall_gap,
            estimate.uncertainty,
        )
        return estimate

    def _wall_gap(self) -> float:
        return self._clock.time() - self._clock.monotonic()

    def _signing_time(self) -> datetime:
        if self._estimate is None:
            return from_epoch(self._clock.time())  # nothing measured yet: the wall clock is all we have
        return self._estimate.now(self._clock.monotonic())

    # -- generic call ----------------------------------------------------------------

    async def call(
        self,
        method: str,
        params: Mapping[str, _wire.ParamValue] | None = None,
        *,
        session: str | None = None,
    ) -> dict[str, Any]:
        """Call any TOP API and return the inside of its ``<name>_response`` envelope.

        Adds and signs the system parameters, retries transient failures, waits out
        short bans, and raises an ``ApiError`` subclass for an ``error_response``.
        """
        _require_text("method", method)
        return await self._request(method, params or {}, session=session, read=dict)

    async def _request(
        self,
        method: str,
        params: Mapping[str, _wire.ParamValue],
        *,
        session: str | None,
        read: Callable[[dict[str, Any]], _T],
        oversize_is_final: bool = False,
    ) -> _T:
        """Send one call, retrying transient failures; ``read`` turns the reply into the result.

        ``read`` runs inside each attempt, so a reply it rejects as malformed (a transient
        ``ResponseFormatError``) is retried like any other transient failure (rule 13).
        """
        self._check_open()
        policy = self._retry

        def give_up(exc: Exception) -> bool:
            return not is_transient(exc, oversize_is_final=oversize_is_final)

        def log_retry(details: Any) -> None:
            # Quiet: under chaos retries are routine; the failure that outlasts them is what warns.
            logger.info(
                "%s failed (%s), retry %d after %.2f s",
                method,
                details.get("exception"),
                details["tries"],
                details.get("wait", 0.0),
            )

        def log_giveup(details: Any) -> None:
            exc = details.get("exception")
            if exc is not None and is_transient(exc, oversize_is_final=oversize_is_final):
                logger.warning("%s still failing after %d tries: %s", method, details["tries"], exc)

        @backoff.on_exception(
            backoff.expo,
            TaobaoOrderSyncError,
            max_tries=policy.max_tries,
            max_time=policy.max_time,
            giveup=give_up,
            jitter=backoff.full_jitter,
            on_backoff=log_retry,
            on_giveup=log_giveup,
            logger=None,
            factor=policy.base_delay,
            max_value=policy.max_delay,
        )
        async def attempt() -> _T:
            return read(await self._attempt_through_bans(method, params, session))

        return await attempt()

    async def _attempt_through_bans(
        self, method: str, params: Mapping[str, _wire.ParamValue], session: str | None
    ) -> dict[str, Any]:
        """One logical attempt: waits out short bans and fixes a refused timestamp once."""
        policy = self._retry
        bans = 0
        clock_fixed = False
        while True:
            try:
                return await self._send(method, params, session)
            except RateLimitedError as exc:
                wait = exc.retry_after if exc.retry_after is not None else policy.default_ban
                # Every call of this client waits (or, for a long ban, fails fast) behind the gate.
                pause = wait + policy.ban_margin
                news = pause > self.held_for + 0.5  # not a ban this client already knew of
                self.hold(pause)
                if news:
                    self._report_ban(pause)
                if wait > policy.max_ban_wait or bans >= policy.max_bans:
                    raise
                bans += 1
                self.bans += 1
                logger.warning("app banned for %.0f s (%s); pausing every call of this client", wait, exc.sub_code)
            except InvalidRequestError as exc:
                if exc.code != _INVALID_TIMESTAMP or clock_fixed:
                    raise
                clock_fixed = True
                logger.warning("TOP refused our timestamp; re-measured Taobao's clock, retrying once")

    def _report_ban(self, seconds: float) -> None:
        if self.on_ban is not None:
            try:
                self.on_ban(seconds)
            except Exception:
                logger.exception("on_ban callback failed")

    async def _send(self, method: str, params: Mapping[str, _wire.ParamValue], session: str | None) -> dict[str, Any]:
        # Every attempt, retries included, waits for the ban gate and the limiter.
        while (pause := self._ban_until - self._clock.monotonic()) > 0:
            if pause > self._retry.max_ban_wait + self._retry.ban_margin:  # a ban we chose not to wait out
                raise RateLimitedError(
                    code=7,
                    msg="App Call Limited",
                    sub_msg=f"this client is banned for {pause:.0f} more seconds (seen on an earlier call)",
                    method=method,
                    retry_after=pause,
                )
            await self._clock.sleep(pause)
        async with self._limiter:
            form = _wire.signed_params(
                method,
                params,
                app_key=self._app_key,
                secret=self._secret,
                sign_method=self.sign_method,
                timestamp=self._signing_time(),
                session=session,
                simplify=self.simplify,
            )
            self._calls[method] += 1
            sent = self._clock.monotonic()
            raw = await self._transport.post(self.url, form)
            received = self._clock.monotonic()
        try:
            return _wire.decode_response(method, raw.status, raw.body, simplify=self.simplify)
        except ApiError as exc:
            if exc.code == _INVALID_TIMESTAMP:
                self._recover_clock(raw, sent, received)
            raise

    def _recover_clock(self, raw: RawResponse, sent: float, received: float) -> None:
        """Code 31: our clock estimate is off; the reply's Date header tells Taobao's time."""
        if raw.date is None:
            return
        try:
            self._estimate = ClockEstimate.from_date_header(
                raw.date, sent=sent, received=received, wall_gap=self._wall_gap()
            )
        except (TypeError, ValueError):
            logger.warning("code 31 reply carried an unreadable Date header: %r", raw.date)

    # -- typed APIs ------------------------------------------------------------------

    async def time(self) -> datetime:
        """``taobao.time.get``: Taobao's clock (1-second resolution, CST)."""
        return await self._request("taobao.time.get", {}, session=None, read=structure_time)

    async def trades_sold(
        self,
        session: str,
        *,
        start_created: datetime,
        end_created: datetime,
        fields: Iterable[str] = _wire.DEFAULT_TRADE_FIELDS,
        types: Iterable[str] = _wire.ALL_TRADE_TYPES,
        page_no: int = 1,
        page_size: int = _wire.MAX_PAGE_SIZE,
        use_has_next: bool = False,
        status: str | None = None,
    ) -> TradePage:
        """``taobao.trades.sold.get``: trades by creation time (last 3 months), newest first.

        ``types`` defaults to every documented type (without ``type`` TOP lists only a
        default few); trades of other types in the reply are returned too, never dropped.
        The page's ``tids`` are always filled; its ``trades`` only when ``fields`` include
        ``modified`` (``fields=("tid",)`` lists or counts a window cheaply).

        Each reply is checked inside the retried attempt (design rule 13): it must carry
        ``total_results`` (``has_next`` with ``use_has_next``), at most ``page_size``
        trades, each once, each with a ``tid`` and created within the window (at
        whole-second resolution) when ``created`` is requested. A reply that does not is
        a transient ``ResponseFormatError``: retried, then raised, never an empty page.
        Raises ``WindowTooLargeError`` when Taobao times out listing it: at once for page 1 (the
        window must be split), after the usual retries for a later page.
        """
        return await self._list(
            "taobao.trades.sold.get",
            session,
            "created",
            start_created,
            end_created,
            fields=fields,
            types=types,
            page_no=page_no,
            page_size=page_size,
            use_has_next=use_has_next,
            status=status,
        )

    async def trades_sold_increment(
        self,
        session: str,
        *,
        start_modified: datetime,
        end_modified: datetime,
        fields: Iterable[str] = _wire.DEFAULT_TRADE_FIELDS,
        types: Iterable[str] = _wire.ALL_TRADE_TYPES,
        page_no: int = 1,
        page_size: int = _wire.MAX_PAGE_SIZE,
        use_has_next: bool = False,
        status: str | None = None,
    ) -> TradePage:
        """``taobao.trades.sold.increment.get``: trades by modification time, newest first.

        Both bounds are inclusive; the span may not exceed one day. ``types``, ``fields``
        and the checks on each reply are as for ``trades_sold``, with trades' ``modified``
        checked against the window. Raises ``WindowTooLargeError`` when Taobao times out
        listing it, as ``trades_sold`` does.
        """
        return await self._list(
            "taobao.trades.sold.increment.get",
            session,
            "modified",
            start_modified,
            end_modified,
            fields=fields,
            types=types,
            page_no=page_no,
            page_size=page_size,
            use_has_next=use_has_next,
            status=status,
        )

    async def _list(
        self,
        method: str,
        session: str,
        time_field: Literal["created", "modified"],
        start: datetime,
        end: datetime,
        *,
        fields: Iterable[str],
        types: Iterable[str],
        page_no: int,
        page_size: int,
        use_has_next: bool,
        status: str | None,
    ) -> TradePage:
        _require_text("session", session)
        if not 1 <= page_size <= _wire.MAX_PAGE_SIZE:
            raise ConfigurationError(f"page_size must be 1..{_wire.MAX_PAGE_SIZE}, got {page_size}")
        if page_no < 1:
            raise ConfigurationError(f"page_no must be >= 1, got {page_no}")
        window = {f"start_{time_field}": start, f"end_{time_field}": end}
        for name, moment in window.items():
            if getattr(moment, "tzinfo", None) is None:
                raise ConfigurationError(f"{name} must be a timezone-aware datetime")
        wanted = tuple(fields)
        params: dict[str, _wire.ParamValue] = {
            **window,
            "fields": wanted,
            "type": tuple(types),
            "page_no": page_no,
            "page_size": page_size,
            "use_has_next": use_has_next or None,
            "status": status,
        }
        query = ListQuery(
            time_field=time_field,
            start=start,
            end=end,
            fields=frozenset(wanted),
            page_size=page_size,
            use_has_next=use_has_next,
        )
        # Page 1 carries the count: Taobao refusing it as too big means "split the window", so it is
        # final. A later page of a window already counted is retried like any transient failure.
        return await self._request(
            method, params, session=session, read=partial(structure_page, query=query), oversize_is_final=page_no == 1
        )

    async def trade_fullinfo(
        self, session: str, tid: int, *, fields: Iterable[str] = _wire.DEFAULT_TRADE_FIELDS
    ) -> Trade:
        """``taobao.trade.fullinfo.get``: one trade with every requested field.

        ``tid`` and ``modified`` are always requested too (a ``Trade`` needs them). A reply
        without the trade, with another trade, or without a requested ``created`` is a
        transient ``ResponseFormatError`` (retried). Raises ``BusinessError``
        (``isv.trade-not-exist``) when Taobao has no such trade.
        """
        _require_text("session", session)
        if type(tid) is not int or tid <= 0:
            raise ConfigurationError(f"tid must be a positive int, got {tid!r}")
        wanted = tuple(dict.fromkeys(("tid", "modified", *fields)))
        return await self._request(
            "taobao.trade.fullinfo.get",
            {"tid": tid, "fields": wanted},
            session=session,
            read=partial(structure_fullinfo, tid=tid, fields=frozenset(wanted)),
        )
