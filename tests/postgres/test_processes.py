"""Three `taobao-ordersync worker` processes, 200 shops, chaos, a kill -9 and a SIGSTOP: nothing lost.

The emulator runs in this process; each worker is a real process talking to it and to
PostgreSQL over loopback, writing trades as NDJSON on its stdout, which this test reads
(and, for the paused worker, stops reading to stall its handler).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from taobao_ordersync import Checkpoint, cli
from taobao_ordersync._convert import structure_trade
from taobao_ordersync._time import floor_second
from taobao_ordersync.postgres import PostgresStore
from taobao_ordersync.testing import Chaos, Collector, Emulator, ShopProfile
from taobao_ordersync.testing.postgres import LocalPostgres

from .conftest import new_schema, run_sql

SHOPS = 200
RATE = 150.0  # the app's budget, and the emulator's rate limit: exceeding it earns code-7 bans
LEASE = 2.0
LAG = 2
# Longest line read from a worker. The stream buffers up to twice this before it stops reading the
# pipe, so it must stay small for a consumer that stops reading to stall the worker's writes.
LINE_LIMIT = 2**17


class WorkerProcess:
    """One worker process; its stdout (trades) and stderr (events) are read by tasks of this test."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, collectors: dict[str, Collector]) -> None:
        self.name = name
        self.process = process
        self.collectors = collectors
        self.stderr: list[str] = []
        self.cut: list[bytes] = []
        self.reading = asyncio.Event()
        self.reading.set()
        self.tasks = [asyncio.create_task(self._read_trades()), asyncio.create_task(self._read_events())]

    async def _read_trades(self) -> None:
        assert self.process.stdout is not None
        while True:
            await self.reading.wait()
            line = await self.process.stdout.readline()
            if not line:
                return
            try:
                record = json.loads(line)
            except ValueError:
                self.cut.append(line)  # the last line of a killed worker may be cut; that batch was never committed
                continue
            self.collectors[record["shop_id"]].add(structure_trade(record["trade"]))

    async def _read_events(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.stderr.append(line.decode())

    def said(self, text: str) -> int:
        return sum(text in line for line in self.stderr)

    async def finish(self) -> int:
        self.reading.set()
        code = await asyncio.wait_for(self.process.wait(), 30)
        await asyncio.wait_for(asyncio.gather(*self.tasks), 30)
        assert len(self.cut) <= 1, self.cut[:2]  # only a killed worker's very last line may be cut
        return code


async def start_worker(
    name: str, emu: Emulator, dsn: str, schema: str, sessions: Path, collectors: dict[str, Collector]
) -> WorkerProcess:
    args = [
        "-m", "taobao_ordersync", "worker",
        "--postgres", dsn, "--schema", schema, "--url", emu.url, "--sessions", str(sessions),
        "--rate", str(RATE), "--lease", str(LEASE), "--lag", str(LAG), "--concurrency", "8",
        "--min-interval", "0.5", "--max-interval", "2", "--worker-id", name,
    ]  # fmt: skip
    env = {**os.environ, cli.ENV_KEY: emu.app_key, cli.ENV_SECRET: emu.app_secret}
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, limit=LINE_LIMIT
    )
    return WorkerProcess(name, process, collectors)


async def wait_for(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    print(f"{time.monotonic():.1f} done: {what}", file=sys.stderr)


async def caught_up(admin: PostgresStore, emu: Emulator, within: float = 90) -> None:
    """Every shop has finished its backfill and committed past Taobao's now - lag - 1 s as of this call."""
    target = emu.now() - timedelta(seconds=LAG + 1)

    async def done() -> bool:
        shops = await admin.statuses()
        return all(
            s.checkpoint is not None and s.checkpoint.backfill_done and s.checkpoint.cursor >= target for s in shops
        )

    try:
        await wait_for(done, within, "every shop to catch up")
    except AssertionError:
        late = [
            s
            for s in await admin.statuses()
            if not (s.checkpoint and s.checkpoint.backfill_done and s.checkpoint.cursor >= target)
        ]
        raise AssertionError(f"{len(late)} shops behind, e.g. {late[:3]}") from None


async def owners(admin: PostgresStore) -> dict[str, str | None]:
    return {shop.shop_id: shop.lease.owner for shop in await admin.statuses() if shop.lease}


async def install_checkpoint_log(admin: PostgresStore) -> None:
    """A trigger that records every committed checkpoint, to check none ever moved backwards."""
    s = admin.schema
    for statement in (
        f"CREATE TABLE {s}.checkpoint_log (n bigserial, shop_id text, revision bigint, data text, owner text)",
        f"""CREATE FUNCTION {s}.log_checkpoint() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO {s}.checkpoint_log (shop_id, revision, data, owner)
                  VALUES (NEW.shop_id, NEW.revision, NEW.data,
                          (SELECT owner FROM {s}.shops WHERE shop_id = NEW.shop_id)); RETURN NEW; END $$""",
        f"""CREATE TRIGGER log AFTER INSERT OR UPDATE ON {s}.checkpoints
            FOR EACH ROW EXECUTE FUNCTION {s}.log_checkpoint()""",
    ):
        await run_sql(admin, statement)


async def assert_no_checkpoint_moved_backwards(admin: PostgresStore) -> int:
    log = f"SELECT shop_id, revision, data FROM {admin.schema}.checkpoint_log ORDER BY n"
    rows = await run_sql(admin, log)
    last: dict[str, tuple[int, Any, Any]] = {}
    for row in rows:
        checkpoint = Checkpoint.from_json(row["data"], shop_id=row["shop_id"])
        position = (checkpoint.backfill_done, checkpoint.backfilled_to or checkpoint.cursor)
        if row["shop_id"] in last:
            revision, origin, before = last[row["shop_id"]]
            assert row["revision"] == revision + 1, row["shop_id"]
            assert checkpoint.origin == origin, row["shop_id"]
            assert position >= before, (row["shop_id"], before, position)
        last[row["shop_id"]] = (row["revision"], checkpoint.origin, position)
    return len(rows)


@pytest.mark.slow
@pytest.mark.old_and_new_postgres
async def test_three_worker_processes_under_chaos_kill_and_pause(
    postgres_server: LocalPostgres, tmp_path: Path
) -> None:
    profile = ShopProfile(orders_per_day=40, history_days=2)
    chaos = Chaos(rate_limit=RATE)
    async with Emulator(shops=SHOPS, profile=profile, seed=88, chaos=chaos) as emu:
        schema = new_schema()
        sessions = tmp_path / "sessions.json"
        sessions.write_text(json.dumps({shop.id: shop.session for shop in emu.shops}))
        collectors: dict[str, Collector] = defaultdict(Collector)
        async with PostgresStore(postgres_server.dsn, schema=schema) as admin:
            await admin.add_shops(*(shop.id for shop in emu.shops))
            await install_checkpoint_log(admin)

            # 1. Three workers start at once: they split the shops and the budget, and no ban storm.
            workers = await asyncio.gather(
                *(start_worker(f"w{n}", emu, postgres_server.dsn, schema, sessions, collectors) for n in (1, 2, 3))
            )
            try:
                await scenario(emu, admin, workers, collectors)
            finally:
                # Kill every process first, whatever failed, so none outlives the test.
                for worker in workers:
                    if worker.process.returncode is None:
                        worker.process.send_signal(signal.SIGCONT)
                        worker.process.kill()
                for worker in workers:
                    with contextlib.suppress(Exception):  # the scenario's own failure is the one to report
                        await worker.finish()
                    print(worker.name, "".join(worker.stderr[-15:]), file=sys.stderr)  # shown when the test fails


async def scenario(
    emu: Emulator, admin: PostgresStore, workers: list[WorkerProcess], collectors: dict[str, Collector]
) -> None:
    """The steps, in order; the caller reaps the processes whatever happens."""
    await caught_up(admin, emu)
    held = await owners(admin)
    counts = sorted(list(held.values()).count(w.name) for w in workers)
    assert [66, 67, 67] == counts
    assert 0 == emu.bans_issued, "the shared budget kept three workers under the app's rate limit"

    # 2. Chaos: transient errors, bans, trades moving while paged, and busy shops.
    emu.chaos = Chaos(rate_limit=RATE, error_rate=0.03, ban_rate=0.003, move_while_paging=0.2)
    victim, paused, survivor = workers
    victims_shops = sorted(shop for shop, owner in held.items() if owner == victim.name)
    for shop_id in victims_shops[:3]:
        emu.flash_sale(shop_id, 1500, seconds=3, start=emu.now() + timedelta(seconds=1))

    # 3. kill -9 in the middle of a window: the victim has delivered part of a sale, not committed it.
    sale_shop = victims_shops[0]
    try:
        await wait_for(
            lambda: asyncio.sleep(0, collectors[sale_shop].deliveries > 300), 60, "the victim to be mid-sale"
        )
    except AssertionError:
        print([x for x in await admin.statuses() if x.shop_id == sale_shop], collectors[sale_shop], file=sys.stderr)
        raise
    victim.process.kill()
    killed_at = time.monotonic()
    assert -signal.SIGKILL == await victim.finish()  # also lets a renewal it had in flight land
    leases = f"SELECT shop_id, lease_until, claimed_at FROM {admin.schema}.shops WHERE shop_id = ANY($1::text[])"
    last_lease = {row["shop_id"]: row["lease_until"] for row in await run_sql(admin, leases, victims_shops)}

    async def taken_over() -> bool:
        now = await owners(admin)
        return all(now[shop] in (paused.name, survivor.name) for shop in victims_shops)

    await wait_for(taken_over, 10, "the victim's shops to move")
    pickup = time.monotonic() - killed_at
    # Each shop was claimed as its last lease ran out (measured on the database's clock), so within
    # one lease of the kill; the wall-clock bound leaves this loaded machine some slack.
    for row in await run_sql(admin, leases, victims_shops):
        late = (row["claimed_at"] - last_lease[row["shop_id"]]).total_seconds()
        assert late < 0.5, f"{row['shop_id']} claimed {late:.2f} s after its lease ran out"
    assert pickup <= LEASE + 1.0, f"shops moved {pickup:.2f} s after the kill; the lease is {LEASE} s"

    # 4. SIGSTOP a worker whose handler is stalled (its consumer stopped reading), past its lease.
    emu.pause_activity()
    paused.reading.clear()
    for shop_id in [shop for shop, owner in (await owners(admin)).items() if owner == paused.name]:
        emu.flash_sale(shop_id, 40, seconds=2, start=emu.now() + timedelta(seconds=1))
    # The sale ends 3 s from now and shows in windows ending `LAG` later, polled within 2 s: by then
    # its pipe is full and its handlers block in write().
    await asyncio.sleep(3 + LAG + 2 + 1)
    paused.process.send_signal(signal.SIGSTOP)
    await asyncio.sleep(LEASE + 0.5)

    async def all_with_survivor() -> bool:
        return set((await owners(admin)).values()) == {survivor.name}

    await wait_for(all_with_survivor, 10, "the survivor to take every shop")
    paused.process.send_signal(signal.SIGCONT)
    await wait_for(lambda: asyncio.sleep(0, paused.said(": removed") > 0), 10, "the paused worker to notice")
    paused.reading.set()  # its handlers return; the windows they held try to commit
    await wait_for(lambda: asyncio.sleep(0, paused.said("commit refused, fencing token") > 0), 10, "a fenced refusal")

    # 5. Everything caught up: nothing lost in any shop, no checkpoint ever went backwards.
    await caught_up(admin, emu)
    for shop in await admin.statuses():
        assert shop.checkpoint is not None
        report = emu.verify_sync(shop.checkpoint, collectors[shop.shop_id])
        if report.lost:  # diagnostics for the failure message
            record = emu.shop(shop.shop_id).trades[report.missing[0]]
            log = await run_sql(
                admin,
                f"SELECT revision, owner, data FROM {admin.schema}.checkpoint_log WHERE shop_id = $1 ORDER BY n",
                shop.shop_id,
            )
            history = [
                (r["revision"], r["owner"], json.loads(r["data"])["cursor"], json.loads(r["data"])["backfilled_to"])
                for r in log
            ]
            print(record, history, file=sys.stderr)
        assert 0 == report.lost, (shop.shop_id, report)
    assert await assert_no_checkpoint_moved_backwards(admin) > SHOPS
    assert emu.bans_issued > 0  # the chaos did ban the app

    # 6. Graceful stop: exit 0 and every lease released.
    for worker in (paused, survivor):
        worker.process.send_signal(signal.SIGTERM)
    assert [0, 0] == [await paused.finish(), await survivor.finish()]
    assert {None} == set((await owners(admin)).values())


async def test_worker_tmc_delivers_a_change_by_push_before_any_poll(
    make_emulator: Any, postgres_server: LocalPostgres, tmp_path: Path
) -> None:
    """`worker --tmc`: the worker permits its shop's seller, consumes the app's messages and hands a
    change to its output within seconds, though its next poll is an hour away; the message is
    confirmed, and SIGTERM stops the worker cleanly. Shop ids are seller nicks, as messages name them."""
    async with make_emulator(shops=1, seed=31, profile=ShopProfile(orders_per_day=40, history_days=1)) as emu:
        state = emu.shops[0]
        schema = new_schema()
        async with PostgresStore(postgres_server.dsn, schema=schema) as admin:
            await admin.add_shops(state.nick)
            sessions = tmp_path / "sessions.json"
            sessions.write_text(json.dumps({state.nick: state.session}), encoding="utf-8")
            args = [
                "-m", "taobao_ordersync", "worker", "--tmc", "--push-mode", "fullinfo",
                "--postgres", postgres_server.dsn, "--schema", schema, "--url", emu.url, "--sessions", str(sessions),
                "--lease", str(LEASE), "--lag", str(LAG), "--min-interval", "3600", "--max-interval", "3600",
            ]  # fmt: skip
            env = {**os.environ, cli.ENV_KEY: emu.app_key, cli.ENV_SECRET: emu.app_secret}
            process = await asyncio.create_subprocess_exec(
                sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
            )
            worker = WorkerProcess("tmc", process, defaultdict(Collector))
            try:
                await wait_for(lambda: _true(emu.tmc.permitted(state.id)), 30, "the seller's permit")

                async def synced() -> bool:
                    [shop] = await admin.statuses()
                    return shop.checkpoint is not None and shop.checkpoint.backfill_done

                await wait_for(synced, 30, "the first sync")  # the next poll is an hour away
                tid = next(iter(emu.shop(state.id).trades))
                collector = worker.collectors[state.nick]
                deliveries = collector.deliveries
                emu.modify(state.id, tid)
                changed = floor_second(emu.shop(state.id).trades[tid].versions[-1].modified)

                async def pushed() -> bool:
                    return collector.newest[tid] >= changed and emu.tmc.confirmed >= 1

                await wait_for(pushed, 15, "the change, by push")
                assert deliveries + 1 == collector.deliveries  # that trade alone: no poll ran
            finally:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                code = await worker.finish()
    assert 0 == code, "".join(worker.stderr)
    assert worker.said("consuming TMC group 'default'") == 1


async def _true(value: bool) -> bool:
    return value
