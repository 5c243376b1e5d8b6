"""The order APIs as TOP answers them, without I/O: windows, pages, counts, fields, filters, fullinfo.

``read_list_request`` and ``read_fullinfo_request`` check a call's business parameters in
TOP's order. ``SearchIndex`` is what the list APIs search: a window's trades as the index
sees them at a moment (each in its newest visible version), newest first, ties on a
printed second by ``tid``: a ``Listing``. ``list_page`` cuts a page from a listing with
``has_next`` or ``total_results``, and ``render`` shows a trade with the requested ``fields`` only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Literal

from attrs import define, frozen

from taobao_ordersync import _wire
from taobao_ordersync._time import SECOND, format_time
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
    "Listing",
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


@frozen
class Listing:
    """A window's trades as the index lists them, newest first: each trade, and the version shown of it.

    Two parallel lists, not a list of ``Row`` pairs: a recomputed 20,000-trade window then
    adds two objects to the heap rather than 20,000 tuples for the garbage collector to
    promote and scan again and again (that scanning cost more than the walk itself).
    """

    records: list[TradeRecord]
    versions: list[Version]

    @classmethod
    def of(cls, rows: Iterable[Row]) -> Listing:
        """A listing of ``rows`` in their order."""
        records: list[TradeRecord] = []
        versions: list[Version] = []
        for record, version in rows:
            records.append(record)
            versions.append(version)
        return cls(records, versions)

    def __len__(self) -> int:
        return len(self.records)

    def rows(self, first: int = 0, stop: int | None = None) -> list[Row]:
        """The rows from ``first`` to ``stop`` (the end when None)."""
        return list(zip(self.records[first:stop], self.versions[first:stop], strict=True))


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


def list_page(listing: Listing, request: ListRequest, *, always_has_next: bool = False) -> dict[str, Any]:
    """The payload of one list page: its trades, and ``has_next`` or ``total_results``."""
    first = (request.page_no - 1) * request.page_size
    page = listing.rows(first, first + request.page_size)
    result: dict[str, Any] = {}
    if page:  # TOP omits empty lists
        result["trades"] = [render(record, version, request.fields) for record, version in page]
    if request.use_has_next:
        result["has_next"] = always_has_next or first + request.page_size < len(listing)
    else:
        result["total_results"] = len(listing)
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
    """The trade as it was at ``version`` (``TradeRecord.render``), with only the requested ``fields``.

    ``orders`` shows every sub-order field, ``orders.<name>`` only the named ones; unknown names are ignored.
    Only what is shown is built: listing a page renders 100 trades of which a count call shows one field.
    """
    shown = {name: value for name, value in record.data.items() if name in fields and name != "orders"}
    if "modified" in fields:
        shown["modified"] = format_time(version.modified)
    if "status" in fields:
        shown["status"] = version.status
    if "seller_memo" in fields and version.memo is not None:
        shown["seller_memo"] = version.memo
    order_fields = _order_fields(fields)
    if "orders" in fields or order_fields:
        orders = [{**order, "status": version.status} for order in record.data["orders"]]
        if order_fields:
            orders = [{k: v for k, v in order.items() if k in order_fields} for order in orders]
        shown["orders"] = orders
    return shown


@functools.lru_cache(maxsize=64)
def _order_fields(fields: frozenset[str]) -> frozenset[str]:
    """The sub-order fields named ``orders.<name>`` (a call's fields are the same for each of its trades)."""
    return frozenset(name.split(".", 1)[1] for name in fields if name.startswith("orders."))


def tids_in_window(shop: ShopState, time_field: TimeField, start: datetime, end: datetime) -> list[int]:
    """Every trade id the index holds in the window, whatever its visibility (once per version when by ``modified``)."""
    if time_field == "modified":
        return [tid for _, tid, _ in shop.modified_between(start, end)]
    return [tid for _, tid in shop.created_between(start, end)]


def same_second(one: datetime, other: datetime) -> bool:
    """Whether two times print as the same whole second.

    Two times less than a second apart whose seconds digits agree share a printed second:
    a tenth of the cost of comparing their ``floor_second`` (the search index's walk inlines it).
    """
    return -SECOND < one - other < SECOND and one.second == other.second


# -- the search index -----------------------------------------------------------------------


@define
class _Cached:
    generation: int  # the shop's generation the rows were computed at
    computed_at: datetime
    changes_at: datetime | None  # when a version of a trade in the window becomes visible (None: never)
    listing: Listing


class SearchIndex:
    """What the list APIs search: a window's trades as the index sees them at a moment.

    Recomputing a big window is the emulator's hottest path (every page request of a
    20,000-trade window asks for it), so each window's rows are kept until its shop
    changes or, in a visibility lag, until one of its trades' versions becomes visible.
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
    ) -> Listing:
        """The trades of ``[start, end]`` by ``time_field`` at ``now``, of ``types`` (and ``status``), newest first.

        Each trade shows in the newest version visible at ``now``, and only if that
        version's time (its ``modified``, or the trade's ``created``) is in the window.
        Rows are ordered by the printed (whole-second) time only, ties by ``tid``,
        both descending. The listing returned is shared with later calls: do not change it.
        """
        key = (shop.id, time_field, start, end, types, status)
        cached = self._cache.get(key)
        if (
            cached is not None
            and cached.generation == shop.generation
            and cached.computed_at <= now
            and (cached.changes_at is None or now < cached.changes_at)
        ):
            return cached.listing
        if time_field == "modified":
            listing, changes_at = _by_modified(shop, start, end, types, status, now)
        else:
            listing, changes_at = _by_created(shop, start, end, types, status, now)
        self._cache[key] = _Cached(generation=shop.generation, computed_at=now, changes_at=changes_at, listing=listing)
        if len(self._cache) > self._capacity:
            self._cache.pop(next(iter(self._cache)))
        return listing


# The two loops below are the same walk (the index from the window's end back to its start,
# keeping each trade's visible version, ordering each printed second's trades by tid);
# they are written out twice, with the common case first and ``same_second`` inlined
# (the walk goes back in time, so one side of it suffices), because they are the hot path.


def _by_created(
    shop: ShopState, start: datetime, end: datetime, types: frozenset[str], status: str | None, now: datetime
) -> tuple[Listing, datetime | None]:
    trades = shop.trades
    records: list[TradeRecord] = []
    versions: list[Version] = []
    changes_at: datetime | None = None
    tie_start = -1  # where the current run of rows sharing a printed second begins (-1: none)
    previous: datetime | None = None
    for created, tid in shop.created_newest_first(start, end):
        record = trades[tid]
        version = record.versions[-1]
        if version.visible_at > now:
            visible, pending = _visible_version(record.versions, now)
            changes_at = pending if changes_at is None or pending < changes_at else changes_at
            if visible is None:
                continue
            version = visible
        if record.type not in types or (status is not None and version.status != status):
            continue
        if previous is not None and previous - created < SECOND and previous.second == created.second:
            if tie_start < 0:
                tie_start = len(records) - 1  # the previous row begins a run of one printed second
        elif tie_start >= 0:
            _order_ties(records, versions, tie_start)
            tie_start = -1
        records.append(record)
        versions.append(version)
        previous = created
    if tie_start >= 0:
        _order_ties(records, versions, tie_start)
    return Listing(records, versions), changes_at


def _by_modified(
    shop: ShopState, start: datetime, end: datetime, types: frozenset[str], status: str | None, now: datetime
) -> tuple[Listing, datetime | None]:
    trades = shop.trades
    records: list[TradeRecord] = []
    versions: list[Version] = []
    changes_at: datetime | None = None
    tie_start = -1
    previous: datetime | None = None
    for modified, tid, index in shop.modified_newest_first(start, end):
        record = trades[tid]
        history = record.versions
        version = history[-1]
        if version.visible_at <= now:
            if index != len(history) - 1:
                continue  # a newer version is visible, listed at its own time if in the window
        else:
            visible, pending = _visible_version(history, now)
            changes_at = pending if changes_at is None or pending < changes_at else changes_at
            if visible is None or visible is not history[index]:
                continue
            version = visible
        if record.type not in types or (status is not None and version.status != status):
            continue
        if previous is not None and previous - modified < SECOND and previous.second == modified.second:
            if tie_start < 0:
                tie_start = len(records) - 1  # the previous row begins a run of one printed second
        elif tie_start >= 0:
            _order_ties(records, versions, tie_start)
            tie_start = -1
        records.append(record)
        versions.append(version)
        previous = modified
    if tie_start >= 0:
        _order_ties(records, versions, tie_start)
    return Listing(records, versions), changes_at


def _visible_version(versions: Sequence[Version], now: datetime) -> tuple[Version | None, datetime]:
    """The newest version visible at ``now`` (None: none yet), and when a newer one becomes visible."""
    pending = versions[-1].visible_at
    for version in reversed(versions):
        if version.visible_at <= now:
            return version, pending
        pending = min(pending, version.visible_at)
    return None, pending


def _order_ties(records: list[TradeRecord], versions: list[Version], start: int) -> None:
    """Order the rows from ``start`` on (one printed second) by ``tid``, descending.

    The index holds a second's trades by milliseconds; replies print whole seconds, and TOP's backend orders ties by id.
    """
    tied = sorted(zip(records[start:], versions[start:], strict=True), key=lambda row: row[0].tid, reverse=True)
    records[start:] = [record for record, _ in tied]
    versions[start:] = [version for _, version in tied]
