"""``memory``: a 1,000,000-trade backfill through ``Syncer.batches``, consumer keeping nothing: peak RSS.

Not part of the default run (about 4-6 minutes, most of it the emulator generating
the shop); name it: ``python -m benchmarks --scenario memory``.

The backfill runs in a fresh child process (``python -m benchmarks._memory``), so
the peak resident set size (``ru_maxrss``) is that of the syncing process alone:
the interpreter, the library, the client, one page at a time and whatever the
syncer keeps. The emulator runs in a third process, as in every scenario. The
consumer counts trades and keeps nothing. The child samples its RSS as the
backfill goes, so growth (something kept per trade) shows as a slope.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from contextlib import aclosing
from typing import Any, Final

from benchmarks._measure import Row

__all__ = ["memory"]

HISTORY_DAYS: Final = 87.0  # inside TOP's 90-day horizon, as in ``backfill``


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


async def _backfill(trades: int, seed: int) -> dict[str, Any]:
    from benchmarks._fleet import _emulator_cpu
    from benchmarks._remote import RemoteEmulator
    from benchmarks.scenarios import LAG, PAGE, SHOP, connect, minimum_of
    from taobao_ordersync import MemoryStore, Syncer
    from taobao_ordersync._time import floor_second
    from taobao_ordersync.testing import ShopProfile

    profile = ShopProfile(orders_per_day=trades / HISTORY_DAYS, history_days=HISTORY_DAYS)
    async with RemoteEmulator(shops=1, profile=profile, seed=seed) as remote:
        await remote.pause_activity()
        mark = floor_second(await remote.now()) - LAG
        minimum = await minimum_of(remote, [mark])
        async with connect(remote) as client:
            syncer = Syncer(client, store=MemoryStore(), page_size=PAGE)
            before = _rss_bytes()
            emulator_cpu = _emulator_cpu()
            own_cpu = time.process_time()
            samples: list[tuple[int, int]] = []
            delivered = batches = 0
            started = time.perf_counter()
            async with aclosing(syncer.batches(SHOP)) as stream:
                async for batch in stream:
                    delivered += len(batch.trades)  # keep nothing
                    batches += 1
                    if batches % 500 == 0:
                        samples.append((delivered, _rss_bytes()))
            seconds = time.perf_counter() - started
            own_cpu = time.process_time() - own_cpu
            emulator_after = _emulator_cpu()
            emulator_busy = (
                None if emulator_cpu is None or emulator_after is None else (emulator_after - emulator_cpu) / seconds
            )
            progress = syncer.progress(SHOP.id)
            return {
                "trades in scope": minimum.backfill_trades,
                "delivered": delivered,
                "duplicates": progress.duplicates,
                "list calls": client.call_counts.get("taobao.trades.sold.get", 0)
                + client.call_counts.get("taobao.trades.sold.increment.get", 0),
                "minimum": minimum.backfill_calls,
                "seconds": seconds,
                "syncing process CPU busy": own_cpu / seconds,
                "emulator CPU busy": emulator_busy,
                "generation s (emulator)": remote.generated_seconds,
                "rss before sync": before,
                "rss after sync": _rss_bytes(),
                "peak rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
                "samples": samples,
            }


async def memory(sizes: Any) -> list[Row]:
    """Run the backfill in a child process and turn its report into a row."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks._memory",
        str(int(sizes.memory_trades)),
        str(sizes.seed),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await child.communicate()
    if child.returncode != 0:
        return [Row(scenario="memory", syncer="ours, batches", error=f"child exited with {child.returncode}")]
    report = json.loads(out)
    samples = report.pop("samples")
    row = Row(
        scenario=f"memory ({int(sizes.memory_trades):,})",
        syncer="ours, batches",
        trades=report["delivered"] - report["duplicates"],
        deliveries=report["delivered"],
        in_scope=report["trades in scope"],
        lost=max(0, report["trades in scope"] - (report["delivered"] - report["duplicates"])),
        list_calls=report["list calls"],
        minimum=report["minimum"],
        seconds=report["seconds"],
    )
    mb = 1024 * 1024
    row.notes = {
        "peak RSS MB": round(report["peak rss"] / mb, 1),
        "RSS MB before sync": round(report["rss before sync"] / mb, 1),
        "RSS MB after sync": round(report["rss after sync"] / mb, 1),
        "generation s (emulator)": round(report["generation s (emulator)"], 1),
        "syncing process CPU busy": round(report["syncing process CPU busy"], 2),
        "emulator CPU busy": None if report["emulator CPU busy"] is None else round(report["emulator CPU busy"], 2),
    }
    if len(samples) >= 2:
        (first_count, first_rss), (last_count, last_rss) = samples[0], samples[-1]
        row.notes["RSS growth B/trade (first to last sample)"] = round(
            (last_rss - first_rss) / max(1, last_count - first_count), 2
        )
    return [row]


if __name__ == "__main__":
    result = asyncio.run(_backfill(int(sys.argv[1]), int(sys.argv[2])))
    print(json.dumps(result))
