"""The public API is __all__: sorted, complete, and importable."""

import ast
import pathlib

import taobao_ordersync
import taobao_ordersync.testing

SRC = pathlib.Path(taobao_ordersync.__file__).parent


def isort_key(name: str) -> tuple[int, str]:
    """Constants, then classes, then the rest: the order ruff's RUF022 keeps."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


def test_all_is_sorted_and_exported() -> None:
    """Every name in __all__ exists; the list is sorted (constants, classes, others)."""
    for module in (taobao_ordersync, taobao_ordersync.testing):
        assert sorted(module.__all__, key=isort_key) == list(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), name


def test_public_classes_are_in_all() -> None:
    """No public class is importable from the package without being in __all__."""
    public = {
        name for name, value in vars(taobao_ordersync).items() if not name.startswith("_") and isinstance(value, type)
    }

    assert set() == public - set(taobao_ordersync.__all__)


PURE = (
    "signing.py",
    "_wire.py",
    "_time.py",
    "_convert.py",
    "_fields.py",
    "_retry.py",
    "models.py",
    "errors.py",
    "planner.py",
    "_options.py",
    "checkpoint.py",
    "status.py",
)
SHELL = {"asyncio", "aiohttp", "backoff", "sqlite3", "time", "socket"}


def test_pure_core_imports_no_io() -> None:
    """The pure modules import no event loop, HTTP, retry or clock module."""
    for name in PURE:
        path = SRC / name
        assert path.exists(), f"{name} is gone: update PURE rather than let the check pass unseen"
        tree = ast.parse(path.read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
                if node.module.startswith("taobao_ordersync."):
                    imported.add(node.module)
        assert set() == imported & SHELL, name
        shell_modules = {f"taobao_ordersync.{m}" for m in ("client", "transport", "syncer", "stores", "fleet", "cli")}
        assert set() == imported & shell_modules, name
