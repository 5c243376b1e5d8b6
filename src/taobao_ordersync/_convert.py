"""The one private cattrs converter: TOP JSON -> models, tolerant of TOP's quirks.

Tolerates unknown fields, numbers and booleans sent as strings, money as strings,
lists in any of TOP's shapes. Any failure becomes ``ResponseFormatError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import cattrs
from attrs import evolve

from taobao_ordersync._time import parse_time
from taobao_ordersync._wire import unwrap_list
from taobao_ordersync.errors import ResponseFormatError
from taobao_ordersync.models import Order, Trade, TradePage


def _to_int(value: Any, _type: object) -> int:
    if isinstance(value, bool):
        raise ValueError("boolean is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"not an integer: {value!r}")


def _to_bool(value: Any, _type: object) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "True", "1", 1):
        return True
    if value in ("false", "False", "0", 0):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _to_decimal(value: Any, _type: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"not a money amount: {value!r}")
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a money amount: {value!r}") from exc


def _to_datetime(value: Any, _type: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"not a TOP time string: {value!r}")
    return parse_time(value)


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=False)
    converter.register_structure_hook(int, _to_int)
    converter.register_structure_hook(bool, _to_bool)
    converter.register_structure_hook(Decimal, _to_decimal)
    converter.register_structure_hook(datetime, _to_datetime)
    return converter


_converter = _make_converter()


def _order(raw: Mapping[str, Any]) -> Order:
    known = {name: raw[name] for name in ("status", "title", "num", "price", "payment", "refund_status") if name in raw}
    order = _converter.structure({**known, "oid": raw.get("oid", raw.get("oid_str"))}, Order)
    return evolve(order, raw=raw)  # keep the object itself: no copy of the JSON


def structure_trade(raw: Any) -> Trade:
    """Build a ``Trade`` from one trade object as TOP sent it."""
    if not isinstance(raw, dict):
        raise ResponseFormatError(f"expected a trade object, got {type(raw).__name__}")
    try:
        fields: dict[str, Any] = {
            name: raw[name] for name in ("status", "type", "created", "payment") if raw.get(name) not in (None, "")
        }
        fields["tid"] = raw.get("tid", raw.get("tid_str"))
        fields["modified"] = raw.get("modified")
        trade = _converter.structure(fields, Trade)
        orders = tuple(_order(item) for item in unwrap_list(raw.get("orders")))
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        tid = raw.get("tid", "?")
        raise ResponseFormatError(f"trade {tid}: cannot read it: {_explain(exc)}") from exc
    return evolve(trade, orders=orders, raw=raw)


def structure_page(inner: Mapping[str, Any]) -> TradePage:
    """Build a ``TradePage`` from the inside of a list call's envelope."""
    try:
        total = inner.get("total_results")
        has_next = inner.get("has_next")
        return TradePage(
            trades=tuple(structure_trade(item) for item in unwrap_list(inner.get("trades"))),
            total_results=None if total is None else _to_int(total, int),
            has_next=None if has_next is None else _to_bool(has_next, bool),
        )
    except ValueError as exc:
        raise ResponseFormatError(f"cannot read a trade page: {exc}") from exc


def _explain(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(exc))
    return str(exc)
