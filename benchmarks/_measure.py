"""Result rows, the meter (wall time inside syncs, tracemalloc peak) and the text table."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Final

from attrs import asdict, define, field

from taobao_ordersync import Trade
from taobao_ordersync._time import from_epoch
from taobao_ordersync.testing import Collector

__all__ = [
    "LIST_METHODS",
    "Meter",
    "Row",
    "consumer_bytes_per_trade",
    "format_fleet_tables",
    "format_notes",
    "format_table",
    "list_calls",
    "time_calls",
]

LIST_METHODS: Final = ("taobao.trades.sold.get", "taobao.trades.sold.increment.get")
TIME_METHOD: Final = "taobao.time.get"


def list_calls(counts: Mapping[str, int]) -> int:
    """List calls (both list APIs, refused ones included) in a ``call_counts`` mapping."""
    return sum(counts.get(method, 0) for method in LIST_METHODS)


def time_calls(counts: Mapping[str, int]) -> int:
    return counts.get(TIME_METHOD, 0)


@define(kw_only=True)
class Row:
    """One syncer in one scenario."""

    scenario: str
    syncer: str
    trades: int = 0  #: distinct trades the consumer kept
    deliveries: int = 0  #: trades handed to the consumer, duplicates included
    in_scope: int = 0  #: trades the emulator's ground truth required
    lost: int = 0  #: missing or stale (older version than required)
    list_calls: int = 0
    minimum: int = 0  #: ceil(trades / page size) per window the schedule needs, at least 1 each
    time_calls: int = 0
    seconds: float = 0.0  #: wall time spent inside sync calls
    peak_bytes: int | None = None  #: tracemalloc peak over the syncs (a separate, traced pass)
    peak_trades: int | None = None  #: trades the peak is for, when not ``trades``
    error: str | None = None
    notes: dict[str, Any] = field(factory=dict)
    lost_versions: dict[int, Any] = field(factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.list_calls / self.minimum if self.minimum else None

    @property
    def trades_per_second(self) -> float | None:
        return self.deliveries / self.seconds if self.seconds > 0 else None

    @property
    def bytes_per_trade(self) -> float | None:
        trades = self.trades if self.peak_trades is None else self.peak_trades
        if self.peak_bytes is None or not trades:
            return None
        return self.peak_bytes / trades

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["lost_versions"] = {str(tid): versions for tid, versions in self.lost_versions.items()}
        data["ratio"] = self.ratio
        data["trades_per_second"] = self.trades_per_second
        data["bytes_per_trade"] = self.bytes_per_trade
        return data


class Meter:
    """Adds up wall time inside syncs; with ``traced``, records the tracemalloc peak over them.

    ``tracing()`` wraps a whole run (tracing slows Python several-fold, so traced passes
    are separate from timed ones); ``timed()`` wraps each sync call.
    """

    def __init__(self, *, traced: bool = False) -> None:
        self.traced = traced
        self.seconds = 0.0
        self.peak_bytes: int | None = None

    @contextmanager
    def timed(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - started

    @contextmanager
    def tracing(self) -> Iterator[None]:
        if not self.traced:
            yield
            return
        tracemalloc.start()
        try:
            yield
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            self.peak_bytes = peak


def consumer_bytes_per_trade(count: int = 50_000) -> float:
    """What the benchmarks' consumer (``Collector``) keeps per distinct trade.

    Part of every peak below. Measured with fresh int and datetime objects, as parsing makes them.
    """
    base = 1_700_000_000.0
    tracemalloc.start()
    try:
        collector = Collector()
        for i in range(count):
            tid = int(str(4_000_000_000_000_000_000 + i * 7919))
            collector.add(Trade(tid=tid, modified=from_epoch(base + i) + timedelta(0)))
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return current / count


# -- the table ------------------------------------------------------------------------

_COLUMNS: Final = (
    ("scenario", "<"),
    ("syncer", "<"),
    ("trades", ">"),
    ("lost", ">"),
    ("list calls", ">"),
    ("minimum", ">"),
    ("calls/min", ">"),
    ("time.get", ">"),
    ("trades/s", ">"),
    ("peak MB", ">"),
    ("B/trade", ">"),
)


def _cell(row: Row, column: str) -> str:
    if column == "scenario":
        return row.scenario
    if column == "syncer":
        return row.syncer
    if column == "trades":
        return f"{row.trades:,}"
    if column == "lost":
        return f"{row.lost:,}" + ("!" if row.error else "")
    if column == "list calls":
        return f"{row.list_calls:,}"
    if column == "minimum":
        return f"{row.minimum:,}"
    if column == "calls/min":
        return "-" if row.ratio is None or row.error else f"{row.ratio:.2f}"
    if column == "time.get":
        return f"{row.time_calls:,}"
    if column == "trades/s":
        rate = row.trades_per_second
        return "-" if rate is None or row.error else f"{rate:,.0f}"
    if column == "peak MB":
        return "-" if row.peak_bytes is None else f"{row.peak_bytes / 1e6:.1f}"
    if column == "B/trade":
        per = row.bytes_per_trade
        return "-" if per is None else f"{per:,.0f}"
    raise KeyError(column)


def format_table(rows: Sequence[Row], *, markdown: bool = False) -> str:
    """The rows as an aligned text table (or a Markdown one)."""
    cells = [[_cell(row, name) for name, _ in _COLUMNS] for row in rows]
    return _render(_COLUMNS, cells, markdown=markdown)


def _render(columns: Sequence[tuple[str, str]], cells: Sequence[Sequence[str]], *, markdown: bool) -> str:
    header = [name for name, _ in columns]
    if markdown:
        lines = ["| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join("---:" if align == ">" else "---" for _, align in columns) + "|")
        lines += ["| " + " | ".join(line) + " |" for line in cells]
        return "\n".join(lines)
    widths = [max(len(header[i]), *(len(line[i]) for line in cells)) for i in range(len(header))]

    def render(values: Sequence[str]) -> str:
        return "  ".join(
            f"{value:{align}{width}}" for value, (_, align), width in zip(values, columns, widths, strict=True)
        )

    lines = [render(header), render(["-" * width for width in widths])]
    lines += [render(line) for line in cells]
    return "\n".join(lines)


# -- the fleet scenario's own tables --------------------------------------------------


def _fleet_rows(rows: Sequence[Row]) -> list[Row]:
    return [row for row in rows if row.scenario.startswith("fleet (") and "shops" in row.notes]


def _ratio(value: Any, digits: int = 0) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_fleet_tables(rows: Sequence[Row], *, markdown: bool = False) -> str:
    """The ``fleet`` scenario's rate budget, CPU per poll and memory per shop ("" without fleet rows)."""
    found = _fleet_rows(rows)
    if not found:
        return ""
    first = found[0].notes
    rate, high = f"{first['rate']:g}/s", f"{first['high rate']:g}/s"
    budget_columns = (
        ("shops", ">"),
        ("backlog calls", ">"),
        ("backlog s", ">"),
        (f"budget used at {rate}", ">"),
        (f"at {rate}, burst 2", ">"),
        (f"at {high}", ">"),
        (f"calls/s at {high}", ">"),
        (f"CPU busy at {high}: ours / emulator", ">"),
    )
    budget = []
    for row in found:
        notes = row.notes
        emulator = notes.get("emulator CPU busy at high rate")
        busy = f"{_ratio(notes['process CPU busy at high rate'])} / {_ratio(emulator)}"
        budget.append(
            [
                f"{notes['shops']:,}",
                f"{notes['backlog calls']:,}",
                f"{notes['backlog s']:.1f}",
                _ratio(notes["budget share"], 1),
                _ratio(notes.get("budget share with burst 2"), 1),
                _ratio(notes["budget share at high rate"], 1),
                f"{notes['calls/s at high rate']:,.0f}",
                busy,
            ]
        )
    cost_columns = (
        ("shops", ">"),
        ("CPU ms/poll: Fleet", ">"),
        (f"bare calls, {first['concurrency']} at once", ">"),
        ("Fleet - calls", ">"),
        ("plain Syncer loop", ">"),
        ("bare calls, 1 at a time", ">"),
        ("loop - calls", ">"),
        ("KB/shop after first sync", ">"),
        ("after a poll", ">"),
    )
    cost = []
    for row in found:
        notes = row.notes
        fleet, parallel = notes["CPU ms/poll fleet"], notes["CPU ms/call, calls at once"]
        plain, calls = notes["CPU ms/poll plain"], notes["CPU ms/call, calls one at a time"]
        after_backlog = notes.get("bytes/shop after backlog")
        after_poll = notes.get("bytes/shop after a poll")
        cost.append(
            [
                f"{notes['shops']:,}",
                _ms(fleet),
                _ms(parallel),
                f"{fleet - parallel:+.3f}",
                _ms(plain),
                _ms(calls),
                f"{plain - calls:+.3f}",
                "-" if after_backlog is None else f"{after_backlog / 1000:.1f}",
                "-" if after_poll is None else f"{after_poll / 1000:.1f}",
            ]
        )
    return _render(budget_columns, budget, markdown=markdown) + "\n\n" + _render(cost_columns, cost, markdown=markdown)


def format_notes(rows: Sequence[Row]) -> str:
    """Each row's scenario-specific numbers and errors, one line per row that has any."""
    lines = []
    for row in rows:
        parts = [f"{key}={_short(value)}" for key, value in row.notes.items()]
        if row.error:
            parts.append(f"error={row.error}")
        if parts:
            lines.append(f"{row.scenario} / {row.syncer}: " + ", ".join(parts))
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)
