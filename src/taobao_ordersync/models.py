"""Value types: shops, trades and pages. Frozen attrs classes built by ``_convert``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from attrs import field, frozen

__all__ = ["Order", "Shop", "Trade", "TradePage"]


def _not_blank(_instance: object, attribute: Any, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        from taobao_ordersync.errors import ConfigurationError

        raise ConfigurationError(f"Shop.{attribute.name} must be a non-empty string")


@frozen(kw_only=True)
class Shop:
    """One seller: a stable ``id`` of your choosing and the seller's TOP session key.

    The session key is a secret: it is left out of ``repr`` and never stored.
    """

    id: str = field(validator=_not_blank)
    session: str = field(validator=_not_blank, repr=False)


@frozen(kw_only=True)
class Order:
    """A sub-order (``orders.order[]``) of a trade.

    Every attribute may be ``None``: absent because it was not requested (``fields``
    may name single sub-order fields, e.g. ``orders.title``), or unreadable (then the
    value is still in ``raw``, and the library logs a warning once per field name).
    """

    oid: int | None = None
    status: str | None = None
    title: str | None = None
    num: int | None = None
    price: Decimal | None = None
    payment: Decimal | None = None
    refund_status: str | None = None
    raw: Mapping[str, Any] = field(factory=dict, repr=False, eq=False)


@frozen(kw_only=True)
class Trade:
    """A Taobao trade as listed or fetched.

    ``tid`` is an int (it exceeds 2**53, so never pass it through a float);
    times are aware datetimes in China Standard Time; ``raw`` is the trade's JSON
    object exactly as received, for fields this class does not name.

    Only ``tid``, ``modified`` and ``created`` must be readable; any other field that
    was not requested or cannot be read is ``None`` (``status`` is ``""`` and ``orders``
    ``()``), still in ``raw``, and an unreadable one is logged once per field name.
    ``type`` is delivered as sent, even a type the library does not know.
    """

    tid: int
    modified: datetime
    status: str = ""
    type: str | None = None
    created: datetime | None = None
    payment: Decimal | None = None
    orders: tuple[Order, ...] = ()
    raw: Mapping[str, Any] = field(factory=dict, repr=False, eq=False)


@frozen(kw_only=True)
class TradePage:
    """One page of a list call: its trade ids, its trades, and the count the call asked for.

    ``tids`` is always filled, in list order. ``trades`` is filled only when the call's
    ``fields`` include ``modified`` (a ``Trade`` needs it); a ``fields=("tid",)`` call,
    the cheapest way to count or list a window, gives ``tids`` and ``total_results``
    only. ``total_results`` is there unless the call used ``use_has_next``, and
    ``has_next`` is there when it did.
    """

    trades: tuple[Trade, ...] = ()
    tids: tuple[int, ...] = field()
    total_results: int | None = None
    has_next: bool | None = None

    @tids.default
    def _tids_of_trades(self) -> tuple[int, ...]:
        return tuple(trade.tid for trade in self.trades)
