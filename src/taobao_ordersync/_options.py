"""Checks of constructor options (pure): a wrong one is a ``ConfigurationError`` naming it.

Typed code gets these errors from mypy already; the checks are for the rest, so a
typo or a string from a config file fails at the call that made it, not as a
``TypeError`` from deep inside a sync.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping

from taobao_ordersync.errors import ConfigurationError


def check_known(owner: str, given: Mapping[str, object], known: Collection[str]) -> None:
    """Raise naming the first of ``given`` that ``owner`` does not take (with the closest name it does)."""
    for name in sorted(set(given) - set(known)):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigurationError(f"{owner}() got an unknown option {name!r}{hint}")


def whole(name: str, value: object, *, least: int) -> int:
    """An ``int`` (not a bool, nor a float or a string of one) of at least ``least``."""
    if type(value) is not int:
        raise ConfigurationError(f"{name} must be an int, got {value!r}")
    if value < least:
        raise ConfigurationError(f"{name} must be at least {least}, got {value}")
    return value


def seconds(name: str, value: object, *, positive: bool = True) -> float:
    """A number of seconds (an ``int`` or a ``float``, not a bool): > 0, or >= 0 when not ``positive``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be seconds (a number), got {value!r}")
    if not (value > 0 if positive else value >= 0):  # NaN fails both
        raise ConfigurationError(f"{name} must be {'>' if positive else '>='} 0 seconds, got {value}")
    return float(value)


def flag(name: str, value: object) -> bool:
    """A ``bool``: a string such as ``"no"`` would read as true."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {value!r}")
    return value


def names(name: str, value: object) -> tuple[str, ...]:
    """Strings, at least one: a bare string would be read as its letters."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(f"{name} must be a list of strings, got {value!r}")
    items = tuple(value)
    if not items:
        raise ConfigurationError(f"{name} must name at least one")
    if not all(isinstance(item, str) for item in items):
        raise ConfigurationError(f"{name} must hold only strings, got {items!r}")
    return items


def callback(name: str, value: object) -> None:
    """A callable or None."""
    if value is not None and not callable(value):
        raise ConfigurationError(f"{name} must be callable (or None), got {value!r}")
