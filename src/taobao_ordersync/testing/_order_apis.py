"""The order APIs as TOP answers them, without I/O: windows, pages, counts, fields, filters, fullinfo.

``read_list_request`` and ``read_fullinfo_request`` check a call's business parameters in
TOP's order. ``SearchIndex`` is what the list APIs search: a window's trades as the index
sees them at a moment (each in its newest visible version), newest first, ties on a
printed second by ``tid``. ``list_page`` cuts a page from those rows with ``has_next`` or
``total_results``, and ``render`` shows a trade with the requested ``fields`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Literal

from attrs import define, frozen

from taobao_ordersync import _wire
from taobao_ordersync._time import SECOND, floor_second
from taobao_ordersync.testing._gateway import (
    Refusal,
    bad_param,
    read_fields,
    read_flag,
    read_int,
    read_required_time,
    read_time,
)
from taobao_ordersync.testing._shop import DEFAULT_VISIBLE_TYPES, ShopState, TradeRecord, Version

__all__ = [
    "LIST_METHODS",
    "ListRequest",
    "Row",
    "SearchIndex",
    "TimeField",
    "fullinfo_payload",
    "list_page",
    "read_fullinfo_request",
    "read_list_request",
    "render",
    "same_second",
    "tids_in_window",
]

LIST_METHODS: Final = frozenset({"taobao.trades.sold.get", "taobao.trades.sold.increment.get"})
_EXT_TYPES: Final = frozenset({"ershou", "service", "mark"})
_TAGS: Final = frozenset({"time_card", "fee_card"})
_RATE_STATUSES: Final = frozenset(
    {"RATE_UNBUYER", "RATE_UNSELLER", "RATE_BUYER_UNSELLER", "RATE_UNBUYER_SELLER", "RATE_BUYER_SELLER"}
)
_UNRATED: Final = frozenset({"RATE_UNBUYER", "RATE_UNSELLER"})  # neither side has rated

TimeField = Literal["created", "modified"]
#: A listed trade and the version the index shows of it.
Row = tuple[TradeRecord, Version]


# -- reading a call -------------------------------------------------------------------------


@frozen(kw_only=True)
class ListRequest:
    """A list call's business parameters, checked. The window's bounds are both inclusive."""

    time_field: TimeField  # sold.get lists by ``created``, increment.get by ``modified``
    start: datetime
    end: datetime
    page_no: int
    page_size: int
    use_has_next: bool
    fields: frozenset[str]
    types: frozenset[str]
    status: str | None
    matches: Callable[[TradeRecord], bool] | None  # the optional buyer and mark filters, None when none is given


def read_list_request(method: str, params: Mapping[str, str], now: datetime) -> ListRequest:
    """Check a list call's parameters in TOP's order.

    Raises:
        Refusal: the first parameter TOP refuses (codes 40, 41; 15 for a window it will not list).
    """
    fields = read_fields(params)
    page_size = read_int(params, "page_size", default=40, low=1, high=100)
    page_no = read_int(params, "page_no", default=1, low=1, high=10**9)
    use_has_next = read_flag(params, "use_has_next")
    types = _types(params.get("type"))
    status = params.get("status") or None
    matches = _filters(params)
    time_field: TimeField
    if method == "taobao.trades.sold.increment.get":
        start = read_required_time(params, "start_modified")
        end = read_required_time(params, "end_modified")
        if end < start:
            raise bad_param("end_modified", "end_modified must not be before start_modified")
        if end - start > _wire.MAX_INCREMENT_SPAN:
            raise bad_param("start_modified-and-end_modified", "时间跨度不能超过一天")
        if start < now - _wire.HORIZON:
            raise bad_param("start_modified", "只能查询三个月内的增量订单")
        time_field = "modified"
    else:
        start = read_time(params, "start_created") or now - _wire.HORIZON
        end = read_time(params, "end_created") or now
        if end < start:
            raise bad_param("end_created", "end_created must not be before start_created")
        start = max(start, now - _wire.HORIZON)  # only the last three months are listed
        time_field = "created"
    return ListRequest(
        time_field=time_field,
        start=start,
        end=end,
        page_no=page_no,
        page_size=page_size,
        use_has_next=use_has_next,
        fields=fields,
        types=types,
        status=status,
        matches=matches,
    )


def _types(raw: str | None) -> frozenset[str]:
    if not raw:
        return DEFAULT_VISIBLE_TYPES
    names = {name.strip() for name in raw.split(",") if name.strip()}
    if "guarantee_trade" in names:
        names |= {"fixed", "auction"}
    return frozenset(names)


def _filters(params: Mapping[str, str]) -> Callable[[TradeRecord], bool] | None:
    """The optional filters of both list APIs, or None when none is given.

    ``buyer_nick`` and ``buyer_open_uid`` (``buyer_open_id`` on sold.get) match exactly.
    ``ext_type``, ``tag`` and ``rate_status`` take one documented value each (another is
    refused as TOP refuses an invalid parameter); the emulator's trades are ordinary
    ones (no second-hand, service or card marks) that neither side has rated yet.
    """
    equal: dict[str, str] = {}
    for name, key in (
        ("buyer_nick", "buyer_nick"),
        ("buyer_open_uid", "buyer_open_uid"),
        ("buyer_open_id", "buyer_open_uid"),
    ):
        if params.get(name):
            equal[key] = params[name]
    excluded = False
    for name, allowed, matching in (
        ("ext_type", _EXT_TYPES, frozenset[str]()),
        ("tag", _TAGS, frozenset[str]()),
        ("rate_status", _RATE_STATUSES, _UNRATED),
    ):
        wanted = params.get(name)
        if not wanted:
            continue
        if wanted not in allowed:
            raise bad_param(name, f"{name} must be one of {', '.join(sorted(allowed))}")
        excluded = excluded or wanted not in matching
    if not equal and not excluded:
        return None

    def matches(record: TradeRecord) -> bool:
        return not excluded and all(record.data.get(key) == wanted for key, wanted in equal.items())

    return matches


def read_fullinfo_request(params: Mapping[str, str]) -> tuple[int, frozenset[str]]:
    """``tid`` and ``fields`` of a fullinfo call, checked in TOP's order."""
    fields = read_fields(params)
    raw_tid = params.get("tid")
    if not raw_tid:
        raise Refusal(40, "Missing Required Arguments:tid")
    if not raw_tid.isdigit():
        raise Refusal(41, "Invalid Arguments:tid")
    return int(raw_tid), fields


# -- answering ------------------------------------------------------------------------------


def list_page(rows: Sequence[Row], request: ListRequest, *, always_has_next: bool = False) -> dict[str, Any]:
    """The payload of one list page: its trades, and ``has_next`` or ``total_results``."""
    first = (request.page_no - 1) * request.page_size
    page = rows[first : first + request.page_size]
    result: dict[str, Any] = {}
    if page:  # TOP omits empty lists
        result["trades"] = [render(record, version, request.fields) for record, version in page]
    if request.use_has_next:
        result["has_next"] = always_has_next or first + request.page_size < len(rows)
    else:
        result["total_results"] = len(rows)
    return result


def fullinfo_payload(
    shop: ShopState, tid: int, fields: frozenset[str], now: datetime, *, hidden: bool = False
) -> dict[str, Any]:
    """The payload of ``taobao.trade.fullinfo.get``: the trade in its newest version.

    fullinfo reads the trade store, not the search index: a trade shows in its newest
    version as soon as it exists, even while list calls still show an older one.

    Raises:
        Refusal: ``isv.trade-not-exist`` for a trade this shop does not have (yet), or one ``hidden``.
    """
    record = shop.trades.get(tid)
    if hidden or record is None or record.versions[0].visible_at > now:
        raise Refusal(15, "Remote service error", "isv.trade-not-exist", "交易订单不存在")
    return {"trade": render(record, record.versions[-1], fields)}


def render(record: TradeRecord, version: Version, fields: frozenset[str]) -> dict[str, Any]:
    """The trade as it was at ``version``, with only the requested ``fields``.

    ``orders`` shows every sub-order field, ``orders.<name>`` only the named ones; unknown names are ignored.
    """
    data = record.render(version)
    shown = {name: value for name, value in data.items() if name in fields and name != "orders"}
    order_fields = {name.split(".", 1)[1] for name in fields if name.startswith("orders.")}
    if "orders" in fields or order_fields:
        orders = data["orders"]
        if order_fields:
            orders = [{k: v for k, v in order.items() if k in order_fields} for order in orders]
        shown["orders"] = orders
    return shown


def tids_in_window(shop: ShopState, time_field: TimeField, start: datetime, end: datetime) -> list[int]:
    """Every trade id the index holds in the window, whatever its visibility (once per version when by ``modified``)."""
    if time_field == "modified":
        return [tid for _, tid, _ in shop.modified_between(start, end)]
    return [tid for _, tid in shop.created_between(start, end)]


def same_second(one: datetime, other: datetime) -> bool:
    """Whether two times print as the same whole second.

    Two times less than a second apart whose seconds digits agree share a printed second:
    a tenth of the cost of comparing their ``floor_second``, asked once per row of a window.
    """
    return -SECOND < one - other < SECOND and one.second == other.second


# -- the search index -----------------------------------------------------------------------


@define
class _Cached:
    generation: int  # the shop's generation the rows were computed at
    computed_at: datetime
    settled: bool  # every version of the shop was visible when computed
    rows: list[Row]


class SearchIndex:
    """What the list APIs search: a window's trades as the index sees them at a moment.

    Recomputing a big window is the emulator's hottest path (every page request of a
    20,000-trade window asks for it), so each window's rows are kept until its shop changes.
    """

    def __init__(self, *, capacity: int = 256) -> None:
        self._capacity = capacity
        self._cache: dict[tuple[Any, ...], _Cached] = {}

    def window(
        self,
        shop: ShopState,
        time_field: TimeField,
        start: datetime,
        end: datetime,
        types: frozenset[str],
        status: str | None,
        now: datetime,
    ) -> list[Row]:
        """The trades of ``[start, end]`` by ``time_field`` at ``now``, of ``types`` (and ``status``), newest first.

        Each trade shows in the newest version visible at ``now``, and only if that
        version's time (its ``modified``, or the trade's ``created``) is in the window.
        Rows are ordered by the printed (whole-second) time only, ties by ``tid``,
        both descending. The list returned is shared with later calls: do not change it.
        """
        key = (shop.id, time_field, start, end, types, status)
        cached = self._cache.get(key)
        if cached and cached.generation == shop.generation and (cached.settled or cached.computed_at == now):
            return cached.rows
        found: list[tuple[datetime, TradeRecord, Version]] = []
        # Cached rows stay right until the shop changes, unless a version still becomes visible later.
        settled = shop.visible_by is None or shop.visible_by <= now
        if time_field == "modified":
            for modified, tid, index in shop.modified_between(start, end):
                record = shop.trades[tid]
                version = record.view(now)
                if version is not record.versions[index]:
                    continue
                if record.type in types and (status is None or version.status == status):
                    found.append((modified, record, version))
        else:
            for created, tid in shop.created_between(start, end):
                record = shop.trades[tid]
                seen = record.view(now)
                if seen is not None and record.type in types and (status is None or seen.status == status):
                    found.append((created, record, seen))
        # Sorted by the printed (whole-second) time only; ties by tid.
        found.sort(key=lambda row: (floor_second(row[0]), row[1].tid), reverse=True)
        rows = [(record, version) for _, record, version in found]
        self._cache[key] = _Cached(generation=shop.generation, computed_at=now, settled=settled, rows=rows)
        if len(self._cache) > self._capacity:
            self._cache.pop(next(iter(self._cache)))
        return rows
