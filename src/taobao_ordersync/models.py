"""Value types: shops, trades and pages.

``Shop`` and ``TradePage`` are frozen attrs classes; ``Trade`` and ``Order`` are
read-only classes with ``__slots__`` around the JSON object TOP sent, whose fields
are parsed on first access (``_fields.Field``) so a page costs little more than
its ``json.loads``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from attrs import field, frozen

from taobao_ordersync._fields import (
    Field,
    Lazy,
    flatten_lists,
    read_bool,
    read_code,
    read_decimal,
    read_int,
    read_text,
    read_time,
    warn_once,
)
from taobao_ordersync._wire import unwrap_list
from taobao_ordersync.errors import ResponseFormatError

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


def _orders_of(trade: Trade) -> tuple[Order, ...]:
    value = trade._raw.get("orders")
    if value is None:
        return ()
    try:
        items = unwrap_list(value)
    except ResponseFormatError:
        items = None
    if items is None or not all(type(item) is dict for item in items):
        warn_once("orders", "cannot read the trade field 'orders' (e.g. %.40r); kept in raw only", value)
        return ()
    return tuple(make_order(item) for item in items)


class Order(Lazy):
    """A sub-order (``orders[]``) of a trade, read lazily from ``raw``.

    Every attribute may be ``None``: absent (not requested: ``fields`` may name single
    sub-order fields, e.g. ``orders.title``; or empty: ``""`` reads as ``None``), or
    unreadable (then the value is still in ``raw``, and the library logs a warning
    once per field name). Each is parsed on first access and then cached.

    Types: ids and counts are ``int`` (also when sent as strings), money is ``Decimal``
    (also when sent as a JSON number), times are aware datetimes in China time,
    flags are ``bool`` (also ``"true"``/``"false"``). ``sku_id`` and ``refund_id`` are
    strings, as TOP documents them. Unknown members stay in ``raw``.

    Build one with keyword arguments (``Order(oid=1, title="...")``) or from its JSON
    (``Order(raw={...})``); a keyword wins over ``raw``.
    """

    __slots__ = ()
    _label_prefix = "orders."

    oid = Field(read_int, "Sub-order id (``oid``, or ``oid_str`` when only that is sent).", alias="oid_str")
    status = Field(read_text, "The sub-order's own status (same values as ``Trade.status``).")
    refund_status = Field(read_text, "``NO_REFUND``, ``WAIT_SELLER_AGREE``, ..., ``SUCCESS``, ``CLOSED``.")
    refund_id = Field(read_code, "The latest refund's id.")
    title = Field(read_text, "Item title.")
    num_iid = Field(read_int, "Item id.")
    sku_id = Field(read_code, "SKU id (a string in TOP's documentation).")
    outer_iid = Field(read_code, "The seller's own item code.")
    outer_sku_id = Field(read_code, "The seller's own SKU code.")
    sku_properties_name = Field(read_text, "The SKU's properties, e.g. ``颜色分类:红色``.")
    cid = Field(read_int, "Item category id.")
    num = Field(read_int, "Quantity.")
    price = Field(read_decimal, "Unit price.")
    total_fee = Field(read_decimal, "price × num + adjust_fee − discount_fee.")
    payment = Field(read_decimal, "Amount paid for this sub-order.")
    discount_fee = Field(read_decimal, "Discount.")
    adjust_fee = Field(read_decimal, "Manual price adjustment.")
    divide_order_fee = Field(read_decimal, "Share of the trade's payment after all discounts.")
    part_mjz_discount = Field(read_decimal, "Share of shop-wide discounts.")
    consign_time = Field(read_time, "When this sub-order shipped.")
    end_time = Field(read_time, "When this sub-order finished or closed.")
    shipping_type = Field(read_text, "How it ships (``express``, ``free``, ...).")
    logistics_company = Field(read_text, "Carrier name.")
    invoice_no = Field(read_code, "Waybill number.")
    seller_type = Field(read_text, "``B`` (Tmall) or ``C`` (Taobao).")
    buyer_rate = Field(read_bool, "Whether the buyer has rated it.")
    seller_rate = Field(read_bool, "Whether the seller has rated it.")
    is_service_order = Field(read_bool, "Whether it is a service sub-order.")
    store_code = Field(read_code, "Warehouse code.")
    snapshot_url = Field(read_text, "Item snapshot URL.")

    def __init__(self, *, raw: Mapping[str, Any] | None = None, **fields: Any) -> None:
        self._raw = raw if type(raw) is dict else dict(raw or {})
        self._cache = _given(type(self), fields)

    @property
    def raw(self) -> Mapping[str, Any]:
        """The sub-order's JSON object as received, its lists unwrapped (see ``Trade.raw``)."""
        values = self._values()
        if "raw" not in values:
            values["raw"] = flatten_lists(self._raw)
        return values["raw"]  # type: ignore[no-any-return]

    def _key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _FIELDS[Order])

    def __eq__(self, other: object) -> bool:
        if type(other) is not Order:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((Order, self.oid))

    def __repr__(self) -> str:
        return f"Order(oid={self.oid!r}, title={self.title!r}, num={self.num!r}, payment={self.payment!r})"


class Trade(Lazy):
    """A Taobao trade as listed or fetched, read lazily from its JSON.

    ``tid`` (an exact ``int``: ids exceed 2**53, never pass one through a float),
    ``modified`` and ``created`` are read when the page arrives: they are the only
    required fields (design rule 17) and drive the sync. Every other attribute is
    parsed from ``raw`` on first access and cached; it is ``None`` when it was not
    requested, is empty (``""``), or cannot be read (then it stays in ``raw`` and the
    library logs a warning once per field name); no field ever fails a page.

    Types: times are aware datetimes in China Standard Time (UTC+8); money is
    ``Decimal`` (sent as a string or a number); ids and counts are ``int`` (sent as a
    number or a string); everything else is ``str``. ``orders`` is a tuple of
    ``Order`` (empty when absent or unreadable), built on first access. ``type`` is
    delivered as sent, even a type the library does not know. The full list of
    attributes is in the API reference.

    ``raw`` is the trade's JSON object as received, with one difference: TOP's
    double-wrapped lists (``"orders": {"order": [...]}`` without ``simplify``) are
    unwrapped (``"orders": [...]``), so ``raw`` has the same shape whatever
    ``TopClient(simplify=...)`` was. Fields this class does not name are there.

    Equal trades have equal ``tid``, ``modified``, ``created`` and typed attributes
    (``raw``'s other members are not compared); the hash is that of
    ``(tid, modified)``. Trades are read-only.

    Build one with keyword arguments (``Trade(tid=1, modified=..., status="...")``)
    or around a JSON object (``Trade(tid=1, modified=..., raw={...})``); a keyword
    wins over ``raw``.
    """

    __slots__ = ("_created", "_modified", "_tid")

    _tid: int
    _modified: datetime
    _created: datetime | None

    status = Field(read_text, "``WAIT_BUYER_PAY``, ``WAIT_SELLER_SEND_GOODS``, ..., ``TRADE_FINISHED``, ...")
    type = Field(read_text, "Trade type as sent (``fixed``, ``auction``, ``step``, ...; unknown names too).")
    pay_time = Field(read_time, "When the buyer paid.")
    consign_time = Field(read_time, "When the seller shipped.")
    end_time = Field(read_time, "When the trade finished or closed.")
    payment = Field(read_decimal, "Amount paid (postage included).")
    total_fee = Field(read_decimal, "Goods total (price × quantity).")
    post_fee = Field(read_decimal, "Postage.")
    discount_fee = Field(read_decimal, "Discount.")
    adjust_fee = Field(read_decimal, "Manual price adjustment.")
    received_payment = Field(read_decimal, "Amount the seller has received.")
    commission_fee = Field(read_decimal, "Commission.")
    price = Field(read_decimal, "Unit price (single-order trades).")
    step_paid_fee = Field(read_decimal, "Amount paid so far of a step (presale) trade.")
    buyer_nick = Field(read_text, "The buyer's nickname (may be masked).")
    buyer_open_uid = Field(read_text, "The buyer's stable open id for this app.")
    seller_nick = Field(read_text, "The seller's nickname.")
    title = Field(read_text, "Shop name.")
    num_iid = Field(read_int, "Item id (single-order trades).")
    num = Field(read_int, "Quantity (0 on multi-order trades).")
    pic_path = Field(read_text, "Item picture URL.")
    shipping_type = Field(read_text, "How it ships (``express``, ``free``, ``virtual``, ...).")
    receiver_name = Field(read_text, "Receiver name (masked).")
    receiver_state = Field(read_text, "Receiver province.")
    receiver_city = Field(read_text, "Receiver city.")
    receiver_district = Field(read_text, "Receiver district.")
    receiver_town = Field(read_text, "Receiver town.")
    receiver_address = Field(read_text, "Receiver address (masked).")
    receiver_zip = Field(read_code, "Receiver postcode.")
    receiver_mobile = Field(read_code, "Receiver mobile (masked).")
    receiver_phone = Field(read_code, "Receiver phone (masked).")
    receiver_country = Field(read_text, "Receiver country.")
    buyer_message = Field(read_text, "The buyer's message.")
    seller_memo = Field(read_text, "The seller's memo.")
    seller_flag = Field(read_int, "The seller's flag colour, 0-5.")
    step_trade_status = Field(read_text, "Step trade status (``FRONT_PAID_FINAL_NOPAID``, ...).")
    alipay_no = Field(read_code, "Alipay transaction number.")
    trade_from = Field(read_text, "Where the trade was placed (``WAP``, ``TAOBAO``, ...).")
    oaid = Field(read_text, "Encrypted receiver id (fullinfo with receiver fields).")

    def __init__(
        self,
        *,
        tid: int,
        modified: datetime,
        created: datetime | None = None,
        raw: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        if modified.tzinfo is None or (created is not None and created.tzinfo is None):
            raise ValueError("Trade times must be timezone-aware")
        self._tid = tid
        self._modified = modified
        self._created = created
        self._raw = raw if type(raw) is dict else dict(raw or {})
        if "orders" in fields:
            fields["orders"] = tuple(fields["orders"])
        self._cache = _given(type(self), fields)

    @property
    def tid(self) -> int:
        """Trade id (``tid``, or ``tid_str`` when only that is sent)."""
        return self._tid

    @property
    def modified(self) -> datetime:
        """Last change, an aware datetime in China time; ``increments`` deliver by it."""
        return self._modified

    @property
    def created(self) -> datetime | None:
        """Creation time; ``None`` only when ``fields`` left it out."""
        return self._created

    @property
    def orders(self) -> tuple[Order, ...]:
        """The sub-orders, built on first access; ``()`` when absent or unreadable (logged once)."""
        values = self._values()
        orders: tuple[Order, ...] | None = values.get("orders")
        if orders is None:
            orders = values["orders"] = _orders_of(self)
        return orders

    @property
    def raw(self) -> Mapping[str, Any]:
        """The trade's JSON object as received, lists unwrapped: the same shape with or without ``simplify``."""
        values = self._values()
        if "raw" not in values:
            values["raw"] = flatten_lists(self._raw)
        return values["raw"]  # type: ignore[no-any-return]

    def _key(self) -> tuple[Any, ...]:
        typed = tuple(getattr(self, name) for name in _FIELDS[Trade])
        return (self._tid, self._modified, self._created, *typed, self.orders)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Trade:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self._tid, self._modified))

    def __repr__(self) -> str:
        return f"Trade(tid={self._tid!r}, modified={self._modified!r}, status={self.status!r}, type={self.type!r})"


#: The lazily read attributes of each model, in declaration order.
_FIELDS: Final[dict[type[Lazy], tuple[str, ...]]] = {
    model: tuple(name for name, value in vars(model).items() if isinstance(value, Field)) for model in (Order, Trade)
}
_NAMES: Final[dict[type[Lazy], frozenset[str]]] = {
    Order: frozenset(_FIELDS[Order]),
    Trade: frozenset((*_FIELDS[Trade], "orders")),
}


def _given(model: type[Lazy], fields: dict[str, Any]) -> dict[str, Any] | None:
    """Attributes passed by keyword: checked by name, then cached as if read."""
    if not fields:
        return None
    unknown = sorted(set(fields) - _NAMES[model])
    if unknown:
        raise TypeError(f"{model.__name__}() got unexpected keyword arguments: {', '.join(unknown)}")
    return fields


_new_order = Order.__new__
_new_trade = Trade.__new__


def make_order(raw: dict[str, Any]) -> Order:
    """An ``Order`` around one JSON object, nothing read yet (the converter's fast path)."""
    order = _new_order(Order)
    order._raw = raw
    order._cache = None
    return order


def make_trade(raw: dict[str, Any], tid: int, modified: datetime, created: datetime | None) -> Trade:
    """A ``Trade`` around one JSON object whose required fields were read (the converter's fast path)."""
    trade = _new_trade(Trade)
    trade._raw = raw
    trade._cache = None
    trade._tid = tid
    trade._modified = modified
    trade._created = created
    return trade


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
