"""``python -m benchmarks [--quick] [--scenario NAME ...] [--json PATH]``.

Prints a table to stdout (progress goes to stderr). Exits 1 if ``Syncer`` lost a
trade or failed anywhere: that is a bug, and the trade's versions are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attrs import asdict, evolve

from benchmarks._measure import Row, consumer_bytes_per_trade, format_fleet_tables, format_notes, format_table
from benchmarks._push import format_push_table
from benchmarks._workers import format_workers_table
from benchmarks.scenarios import EXTRA, FULL, QUICK, SCENARIOS, Sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark Syncer against the TOP emulator and naive syncers (see docs/benchmarks.md).",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, no memory pass: a ~35 s smoke run")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}; {', '.join(sorted(EXTRA))} only when named",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--seed", type=int, help="seed for every emulator (default 2026)")
    parser.add_argument("--no-memory", action="store_true", help="skip the traced passes (no peak memory)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--tenk-shops",
        type=int,
        action="append",
        metavar="N",
        help="shops in the tenk scenario (repeatable, one run per size; default 10000, 500 with --quick)",
    )
    return parser


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def run(names: Sequence[str], sizes: Sizes) -> tuple[list[Row], dict[str, float]]:
    rows: list[Row] = []
    durations: dict[str, float] = {}
    for name in names:
        _log(f"[bench] {name} ...")
        started = time.perf_counter()
        found = await SCENARIOS[name](sizes)
        durations[name] = time.perf_counter() - started
        _log(f"[bench] {name} done in {durations[name]:.1f} s")
        rows.extend(found)
    return rows, durations


def _problems(rows: Sequence[Row], seed: int) -> list[str]:
    """Every loss or failure of ``Syncer`` (the naive syncers are expected to lose)."""
    problems = []
    for row in rows:
        if not row.syncer.startswith("ours"):
            continue
        traced = [value for key, value in row.notes.items() if key.startswith("lost in traced pass")]
        if row.lost or any(traced):
            problems.append(f"LOST: {row.scenario} seed={seed}: {row.lost} trades; versions: {row.lost_versions}")
        if row.error:
            problems.append(f"FAILED: {row.scenario} seed={seed}: {row.error}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.seed is not None:
        sizes = evolve(sizes, seed=args.seed)
    if args.no_memory:
        sizes = evolve(sizes, memory=False)
    if args.tenk_shops:
        sizes = evolve(sizes, tenk_shops=tuple(args.tenk_shops))
    names = list(dict.fromkeys(args.scenario or [name for name in SCENARIOS if name not in EXTRA]))
    started = time.perf_counter()
    consumer = consumer_bytes_per_trade()
    rows, durations = asyncio.run(run(names, sizes))
    total = time.perf_counter() - started

    machine = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "system": platform.system(),
    }
    command = "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    print(format_table(rows, markdown=args.markdown))
    print()
    fleet_tables = format_fleet_tables(rows, markdown=args.markdown)
    if fleet_tables:
        print(fleet_tables)
        print()
    workers_table = format_workers_table(rows, markdown=args.markdown)
    if workers_table:
        print(workers_table)
        print()
    push_table = format_push_table(rows, markdown=args.markdown)
    if push_table:
        print(push_table)
        print()
    print(format_notes(rows))
    print()
    print(
        f"{command.strip()}: {total:.0f} s on {machine['nproc']} cores, Python {machine['python']} "
        f"({machine['machine']}); seed {sizes.seed}; every peak includes the consumer (Collector), "
        f"~{consumer:.0f} B per distinct trade"
    )
    problems = _problems(rows, sizes.seed)
    for problem in problems:
        print(problem, file=sys.stderr)
    if args.json:
        document: dict[str, Any] = {
            "command": command.strip(),
            "machine": machine,
            "sizes": asdict(sizes),
            "seconds": total,
            "scenario_seconds": durations,
            "consumer_bytes_per_trade": consumer,
            "rows": [row.to_json() for row in rows],
            "problems": problems,
        }
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
