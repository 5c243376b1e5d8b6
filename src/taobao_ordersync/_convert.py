"""The one private cattrs converter: TOP JSON -> models, tolerant of TOP's quirks.

Tolerates unknown fields, numbers and booleans sent as strings, money as strings,
lists in any of TOP's shapes. Only ``tid``, ``modified`` and ``created`` are
required (design rule 17): any other field that cannot be read becomes ``None``
(``""`` for ``status``, ``()`` for ``orders``), stays in ``raw`` and is logged once
per field name. A page must also fit the call that asked for it (rule 13). Every
failure is a transient ``ResponseFormatError``: the client retries the call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar

import cattrs
from attrs import evolve, frozen
from cattrs.gen import make_dict_structure_fn, override

from taobao_ordersync._time import floor_second, format_time, parse_time
from taobao_ordersync._wire import KNOWN_TRADE_TYPES, unwrap_list
from taobao_ordersync.errors import ResponseFormatError
from taobao_ordersync.models import Order, Trade, TradePage

logger = logging.getLogger("taobao_ordersync.convert")

_T = TypeVar("_T")

#: Field names and trade types already logged by this process: one WARNING each, not one per trade.
_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


def _to_int(value: Any, _type: object = int) -> int:
    if isinstance(value, bool):
        raise ValueError("boolean is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"not an integer: {value!r}")


def _to_bool(value: Any, _type: object = bool) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "True", "1", 1):
        return True
    if value in ("false", "False", "0", 0):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _to_decimal(value: Any, _type: object = Decimal) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"not a money amount: {value!r}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a money amount: {value!r}") from exc
    if not amount.is_finite():
        raise ValueError(f"not a money amount: {value!r}")
    return amount


def _to_datetime(value: Any, _type: object = datetime) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"not a TOP time string: {value!r}")
    return parse_time(value)


def _to_text(value: Any, _type: object = str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"not a string: {value!r}")
    return value


def _lenient(name: str, read: Callable[[Any, object], _T], empty: _T | None = None) -> Callable[[Any, object], Any]:
    """A hook that reads one optional field, or logs it once and gives ``empty``: it never fails the trade."""

    def hook(value: Any, type_: object) -> _T | None:
        if value is None or value == "":
            return empty
        try:
            return read(value, type_)
        except (ValueError, TypeError, ArithmeticError):
            _warn_once(
                name,
                "cannot read the trade field %r (e.g. %.40r); it is left empty in the model and kept in raw "
                "(logged once per field)",
                name,
                value,
            )
            return empty

    return hook


def _trade_type(value: Any, type_: object) -> str:
    text = _to_text(value, type_)
    _note_type(text)
    return text


def _note_type(name: object) -> None:
    # Nothing is filtered by type; a new name only means a type= list may be missing it.
    if isinstance(name, str) and name not in KNOWN_TRADE_TYPES:
        _warn_once(
            f"type:{name}",
            "trade type %r is not one this library knows; its trades are delivered, but list calls only "
            "return the types they ask for: add it to types= (logged once per type)",
            name,
        )


def _orders(value: Any, _type: object) -> tuple[Order, ...]:
    try:
        items = unwrap_list(value)
    except ResponseFormatError:
        items = None
    if items is None or not all(isinstance(item, dict) for item in items):
        _warn_once("orders", "cannot read the trade field 'orders' (e.g. %.40r); kept in raw only", value)
        return ()
    return tuple(_order(item) for item in items)


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=False)
    converter.register_structure_hook(int, _to_int)
    converter.register_structure_hook(bool, _to_bool)
    converter.register_structure_hook(Decimal, _to_decimal)
    converter.register_structure_hook(datetime, _to_datetime)
    # tid, modified and created stay strict (rule 17); every other field is read leniently.
    converter.register_structure_hook(
        Trade,
        make_dict_structure_fn(
            Trade,
            converter,
            created=override(struct_hook=lambda value, _: None if value in (None, "") else _to_datetime(value)),
            status=override(struct_hook=_lenient("status", _to_text, "")),
            type=override(struct_hook=_lenient("type", _trade_type)),
            payment=override(struct_hook=_lenient("payment", _to_decimal)),
            orders=override(struct_hook=_orders),
            raw=override(omit=True),
        ),
    )
    converter.register_structure_hook(
        Order,
        make_dict_structure_fn(
            Order,
            converter,
            oid=override(struct_hook=_lenient("orders.oid", _to_int)),
            status=override(struct_hook=_lenient("orders.status", _to_text)),
            title=override(struct_hook=_lenient("orders.title", _to_text)),
            num=override(struct_hook=_lenient("orders.num", _to_int)),
            price=override(struct_hook=_lenient("orders.price", _to_decimal)),
            payment=override(struct_hook=_lenient("orders.payment", _to_decimal)),
            refund_status=override(struct_hook=_lenient("orders.refund_status", _to_text)),
            raw=override(omit=True),
        ),
    )
    return converter


_converter = _make_converter()


def _order(raw: Mapping[str, Any]) -> Order:
    source = raw if "oid" in raw or "oid_str" not in raw else {**raw, "oid": raw["oid_str"]}
    return evolve(_converter.structure(source, Order), raw=raw)  # keep the object itself: no copy of the JSON


def _malformed(message: str) -> ResponseFormatError:
    # A reply that does not prove itself is retried like a proxy's error page (rule 13).
    return ResponseFormatError(message, is_transient=True)


def read_tid(raw: Any) -> int:
    """The ``tid`` (or ``tid_str``) of one trade object; a trade without one is malformed."""
    if not isinstance(raw, dict):
        raise _malformed(f"expected a trade object, got {type(raw).__name__}")
    value = raw.get("tid", raw.get("tid_str"))
    try:
        return _to_int(value)
    except ValueError as exc:
        raise _malformed(f"trade without a readable tid: {exc}") from None


def structure_trade(raw: Any) -> Trade:
    """Build a ``Trade`` from one trade object as TOP sent it; it needs ``tid`` and ``modified``."""
    tid = read_tid(raw)
    source = raw if "tid" in raw else {**raw, "tid": tid}
    try:
        trade = _converter.structure(source, Trade)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        raise _malformed(f"trade {tid}: cannot read it: {_explain(exc)}") from exc
    return evolve(trade, raw=raw)


def _required_time(raw: Mapping[str, Any], name: str, tid: int) -> datetime:
    try:
        return _to_datetime(raw.get(name))
    except ValueError:
        raise _malformed(f"trade {tid}: {name} was requested but is missing or unreadable") from None


@frozen(kw_only=True)
class ListQuery:
    """What one list call asked for; its reply must fit it (design rule 13).

    ``time_field`` is the trade time the window bounds (``created`` for
    ``taobao.trades.sold.get``, ``modified`` for the increment call).
    """

    time_field: Literal["created", "modified"]
    start: datetime
    end: datetime
    fields: frozenset[str]
    page_size: int
    use_has_next: bool


def structure_page(inner: Mapping[str, Any], query: ListQuery) -> TradePage:
    """Build a ``TradePage`` from the inside of a list call's envelope, checking it against ``query``.

    ``tids`` is always filled, in list order; ``trades`` only when ``modified`` was requested
    (a ``Trade`` needs it). Raises a transient ``ResponseFormatError`` for a reply without its
    count (``total_results``, or ``has_next`` under ``use_has_next``), with more than
    ``page_size`` trades (or more than its own count), an empty page that says ``has_next``,
    a trade twice, a trade without ``tid`` or a requested time, or a trade outside the window.
    """
    total, has_next = _counts(inner, query.use_has_next)
    try:
        items = unwrap_list(inner.get("trades"))
    except ResponseFormatError as exc:
        raise _malformed(f"cannot read a trade page: {exc}") from None
    if len(items) > query.page_size:
        raise _malformed(f"a page of {len(items)} trades, more than the page_size of {query.page_size}")
    if total is not None and len(items) > total:
        raise _malformed(f"a page of {len(items)} trades in a window said to hold {total}")
    if has_next and not items:
        raise _malformed("an empty page says has_next")
    # TOP prints times floored to the second while its backend compares milliseconds:
    # a trade printed as the end's second is inside a window ending within that second.
    low, high = floor_second(query.start), floor_second(query.end)
    as_trades = "modified" in query.fields
    checks_time = query.time_field in query.fields
    needs_created = "created" in query.fields
    tids: list[int] = []
    trades: list[Trade] = []
    for item in items:
        if as_trades:
            trade = structure_trade(item)
            tid, moment = trade.tid, trade.modified if query.time_field == "modified" else trade.created
            if needs_created and trade.created is None:
                raise _malformed(f"trade {tid}: created was requested but is missing")
            trades.append(trade)
        else:
            tid = read_tid(item)
            _note_type(item.get("type"))
            moment = _required_time(item, query.time_field, tid) if checks_time else None
            if needs_created and query.time_field != "created":
                _required_time(item, "created", tid)
        if checks_time and (moment is None or not low <= moment <= high):
            raise _malformed(
                f"trade {tid}: {query.time_field} {moment and format_time(moment)} is outside the window "
                f"[{format_time(low)}, {format_time(high)}] asked for"
            )
        tids.append(tid)
    if len(set(tids)) != len(tids):
        raise _malformed("a trade is listed twice on one page")
    return TradePage(trades=tuple(trades), tids=tuple(tids), total_results=total, has_next=has_next)


def structure_fullinfo(inner: Mapping[str, Any], *, tid: int, fields: frozenset[str]) -> Trade:
    """The trade of a ``taobao.trade.fullinfo.get`` reply, which must be the one asked for."""
    if "trade" not in inner:
        raise _malformed(f"taobao.trade.fullinfo.get: no trade in the reply for tid {tid}")
    trade = structure_trade(inner["trade"])
    if trade.tid != tid:
        raise _malformed(f"taobao.trade.fullinfo.get: asked for trade {tid}, got trade {trade.tid}")
    if "created" in fields and trade.created is None:
        raise _malformed(f"trade {tid}: created was requested but is missing")
    return trade


def structure_time(inner: Mapping[str, Any]) -> datetime:
    """The ``time`` of a ``taobao.time.get`` reply."""
    value = inner.get("time")
    try:
        return _to_datetime(value)
    except ValueError:
        raise _malformed(f"taobao.time.get: no readable time in the reply (got {value!r:.40})") from None


def _counts(inner: Mapping[str, Any], use_has_next: bool) -> tuple[int | None, bool | None]:
    """``total_results`` and ``has_next``; the one the call promised must be there and readable."""
    raw_total, raw_has_next = inner.get("total_results"), inner.get("has_next")
    try:
        total = None if raw_total is None else _to_int(raw_total)
        has_next = None if raw_has_next is None else _to_bool(raw_has_next)
    except ValueError as exc:
        raise _malformed(f"cannot read a trade page's total_results or has_next: {exc}") from None
    if use_has_next and has_next is None:
        raise _malformed("a use_has_next page without has_next")
    if not use_has_next and (total is None or total < 0):
        raise _malformed(f"a page without a readable total_results (got {raw_total!r})")
    return total, has_next


def _explain(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(exc))
    return str(exc)
