"""A faithful Taobao Open Platform emulator for the order APIs, served on loopback.

What it emulates, and the assumptions behind each rule, are listed in
``docs/emulator.md``. In short: ``/router/rest`` (GET and POST, query and form
merged), TOP's validation order and error codes, the three signing methods,
``taobao.time.get``, ``taobao.trades.sold.get``, ``taobao.trades.sold.increment.get``
and ``taobao.trade.fullinfo.get`` with default and ``simplify=true`` envelopes;
result orderings recomputed on every request (so trades move between pages);
a search index that sees changes only after a visibility lag; a clock that may
disagree with the caller's; seeded chaos; and ground truth to verify against.

This module is the HTTP side only: the clock, the server and its handler. The fake
itself, which answers a call's parameters with a reply and does no I/O, is
``_fake_top.FakeTop``; the parts it is built from are ``_gateway`` (TOP's checks),
``_order_apis`` (list and fullinfo semantics), ``_chaos``, ``_tmc``, ``_shop`` (the
shops' data) and ``_truth`` (ground truth).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from aiohttp import web

from taobao_ordersync._time import from_epoch
from taobao_ordersync.testing._chaos import Chaos
from taobao_ordersync.testing._fake_top import FakeTop
from taobao_ordersync.testing._shop import ShopProfile, ShopState, Simulator
from taobao_ordersync.testing._tmc import TmcBroker, TmcChaos
from taobao_ordersync.testing._truth import VerifyReport

if TYPE_CHECKING:
    from taobao_ordersync.checkpoint import Checkpoint
    from taobao_ordersync.testing.naive import Collector

__all__ = ["Chaos", "Emulator", "ShopProfile", "TmcChaos", "VerifyReport"]


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
        host: the address to serve on.
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
        self.clock_offset = clock_offset
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._top = FakeTop(
            now=self.now(),
            shops=shops,
            profile=profile,
            seed=seed,
            app_key=app_key,
            app_secret=app_secret,
            visibility_lag=visibility_lag,
            chaos=chaos,
            tmc=tmc,
        )

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

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        params: dict[str, str] = dict(request.query)
        if request.method == "POST":
            form = await request.post()
            params.update({key: value for key, value in form.items() if isinstance(value, str)})
        reply = self._top.handle(params, now=self.now(), monotonic=time.monotonic())
        if reply.drop_connection:
            transport = request.transport
            if transport is not None:
                transport.close()
            return web.Response(status=200)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(
            status=reply.status,
            body=reply.body(),
            content_type=reply.content_type,
            charset=reply.charset,
            headers=reply.headers,
        )

    # -- the fake's settings and counters ----------------------------------------------
    # Plain attributes before the core was split out: each can still be assigned (a counter reset, say).

    @property
    def app_key(self) -> str:
        """The app key the emulator accepts."""
        return self._top.app_key

    @app_key.setter
    def app_key(self, value: str) -> None:
        self._top.app_key = value

    @property
    def app_secret(self) -> str:
        """The app secret requests must be signed with."""
        return self._top.app_secret

    @app_secret.setter
    def app_secret(self, value: str) -> None:
        self._top.app_secret = value

    @property
    def seed(self) -> int:
        """The seed of the shops' data and of the chaos."""
        return self._top.seed

    @seed.setter
    def seed(self, value: int) -> None:
        self._top.seed = value

    @property
    def chaos(self) -> Chaos:
        """The fault injection in force (assign another to change it)."""
        return self._top.chaos

    @chaos.setter
    def chaos(self, chaos: Chaos) -> None:
        self._top.chaos = chaos

    @property
    def tmc(self) -> TmcBroker:
        """The TMC message channel: its queues, and ``changes`` as ground truth."""
        return self._top.tmc

    @property
    def calls(self) -> Counter[str]:
        """Requests per ``method``, refused and faulted ones included."""
        return self._top.calls

    @calls.setter
    def calls(self, value: Counter[str]) -> None:
        self._top.calls = value

    @property
    def calls_by_shop(self) -> Counter[tuple[str, str]]:
        """Requests per ``(shop_id, method)``, counted once the session is accepted."""
        return self._top.calls_by_shop

    @calls_by_shop.setter
    def calls_by_shop(self, value: Counter[tuple[str, str]]) -> None:
        self._top.calls_by_shop = value

    @property
    def bans_issued(self) -> int:
        """Code-7 refusals answered so far."""
        return self._top.bans_issued

    @bans_issued.setter
    def bans_issued(self, value: int) -> None:
        self._top.bans_issued = value

    @property
    def faults_injected(self) -> int:
        """Transient failures injected so far (``Chaos.error_rate`` and ``refuse_later_pages``)."""
        return self._top.faults_injected

    @faults_injected.setter
    def faults_injected(self, value: int) -> None:
        self._top.faults_injected = value

    @property
    def activity_paused(self) -> bool:
        """Whether ``pause_activity`` was called."""
        return self._top.activity_paused

    @activity_paused.setter
    def activity_paused(self, value: bool) -> None:
        self._top.activity_paused = value

    @property
    def _simulator(self) -> Simulator:
        # Tests make trades of one type at one moment with it.
        return self._top.simulator

    # -- time and shops --------------------------------------------------------------

    def now(self) -> datetime:
        """The emulator's clock (this machine's clock plus ``clock_offset``)."""
        return from_epoch(time.time() + self.clock_offset)

    def add_shop(self, index: int, *, profile: ShopProfile | None = None) -> ShopState:
        """Create shop ``index`` with its history up to now."""
        return self._top.add_shop(index, now=self.now(), profile=profile)

    @property
    def shops(self) -> list[ShopState]:
        """The shops (``.id``, ``.session``, ``.trades``)."""
        return self._top.shops

    def shop(self, shop_id: str) -> ShopState:
        """One shop by id."""
        return self._top.shop(shop_id)

    def pause_activity(self) -> None:
        """Stop all shop activity (and mid-read moves): the state to verify a final sync against."""
        self._top.pause_activity()

    def catch_up(self, shop: ShopState | None = None) -> None:
        """Apply every change due by now (done before each request; call it after ``advance``)."""
        self._top.catch_up(self.now(), shop)

    def advance(self, seconds: float) -> None:
        """Jump the emulator's clock forward; the shops' activity over the jump happens at once."""
        self.clock_offset += seconds
        self.catch_up()

    def flash_sale(self, shop_id: str, count: int, *, seconds: int = 3, start: datetime | None = None) -> None:
        """Create ``count`` trades spread evenly over ``seconds`` whole seconds from ``start`` (default now).

        Their creation times have milliseconds, like Taobao's backend, while replies print
        whole seconds: every second of a big sale is a long run of ties.
        """
        self._top.flash_sale(shop_id, count, seconds=seconds, start=start or self.now())

    def modify(self, shop_id: str, tid: int, *, at: datetime | None = None) -> None:
        """Change one trade now (or stamped ``at``), keeping its status."""
        self._top.modify(shop_id, tid, now=self.now(), at=at)

    def hide_from_fullinfo(self, tid: int, *, times: int = 10**9) -> None:
        """Make ``taobao.trade.fullinfo.get`` say ``isv.trade-not-exist`` for a listed trade, the next
        ``times`` times it is asked for (its store lagging behind the lists' index)."""
        self._top.hide_from_fullinfo(tid, times=times)

    def expire_session(self, shop_id: str) -> None:
        """Make the shop's session key invalid (code 27) until ``renew_session``."""
        self._top.expire_session(shop_id)

    def renew_session(self, shop_id: str) -> str:
        """Issue the shop a new valid session key and return it."""
        return self._top.renew_session(shop_id)

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
        return self._top.verify(
            shop_id, received, created_from=created_from, sync_started=sync_started, until=until, duplicates=duplicates
        )

    def verify_sync(self, checkpoint: Checkpoint, collector: Collector) -> VerifyReport:
        """``verify`` what ``collector`` kept, in the scope a finished sync's checkpoint states."""
        return self._top.verify_sync(checkpoint, collector)
