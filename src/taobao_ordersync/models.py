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
    """A sub-order (``orders.order[]``) of a trade."""

    oid: int
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
    """One page of a list call: trades plus whichever count TOP sent."""

    trades: tuple[Trade, ...]
    total_results: int | None = None
    has_next: bool | None = None
