"""The example programs run on the emulator and print what they promise; the example test module passes."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from taobao_ordersync.testing.store_contract import CheckpointStoreContract

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ROOT = EXAMPLES.parent
TIMEOUT = 60  # seconds per program; each takes a few on the emulator
SESSION_KEY = re.compile(r"session-\d")  # the emulator's session keys; they must never be printed or logged

#: Lines each program must print on the emulator (every example program must be listed).
EXPECTED = {
    "fetch_one_page.py": ["trades changed in the last 30 minutes; the newest:"],
    "sync_one_shop.py": [
        "run 1: no checkpoint for shop-1: first sync, backfill then increments",
        "run 2: resuming shop-1 from the checkpoint",
        "one version each",
    ],
    "bulk_batches_to_sqlite.py": ["backfill window", "increments window", "wrote 0 rows", "trades table:"],
    "custom_checkpoint_store.py": ["run 1:", "run 2:", '"format":2', "a stale save is refused"],
    "fleet.py": [
        "event: shop-4 paused (AuthenticationError)",
        "event: shop-2 handler_failed (RuntimeError)",
        "event: shop-2 synced",
        "shop-4: 0 trades in the copy, 0 delivered (paused)",
    ],
    "postgres_workers.py": [
        "registered 6 shops",
        "every shop has finished its backfill: worker-a holds 3 shops, worker-b holds 3 shops",
        "worker-b now holds 6 shops",
        "a flash sale of 200 trades, read by worker-b",
        "worker-b's rate: 200 calls/s",
        "stopped worker-b",
        "shop-6: ",
        "trades in the copy (owner: none)",
    ],
}
PROGRAMS = sorted(path.name for path in EXAMPLES.glob("*.py") if not path.name.startswith("test_"))


def without_credentials() -> dict[str, str]:
    """This environment minus TAOBAO_*: the examples must take the emulator path."""
    return {name: value for name, value in os.environ.items() if not name.startswith("TAOBAO_")}


def test_every_program_is_checked() -> None:
    """A new example program needs an entry in EXPECTED."""
    assert PROGRAMS == sorted(EXPECTED)


@pytest.mark.parametrize("name", PROGRAMS)
def test_example_runs_on_the_emulator(name: str, tmp_path: Path) -> None:
    """Exit code 0, the expected lines, no session key in the output or logs, nothing left in the cwd or open."""
    result = subprocess.run(  # noqa: S603 - our own interpreter and files
        # Unclosed files, sockets and (3.13+) SQLite connections are reported on stderr.
        [sys.executable, "-W", "always::ResourceWarning", str(EXAMPLES / name)],
        cwd=tmp_path,
        env=without_credentials(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert 0 == result.returncode, result.stderr
    for line in EXPECTED[name]:
        assert line in result.stdout, (line, result.stdout)
    assert not SESSION_KEY.search(result.stdout + result.stderr)
    assert "ResourceWarning" not in result.stderr
    assert [] == list(tmp_path.iterdir())


@pytest.mark.parametrize("setup", ["this project's pytest config", "a fresh project"])
def test_example_test_module_passes(setup: str, tmp_path: Path) -> None:
    """examples/test_my_integration.py passes under our config and under pytest defaults (strict asyncio mode)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if setup == "a fresh project":
        # No config file: pytest-asyncio's strict mode; warnings are still errors.
        command += ["-c", os.devnull, "--rootdir", str(tmp_path), "-W", "error"]
        command += ["-o", "asyncio_default_fixture_loop_scope=function"]
        cwd = tmp_path
    else:
        command += ["--rootdir", str(ROOT)]
        cwd = ROOT
    command.append(str(EXAMPLES / "test_my_integration.py"))

    result = subprocess.run(  # noqa: S603 - our own interpreter and files
        command, cwd=cwd, env=without_credentials(), capture_output=True, text=True, timeout=TIMEOUT, check=False
    )

    assert 0 == result.returncode, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def load_example(name: str) -> ModuleType:
    """Import an example program as a module (the examples directory is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{Path(name).stem}", EXAMPLES / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestExampleJsonFileStore(CheckpointStoreContract):
    """The custom store of examples/custom_checkpoint_store.py keeps the store contract."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> Any:
        """A fresh JsonFileStore in this test's directory."""
        return load_example("custom_checkpoint_store.py").JsonFileStore(tmp_path / "checkpoints.json")
