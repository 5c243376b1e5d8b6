"""The TOP wire protocol, without I/O: parameters, envelopes, lists, errors.

Shared by the client (which encodes requests and decodes replies) and the
emulator (which does the opposite), so both speak exactly one dialect.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from taobao_ordersync._time import format_time
from taobao_ordersync.errors import (
    ApiError,
    AuthenticationError,
    BusinessError,
    InvalidRequestError,
    PermissionDeniedError,
    RateLimitedError,
    ResponseFormatError,
    ServerError,
    WindowTooLargeError,
)
from taobao_ordersync.signing import SignMethod, sign

JsonObject = dict[str, Any]


def _json_parser() -> tuple[str, Callable[[bytes], Any]]:
    """orjson when installed (the ``fast`` extra: a page reads faster than ``json.loads`` alone), else json."""
    try:
        from orjson import loads as fast
    except ImportError:  # pragma: no cover - depends on the environment
        return "json", json.loads

    def loads(body: bytes) -> Any:
        try:
            return fast(body)
        except ValueError:
            # Whatever orjson refuses (e.g. lone surrogates) the standard library decides, and words the error.
            return json.loads(body)

    return "orjson", loads


#: The JSON parser of replies, ``"orjson"`` or ``"json"``, and the function itself.
JSON_PARSER, loads = _json_parser()
ParamValue = str | int | bool | datetime | Decimal | Iterable[str] | None

API_VERSION: Final = "2.0"

#: Every trade type TOP documents. Without ``type`` the list APIs return only
#: DEFAULT_TRADE_TYPES, silently hiding the rest (seed article, "way 5").
ALL_TRADE_TYPES: Final[tuple[str, ...]] = (
    "fixed", "auction", "guarantee_trade", "step", "independent_simple_trade",
    "independent_shop_trade", "auto_delivery", "ec", "cod", "game_equipment",
    "shopex_trade", "netcn_trade", "external_trade", "instant_trade", "b2c_cod",
    "hotel_trade", "super_market_trade", "super_market_cod_trade", "taohua", "waimai",
    "o2o_offlinetrade", "nopaid", "eticket", "tmall_i18n", "insurance_plus", "finance",
    "pre_auth_type", "lazada",
)  # fmt: skip
#: Types TOP documents only on the response side (top-api.md §6.6): never requested, still delivered.
RESPONSE_ONLY_TRADE_TYPES: Final[tuple[str, ...]] = ("fenxiao",)
#: Every type name this library knows; a reply with another one is delivered too, and logged once.
KNOWN_TRADE_TYPES: Final = frozenset(ALL_TRADE_TYPES + RESPONSE_ONLY_TRADE_TYPES)
DEFAULT_TRADE_TYPES: Final[tuple[str, ...]] = (
    "guarantee_trade",
    "auto_delivery",
    "ec",
    "cod",
    "step",
)

#: Fields the list APIs return by default in this library: enough for most order managers.
DEFAULT_TRADE_FIELDS: Final[tuple[str, ...]] = (
    "tid", "status", "type", "created", "modified", "pay_time", "consign_time", "end_time",
    "payment", "total_fee", "post_fee", "discount_fee", "buyer_nick", "buyer_open_uid",
    "seller_nick", "receiver_state", "receiver_city", "num", "title", "orders",
)  # fmt: skip

MAX_PAGE_SIZE: Final = 100
#: How far back Taobao lists trades (top-api.md §6.2: "last three months").
HORIZON: Final = timedelta(days=90)
#: The longest span one increment call may cover (top-api.md §6.3).
MAX_INCREMENT_SPAN: Final = timedelta(days=1)
#: Above this many trades a list window tends to time out (seed article, technique 10).
MAX_WINDOW_TRADES: Final = 20_000

_BAN_PATTERN = re.compile(r"ban will last for (\d+(?:\.\d+)?) more seconds", re.IGNORECASE)


def response_key(method: str) -> str:
    """``taobao.trades.sold.get`` -> ``trades_sold_get_response``."""
    name = method.removeprefix("taobao.")
    return name.replace(".", "_") + "_response"


def to_param(value: ParamValue) -> str:
    """Format one parameter value the way the official SDKs do."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, str | int | Decimal):
        return str(value)
    return ",".join(value)


def signed_params(
    method: str,
    params: Mapping[str, ParamValue],
    *,
    app_key: str,
    secret: str,
    sign_method: SignMethod,
    timestamp: datetime,
    session: str | None = None,
    simplify: bool = False,
) -> dict[str, str]:
    """All parameters of one call, empty ones dropped, with ``sign`` added."""
    merged: dict[str, ParamValue] = {
        "method": method,
        "app_key": app_key,
        "timestamp": timestamp,
        "v": API_VERSION,
        "format": "json",
        "sign_method": sign_method,
        "session": session,
        "simplify": simplify or None,
        **params,
    }
    encoded = {name: to_param(value) for name, value in merged.items()}
    encoded = {name: text for name, text in encoded.items() if text != ""}
    encoded["sign"] = sign(encoded, secret, sign_method)
    return encoded


def parse_ban_seconds(*texts: str | None) -> float | None:
    """Seconds from "This ban will last for N more seconds", if any text says so."""
    for text in texts:
        if text and (match := _BAN_PATTERN.search(text)):
            return float(match.group(1))
    return None


def _error_class(code: int, sub_code: str) -> type[ApiError]:
    """Pick the error class: by ``sub_code`` first, then by ``code`` (top-api.md §5)."""
    if sub_code.startswith("accesscontrol.") or sub_code == "isp.call-limited":
        return RateLimitedError
    if sub_code.startswith("isp.top-remote-connection-timeout"):
        return WindowTooLargeError
    if sub_code.startswith("isp."):
        return ServerError
    if sub_code.startswith(("isv.invalid-parameter", "isv.missing-parameter")):
        return InvalidRequestError
    if sub_code.startswith("isv.permission"):
        return PermissionDeniedError
    if sub_code in ("invalid-sessionkey", "session-is-blank", "isv.invalid-sessionkey"):
        return AuthenticationError
    if sub_code.startswith("isv."):
        return BusinessError
    if code in (4, 5, 6, 7, 8):
        return RateLimitedError
    if code in (26, 27):
        return AuthenticationError
    if code in (11, 12, 13):
        return PermissionDeniedError
    if code == 9 or 21 <= code <= 25 or 28 <= code <= 34 or 40 <= code <= 43:
        return InvalidRequestError
    if code == 10:
        return ServerError
    return BusinessError


def api_error(payload: Mapping[str, Any], *, method: str | None = None) -> ApiError:
    """Build the typed exception for one ``error_response`` object."""
    try:
        code = int(payload.get("code", 0))
    except (TypeError, ValueError):
        code = 0
    sub_code = str(payload.get("sub_code") or "")
    fields: dict[str, Any] = {
        "code": code,
        "msg": str(payload.get("msg") or ""),
        "sub_code": sub_code or None,
        "sub_msg": payload.get("sub_msg"),
        "request_id": payload.get("request_id"),
        "method": method,
    }
    cls = _error_class(code, sub_code)
    if cls is RateLimitedError:
        return RateLimitedError(retry_after=parse_ban_seconds(fields["sub_msg"], fields["msg"]), **fields)
    return cls(**fields)


def decode_response(method: str, status: int, body: bytes, *, simplify: bool = False) -> JsonObject:
    """Check one HTTP reply and return the inside of its ``<name>_response`` envelope.

    Raises:
        ResponseFormatError: non-200 status, a body that is not a JSON object, or no envelope.
        ApiError: (a subclass of) for an ``error_response``.
    """
    if status != 200:
        snippet = body[:120].decode("utf-8", "replace").strip()
        raise ResponseFormatError(
            f"HTTP {status} from the TOP gateway for {method}: {snippet!r}",
            status=status,
            is_transient=status >= 500 or status == 429,
        )
    try:
        document = loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        snippet = body[:80].decode("utf-8", "replace").strip()
        raise ResponseFormatError(
            f"{method}: reply is not JSON (truncated or a proxy page?): {snippet!r}",
            is_transient=True,
        ) from exc
    if not isinstance(document, dict):
        raise ResponseFormatError(f"{method}: reply is JSON but not an object", is_transient=True)
    error = document.get("error_response")
    if isinstance(error, dict):
        raise api_error(error, method=method)
    inner = document.get(response_key(method))
    if isinstance(inner, dict):
        return inner
    if simplify:
        return document
    raise ResponseFormatError(f"{method}: reply has no {response_key(method)!r} envelope")


def unwrap_list(value: Any) -> list[Any]:
    """A TOP list in any shape it arrives in: absent, ``{}``, ``{"trade": [...]}``, ``[...]``."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if not value:
            return []
        if len(value) == 1:
            (inner,) = value.values()
            if isinstance(inner, list):
                return inner
            if isinstance(inner, dict):  # XML-converted bodies carry one item unwrapped
                return [inner]
    raise ResponseFormatError(f"expected a TOP list, got {type(value).__name__}")


def wrap_lists(value: Any) -> Any:
    """Non-simplified shape: every list becomes ``{"<name minus s>": [...]}`` (emulator side)."""
    if isinstance(value, dict):
        return {
            key: {key[:-1]: [wrap_lists(item) for item in inner]} if isinstance(inner, list) else wrap_lists(inner)
            for key, inner in value.items()
        }
    return value


def success_body(method: str, payload: Mapping[str, Any], *, simplify: bool) -> JsonObject:
    """The JSON document TOP sends for a success (emulator side)."""
    if simplify:
        return dict(payload)
    return {response_key(method): wrap_lists(dict(payload))}


def error_body(
    code: int,
    msg: str,
    *,
    request_id: str,
    sub_code: str | None = None,
    sub_msg: str | None = None,
) -> JsonObject:
    """The JSON document TOP sends for an error (emulator side)."""
    error: JsonObject = {"code": code, "msg": msg}
    if sub_code:
        error["sub_code"] = sub_code
    if sub_msg:
        error["sub_msg"] = sub_msg
    error["request_id"] = request_id
    return {"error_response": error}
