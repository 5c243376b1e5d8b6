"""`sync --follow` in process, against the emulator: back-off after failures, SIGTERM, and `--tmc` push."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from taobao_ordersync import RetryPolicy, SqliteStore, TopClient, Trade, cli
from taobao_ordersync._time import floor_second
from taobao_ordersync.checkpoint import Checkpoint
from taobao_ordersync.testing import Chaos, Collector, Emulator, ShopProfile


@pytest.fixture(autouse=True)
def fast_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's client with two tries and no waits between them: a failure outlasts its retries at once."""

    def client(app_key: str, secret: str, **options: Any) -> TopClient:
        return TopClient(app_key, secret, retry=RetryPolicy.no_wait(max_tries=2), clock_refresh=0, **options)

    monkeypatch.setattr(cli, "_top_client", client)


@pytest.fixture
def sigterm_guard() -> Iterator[None]:
    """A SIGTERM the CLI does not handle fails the test instead of killing pytest."""

    def unhandled(signum: int, frame: Any) -> None:
        raise AssertionError("SIGTERM reached the default handler: the CLI does not handle it")

    previous = signal.signal(signal.SIGTERM, unhandled)
    yield
    signal.signal(signal.SIGTERM, previous)


def follow_args(emu: Emulator, tmp_path: Path, *extra: str) -> Any:
    return cli.build_parser().parse_args(
        [
            "sync", "--url", emu.url, "--app-key", emu.app_key, "--app-secret", emu.app_secret,
            "--session", "session-1", "--shop-id", "shop-1", "--store", str(tmp_path / "checkpoints.sqlite3"),
            "--out", str(tmp_path / "trades.sqlite3"), "--follow", *extra,
        ]
    )  # fmt: skip


async def checkpoint(tmp_path: Path) -> Checkpoint | None:
    path = tmp_path / "checkpoints.sqlite3"
    if not path.exists():
        return None
    stored = await SqliteStore(path).load("shop-1")
    return None if stored is None else Checkpoint.from_json(stored.data, shop_id="shop-1")


async def caught_up(tmp_path: Path) -> bool:
    """The first poll is over: the backfill is committed."""
    found = await checkpoint(tmp_path)
    return found is not None and found.backfill_done


async def until(condition: Callable[[], Any], seconds: float) -> None:
    for _ in range(int(seconds / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_follow_backs_off_after_a_failure_that_outlasts_retries_and_goes_on(
    make_emulator: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], sigterm_guard: None
) -> None:
    """Every call fails at first: --follow reports it, waits --min-backoff, and syncs once the gateway
    recovers (it used to exit on the first such error); SIGTERM then ends it with exit 0."""
    async with make_emulator(shops=1, seed=3, chaos=Chaos(error_rate=1.0)) as emu:
        args = follow_args(emu, tmp_path, "--interval", "3600", "--min-backoff", "0.2", "--max-backoff", "0.4")
        sync = asyncio.create_task(cli._sync(args))
        await asyncio.sleep(1.0)  # several failures, each backed off
        assert not sync.done(), sync.result() if not sync.exception() else sync.exception()
        emu.chaos = Chaos()
        await until(lambda: caught_up(tmp_path), 10)
        os.kill(os.getpid(), signal.SIGTERM)
        code = await asyncio.wait_for(sync, 10)

    err = capsys.readouterr().err
    assert cli.OK == code
    assert err.count("trying again in") >= 2
    assert "stopped; no partial window committed" in err


async def test_sigterm_mid_window_commits_nothing_partial(
    make_emulator: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sigterm_guard: None,
) -> None:
    """SIGTERM while the second batch of a 600-trade window is written: exit 0, that batch is written,
    and the checkpoint stays before the window, so the store never claims a trade the file lacks."""
    collector = Collector()
    sale: dict[str, datetime] = {}
    sale_batches = 0
    upsert = cli._SqliteSink._upsert

    def recording_upsert(sink: cli._SqliteSink, trades: Sequence[Trade]) -> None:
        nonlocal sale_batches
        upsert(sink, trades)
        for trade in trades:
            collector.add(trade)
        if "start" in sale and any(trade.modified >= sale["start"] for trade in trades):
            sale_batches += 1
            if sale_batches == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(cli._SqliteSink, "_upsert", recording_upsert)
    async with make_emulator(shops=1, seed=4, profile=ShopProfile(orders_per_day=40, history_days=2)) as emu:
        args = follow_args(emu, tmp_path, "--interval", "0.3", "--lag", "1")
        sync = asyncio.create_task(cli._sync(args))
        await until(lambda: caught_up(tmp_path), 10)
        sale["start"] = floor_second(emu.now()) + timedelta(seconds=2)  # ahead of the cursor
        emu.flash_sale("shop-1", 600, seconds=2, start=sale["start"])
        code = await asyncio.wait_for(sync, 20)
        emu.pause_activity()
        final = await checkpoint(tmp_path)
        assert final is not None
        report = emu.verify_sync(final, collector)

    assert cli.OK == code
    assert 2 == sale_batches  # stopped in the middle of the sale's window
    assert final.cursor <= sale["start"]  # that window was not committed
    assert 0 == report.lost, report
    with closing(sqlite3.connect(tmp_path / "trades.sqlite3")) as db:
        written = db.execute("SELECT count(*) FROM trades").fetchone()[0]
    assert written == len(collector.newest)  # the batch in flight when the signal came was written


async def test_follow_tmc_pushes_changes_and_never_moves_the_checkpoint(
    make_emulator: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], sigterm_guard: None
) -> None:
    """--tmc: with polling an hour apart, changed trades reach --out within seconds by push, the
    checkpoint does not move, and SIGTERM stops it with exit 0."""
    async with make_emulator(shops=2, seed=5, profile=ShopProfile(orders_per_day=40, history_days=1)) as emu:
        nick = emu.shop("shop-1").nick
        args = follow_args(
            emu, tmp_path, "--tmc", "--seller-nick", nick, "--interval", "3600", "--lag", "2", "--push-mode", "fullinfo"
        )
        sync = asyncio.create_task(cli._sync(args))
        await until(lambda: caught_up(tmp_path), 10)
        before = await checkpoint(tmp_path)
        await until(lambda: _true(emu.tmc.permitted("shop-1")), 5)
        changed_at = emu.now()
        tids = list(emu.shop("shop-1").trades)[-3:]
        for tid in tids:
            emu.modify("shop-1", tid)
        emu.modify("shop-2", next(iter(emu.shop("shop-2").trades)))  # not this seller: not written
        emu.flash_sale("shop-1", 2, seconds=1)

        async def pushed() -> bool:
            with closing(sqlite3.connect(tmp_path / "trades.sqlite3")) as db:
                rows = db.execute(
                    "SELECT count(*) FROM trades WHERE modified >= ?", (floor_second(changed_at).isoformat(),)
                )
                return bool(rows.fetchone()[0] >= 5)

        await until(pushed, 5)
        assert before == await checkpoint(tmp_path)  # push moved no checkpoint
        os.kill(os.getpid(), signal.SIGTERM)
        code = await asyncio.wait_for(sync, 10)
        seconds = (emu.now() - changed_at).total_seconds()

    assert cli.OK == code
    assert seconds < 8
    assert "stopped; no partial window committed" in capsys.readouterr().err


async def _true(value: bool) -> bool:
    return value


def test_tmc_needs_follow_and_a_nick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--tmc without --follow, or without --seller-nick: exit 3 with a one-line reason."""
    base = ["sync", "--app-key", "k", "--app-secret", "s", "--session", "x", "--shop-id", "s", "--store", "c.db"]
    assert cli.CONFIG == cli.main([*base, "--tmc", "--seller-nick", "n"])
    assert "--tmc needs --follow" in capsys.readouterr().err
    assert cli.CONFIG == cli.main([*base, "--follow", "--tmc"])
    assert "--tmc needs --seller-nick" in capsys.readouterr().err
