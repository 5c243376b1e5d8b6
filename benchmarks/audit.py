"""``python -m benchmarks.audit [--quick]``: what ``Syncer.audit`` costs (docs/benchmarks.md).

A shop with 90 days of history (about 100,000 trades) and a ledger holding exactly
what a complete sync would hold; then rows deleted at random, and the deep pass.
Prints a table; exits 1 if an audit misses a deleted row or reports one it should not.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from datetime import timedelta

from taobao_ordersync import MemoryStore, RetryPolicy, Shop, Syncer, TopClient
from taobao_ordersync._time import floor_second
from taobao_ordersync.testing import Emulator, MemoryLedger, ShopProfile

SHOP = Shop(id="shop-1", session="session-1")


def _fill(emu: Emulator, ledger: MemoryLedger) -> int:
    """The ledger a complete sync leaves: every trade in its newest visible version."""
    now = emu.now()
    rows = ledger.rows.setdefault(SHOP.id, {})
    for record in emu.shop(SHOP.id).trades.values():
        version = record.view(now)
        if version is not None:
            rows[record.tid] = (floor_second(record.created), floor_second(version.modified))
    return len(rows)


async def main(quick: bool) -> int:
    days = 90.0
    per_day = 100_000 / 90 if not quick else 5_000 / 90
    profile = ShopProfile(orders_per_day=per_day, history_days=days)
    started = time.perf_counter()
    failed = False
    lines = [
        "| case | trades | missing found | calls | extra calls per missing trade | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    async with Emulator(shops=1, profile=profile, seed=2026) as emu:
        emu.pause_activity()  # a still shop: the figures do not depend on timing
        async with TopClient(
            emu.app_key, emu.app_secret, url=emu.url, rate=5000, retry=RetryPolicy.no_wait()
        ) as client:
            syncer = Syncer(client, store=MemoryStore())
            ledger = MemoryLedger()
            trades = _fill(emu, ledger)
            print(f"[audit bench] {trades} trades generated in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            t = time.perf_counter()
            clean = await syncer.audit(SHOP, ledger)
            if not clean.clean:
                failed = True
            lines.append(f"| clean shop | {trades:,} | 0 | {clean.calls} | - | {time.perf_counter() - t:.1f} |")
            rng = random.Random(2026)
            rows = ledger.rows[SHOP.id]
            for k in (1, 10, 100):
                old = sorted(tid for tid, (created, _) in rows.items() if created < clean.until)
                gone = set(rng.sample(old, k))
                saved = {tid: rows.pop(tid) for tid in gone}
                t = time.perf_counter()
                report = await syncer.audit(SHOP, ledger)
                seconds = time.perf_counter() - t
                if set(report.missing) != gone or report.stale or report.extra:
                    failed = True
                per = (report.calls - clean.calls) / k
                cells = (f"{k} random rows deleted", f"{trades:,}", len(report.missing), report.calls, f"{per:.1f}")
                lines.append("| " + " | ".join(map(str, cells)) + f" | {seconds:.1f} |")
                rows.update(saved)
            for deep_days in (1, 7):
                t = time.perf_counter()
                deep = await syncer.audit(SHOP, ledger, deep=timedelta(days=deep_days))
                if not deep.clean:
                    failed = True
                label = f"clean, deep {deep_days} day{'s' if deep_days > 1 else ''}"
                lines.append(f"| {label} | {trades:,} | 0 | {deep.calls} | - | {time.perf_counter() - t:.1f} |")
            print(f"\nlog2(slots of <= 100 trades in a 20k slot) = {math.log2(20_000 / 100):.1f}")
    print("\n".join(lines))
    print(f"\n[audit bench] {time.perf_counter() - started:.0f} s; {'FAILED' if failed else 'exact'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.audit", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5,000 trades instead of 100,000")
    sys.exit(asyncio.run(main(parser.parse_args().quick)))
