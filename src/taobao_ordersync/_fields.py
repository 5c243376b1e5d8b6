"""Readers for TOP's field values, the lazy field descriptor, and ``raw``'s one shape.

Pure helpers shared by the models (which read a field on first access) and the
converter (which reads ``tid``, ``modified`` and ``created`` when a page arrives).
Every reader takes one JSON value and returns the typed value or raises
``ValueError``/``TypeError``; ``Field`` turns that into ``None`` plus one warning
per field name for the process (design rule 17).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Generic, TypeVar, overload

from taobao_ordersync._time import _EPOCH, _NAIVE_EPOCH, parse_time

logger = logging.getLogger("taobao_ordersync.convert")

_V = TypeVar("_V")

#: Field names and trade types already logged by this process: one WARNING each, not one per trade.
_warned: set[str] = set()


def warn_once(key: str, message: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


# -- readers: one JSON value -> one typed value, or ValueError ----------------------

#: Recently read time strings: the trades of one page share most of their seconds.
TIMES: Final[dict[str, datetime]] = {}
_TIMES_MAX: Final = 4096


_fromisoformat = datetime.fromisoformat


def cached_time(text: str) -> datetime | None:
    """A well-formed ``yyyy-MM-dd HH:mm:ss`` string as an aware datetime (and now cached), else ``None``.

    The converter's hot path on a cache miss: one call, no exception for the common case.
    """
    if len(text) != 19 or text[10] != " " or text[4] != "-" or text[7] != "-" or text[13] != ":" or text[16] != ":":
        return None
    try:
        moment = _EPOCH + (_fromisoformat(text) - _NAIVE_EPOCH)
    except ValueError:
        return None
    if len(TIMES) >= _TIMES_MAX:
        TIMES.clear()
    TIMES[text] = moment
    return moment


def read_time(value: Any) -> datetime:
    """``yyyy-MM-dd HH:mm:ss`` (China time) -> an aware datetime; repeated strings come from a small cache."""
    if type(value) is not str:
        raise ValueError(f"not a TOP time string: {value!r}")
    moment = TIMES.get(value)
    if moment is None:
        moment = parse_time(value)
        if len(TIMES) >= _TIMES_MAX:
            TIMES.clear()
        TIMES[value] = moment
    return moment


def read_int(value: Any) -> int:
    """An integer sent as a number or as a string of digits (ids above 2**53 stay exact)."""
    if type(value) is int:
        return value
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:  # exact; a larger id lost digits
        return int(value)
    raise ValueError(f"not an integer: {value!r}")


def read_bool(value: Any) -> bool:
    """A boolean sent as JSON, as ``"true"``/``"false"`` or as ``0``/``1``."""
    if isinstance(value, bool):
        return value
    if value in ("true", "True", "1", 1):
        return True
    if value in ("false", "False", "0", 0):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def read_decimal(value: Any) -> Decimal:
    """Money: a string ("200.07") or a JSON number, as an exact ``Decimal``."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"not a money amount: {value!r}")
    try:
        amount = Decimal(value if isinstance(value, str) else str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a money amount: {value!r}") from exc
    if not amount.is_finite():
        raise ValueError(f"not a money amount: {value!r}")
    return amount


def read_text(value: Any) -> str:
    """Text (names, statuses, enumerations): a JSON string only."""
    if type(value) is not str:
        raise ValueError(f"not a string: {value!r}")
    return value


def read_code(value: Any) -> str:
    """A code TOP documents as a string but may send as a number (``sku_id``, zip codes, phone numbers)."""
    if type(value) is str:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"not a string: {value!r}")


# -- the lazy field ---------------------------------------------------------------


class Lazy:
    """Base of the models read lazily from one JSON object: ``_raw`` and the cache of read fields."""

    __slots__ = ("_cache", "_raw")

    #: How an unreadable field is named in the warning ("" for trades, "orders." for sub-orders).
    _label_prefix = ""

    _raw: dict[str, Any]
    _cache: dict[str, Any] | None

    def _values(self) -> dict[str, Any]:
        cache = self._cache
        if cache is None:
            cache = self._cache = {}
        return cache


_UNREAD: Final = object()


class Field(Generic[_V]):
    """A typed attribute read from ``raw`` on first access and cached.

    Absent, ``null`` or ``""`` gives ``None``. A value the reader refuses gives
    ``None`` too, stays in ``raw`` and is logged once per field name.
    """

    def __init__(self, read: Callable[[Any], _V], doc: str, *, alias: str | None = None) -> None:
        self.read = read
        self.__doc__ = doc
        self.alias = alias
        self.name = self.key = self.label = ""

    def __set_name__(self, owner: type[Lazy], name: str) -> None:
        self.name = self.key = name
        self.label = owner._label_prefix + name

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Field[_V]: ...

    @overload
    def __get__(self, instance: Lazy, owner: type[Any] | None = None) -> _V | None: ...

    def __get__(self, instance: Lazy | None, owner: type[Any] | None = None) -> Field[_V] | _V | None:
        if instance is None:
            return self
        cache = instance._cache
        if cache is None:
            cache = instance._cache = {}
        else:
            typed = cache.get(self.name, _UNREAD)
            if typed is not _UNREAD:
                return typed  # type: ignore[no-any-return]
        raw = instance._raw
        value = raw.get(self.key)
        if value is None and self.alias is not None:
            value = raw.get(self.alias)
        typed = self.parse(value)
        cache[self.name] = typed
        return typed

    def parse(self, value: Any) -> _V | None:
        """One JSON value as this field: ``None`` when empty or unreadable (then logged once)."""
        if value is None or value == "":
            return None
        try:
            return self.read(value)
        except (ValueError, TypeError, ArithmeticError):
            warn_once(
                self.label,
                "cannot read the trade field %r (e.g. %.40r); it is left empty in the model and kept in raw "
                "(logged once per field)",
                self.label,
                value,
            )
            return None


# -- raw's one shape --------------------------------------------------------------

#: Trade members that are lists (top-api.md §7): ``{}`` and a lone object are lists too.
LIST_MEMBERS: Final = frozenset({"orders", "promotion_details", "service_orders"})


def _as_list(key: str, value: dict[str, Any]) -> list[Any] | None:
    """The list a non-simplified reply wraps as ``{"order": [...]}`` under ``orders``, or ``None``."""
    if not value:
        return [] if key in LIST_MEMBERS else None
    if len(value) != 1 or not key.endswith("s"):
        return None
    inner = value.get(key[:-1])
    if isinstance(inner, list):
        return inner
    if isinstance(inner, dict) and key in LIST_MEMBERS:  # XML-converted bodies carry one item unwrapped
        return [inner]
    return None


def flatten_lists(document: dict[str, Any]) -> dict[str, Any]:
    """Unwrap every list of a non-simplified reply in place, at every level; return ``document``.

    A member ``xs`` holding ``{"x": [...]}`` becomes ``[...]``, which is what a
    ``simplify=true`` reply sends: ``raw`` then has one shape whatever ``simplify`` was.
    """
    for key, value in document.items():
        if type(value) is dict:
            unwrapped = _as_list(key, value)
            if unwrapped is None:
                flatten_lists(value)
                continue
            document[key] = value = unwrapped
        if type(value) is list:
            for item in value:
                if type(item) is dict:
                    flatten_lists(item)
    return document
