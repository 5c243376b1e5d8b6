"""The mutation gate (``make mutants``): every rule of the sync engine has a test that fails when it is broken.

Each mutant breaks one rule of ``docs/concepts.md`` / the design (a lag of 0, windows
restarting at end + 1 s, forward paging, ...) by replacing an exact snippet of a file
under ``src/taobao_ordersync/``. For each mutant the gate writes the mutated file in
place, runs the few fast tests named to kill it (``pytest -x``), and writes the
original bytes back (``finally``, ``atexit``, SIGTERM/SIGHUP, and a backup copy in
``.mutants-backup/`` that the next run restores after a ``kill -9``).

* killed: pytest failed (exit 1) under the mutant;
* survived: pytest passed under the mutant: a rule no test guards (the gate fails);
* ERROR: a snippet is not found exactly once (the code moved: update the mutant), a
  test id is not collected, or the named tests do not pass on the real code.

The last line is ``mutants: K killed, S survived`` (plus ``, E errors`` when any).
Exit status 0 only when every mutant is killed.

Usage: ``python tools/mutants.py [--list] [--table] [--no-baseline] [NAME ...]``
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "taobao_ordersync"
BACKUP = ROOT / ".mutants-backup"
#: A mutant whose tests run longer than this (an endless loop) counts as killed, and says so.
TIMEOUT = 240.0

CHAOS = "tests/chaos/test_scenarios.py::"
SYNCER = "tests/integration/test_syncer.py::"
PAGING = "tests/unit/test_paging.py::"
PLANNER = "tests/unit/test_planner.py::"
REPLIES = "tests/transport/test_client_replies.py::"
GUARDS = "tests/integration/test_syncer_guards.py::"


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` (which must occur exactly once) by ``new`` in ``file`` (relative to the package)."""

    file: str
    old: str
    new: str


@dataclass(frozen=True)
class Mutant:
    name: str
    rule: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "no-lag",
        "3.4 windows end `lag` behind Taobao's now",
        (
            Edit("syncer.py", "target = server_now - self.lag", "target = server_now"),
            Edit("syncer.py", "origin = server_now - self.lag", "origin = server_now"),
        ),
        (CHAOS + "test_visibility_lag_and_whole_second_boundaries[11]",),
    ),
    Mutant(
        "tile-end-plus-one",
        "3.5/15 windows touch: the next starts at the previous end, never end + 1 s",
        (Edit("planner.py", "        cursor = stop\n", "        cursor = stop + SECOND\n"),),
        (PLANNER + "test_tile_covers_every_second_of_a_short_range",),
    ),
    Mutant(
        "increments-start-plus-one",
        "3.5/15 increments start at the checkpoint, never checkpoint + 1 s",
        (
            Edit(
                "syncer.py",
                "start = checkpoint.cursor - self.overlap",
                "start = checkpoint.cursor + SECOND - self.overlap",
            ),
        ),
        (CHAOS + "test_visibility_lag_and_whole_second_boundaries[11]",),
    ),
    Mutant(
        "backfill-commit-past-page",
        "3.9/14 the backfill commits a page's newest second, not one second past it",
        (Edit("syncer.py", "yield _Reached(reached, frozenset(", "yield _Reached(reached + SECOND, frozenset("),),
        (GUARDS + "test_backfill_resumes_inside_a_second_split_by_a_page_seam",),
    ),
    Mutant(
        "window-commit-past-end",
        "3.5/3.9 a window commits its own end, not one second past it",
        (Edit("syncer.py", "yield _Reached(window.end, carried)", "yield _Reached(window.end + SECOND, carried)"),),
        (CHAOS + "test_visibility_lag_and_whole_second_boundaries[11]",),
    ),
    Mutant(
        "no-page-1-reread",
        "3.7 increments read page 1 again last (a shifted list becomes a duplicate, not a gap)",
        (Edit("syncer.py", "shifting=not stable", "shifting=False"),),
        (CHAOS + "test_trades_moving_while_paging[11]",),
    ),
    Mutant(
        "forward-paging",
        "3.7 pages are read from the last back to page 1",
        (
            Edit(
                "_paging.py",
                "return list(range(last, 0 if shifting else 1, -1))",
                "return [*range(2, last + 1), *([1] if shifting else [])]",
            ),
        ),
        (PAGING + "test_page_plan_reads_backwards", CHAOS + "test_trades_moving_while_paging[11]"),
    ),
    Mutant(
        "local-clock",
        "3.2 windows are planned on Taobao's clock, never the local one",
        (
            Edit(
                "syncer.py",
                "from taobao_ordersync._time import SECOND, floor_second\n",
                "import time\n\nfrom taobao_ordersync._time import SECOND, floor_second, from_epoch\n",
            ),
            Edit(
                "syncer.py",
                "server_now = floor_second(await self.client.server_now())\n        horizon",
                "server_now = floor_second(from_epoch(time.time()))\n        horizon",
            ),
            Edit(
                "syncer.py",
                "server_now = floor_second(await self.client.server_now())\n        target",
                "server_now = floor_second(from_epoch(time.time()))\n        target",
            ),
        ),
        (CHAOS + "test_server_clock_disagrees[11--300.0]",),
    ),
    Mutant(
        "default-trade-types",
        "3.8 every trade type is requested",
        (Edit("syncer.py", "types=window.types,", "types=_wire.DEFAULT_TRADE_TYPES,"),),
        (CHAOS + "test_non_default_trade_types[11]",),
    ),
    Mutant(
        "commit-before-asking",
        "3.9 a window's end is saved only after the consumer asked for more",
        (
            Edit(
                "syncer.py",
                """\
            async for step in steps:
                if isinstance(step, _Commit):
                    revision = await self.store.save(shop.id, step.checkpoint.to_json(), expected_revision=revision)
                    self._record(step.checkpoint)
                elif step.trades:
                    yield step
""",
                """\
            held: Batch | None = None
            async for step in steps:
                if isinstance(step, _Commit):
                    revision = await self.store.save(shop.id, step.checkpoint.to_json(), expected_revision=revision)
                    self._record(step.checkpoint)
                    if held is not None:
                        yield held
                        held = None
                elif step.trades:
                    if held is not None:
                        yield held
                    held = step
            if held is not None:
                yield held
""",
            ),
        ),
        (SYNCER + "test_commit_happens_only_after_the_consumer_asks_for_more",),
    ),
    Mutant(
        "missing-count-is-zero",
        "13 a reply without total_results is retried, never an empty window",
        (
            Edit(
                "_convert.py",
                "if not use_has_next and (total is None or total < 0):",
                "if not use_has_next and total is not None and total < 0:",
            ),
            Edit(
                "syncer.py",
                '            raise ResponseFormatError("a list reply without total_results", is_transient=True)\n',
                "            return 0\n",
            ),
        ),
        (REPLIES + "test_persistent_malformed_reply_raises_not_empty",),
    ),
    Mutant(
        "ties-assumed-stable",
        "14 a second with a trade on two pages is read again (SeamCheck)",
        (
            Edit(
                "_paging.py",
                "        return sorted(\n            second\n",
                "        return [] and sorted(\n            second\n",
            ),
        ),
        (PAGING + "test_no_item_that_stays_is_missed_when_ties_move",),
    ),
    Mutant(
        "no-tie-reread",
        "14 the Syncer reads again every second SeamCheck names",
        (
            Edit(
                "syncer.py",
                "for second in seams.unsettled(before=before):",
                "for second in seams.unsettled(before=before)[:0]:",
            ),
        ),
        (CHAOS + "test_ties_in_a_new_order_on_every_request[11]",),
    ),
    Mutant(
        "count-proof-too-early",
        "14 a dense second is done only when its counts prove every trade was seen",
        (
            Edit(
                "_paging.py",
                "        if not self._counts:\n            return False\n",
                "        if self._counts:\n            return True\n",
            ),
        ),
        (PAGING + "test_the_count_proof_needs_every_member_since_some_read",),
    ),
    Mutant(
        "one-second-split-in-time",
        "15 a one-second window is never split in time ([s, s] and [s+1, s+1] miss the milliseconds)",
        (
            Edit(
                "planner.py",
                "    if not window.is_single_second:\n",
                "    if window.span == SECOND:\n"
                "        return (\n"
                "            evolve(window, end=window.start),\n"
                "            evolve(window, start=window.end),\n"
                "        )\n"
                "    if not window.is_single_second:\n",
            ),
        ),
        (PLANNER + "test_a_one_second_window_is_not_split_in_time",),
    ),
    Mutant(
        "counted-window-not-split",
        "3.6 a window counted over max_window_orders is split before it is paged",
        (
            Edit(
                "syncer.py",
                "if first is None or (self._count(first) > self.max_window_orders and window.can_split):",
                "if first is None:",
            ),
        ),
        (SYNCER + "test_dense_second_is_split_by_type_then_read_whole",),
    ),
    Mutant(
        "has-next-unchecked",
        "13 a use_has_next reply must carry has_next",
        (
            Edit(
                "_convert.py",
                "if use_has_next and has_next is None:",
                "if use_has_next and has_next is None and False:",
            ),
        ),
        (REPLIES + "test_has_next_call_must_carry_has_next",),
    ),
    Mutant(
        "oversized-page-accepted",
        "13 a page holds at most page_size trades",
        (Edit("_convert.py", "if len(items) > query.page_size:", "if len(items) > query.page_size + 100:"),),
        (REPLIES + "test_malformed_list_reply_is_retried[bad2]",),
    ),
    Mutant(
        "window-bounds-unchecked",
        "13 every listed trade lies inside the window asked for",
        (
            Edit(
                "_convert.py",
                "moment = modified if by_modified else created\n"
                "        if checks_time and (moment is None or not low <= moment <= high):",
                "moment = modified if by_modified else created\n        if checks_time and moment is None:",
            ),
        ),
        (REPLIES + "test_malformed_list_reply_is_retried[bad3]",),
    ),
    Mutant(
        "fullinfo-drops-trade",
        "3.10 a listed trade fullinfo cannot fetch is never silently dropped",
        (Edit("syncer.py", "        if unknown:\n", "        if unknown and False:\n"),),
        (SYNCER + "test_fullinfo_never_drops_a_listed_trade[99]",),
    ),
    Mutant(
        "checkpoint-moves-back",
        "3.9 the checkpoint never moves backwards (an overlap re-reads, it does not rewind)",
        (Edit("syncer.py", "cursor=max(step.moment, checkpoint.cursor)", "cursor=step.moment"),),
        (GUARDS + "test_overlap_never_moves_the_checkpoint_back",),
    ),
    Mutant(
        "boundary-not-carried",
        "3.5 the boundary second read twice is de-duplicated across windows",
        (
            Edit(
                "syncer.py",
                "carried = frozenset(key for key, at in seen.items() if at == window.end)",
                "carried: frozenset[Key] = frozenset()",
            ),
        ),
        (GUARDS + "test_a_change_on_the_second_two_windows_share_is_delivered_once",),
    ),
    Mutant(
        "boundary-blind-to-status",
        "3.5 a version is (tid, modified, status): two versions within one second are both delivered",
        (
            Edit(
                "syncer.py",
                "key = (trade.tid, trade.modified, trade.status)",
                "key = (trade.tid, trade.modified, None)",
            ),
        ),
        (SYNCER + "test_a_second_version_within_the_boundary_second_is_delivered",),
    ),
)


# -- keeping src/ intact ---------------------------------------------------------------


class Originals:
    """The original bytes (and times) of every file a mutant touches, written back whatever happens."""

    def __init__(self) -> None:
        self._saved: dict[Path, tuple[bytes, int, int]] = {}

    def keep(self, path: Path) -> bytes:
        """Remember ``path`` as it is now (once), with a copy under ``.mutants-backup/``."""
        if path not in self._saved:
            data = path.read_bytes()
            stat = path.stat()
            self._saved[path] = (data, stat.st_atime_ns, stat.st_mtime_ns)
            copy = BACKUP / path.relative_to(ROOT)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(data)
        return self._saved[path][0]

    def restore(self) -> None:
        """Write back every file that differs from its original; keep its times, so no stale bytecode."""
        for path, (data, atime, mtime) in self._saved.items():
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
                os.utime(path, ns=(atime, mtime))
        shutil.rmtree(BACKUP, ignore_errors=True)


def recover_interrupted_run() -> list[Path]:
    """Put back files a killed run (``kill -9``) left mutated, from ``.mutants-backup/``."""
    restored = []
    if BACKUP.is_dir():
        for copy in sorted(BACKUP.rglob("*.py")):
            target = ROOT / copy.relative_to(BACKUP)
            data = copy.read_bytes()
            if target.read_bytes() != data:
                target.write_bytes(data)
                restored.append(target)
        shutil.rmtree(BACKUP)
    return restored


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the ``finally`` that restores the file


# -- running ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    status: str  # "killed", "survived" or "ERROR"
    detail: str
    seconds: float


def pytest(test_ids: Sequence[str], *, timeout: float = TIMEOUT) -> tuple[int | None, str]:
    """Run the tests (stop at the first failure); the exit code (None on timeout) and the output."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *test_ids]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # no bytecode of a mutant is ever cached
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter, our own test ids
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        stdout: object = exc.stdout  # str with text=True, but typed as bytes | None
        return None, stdout if isinstance(stdout, str) else ""
    return done.returncode, done.stdout + done.stderr


def first_failure(output: str) -> str:
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return match.group(1) if match else "?"


def mutate(text: str, edits: Iterable[Edit], file: str) -> str:
    for edit in edits:
        found = text.count(edit.old)
        if found != 1:
            raise LookupError(f"{file}: snippet found {found} times, not once: {edit.old.strip()[:70]!r}")
        text = text.replace(edit.old, edit.new)
    return text


def check(mutant: Mutant) -> dict[Path, str]:
    """The mutated text of each file the mutant touches; LookupError when a snippet is not unique."""
    files: dict[str, list[Edit]] = {}
    for edit in mutant.edits:
        files.setdefault(edit.file, []).append(edit)
    mutated = {}
    for file, edits in files.items():
        path = PACKAGE / file
        mutated[path] = mutate(path.read_text(encoding="utf-8"), edits, file)
    return mutated


def run(mutant: Mutant, originals: Originals) -> Outcome:
    started = time.monotonic()
    try:
        mutated = check(mutant)
    except (LookupError, OSError) as exc:
        return Outcome("ERROR", str(exc), 0.0)
    try:
        for path, text in mutated.items():
            originals.keep(path)
            path.write_text(text, encoding="utf-8")
        code, output = pytest(mutant.tests)
    finally:
        originals.restore()
    seconds = time.monotonic() - started
    if code is None:
        return Outcome("killed", f"timed out after {TIMEOUT:.0f} s", seconds)
    if code == 1:
        return Outcome("killed", f"by {first_failure(output)}", seconds)
    if code == 0:
        return Outcome("survived", "every test passed", seconds)
    tail = " | ".join(output.strip().splitlines()[-3:])
    return Outcome("ERROR", f"pytest exit {code}: {tail}", seconds)


def baseline(mutants: Sequence[Mutant]) -> str | None:
    """Every named test must pass on the real code (a failing one would 'kill' anything)."""
    ids = list(dict.fromkeys(test for mutant in mutants for test in mutant.tests))
    code, output = pytest(ids, timeout=2 * TIMEOUT)
    if code == 0:
        return None
    return f"the killing tests do not pass on the real code (exit {code}): {first_failure(output)}"


def table(mutants: Iterable[Mutant]) -> str:
    rows = ["| Mutant | Rule it breaks | Change | Killed by |", "| --- | --- | --- | --- |"]
    for mutant in mutants:
        files = ", ".join(dict.fromkeys(f"`{edit.file}`" for edit in mutant.edits))
        tests = "<br>".join(f"`{test.split('::')[-1]}`" for test in mutant.tests)
        rows.append(f"| `{mutant.name}` | {mutant.rule} | {files} | {tests} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("names", nargs="*", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="print the mutants and their tests, run nothing")
    parser.add_argument("--table", action="store_true", help="print the mutant table as Markdown, run nothing")
    parser.add_argument("--no-baseline", action="store_true", help="skip checking that the tests pass unmutated")
    args = parser.parse_args(argv)

    unknown = set(args.names) - {mutant.name for mutant in MUTANTS}
    if unknown:
        parser.error(f"no such mutant: {', '.join(sorted(unknown))}")
    chosen = [mutant for mutant in MUTANTS if not args.names or mutant.name in args.names]
    if args.table:
        print(table(chosen))
        return 0
    if args.list:
        for mutant in chosen:
            print(f"{mutant.name}: {mutant.rule}\n    " + "\n    ".join(mutant.tests))
        return 0

    for path in recover_interrupted_run():
        print(f"restored {path.relative_to(ROOT)} left mutated by an interrupted run", flush=True)
    originals = Originals()
    atexit.register(originals.restore)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)

    started = time.monotonic()
    errors = 0
    if not args.no_baseline:
        problem = baseline(chosen)
        if problem is not None:
            print(f"ERROR    baseline: {problem}", flush=True)
            errors += 1
        else:
            print(f"baseline: the killing tests pass on the real code ({time.monotonic() - started:.0f} s)", flush=True)
    killed = survived = 0
    for mutant in chosen:
        outcome = run(mutant, originals)
        killed += outcome.status == "killed"
        survived += outcome.status == "survived"
        errors += outcome.status == "ERROR"
        print(f"{outcome.status:<8} {mutant.name:<28} {outcome.detail} ({outcome.seconds:.1f} s)", flush=True)
    print(f"wall time {time.monotonic() - started:.0f} s", flush=True)
    summary = f"mutants: {killed} killed, {survived} survived"
    print(summary + (f", {errors} errors" if errors else ""), flush=True)
    return 0 if survived == 0 and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
