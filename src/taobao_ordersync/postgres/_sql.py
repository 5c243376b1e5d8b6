"""The SQL of ``PostgresStore``, read once from the package's ``sql/`` folder.

- ``sql/migrations/NNNN_<what>.sql``: migration n brings the schema from version n - 1 to n, and
  ``SCHEMA_VERSION`` is the last one found. Never edit a released migration: add the next file.
- ``sql/<job>.sql``: every query the store runs, each under a ``-- name: <name>`` line (up to the
  next one), so that Python runs queries by name and never builds SQL.

``{schema}`` in the text stands for the store's schema; ``for_schema`` puts the name in (a validated
identifier: every value is a bind parameter).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Final, TypeVar

__all__ = ["MIGRATIONS", "QUERIES", "SCHEMA_VERSION", "for_schema"]

_FOLDER: Final = files("taobao_ordersync.postgres") / "sql"
_NAME_LINE: Final = re.compile(r"^-- name: (\w+)[ \t]*$", re.MULTILINE)


def _named_queries(text: str, where: str) -> dict[str, str]:
    """The queries of one file by name; what stands before the first name line is the file's comment."""
    parts = _NAME_LINE.split(text)[1:]  # name, query, name, query, ...
    queries = {name: query.strip() for name, query in zip(parts[::2], parts[1::2], strict=True)}
    if len(queries) != len(parts) // 2:
        raise ValueError(f"{where}: a query name appears twice")
    return queries


def _load_queries(folder: Traversable) -> dict[str, str]:
    queries: dict[str, str] = {}
    for entry in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if entry.name.endswith(".sql"):
            found = _named_queries(entry.read_text(encoding="utf-8"), entry.name)
            if twice := queries.keys() & found.keys():
                raise ValueError(f"{entry.name}: queries {sorted(twice)} are named in another file too")
            queries.update(found)
    return queries


def _load_migrations(folder: Traversable) -> dict[int, str]:
    """Each migration by its number, the digits before the first ``_`` of its file name."""
    migrations: dict[int, str] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.partition("_")[0])
            if number in migrations:
                raise ValueError(f"{entry.name}: another migration has number {number} too")
            migrations[number] = entry.read_text(encoding="utf-8")
    return dict(sorted(migrations.items()))


QUERIES: Final[Mapping[str, str]] = _load_queries(_FOLDER)
MIGRATIONS: Final[Mapping[int, str]] = _load_migrations(_FOLDER / "migrations")
SCHEMA_VERSION: Final = max(MIGRATIONS)

K = TypeVar("K")


def for_schema(texts: Mapping[K, str], schema: str) -> dict[K, str]:
    """``texts`` with ``{schema}`` replaced by ``schema`` (already checked to be an identifier)."""
    return {key: text.replace("{schema}", schema) for key, text in texts.items()}
