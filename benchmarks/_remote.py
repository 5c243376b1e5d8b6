"""The emulator in a child process, driven from the benchmark over a pipe.

The emulator serves on loopback exactly as in the tests; only its control calls
(``advance``, ``flash_sale``, ``pause_activity``, ``verify``...) cross a
``multiprocessing`` pipe. Keeping it out of the measured process means the
numbers describe the client side only: its CPU (the 2 cores are split: one for
the emulator, one for the syncer) and its memory (``tracemalloc`` sees only the
syncer, its client and the consumer).

``VirtualClock`` is the benchmark process's local clock: the real clock plus
every ``advance``. Moving it with the emulator makes simulated time pass for the
client as it would in production, so the client's clock estimate stays valid and
its ``clock_refresh`` (default 600 s) behaves as it would over real hours.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import multiprocessing
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Self

from attrs import frozen

from taobao_ordersync.testing import Emulator, VerifyReport

__all__ = ["Check", "Minimum", "RemoteEmulator", "VirtualClock"]

SECOND = timedelta(seconds=1)


class VirtualClock:
    """A ``Clock``: this machine's clock plus the simulated time skipped so far."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def time(self) -> float:
        return time.time() + self.skipped

    def monotonic(self) -> float:
        return time.monotonic() + self.skipped

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@frozen
class Check:
    """One shop's verification and, for each lost trade (at most 5), its versions."""

    report: VerifyReport
    lost_versions: Mapping[int, tuple[tuple[str, str, str, str | None], ...]]


@frozen
class Minimum:
    """The fewest list calls a poll schedule allows: ceil(trades / page size) per window, at least 1.

    ``backfill`` counts trades created up to the first mark; poll ``k`` counts distinct
    trades with a change in ``(mark[k-1], mark[k]]``.
    """

    backfill_trades: int
    poll_trades: tuple[int, ...]
    page_size: int

    def calls(self, trades: int) -> int:
        return max(1, math.ceil(trades / self.page_size))

    @property
    def backfill_calls(self) -> int:
        return self.calls(self.backfill_trades)

    @property
    def poll_calls(self) -> tuple[int, ...]:
        return tuple(self.calls(n) for n in self.poll_trades)

    @property
    def total(self) -> int:
        return self.backfill_calls + sum(self.poll_calls)


# -- the child process ----------------------------------------------------------------


def _serve(conn: Connection, options: dict[str, Any]) -> None:
    asyncio.run(_serve_async(conn, options))


async def _serve_async(conn: Connection, options: dict[str, Any]) -> None:
    started = time.perf_counter()
    emu = Emulator(**options)
    generated = time.perf_counter() - started
    loop = asyncio.get_running_loop()
    async with emu:
        conn.send(
            {
                "url": emu.url,
                "app_key": emu.app_key,
                "app_secret": emu.app_secret,
                "generated_seconds": generated,
                "trades": sum(len(shop.trades) for shop in emu.shops),
                "shops": [(shop.id, shop.session) for shop in emu.shops],
            }
        )
        while True:
            command, args = await loop.run_in_executor(None, conn.recv)
            if command == "stop":
                conn.send(("ok", None))
                return
            try:
                result = _apply(emu, command, args)
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
            else:
                conn.send(("ok", result))


def _apply(emu: Emulator, command: str, args: tuple[Any, ...]) -> Any:
    if command == "now":
        return emu.now()
    if command == "advance":
        emu.advance(args[0])
        return emu.now()
    if command == "pause":
        emu.pause_activity()
        return None
    if command == "flash_sale":
        shop_id, count, seconds, delay = args
        emu.flash_sale(shop_id, count, seconds=seconds, start=emu.now() + timedelta(seconds=delay))
        return None
    if command == "stats":
        return {"calls": dict(emu.calls), "faults": emu.faults_injected, "bans": emu.bans_issued}
    if command == "verify":
        return [_verify(emu, *item) for item in args[0]]
    if command == "minimum":
        return [_minimum(emu, *item) for item in args[0]]
    raise ValueError(f"unknown command {command!r}")


def _verify(
    emu: Emulator,
    shop_id: str,
    received: Mapping[int, datetime],
    created_from: datetime,
    sync_started: datetime,
    until: datetime,
    duplicates: int,
) -> Check:
    report = emu.verify(
        shop_id, received, created_from=created_from, sync_started=sync_started, until=until, duplicates=duplicates
    )
    trades = emu.shop(shop_id).trades
    lost = (report.missing + report.stale)[:5]
    versions = {
        tid: tuple((str(v.modified), str(v.visible_at), v.status, v.memo) for v in trades[tid].versions) for tid in lost
    }
    return Check(report=report, lost_versions=versions)


def _minimum(emu: Emulator, shop_id: str, created_from: datetime, marks: Sequence[datetime], page_size: int) -> Minimum:
    shop = emu.shop(shop_id)
    backfill = sum(1 for _ in shop.created_between(created_from, marks[0]))
    polls = tuple(
        len({tid for _, tid, _ in shop.modified_between(start + SECOND, end)})
        for start, end in itertools.pairwise(marks)
    )
    return Minimum(backfill_trades=backfill, poll_trades=polls, page_size=page_size)


# -- the parent's handle --------------------------------------------------------------


class RemoteEmulator:
    """Starts ``Emulator(**options)`` in a child process and forwards control calls to it.

    Use it as an async context manager; ``url``, ``app_key``, ``app_secret``,
    ``shops`` ((id, session) pairs), ``trades`` and ``generated_seconds`` are set on entry.
    """

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.clock = VirtualClock()
        self.url = self.app_key = self.app_secret = ""
        self.shops: list[tuple[str, str]] = []
        self.trades = 0
        self.generated_seconds = 0.0
        self._conn: Connection | None = None
        self._process: Any = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, self.options), daemon=True)
        self._process.start()
        child.close()
        self._conn = parent
        try:
            hello: dict[str, Any] = await asyncio.to_thread(parent.recv)
        except EOFError as exc:
            raise RuntimeError(f"the emulator process failed to start (exit code {self._process.exitcode})") from exc
        self.url, self.app_key, self.app_secret = hello["url"], hello["app_key"], hello["app_secret"]
        self.generated_seconds = hello["generated_seconds"]
        self.trades = hello["trades"]
        self.shops = list(hello["shops"])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._process is not None and self._process.is_alive():
                await self._call("stop")
        finally:
            if self._process is not None:
                await asyncio.to_thread(self._process.join, 10)
                if self._process.is_alive():
                    self._process.terminate()
            if self._conn is not None:
                self._conn.close()

    async def _call(self, command: str, *args: Any) -> Any:
        conn = self._conn
        if conn is None:
            raise RuntimeError("the emulator is not running")
        async with self._lock:
            try:
                conn.send((command, args))
                status, result = await asyncio.to_thread(conn.recv)
            except (EOFError, BrokenPipeError) as exc:
                raise RuntimeError(f"the emulator process died (exit code {self._process.exitcode})") from exc
        if status != "ok":
            raise RuntimeError(f"emulator {command}: {result}")
        return result

    async def now(self) -> datetime:
        moment: datetime = await self._call("now")
        return moment

    async def advance(self, seconds: float) -> datetime:
        """Skip ``seconds`` of shop activity at once; the local virtual clock moves too."""
        self.clock.skipped += seconds
        moment: datetime = await self._call("advance", seconds)
        return moment

    async def pause_activity(self) -> None:
        await self._call("pause")

    async def flash_sale(self, shop_id: str, count: int, *, seconds: int, delay: float) -> None:
        """``count`` new trades over ``seconds`` seconds starting ``delay`` seconds from now."""
        await self._call("flash_sale", shop_id, count, seconds, delay)

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self._call("stats")
        return stats

    async def verify(
        self, items: Sequence[tuple[str, Mapping[int, datetime], datetime, datetime, datetime, int]]
    ) -> list[Check]:
        """``Emulator.verify`` for each (shop_id, received, created_from, sync_started, until, duplicates)."""
        checks: list[Check] = await self._call("verify", list(items))
        return checks

    async def minimum(self, items: Sequence[tuple[str, datetime, Sequence[datetime], int]]) -> list[Minimum]:
        """``Minimum`` for each (shop_id, created_from, marks, page_size)."""
        found: list[Minimum] = await self._call("minimum", list(items))
        return found
