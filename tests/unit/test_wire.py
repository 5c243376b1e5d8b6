"""Envelopes, list shapes and error classification, with real TOP error bodies."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from taobao_ordersync import _wire
from taobao_ordersync._convert import ListQuery, structure_page, structure_trade
from taobao_ordersync._time import CST
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


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


def test_response_key() -> None:
    """The envelope is the method without 'taobao.', dots as underscores."""
    assert "trades_sold_increment_get_response" == _wire.response_key("taobao.trades.sold.increment.get")
    assert "time_get_response" == _wire.response_key("taobao.time.get")
    assert "tmall_x_get_response" == _wire.response_key("tmall.x.get")


def test_decode_default_envelope() -> None:
    """A default (non-simplified) reply is unwrapped from <name>_response."""
    raw = body({"time_get_response": {"time": "2024-01-02 03:04:05", "request_id": "abc"}})

    assert "2024-01-02 03:04:05" == _wire.decode_response("taobao.time.get", 200, raw)["time"]


def test_decode_simplified_envelope() -> None:
    """A simplified reply has no wrapper; it is taken from the root."""
    raw = body({"time": "2024-01-02 03:04:05", "request_id": "abc"})

    assert "abc" == _wire.decode_response("taobao.time.get", 200, raw, simplify=True)["request_id"]


def test_decode_without_envelope_when_not_simplified_is_an_error() -> None:
    """A reply with no envelope is never read as 'no data'."""
    with pytest.raises(ResponseFormatError, match="envelope"):
        _wire.decode_response("taobao.time.get", 200, body({"something": 1}))


@pytest.mark.parametrize(
    ("status", "payload", "transient"),
    [
        (502, b"<html>502 Bad Gateway</html>", True),
        (503, b"", True),
        (404, b"not found", False),
        (200, b'{"trades_sold_incr', True),
        (200, b"<html>proxy</html>", True),
        (200, b"[1, 2]", True),
    ],
)
def test_bad_replies_are_format_errors(status: int, payload: bytes, transient: bool) -> None:
    """HTTP errors and non-JSON bodies raise, flagged transient when a retry can help."""
    with pytest.raises(ResponseFormatError) as caught:
        _wire.decode_response("taobao.trades.sold.get", status, payload)

    assert transient == caught.value.is_transient
    assert status == caught.value.status


# Real bodies quoted in top-api.md §4-§5.
ERROR_BODIES: list[tuple[dict[str, Any], type[ApiError]]] = [
    (
        {
            "code": 7,
            "msg": "App Call Limited",
            "sub_code": "accesscontrol.limited-by-app-api-access-count",
            "sub_msg": "This ban will last for 2 more seconds",
        },
        RateLimitedError,
    ),
    ({"code": 27, "msg": "Invalid session", "sub_code": "invalid-sessionkey", "sub_msg": "非法或过期的SessionKey参数"}, AuthenticationError),
    ({"code": 26, "msg": "Missing Session", "sub_code": "session-is-blank"}, AuthenticationError),
    ({"code": 31, "msg": "Invalid timestamp", "request_id": "16nqyqgiyh3oa"}, InvalidRequestError),
    ({"code": 25, "msg": "Invalid Signature"}, InvalidRequestError),
    ({"code": 11, "msg": "Insufficient ISV Permissions", "sub_code": "isv.permission-api-package-empty"}, PermissionDeniedError),
    ({"code": 12, "msg": "Insufficient User Permissions"}, PermissionDeniedError),
    ({"code": 50, "msg": "Remote service error", "sub_code": "isv.invalid-parameter", "sub_msg": "非法参数"}, InvalidRequestError),
    ({"code": 530, "msg": "Remote service error", "sub_code": "isv.missing-parameter:image"}, InvalidRequestError),
    ({"code": 15, "msg": "Remote service error", "sub_code": "isp.top-remote-service-unavailable"}, ServerError),
    ({"code": 15, "msg": "Remote service error", "sub_code": "isp.top-remote-connection-timeout"}, WindowTooLargeError),
    ({"code": 10, "msg": "Service Currently Unavailable"}, ServerError),
    ({"code": 15, "msg": "Remote service error", "sub_code": "isv.trade-not-exist", "sub_msg": "交易订单不存在"}, BusinessError),
    ({"code": 15, "msg": "Remote service error", "sub_code": "isp.call-limited"}, RateLimitedError),
    ({"code": 22, "msg": "Invalid Method"}, InvalidRequestError),
]  # fmt: skip


@pytest.mark.parametrize(("error", "expected"), ERROR_BODIES)
def test_error_classification(error: dict[str, Any], expected: type[ApiError]) -> None:
    """error_response is classified by sub_code first, then code; fields are kept."""
    raw = body({"error_response": {**error, "request_id": "rid1"}})

    with pytest.raises(ApiError) as caught:
        _wire.decode_response("taobao.trades.sold.get", 200, raw)

    assert expected is type(caught.value)
    assert error["code"] == caught.value.code
    assert error.get("sub_code") == caught.value.sub_code
    assert "rid1" == caught.value.request_id


def test_ban_seconds_are_parsed() -> None:
    """Code 7 carries the ban length; a missing length stays None."""
    long_ban = _wire.api_error(
        {"code": 7, "msg": "App Call Limited", "sub_code": "accesscontrol.limited-by-app-access-count",
         "sub_msg": "This ban will last for 31062 more seconds"}
    )  # fmt: skip
    no_length = _wire.api_error({"code": 7, "msg": "App Call Limited"})

    assert isinstance(long_ban, RateLimitedError)
    assert 31062.0 == long_ban.retry_after
    assert isinstance(no_length, RateLimitedError)
    assert no_length.retry_after is None


@pytest.mark.parametrize(
    "trades",
    [None, {}, {"trade": []}, []],
)
def test_empty_lists_in_every_shape(trades: Any) -> None:
    """Absent, {}, {"trade": []} and [] all mean an empty page."""
    inner: dict[str, Any] = {"total_results": 0}
    if trades is not None:
        inner["trades"] = trades

    query = ListQuery(
        time_field="modified",
        start=datetime(2024, 1, 1, tzinfo=CST),
        end=datetime(2024, 1, 2, tzinfo=CST),
        fields=frozenset({"tid", "modified"}),
        page_size=100,
        use_has_next=False,
    )

    page = structure_page(inner, query)
    assert () == page.trades
    assert () == page.tids


def test_wrap_and_unwrap_round_trip() -> None:
    """The emulator's double wrapping is undone by the client's unwrapping."""
    payload = {"trades": [{"tid": 1, "orders": [{"oid": 2}]}], "total_results": 1}
    wrapped = _wire.success_body("taobao.trades.sold.get", payload, simplify=False)

    inner = wrapped["trades_sold_get_response"]
    assert {"trade": [{"tid": 1, "orders": {"order": [{"oid": 2}]}}]} == inner["trades"]
    trade = structure_trade(
        {"tid": 1, "modified": "2024-01-02 03:04:05", "orders": inner["trades"]["trade"][0]["orders"]}
    )
    assert (2,) == tuple(order.oid for order in trade.orders)


# -- the reply parser: json, or orjson with the fast extra (issue 15) ----------------


@pytest.mark.parametrize("parser", ["json", "orjson"])
def test_both_parsers_read_replies_alike(monkeypatch: pytest.MonkeyPatch, parser: str) -> None:
    """Big ids stay exact ints, Chinese text and money strings survive, bad bodies are transient format errors."""
    if parser == "orjson":
        pytest.importorskip("orjson")
        assert "orjson" == _wire.JSON_PARSER
    monkeypatch.setattr(_wire, "loads", _wire._json_parser()[1] if parser == "orjson" else json.loads)
    body = json.dumps(
        {
            "trades_sold_get_response": {
                "total_results": 1,
                "trades": {"trade": [{"tid": 4000010000622536347, "buyer_nick": "买家", "payment": "1.10"}]},
            }
        },
        ensure_ascii=False,
    ).encode()

    inner = _wire.decode_response("taobao.trades.sold.get", 200, body)

    assert [{"tid": 4000010000622536347, "buyer_nick": "买家", "payment": "1.10"}] == inner["trades"]["trade"]
    for bad in (b'{"trades_sold_get_resp', b"\xff\xfe", b"[1]"):
        with pytest.raises(ResponseFormatError) as caught:
            _wire.decode_response("taobao.trades.sold.get", 200, bad)
        assert caught.value.is_transient
