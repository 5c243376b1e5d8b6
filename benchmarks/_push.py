"""The ``push`` scenario: freshness (change -> handler) and cost of TMC push vs polling alone.

Each mode runs the same seeded live shops on its own in-process emulator and client (one app
budget each, ``RATE`` calls a second), all modes at the same time, in real time
(``taobao_ordersync.testing.measure_push``): fullinfo push, early polls, the automatic mode,
polling alone, and the automatic mode again with a lossy channel (5% of messages never
published, duplicates, reordering, redelivery, delays) and a flash sale over the push budget.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from functools import partial
from typing import Any, Final

from benchmarks._measure import Row, _render, list_calls, time_calls
from taobao_ordersync.testing import PushRun, TmcChaos, measure_push

__all__ = ["format_push_table", "push"]

RATE: Final = 20.0
LAG: Final = 10.0
INTERVAL: Final = 30.0
SHOPS: Final = 8
ORDERS_PER_DAY: Final = 8_640.0  # per shop: one new order every 10 s, plus payments and memo edits
FLOOD: Final = 300  # trades shop 1 sells in 10 s in the lossy run (over the 10 fullinfo calls/s push budget)
CHAOS: Final = TmcChaos(
    drop_rate=0.05, duplicate_rate=0.2, redeliver_rate=0.2, reorder=True, max_delay=1.0, redeliver_after=10
)
_LABELS: Final = {
    "fullinfo": "fullinfo push",
    "poll": "early polls",
    "auto": "auto",
    "polling": "polling alone",
    "lossy": "auto, lossy channel + flood",
}


async def push(seconds: float, seed: int) -> list[Row]:
    measure = partial(
        measure_push,
        shops=SHOPS,
        seconds=seconds,
        orders_per_day=ORDERS_PER_DAY,
        lag=LAG,
        interval=INTERVAL,
        rate=RATE,
        seed=seed,
    )
    runs = await asyncio.gather(
        measure("fullinfo"), measure("poll"), measure("auto"), measure("polling"),
        measure("auto", flood=FLOOD, chaos=CHAOS),
    )  # fmt: skip
    return [_row(name, run) for name, run in zip(("fullinfo", "poll", "auto", "polling", "lossy"), runs, strict=True)]


def _row(name: str, run: PushRun) -> Row:
    stats = run.stats
    notes: dict[str, Any] = {
        "push mode": name,
        "changes": run.changes,
        "p50 s": run.percentile(50),
        "p99 s": run.percentile(99),
        "late": run.late,
        "tail s": run.tail,
        "calls": run.total_calls,
        "calls per change": run.calls_per_change,
        "calls by method": dict(sorted(run.calls.items())),
        "unpublished": run.unpublished,
        "duplicates": run.duplicates,
    }
    if stats is not None:
        notes.update(
            fetched=stats.fetched, early_polls=stats.early_polls, coalesced=stats.coalesced, confirmed=stats.confirmed
        )
    return Row(
        scenario="push",
        syncer=f"ours, {_LABELS[name]}",
        trades=run.changes,
        deliveries=run.changes,
        in_scope=run.changes,
        lost=run.lost,
        list_calls=list_calls(run.calls),
        time_calls=time_calls(run.calls),
        seconds=run.seconds,
        notes=notes,
    )


def _seconds(value: object, tail: object) -> str:
    if not isinstance(value, float) or math.isnan(value):
        return "-"
    return f"> {tail:.0f}" if math.isinf(value) else f"{value:.1f}"


def format_push_table(rows: Sequence[Row], *, markdown: bool = False) -> str:
    """The ``push`` scenario's freshness, cost and losses ("" without its rows)."""
    found = [row for row in rows if row.scenario == "push" and "push mode" in row.notes]
    if not found:
        return ""
    columns = (
        ("mode", "<"),
        ("changes", ">"),
        ("change -> handler p50 s", ">"),
        ("p99 s", ">"),
        ("calls/change", ">"),
        ("fullinfo", ">"),
        ("list", ">"),
        ("TMC", ">"),
        ("early polls", ">"),
        ("unpublished", ">"),
        ("lost", ">"),
        ("dup. versions", ">"),
    )
    cells = []
    for row in found:
        notes = row.notes
        calls = notes["calls by method"]
        tmc = sum(count for method, count in calls.items() if method.startswith("taobao.tmc."))
        cells.append(
            [
                row.syncer.removeprefix("ours, "),
                f"{notes['changes']:,}",
                _seconds(notes["p50 s"], notes["tail s"]),
                _seconds(notes["p99 s"], notes["tail s"]),
                f"{notes['calls per change']:.2f}",
                str(calls.get("taobao.trade.fullinfo.get", 0)),
                str(row.list_calls),
                str(tmc),
                str(notes.get("early_polls", "-")),
                str(notes["unpublished"]),
                str(row.lost),
                str(notes["duplicates"]),
            ]
        )
    return _render(columns, cells, markdown=markdown)
