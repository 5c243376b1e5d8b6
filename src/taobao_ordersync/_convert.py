"""TOP JSON -> models, tolerant of TOP's quirks, at close to the speed of ``json.loads``.

A page is read in one pass: each trade's ``tid``, ``modified`` and ``created`` (the
only required fields, design rule 17, and all the sync needs) are read and checked;
every other field is read from the JSON object on first access (``models.Trade``).
Times go through a small cache (the trades of a page share most seconds); a
``Trade`` is built without ``__init__``. A page must also fit the call that asked
for it (rule 13). Every failure is a transient ``ResponseFormatError``: the client
retries the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from attrs import frozen

from taobao_ordersync._fields import TIMES, cached_time, read_bool, read_int, read_time, warn_once
from taobao_ordersync._time import CST, floor_second, format_time
from taobao_ordersync._wire import KNOWN_TRADE_TYPES, unwrap_list
from taobao_ordersync.errors import ResponseFormatError
from taobao_ordersync.models import Trade, TradePage, make_trade

_new_trade = Trade.__new__

__all__ = ["ListQuery", "read_tid", "structure_fullinfo", "structure_page", "structure_time", "structure_trade"]


def _note_type(name: object) -> None:
    # Nothing is filtered by type; a new name only means a type= list may be missing it.
    if isinstance(name, str) and name not in KNOWN_TRADE_TYPES:
        warn_once(
            f"type:{name}",
            "trade type %r is not one this library knows; its trades are delivered, but list calls only "
            "return the types they ask for: add it to types= (logged once per type)",
            name,
        )


def _malformed(message: str) -> ResponseFormatError:
    # A reply that does not prove itself is retried like a proxy's error page (rule 13).
    return ResponseFormatError(message, is_transient=True)


def read_tid(raw: Any) -> int:
    """The ``tid`` (or ``tid_str``) of one trade object; a trade without one is malformed."""
    if not isinstance(raw, dict):
        raise _malformed(f"expected a trade object, got {type(raw).__name__}")
    value = raw.get("tid")
    if value is None:
        value = raw.get("tid_str")
    try:
        return read_int(value)
    except ValueError as exc:
        raise _malformed(f"trade without a readable tid: {exc}") from None


def _required_time(raw: Mapping[str, Any], name: str, tid: int) -> datetime:
    try:
        return read_time(raw.get(name))
    except ValueError:
        raise _malformed(f"trade {tid}: {name} was requested but is missing or unreadable") from None


def _created(raw: Mapping[str, Any], tid: int) -> datetime | None:
    """``created`` if sent: absent or empty is ``None``, present but unreadable is malformed."""
    value = raw.get("created")
    if value is None or value == "":
        return None
    try:
        return read_time(value)
    except ValueError:
        raise _malformed(f"trade {tid}: cannot read it: created {value!r:.40} is not a TOP time") from None


def structure_trade(raw: Any) -> Trade:
    """Build a ``Trade`` from one trade object as TOP sent it; it needs ``tid`` and ``modified``.

    ``created`` must be readable when present; nothing else is read now (rule 17).
    """
    tid = read_tid(raw)
    modified = raw.get("modified")
    try:
        moment = read_time(modified)
    except ValueError:
        raise _malformed(f"trade {tid}: cannot read it: modified {modified!r:.40} is not a TOP time") from None
    _note_type(raw.get("type"))
    return make_trade(raw, tid, moment, _created(raw, tid))


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
    # In CST, like every parsed time, so comparisons take datetime's same-zone fast path.
    low, high = floor_second(query.start).astimezone(CST), floor_second(query.end).astimezone(CST)
    if "modified" not in query.fields:
        return _tid_page(items, query, total, has_next, low, high)
    by_modified = query.time_field == "modified"
    checks_time = query.time_field in query.fields
    needs_created = "created" in query.fields
    times, known, parse, new = TIMES, KNOWN_TRADE_TYPES, cached_time, _new_trade
    tids: list[int] = []
    trades: list[Trade] = []
    # The hot loop of every sync: inlined, with the common case first and the helpers for the rest.
    for item in items:
        if type(item) is not dict:
            raise _malformed(f"expected a trade object, got {type(item).__name__}")
        tid = item.get("tid")
        if type(tid) is not int:
            tid = read_tid(item)
        text = item.get("modified")
        if type(text) is not str or (modified := times.get(text) or parse(text)) is None:
            modified = _required_time(item, "modified", tid)
        text = item.get("created")
        if type(text) is not str or (created := times.get(text) or parse(text)) is None:
            created = _created(item, tid)
            if created is None and needs_created:
                raise _malformed(f"trade {tid}: created was requested but is missing")
        kind = item.get("type")
        if type(kind) is str and kind not in known:
            _note_type(kind)
        moment = modified if by_modified else created
        if checks_time and (moment is None or not low <= moment <= high):
            _outside(tid, moment, query, low, high)
        trade = new(Trade)  # make_trade, inlined
        trade._raw = item
        trade._cache = None
        trade._tid = tid
        trade._modified = modified
        trade._created = created
        trades.append(trade)
        tids.append(tid)
    if len(set(tids)) != len(tids):
        raise _malformed("a trade is listed twice on one page")
    return TradePage(trades=tuple(trades), tids=tuple(tids), total_results=total, has_next=has_next)


def _tid_page(
    items: list[Any], query: ListQuery, total: int | None, has_next: bool | None, low: datetime, high: datetime
) -> TradePage:
    """A page listed without ``modified`` (e.g. ``fields=tid``): its tids, checked, and no ``Trade``."""
    checks_time = query.time_field in query.fields
    needs_created = "created" in query.fields
    tids: list[int] = []
    for item in items:
        tid = read_tid(item)
        _note_type(item.get("type"))
        moment = _required_time(item, query.time_field, tid) if checks_time else None
        if needs_created and query.time_field != "created":
            _required_time(item, "created", tid)
        if checks_time and (moment is None or not low <= moment <= high):
            _outside(tid, moment, query, low, high)
        tids.append(tid)
    if len(set(tids)) != len(tids):
        raise _malformed("a trade is listed twice on one page")
    return TradePage(trades=(), tids=tuple(tids), total_results=total, has_next=has_next)


def _outside(tid: int, moment: datetime | None, query: ListQuery, low: datetime, high: datetime) -> None:
    raise _malformed(
        f"trade {tid}: {query.time_field} {moment and format_time(moment)} is outside the window "
        f"[{format_time(low)}, {format_time(high)}] asked for"
    )


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
        return read_time(value)
    except ValueError:
        raise _malformed(f"taobao.time.get: no readable time in the reply (got {value!r:.40})") from None


def _counts(inner: Mapping[str, Any], use_has_next: bool) -> tuple[int | None, bool | None]:
    """``total_results`` and ``has_next``; the one the call promised must be there and readable."""
    raw_total, raw_has_next = inner.get("total_results"), inner.get("has_next")
    try:
        total = None if raw_total is None else read_int(raw_total)
        has_next = None if raw_has_next is None else read_bool(raw_has_next)
    except ValueError as exc:
        raise _malformed(f"cannot read a trade page's total_results or has_next: {exc}") from None
    if use_has_next and has_next is None:
        raise _malformed("a use_has_next page without has_next")
    if not use_has_next and (total is None or total < 0):
        raise _malformed(f"a page without a readable total_results (got {raw_total!r})")
    return total, has_next
