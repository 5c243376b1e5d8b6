"""The ``taobao-ordersync`` command line (also ``python -m taobao_ordersync``).

Commands: ``demo`` (a verified sync of a realistic shop on the emulator),
``emulator`` (serve the TOP emulator), ``sync`` (sync one real shop to NDJSON or
a SQLite table), ``audit`` (check, and repair, what ``sync --out`` holds against
Taobao), ``worker`` (one of many processes sharing shops through
PostgreSQL), ``shops`` (the PostgreSQL registry), ``status`` (each shop's
checkpoint, and with PostgreSQL its owner and lease). User errors end with one
line on stderr and a distinct exit code, never a traceback.

The CLI is the outermost edge: it alone imports ``taobao_ordersync.testing``, and
only inside the ``demo`` and ``emulator`` commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TextIO

from taobao_ordersync import __version__
from taobao_ordersync.audit import AuditProgress
from taobao_ordersync.client import DEFAULT_URL, TopClient
from taobao_ordersync.errors import (
    ApiError,
    AuthenticationError,
    CheckpointError,
    ConfigurationError,
    HeartbeatFailedError,
    InvalidRequestError,
    PermissionDeniedError,
    RateLimitedError,
    ResponseFormatError,
    SyncError,
    TaobaoOrderSyncError,
    TransportError,
)
from taobao_ordersync.models import Shop, Trade
from taobao_ordersync.status import ShopStatus, duration, lease_text, phase_of, render_status
from taobao_ordersync.stores import SqliteStore
from taobao_ordersync.syncer import DEFAULT_SETTLE, ShopProgress, Syncer, SyncerOptions

# Exit codes: one per thing the user must do differently.
OK: Final = 0
LOST: Final = 1  # demo: verification found a lost trade
USAGE: Final = 2  # argparse's own
CONFIG: Final = 3  # missing or invalid settings (e.g. no credentials)
AUTH: Final = 4  # the seller's session is invalid or expired
REQUEST: Final = 5  # TOP refused the request: wrong secret/signature, bad parameter, no permission
NETWORK: Final = 6  # the gateway is unreachable or answers garbage
STORE: Final = 7  # the checkpoint store is unreadable or owned by another worker
LIMITED: Final = 8  # Taobao throttled the app for longer than we wait
SYNC: Final = 9  # the sync refused to risk a loss (expired checkpoint, dense second)
API: Final = 10  # any other TOP error
HEARTBEAT: Final = 11  # worker: no heartbeat (PostgreSQL unreachable or refusing it) for --give-up-after seconds
AUDIT_LOST: Final = 12  # audit: trades were missing or stale in the SQLite file (even if --repair fixed them)
AUDIT_EXTRA: Final = 13  # audit: nothing lost, but the file holds trades Taobao does not list
INTERRUPTED: Final = 130

# Environment variables: one scheme, the package's name first (docs/reference.md lists them).
ENV_KEY: Final = "TAOBAO_ORDERSYNC_APP_KEY"
ENV_SECRET: Final = "TAOBAO_ORDERSYNC_APP_SECRET"  # noqa: S105 (the variable's name, not a secret)
ENV_SESSION: Final = "TAOBAO_ORDERSYNC_SESSION"
ENV_POSTGRES: Final = "TAOBAO_ORDERSYNC_POSTGRES"
#: The names before it, still read (with a warning) for one release when the new one is not set.
OLD_ENV: Final = {ENV_KEY: "TAOBAO_APP_KEY", ENV_SECRET: "TAOBAO_APP_SECRET", ENV_SESSION: "TAOBAO_SESSION"}

logger = logging.getLogger("taobao_ordersync.cli")


def _default(owner: Callable[..., object], name: str) -> Any:
    """``owner``'s default for its parameter ``name``: an option's default is defined once, in the library."""
    return inspect.signature(owner).parameters[name].default


def build_parser() -> argparse.ArgumentParser:
    from taobao_ordersync.fleet import Fleet, PollPolicy
    from taobao_ordersync.worker import Worker

    lag, rate, burst = _default(Syncer, "lag"), _default(TopClient, "rate"), _default(TopClient, "burst")
    parser = argparse.ArgumentParser(
        prog="taobao-ordersync",
        description="Keep a complete copy of Taobao sellers' orders, losing none.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log retries, bans and windows to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="sync a realistic shop on the built-in emulator and verify it")
    demo.add_argument("--shops", type=_positive_int, help="number of shops (default 1; 3 with --tmc)")
    demo.add_argument("--seed", type=int, default=2026, help="seed for data and chaos (default 2026)")
    demo.add_argument(
        "--orders-per-day",
        type=float,
        help="volume per shop (default 350, shared out over --shops; 17280 per shop with --tmc)",
    )
    demo.add_argument("--sale", type=int, help="orders in the 11.11 burst (default 25000, shared out over --shops)")
    demo.add_argument(
        "--tmc", action="store_true", help="show freshness: change -> handler with TMC push vs polling alone"
    )
    demo.add_argument("--seconds", type=float, default=30.0, help="--tmc: seconds of live activity (default 30)")
    demo.add_argument("--interval", type=float, default=15.0, help="--tmc: seconds between polls (default 15)")
    demo.add_argument("--lag", type=float, default=5.0, help="--tmc: seconds windows stay behind (default 5)")

    emulator = commands.add_parser("emulator", help="serve the TOP emulator until interrupted")
    emulator.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    emulator.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks one)")
    emulator.add_argument("--seed", type=int, default=0, help="seed for the generated shops (default 0)")
    emulator.add_argument("--shops", type=_positive_int, default=1, help="number of shops (default 1)")
    emulator.add_argument("--orders-per-day", type=float, default=1000.0, help="volume per shop (default 1000)")
    emulator.add_argument("--clock-offset", type=float, default=0.0, help="seconds its clock runs ahead of ours")

    sync = commands.add_parser("sync", help="sync one shop: trades as NDJSON on stdout or into SQLite")
    _credentials(sync)
    sync.add_argument("--session", help=f"the seller's session key (or ${ENV_SESSION})")
    sync.add_argument("--shop-id", required=True, help="a stable id for the shop, used as the checkpoint key")
    sync.add_argument("--store", required=True, type=Path, help="SQLite checkpoint file (created if missing)")
    sync.add_argument("--out", type=Path, help="upsert trades into this SQLite file (table `trades`) instead")
    sync.add_argument("--follow", action="store_true", help="keep polling until SIGINT or SIGTERM")
    sync.add_argument("--interval", type=float, default=300.0, help="seconds between polls with --follow")
    sync.add_argument(
        "--lag", type=float, default=lag, help=f"seconds windows stay behind Taobao's clock (default {lag:g})"
    )
    sync.add_argument("--fullinfo", action="store_true", help="fetch each trade with taobao.trade.fullinfo.get")
    min_backoff, max_backoff = _default(PollPolicy, "min_backoff"), _default(PollPolicy, "max_backoff")
    sync.add_argument(
        "--min-backoff",
        type=float,
        default=min_backoff,
        help=f"--follow: seconds to wait after a failure outlasting the retries, doubling (default {min_backoff:g})",
    )
    sync.add_argument(
        "--max-backoff",
        type=float,
        default=max_backoff,
        help=f"--follow: the longest wait after failures (default {max_backoff:g})",
    )
    _push_arguments(sync, "--follow: TMC push messages for freshness, polling as the proof")
    sync.add_argument("--seller-nick", help="--tmc: the seller's nick, as TMC messages name it (required)")

    audit = commands.add_parser(
        "audit", help="check that a `sync --out` SQLite file holds every trade Taobao has (and --repair it)"
    )
    _credentials(audit)
    audit.add_argument("--session", help=f"the seller's session key (or ${ENV_SESSION})")
    audit.add_argument("--shop-id", help="the shop to audit (with --session)")
    audit.add_argument(
        "--sessions", type=Path, help="JSON file {shop_id: session key}: audit every shop in it (--out with {shop})"
    )
    audit.add_argument(
        "--out", required=True, help="the SQLite file `sync --out` writes; '{shop}' in it is replaced by the shop id"
    )
    audit.add_argument("--days", type=float, help="audit trades created in the last DAYS days (default: all 90)")
    settle = DEFAULT_SETTLE.total_seconds()
    audit.add_argument(
        "--settle", type=float, default=settle, help=f"seconds your sync needs to deliver a change (default {settle:g})"
    )
    audit.add_argument("--repair", action="store_true", help="upsert missing and stale trades into --out")
    audit.add_argument(
        "--deep", type=float, metavar="DAYS", help="also compare versions of trades modified in the last DAYS days"
    )
    audit.add_argument("--json", metavar="PATH", help="write the JSON report here ('-': stdout, instead of the table)")
    audit.add_argument("--rate", type=float, default=rate, help=f"the app's calls per second (default {rate:g})")
    audit.add_argument("--concurrency", type=_positive_int, default=4, help="shops audited at once (default 4)")

    worker = commands.add_parser(
        "worker", help="sync this process's share of the shops registered in PostgreSQL, until interrupted"
    )
    _credentials(worker)
    _postgres(worker)
    worker.add_argument(
        "--sessions", required=True, type=Path, help="JSON file {shop_id: session key}, re-read when it changes"
    )
    worker.add_argument("--out", type=Path, help='append trades as NDJSON {"shop_id", "trade"} here (default stdout)')
    lease, concurrency = _default(Worker, "lease"), _default(Fleet, "concurrency")
    min_interval, max_interval = _default(PollPolicy, "min_interval"), _default(PollPolicy, "max_interval")
    worker.add_argument(
        "--rate", type=float, default=rate, help=f"the app's calls per second, shared by all workers (default {rate:g})"
    )
    worker.add_argument(
        "--burst", type=_positive_int, default=burst, help=f"calls allowed back to back (default {burst})"
    )
    worker.add_argument("--lease", type=float, default=lease, help=f"seconds a shop's lease lasts (default {lease:g})")
    worker.add_argument(
        "--concurrency", type=_positive_int, default=concurrency, help=f"shops read at once (default {concurrency})"
    )
    worker.add_argument(
        "--lag", type=float, default=lag, help=f"seconds windows stay behind Taobao's clock (default {lag:g})"
    )
    worker.add_argument(
        "--min-interval",
        type=float,
        default=min_interval,
        help=f"fastest poll of a quiet shop, seconds (default {min_interval:g})",
    )
    worker.add_argument(
        "--max-interval",
        type=float,
        default=max_interval,
        help=f"slowest poll of a quiet shop, seconds (default {max_interval:g})",
    )
    worker.add_argument("--worker-id", help="a unique name (default: host, pid and a random suffix)")
    worker.add_argument("--fullinfo", action="store_true", help="fetch each trade with taobao.trade.fullinfo.get")
    _push_arguments(
        worker,
        "also consume the app's TMC messages (shop ids are seller nicks); a message of a shop another worker "
        "holds reaches it through PostgreSQL",
    )
    give_up_after = _default(Worker, "give_up_after")
    worker.add_argument(
        "--give-up-after",
        type=float,
        default=give_up_after,
        help=f"exit with code 11 after this many seconds without a heartbeat (default {give_up_after:g}; 0: never)",
    )

    shops = commands.add_parser("shops", help="add, remove or list the shops workers share (PostgreSQL)")
    shops_commands = shops.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("add", "register shops"), ("remove", "unregister shops (checkpoints stay)")):
        sub = shops_commands.add_parser(action, help=text)
        _postgres(sub)
        sub.add_argument("shop_ids", nargs="+", metavar="SHOP_ID")
    _postgres(shops_commands.add_parser("list", help="every registered shop with its owner and lease"))

    status = commands.add_parser("status", help="show each shop's checkpoint (and with PostgreSQL, owner and lease)")
    where = status.add_mutually_exclusive_group()
    where.add_argument("--store", type=Path, help="SQLite checkpoint file")
    where.add_argument("--postgres", metavar="DSN", help=f"PostgreSQL URI of the shared registry (or ${ENV_POSTGRES})")
    status.add_argument("--schema", default="taobao_ordersync", help="PostgreSQL schema (default taobao_ordersync)")
    status.add_argument(
        "--shops", action="store_true", help="PostgreSQL: one line per shop, with its checkpoint (default: a summary)"
    )
    return parser


def _postgres(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--postgres", metavar="DSN", help=f"PostgreSQL URI (or ${ENV_POSTGRES})")
    parser.add_argument("--schema", default="taobao_ordersync", help="PostgreSQL schema (default taobao_ordersync)")


def _push_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--tmc", action="store_true", help=what)
    parser.add_argument("--group", default="default", help="--tmc: the TMC group to consume (default 'default')")
    parser.add_argument(
        "--push-mode",
        choices=("auto", "fullinfo", "poll"),
        default="auto",
        help="--tmc: fetch each changed trade, poll early, or choose by change rate (default auto)",
    )
    parser.add_argument(
        "--reconcile-interval",
        type=float,
        default=300.0,
        help="--tmc: seconds between polls while push is healthy (default 300; the policy's when it is not)",
    )


def _credentials(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app-key", help=f"application key (or ${ENV_KEY})")
    parser.add_argument("--app-secret", help=f"application secret (or ${ENV_SECRET}); prefer the variable")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"gateway (default {DEFAULT_URL})")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    # Scope and loss warnings must show; the demo injects its faults on purpose and sums them up.
    quiet = logging.ERROR if args.command == "demo" else logging.WARNING
    logging.basicConfig(
        level=logging.INFO if args.verbose else quiet,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler = {
        "demo": _demo,
        "emulator": _emulator,
        "sync": _sync,
        "audit": _audit,
        "status": _status,
        "worker": _worker,
        "shops": _shops,
    }[args.command]
    try:
        return asyncio.run(handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except TaobaoOrderSyncError as exc:
        code, advice = _classify(exc)
        print(f"taobao-ordersync: error: {exc}{advice}", file=sys.stderr)
        return code


def _classify(exc: TaobaoOrderSyncError) -> tuple[int, str]:
    """Exit code and a hint for each error family."""
    if isinstance(exc, ConfigurationError):
        return CONFIG, ""
    if isinstance(exc, AuthenticationError):
        return AUTH, " (the seller must authorise the app again: get a new session key)"
    if isinstance(exc, InvalidRequestError) and exc.code == 25:
        return REQUEST, " (check the app secret and --app-key)"
    if isinstance(exc, InvalidRequestError | PermissionDeniedError):
        return REQUEST, ""
    if isinstance(exc, RateLimitedError):
        wait = f"; retry after {exc.retry_after:.0f} s" if exc.retry_after else ""
        return LIMITED, f" (Taobao throttled this app{wait})"
    if isinstance(exc, TransportError | ResponseFormatError):
        return NETWORK, " (is the gateway URL right and reachable?)"
    if isinstance(exc, HeartbeatFailedError):
        return HEARTBEAT, " (fix PostgreSQL or the worker's access to it; a supervisor restarts the worker)"
    if isinstance(exc, CheckpointError):
        return STORE, ""
    if isinstance(exc, SyncError):
        return SYNC, ""
    if isinstance(exc, ApiError):
        return API, ""
    return API, ""


# -- commands -------------------------------------------------------------------------


async def _demo(args: argparse.Namespace) -> int:
    from taobao_ordersync.testing.demo import run_demo, run_push_demo

    if args.tmc:
        if not (args.seconds > 0 and args.interval > 0 and args.lag >= 0):
            raise ConfigurationError("--seconds and --interval must be > 0, --lag >= 0")
        runs = await run_push_demo(
            shops=args.shops or 3,
            seed=args.seed,
            seconds=args.seconds,
            orders_per_day=args.orders_per_day or 17_280.0,
            lag=args.lag,
            interval=args.interval,
        )
        return LOST if any(run.lost for run in runs) else OK
    shops = args.shops or 1
    # Keep the demo about a minute long: by default, N shops share one big shop's volume.
    orders_per_day = args.orders_per_day or max(20.0, 350.0 / shops)
    sale = args.sale if args.sale is not None else max(500, 25_000 // shops)
    result = await run_demo(shops=shops, seed=args.seed, orders_per_day=orders_per_day, sale_size=sale)
    return LOST if result.lost else OK


async def _emulator(args: argparse.Namespace) -> int:
    from taobao_ordersync.testing import Emulator, ShopProfile

    profile = ShopProfile(orders_per_day=args.orders_per_day)
    emulator = Emulator(
        shops=args.shops,
        seed=args.seed,
        profile=profile,
        host=args.host,
        port=args.port,
        clock_offset=args.clock_offset,
    )
    try:
        await emulator.start()
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from exc
    try:
        print(f"TOP emulator serving at {emulator.url}")
        print(f"app_key={emulator.app_key} app_secret={emulator.app_secret}")
        for shop in emulator.shops:
            print(f"  shop {shop.id}: session={shop.session}, nick={shop.nick}, {len(shop.trades)} trades")
        print("Press Ctrl+C to stop.", flush=True)
        await asyncio.Event().wait()
    finally:
        await emulator.stop()
    return OK


def _environ(name: str) -> str | None:
    """The variable ``name``, else its old name's value, with a warning to rename it."""
    value = os.environ.get(name)
    old = OLD_ENV.get(name)
    if not value and old is not None and (value := os.environ.get(old)):
        logger.warning("$%s is deprecated and goes in the next release: set $%s instead", old, name)
    return value


def _require(value: str | None, env: str, what: str) -> str:
    value = value or _environ(env)
    if not value:
        raise ConfigurationError(f"missing {what}: pass --{what.replace(' ', '-')} or set ${env}")
    return value


async def _sync(args: argparse.Namespace) -> int:
    app_key = _require(args.app_key, ENV_KEY, "app key")
    secret = _require(args.app_secret, ENV_SECRET, "app secret")
    session = _require(args.session, ENV_SESSION, "session")
    if args.tmc and not args.follow:
        raise ConfigurationError("--tmc needs --follow (push keeps a running sync fresh)")
    if args.tmc and not args.seller_nick:
        raise ConfigurationError("--tmc needs --seller-nick: the seller's nick, which TMC messages carry")
    if args.follow and not (args.interval > 0 and 0 < args.min_backoff <= args.max_backoff):
        raise ConfigurationError("--interval must be > 0 and 0 < --min-backoff <= --max-backoff")
    store = SqliteStore(args.store)
    sink = _SqliteSink(args.out) if args.out else _NdjsonSink(sys.stdout)
    # Closed on every way out: success, an API or store error, Ctrl+C (a cancelled task).
    with contextlib.closing(sink):
        async with _top_client(app_key, secret, url=args.url) as client:
            shop = Shop(id=args.shop_id, session=session)
            if args.follow:
                return await _follow(args, client, store, sink, shop)
            syncer = Syncer(client, store=store, **_syncer_options(args))
            count = 0
            async for batch in syncer.batches(shop):
                await asyncio.to_thread(sink.write, batch.trades)  # file I/O off the event loop
                count += len(batch.trades)
            progress = syncer.progress(shop.id)
            print(
                f"{shop.id}: {count} trades, checkpoint {progress.cursor}, "
                f"{progress.duplicates} duplicates suppressed, {sum(client.call_counts.values())} calls",
                file=sys.stderr,
            )
            return OK


def _syncer_options(args: argparse.Namespace) -> SyncerOptions:
    """The ``Syncer``'s options of ``sync`` (with or without ``--follow``) and ``worker``."""
    options: SyncerOptions = {"lag": args.lag, "fullinfo": args.fullinfo}
    if args.command == "sync":  # one shop: its progress on stderr during long backfills
        options["on_progress"] = _ProgressLine(sys.stderr)
    return options


def _top_client(app_key: str, secret: str, **options: Any) -> TopClient:
    """The CLI's client (one place, so tests can shorten its retries)."""
    return TopClient(app_key, secret, **options)


async def _follow(
    args: argparse.Namespace, client: TopClient, store: SqliteStore, sink: _NdjsonSink | _SqliteSink, shop: Shop
) -> int:
    """``sync --follow``: a fleet of one shop, until SIGINT or SIGTERM.

    A failure that outlasts the client's retries backs the shop off (``--min-backoff`` doubling to
    ``--max-backoff``, like ``worker``) and the sync goes on; one only an operator can fix (an invalid
    session, a refused request, a checkpoint in conflict) ends it with its exit code. A signal stops
    it between batches: no partial window is committed. With ``--tmc``, push messages deliver changes
    within seconds and polling, every ``--reconcile-interval`` while push is healthy, stays the proof.
    """
    import signal

    from taobao_ordersync.fleet import Fleet, FleetEvent, PollPolicy, needs_operator
    from taobao_ordersync.syncer import Batch
    from taobao_ordersync.tmc import TmcConsumer, tmc_user_permit

    counts = {"polled": 0, "pushed": 0}
    fatal: list[BaseException] = []
    policy = PollPolicy(
        min_interval=args.interval,
        max_interval=args.interval,
        jitter=0.0,
        min_backoff=args.min_backoff,
        max_backoff=args.max_backoff,
    )

    async def handler(_: Shop, batch: Batch) -> None:
        await asyncio.to_thread(sink.write, batch.trades)  # written and flushed before the batch counts as done
        counts["pushed" if batch.phase == "push" else "polled"] += len(batch.trades)

    def report(event: FleetEvent) -> None:
        if event.kind == "synced":
            progress = fleet.syncer.progress(shop.id)
            pushed = f" (+{counts['pushed']} by push)" if consumer is not None else ""
            print(
                f"{shop.id}: {counts['polled']} trades{pushed}, checkpoint {progress.cursor}, "
                f"{progress.duplicates} duplicates suppressed, {sum(client.call_counts.values())} calls",
                file=sys.stderr,
                flush=True,
            )
            counts["polled"] = counts["pushed"] = 0
        elif event.kind == "backing_off":
            schedule = fleet.status(shop.id).schedule
            wait = (schedule.next_poll_in if schedule is not None else None) or 0.0
            print(f"{shop.id}: {event.error}; trying again in {wait:.0f} s", file=sys.stderr, flush=True)
        elif event.kind == "paused" and event.error is not None:
            fatal.append(event.error)  # only an operator can fix it: end with its exit code
            stop()

    fleet = Fleet(
        client,
        store=store,
        handler=handler,
        concurrency=1,
        policy=policy,
        on_event=report,
        **_syncer_options(args),
    )
    fleet.add(shop)
    consumer = None
    if args.tmc:
        consumer = TmcConsumer(
            fleet,
            group_name=args.group,
            shop_for={args.seller_nick: shop.id},
            mode=args.push_mode,
            reconcile_interval=args.reconcile_interval,
        )

    def stop() -> None:
        fleet.stop()
        if consumer is not None:
            consumer.stop()

    async def permit() -> None:
        """``taobao.tmc.user.permit`` for the seller, retried like a poll until it is accepted."""
        failures = 0
        while True:
            try:
                await tmc_user_permit(client, shop.session)
                return
            except TaobaoOrderSyncError as exc:
                if needs_operator(exc):
                    fatal.append(exc)
                    stop()
                    return
                failures += 1
                wait = policy.backoff(failures)
                print(f"{shop.id}: TMC permit failed: {exc}; trying again in {wait:.0f} s", file=sys.stderr)
                await asyncio.sleep(wait)

    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop)
    tasks = [asyncio.create_task(fleet.run())]
    helpers = []
    if consumer is not None:
        tasks.append(asyncio.create_task(consumer.run()))
        helpers.append(asyncio.create_task(permit()))
    try:
        await asyncio.gather(*tasks)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        stop()
        for task in helpers:
            task.cancel()
        await asyncio.gather(*tasks, *helpers, return_exceptions=True)
    if fatal:
        raise fatal[0]
    print(f"{shop.id}: stopped; no partial window committed", file=sys.stderr, flush=True)
    return OK


def _audit_shops(args: argparse.Namespace) -> list[Shop]:
    if args.sessions is not None:
        if args.shop_id or args.session:
            raise ConfigurationError("pass either --sessions or --shop-id/--session, not both")
        if "{shop}" not in args.out:
            raise ConfigurationError("with --sessions, --out must contain {shop} (one SQLite file per shop)")
        sessions = _SessionFile(args.sessions)
        return [Shop(id=shop_id, session=session) for shop_id, session in sorted(sessions._sessions.items())]
    if not args.shop_id:
        raise ConfigurationError("missing shop: pass --shop-id (and --session) or --sessions")
    return [Shop(id=args.shop_id, session=_require(args.session, ENV_SESSION, "session"))]


async def _audit(args: argparse.Namespace) -> int:
    from taobao_ordersync.audit import AuditReport, audit_many
    from taobao_ordersync.ledgers import SqliteLedger
    from taobao_ordersync.syncer import Batch

    app_key = _require(args.app_key, ENV_KEY, "app key")
    secret = _require(args.app_secret, ENV_SECRET, "app secret")
    if not args.rate > 0 or args.settle < 0 or (args.days is not None and not args.days > 0):
        raise ConfigurationError("--rate and --days must be > 0, --settle >= 0")
    if args.deep is not None and not 0 < args.deep <= 90:
        raise ConfigurationError("--deep must be 0 < DAYS <= 90")
    shops = _audit_shops(args)
    paths = {shop.id: Path(args.out.replace("{shop}", shop.id)) for shop in shops}
    ledgers = {shop.id: SqliteLedger(paths[shop.id]) for shop in shops}  # a missing file: one line, exit 3
    sinks: dict[str, _SqliteSink] = {}

    async def repair(shop: Shop, batch: Batch) -> None:
        sink = sinks.get(shop.id) or sinks.setdefault(shop.id, _SqliteSink(paths[shop.id]))
        await asyncio.to_thread(sink.write, batch.trades)

    progress = _AuditProgressLine(sys.stderr)
    options: dict[str, Any] = {"settle": args.settle, "on_progress": progress}
    if args.repair:
        options["repair"] = repair
    if args.deep is not None:
        options["deep"] = timedelta(days=args.deep)
    try:
        async with TopClient(app_key, secret, url=args.url, rate=args.rate) as client:
            syncer = Syncer(client, store=_NoCheckpoints())
            if args.days is not None:
                options["start"] = await client.server_now() - timedelta(days=args.days)
            results = await audit_many(
                syncer, [(shop, ledgers[shop.id]) for shop in shops], concurrency=args.concurrency, **options
            )
    finally:
        for sink in sinks.values():
            sink.close()
    reports = [r for r in results if isinstance(r, AuditReport)]
    failures = [(shop, r) for shop, r in zip(shops, results, strict=True) if not isinstance(r, AuditReport)]
    if args.json is not None:
        document = {
            "shops": [
                r.as_dict() if isinstance(r, AuditReport) else {"shop_id": shop.id, "error": str(r)}
                for shop, r in zip(shops, results, strict=True)
            ]
        }
        text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            try:
                await asyncio.to_thread(Path(args.json).write_text, text, encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(f"--json {args.json}: {exc.strerror}") from exc
    if args.json != "-":
        _print_audit_table(reports, repair=args.repair)
    for shop, error in failures:
        print(f"taobao-ordersync: error: shop {shop.id}: {error}", file=sys.stderr)
    if failures:
        error = failures[0][1]
        if isinstance(error, TaobaoOrderSyncError):
            return _classify(error)[0]
        raise error
    if any(r.lost for r in reports):
        return AUDIT_LOST
    if any(r.extra for r in reports):
        return AUDIT_EXTRA
    return OK


class _NoCheckpoints:
    """An audit reads no checkpoint; a ``Syncer`` wants a store all the same."""

    async def load(self, shop_id: str) -> None:
        return None

    async def save(self, shop_id: str, data: str, *, expected_revision: int | None) -> int:
        raise ConfigurationError("an audit saves no checkpoint")


def _print_audit_table(reports: Sequence[Any], *, repair: bool) -> None:
    print(f"{'shop':<20} {'slots':>6} {'calls':>6} {'missing':>8} {'stale':>6} {'extra':>6} {'in flight':>9} "
          f"{'repaired':>8}  range (created, CST)")  # fmt: skip
    for r in reports:
        repaired = str(len(r.repaired)) if repair else "-"
        print(
            f"{r.shop_id:<20} {r.slots:>6} {r.calls:>6} {len(r.missing):>8} {len(r.stale):>6} {len(r.extra):>6} "
            f"{len(r.in_flight):>9} {repaired:>8}  {r.start:%Y-%m-%d %H:%M:%S} .. {r.until:%Y-%m-%d %H:%M:%S}"
        )
        for label, tids in (("missing", r.missing), ("stale", r.stale), ("extra", r.extra)):
            if tids:
                shown = " ".join(str(tid) for tid in tids[:20])
                more = f" (+{len(tids) - 20} more: see --json)" if len(tids) > 20 else ""
                print(f"  {label}: {shown}{more}")


class _AuditProgressLine:
    """A progress line on stderr at most every few seconds during long audits."""

    def __init__(self, stream: TextIO, every: float = 5.0) -> None:
        self._stream = stream
        self._every = every
        self._last = time.monotonic()

    def __call__(self, progress: AuditProgress) -> None:
        now = time.monotonic()
        if now - self._last < self._every:
            return
        self._last = now
        print(
            f"{progress.shop_id}: audit {progress.phase}, {progress.slots} slots, {progress.pending} to go, "
            f"{progress.calls} calls, {progress.missing} missing, {progress.stale} stale",
            file=self._stream,
            flush=True,
        )


async def _status(args: argparse.Namespace) -> int:
    if args.store is None:
        return await _postgres_status(args)
    if not args.store.exists():
        raise ConfigurationError(f"no checkpoint file at {args.store}")
    store = SqliteStore(args.store)
    shop_ids = await store.shop_ids()
    if not shop_ids:
        print("no shops have a checkpoint yet")
        return OK
    from taobao_ordersync.checkpoint import Checkpoint

    now = datetime.now().astimezone()
    statuses = []
    for shop_id in shop_ids:
        stored = await store.load(shop_id)
        if stored is None:
            continue
        checkpoint = Checkpoint.from_json(stored.data, shop_id=shop_id)
        statuses.append(
            ShopStatus(
                shop_id=shop_id,
                phase=phase_of(checkpoint),
                position=checkpoint.position,
                behind=now - checkpoint.position,  # by this machine's clock: no call to Taobao
                checkpoint=checkpoint,
            )
        )
    for line in render_status(statuses):
        print(line)
    return OK


# -- PostgreSQL workers ---------------------------------------------------------------


def _open_postgres(args: argparse.Namespace) -> Any:
    from taobao_ordersync.postgres import PostgresStore

    dsn = args.postgres or _environ(ENV_POSTGRES)
    if not dsn:
        raise ConfigurationError(f"missing PostgreSQL URI: pass --postgres or set ${ENV_POSTGRES}")
    return PostgresStore(dsn, schema=args.schema)


class _SessionFile:
    """Session keys from a JSON file ``{shop_id: session}``, re-read when it changes.

    The file is checked at most once a second, in a thread: a worker claiming thousands of shops
    looks up thousands of sessions, and the event loop must not wait on the disk for each.
    """

    def __init__(self, path: Path, *, recheck: float = 1.0) -> None:
        self.path = path
        self._recheck = recheck
        self._stamp: tuple[float, int] | None = None
        self._sessions: dict[str, str] = {}
        self._checked = time.monotonic()
        self._load()  # a wrong path fails at start, not at the first claim

    def _load(self) -> None:
        try:
            stat = self.path.stat()
            if self._stamp == (stat.st_mtime, stat.st_size):
                return
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"--sessions {self.path}: not a readable JSON file: {exc}") from exc
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ConfigurationError(f"--sessions {self.path}: expected a JSON object of shop id -> session key")
        self._sessions = data
        self._stamp = (stat.st_mtime, stat.st_size)

    async def __call__(self, shop_id: str) -> str | None:
        if time.monotonic() - self._checked >= self._recheck:
            self._checked = time.monotonic()
            await asyncio.to_thread(self._load)
        return self._sessions.get(shop_id)


class _ShopNdjsonSink:
    """One line per trade, ``{"shop_id": ..., "trade": {...}}``, flushed before the batch counts as done."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()  # batches of many shops are written from several threads at once

    def write(self, shop_id: str, trades: Sequence[Trade]) -> None:
        lines = [
            json.dumps({"shop_id": shop_id, "trade": trade.raw}, ensure_ascii=False, default=_jsonable) + "\n"
            for trade in trades
        ]
        with self._lock:
            self._stream.write("".join(lines))
            self._stream.flush()


def _open_append(path: Path) -> TextIO:
    try:
        return path.open("a", encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"--out {path}: {exc.strerror}") from exc


async def _worker(args: argparse.Namespace) -> int:
    import signal

    from taobao_ordersync.fleet import FleetEvent, PollPolicy
    from taobao_ordersync.syncer import Batch
    from taobao_ordersync.tmc import TmcConsumer
    from taobao_ordersync.worker import Worker

    app_key = _require(args.app_key, ENV_KEY, "app key")
    secret = _require(args.app_secret, ENV_SECRET, "app secret")
    if not args.rate > 0 or not args.lease > 0:
        raise ConfigurationError("--rate and --lease must be > 0")
    if args.give_up_after < 0 or 0 < args.give_up_after < args.lease:
        raise ConfigurationError("--give-up-after must be 0 (never) or at least --lease")
    sessions = _SessionFile(args.sessions)
    store = _open_postgres(args)
    policy = PollPolicy(min_interval=args.min_interval, max_interval=args.max_interval)
    out = _open_append(args.out) if args.out else sys.stdout
    sink = _ShopNdjsonSink(out)

    async def handler(shop: Shop, batch: Batch) -> None:
        await asyncio.to_thread(sink.write, shop.id, batch.trades)  # flushed before the batch counts as done

    def report(event: FleetEvent) -> None:
        if event.kind in ("paused", "removed"):
            why = f": {event.error}" if event.error is not None else ""
            print(f"shop {event.shop_id}: {event.kind}{why}", file=sys.stderr, flush=True)

    try:
        async with store, TopClient(app_key, secret, url=args.url, rate=args.rate, burst=args.burst) as client:
            worker = Worker(
                client,
                store,
                handler,
                sessions,
                worker_id=args.worker_id,
                lease=args.lease,
                give_up_after=args.give_up_after or None,
                on_event=report,
                policy=policy,
                concurrency=args.concurrency,
                **_syncer_options(args),
            )
            push = None
            if args.tmc:
                push = TmcConsumer(
                    worker.fleet,
                    group_name=args.group,
                    mode=args.push_mode,
                    reconcile_interval=args.reconcile_interval,
                )
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, worker.stop)
            print(
                f"worker {worker.worker_id} started on {store.where} (PostgreSQL {store.server_version})"
                + (f", consuming TMC group {args.group!r}" if push is not None else ""),
                file=sys.stderr,
                flush=True,
            )
            await worker.run(push=push)
            print(
                f"worker {worker.worker_id} stopped: {sum(client.call_counts.values())} calls, "
                f"{store.fencing_refusals} commits refused by fencing",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if out is not sys.stdout:
            out.close()
    return OK


async def _shops(args: argparse.Namespace) -> int:
    async with _open_postgres(args) as store:
        if args.action == "add":
            added = await store.add_shops(*args.shop_ids)
            print(f"added {added} shops ({len(args.shop_ids) - added} were registered already)")
        elif args.action == "remove":
            removed = await store.remove_shops(*args.shop_ids)
            print(f"removed {removed} shops")
        else:
            for shop in await store.statuses():
                lease = shop.lease
                owner = lease.owner if lease is not None else None
                print(f"{shop.shop_id}\t{owner or '-'}\t{lease_text(None if lease is None else lease.seconds_left)}")
    return OK


_FAILING_SHOWN_FOR: Final = 3600.0


def _heartbeat_trouble(worker: Any) -> str:
    if worker.last_error is None:
        return ""
    failing = duration(worker.failing_for) if worker.failing_for is not None else "?"
    return f", heartbeat failing for {failing}: {worker.last_error}"


async def _postgres_status(args: argparse.Namespace) -> int:
    async with _open_postgres(args) as store:
        workers = await store.workers()
        push_backlog = await store.push_backlog()
        if args.shops:
            shops = await store.statuses()
            count = len(shops)
        else:
            summary = await store.summary()
            count = summary.shops
    live = [w for w in workers if w.alive]
    print(f"{len(live)} live workers, {count} shops")
    for w in live:
        rate = f"{w.rate:.2f}/s" if w.rate is not None else "-"
        print(
            f"  worker {w.worker_id} ({w.host}, pid {w.pid}): {w.shops} shops, rate {rate}, "
            f"seen {w.seen_ago:.0f}s ago{_heartbeat_trouble(w)}"
        )
    for w in workers:  # not live because the database refuses its heartbeats (shown for an hour)
        if not w.alive and w.last_error is not None and w.seen_ago < _FAILING_SHOWN_FOR:
            where = f"{w.worker_id} ({w.host}, pid {w.pid})"
            print(f"  worker {where}: not live, seen {w.seen_ago:.0f}s ago{_heartbeat_trouble(w)}")
    if push_backlog:
        print(f"push inbox: {push_backlog:,} TMC messages waiting for their shops' workers")
    if not args.shops:
        _print_summary(summary)
        return OK
    for line in render_status(shops):
        print(line)
    return OK


def _print_summary(summary: Any) -> None:
    """The registry at a glance: counts per state, the most behind, the latest errors."""
    states = ", ".join(f"{state} {count:,}" for state, count in summary.states)
    print(f"shops by state: {states or '-'}")
    if summary.most_behind:
        print("most behind:")
        for shop_id, owner, behind in summary.most_behind:
            print(f"{shop_id:<16} {(owner or '-'):<24} {duration(behind)}")
    if summary.errors:
        print(f"errors ({summary.error_count:,} shops; the latest):")
        for shop_id, owner, error in summary.errors:
            print(f"{shop_id:<16} {(owner or '-'):<24} {error}")
    print("(one line per shop, with its checkpoint: status --shops)")


class _ProgressLine:
    """A progress line on stderr at most every few seconds (long backfills, big windows)."""

    def __init__(self, stream: TextIO, every: float = 5.0) -> None:
        self._stream = stream
        self._every = every
        self._last = time.monotonic()

    def __call__(self, progress: ShopProgress) -> None:
        now = time.monotonic()
        if now - self._last < self._every:
            return
        self._last = now
        behind = progress.behind
        where = f", {str(behind).split('.')[0]} behind" if behind is not None else ""
        print(
            f"{progress.shop_id}: {progress.phase}, {progress.delivered} trades, {progress.pages} pages{where}",
            file=self._stream,
            flush=True,
        )


# -- sinks ----------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


class _NdjsonSink:
    """One trade per line: the trade's JSON as Taobao sent it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, trades: Sequence[Trade]) -> None:
        for trade in trades:
            self._stream.write(json.dumps(trade.raw, ensure_ascii=False, default=_jsonable) + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Nothing to release: the stream is the caller's (stdout)."""


class _SqliteSink:
    """Upserts into ``trades(tid, modified, status, raw)``, keeping the newest ``modified`` per tid.

    ``write`` runs in worker threads; ``close`` must be called once the sink is done with.
    """

    def __init__(self, path: Path) -> None:
        # A cancelled ``await asyncio.to_thread(sink.write, ...)`` does not stop the thread: close()
        # takes this lock, so it waits for a write still running instead of closing under it.
        self._lock = threading.Lock()
        with contextlib.ExitStack() as on_error:
            try:
                db = sqlite3.connect(path, check_same_thread=False)
                on_error.callback(db.close)  # e.g. the file is not a database: close before raising
                db.execute(
                    "CREATE TABLE IF NOT EXISTS trades ("
                    "tid TEXT PRIMARY KEY, modified TEXT NOT NULL, status TEXT NOT NULL, raw TEXT NOT NULL)"
                )
            except sqlite3.Error as exc:
                raise ConfigurationError(f"--out {path}: not a usable SQLite file: {exc}") from exc
            on_error.pop_all()
        self._db = db

    def write(self, trades: Sequence[Trade]) -> None:
        with self._lock:
            self._upsert(trades)

    def _upsert(self, trades: Sequence[Trade]) -> None:
        rows = [
            (
                str(t.tid),
                t.modified.isoformat(),
                t.status or "",
                json.dumps(t.raw, ensure_ascii=False, default=_jsonable),
            )
            for t in trades
        ]
        with self._db:  # one transaction per batch
            self._db.executemany(
                "INSERT INTO trades (tid, modified, status, raw) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(tid) DO UPDATE SET modified = excluded.modified, status = excluded.status, "
                "raw = excluded.raw WHERE excluded.modified > trades.modified",
                rows,
            )

    def close(self) -> None:
        """Close the connection, after a write still running in a thread (a batch: milliseconds)."""
        with self._lock:
            self._db.close()
