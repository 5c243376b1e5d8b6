"""Signing matches TOP's three methods (vectors from reference/top-api.md §3.3)."""

import pytest

from taobao_ordersync._wire import signed_params
from taobao_ordersync.signing import canonical_string, sign

PARAMS = {
    "method": "taobao.time.get",
    "app_key": "12345678",
    "timestamp": "2024-01-02 03:04:05",
    "v": "2.0",
    "format": "json",
    "session": "sess-abc",
    "simplify": "true",
}


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("md5", "D3746EFE205EB474174C34AA2E1422BB"),
        ("hmac", "F9195D7C7C80A832686184247F49A477"),
        ("hmac-sha256", "486EAEBC508368DE9F76A7C0B744EA7E7E957470388B19CC97265636E4E78B98"),
    ],
)
def test_sign_vectors(method: str, expected: str) -> None:
    """Each sign_method reproduces the reference vector."""
    assert expected == sign({**PARAMS, "sign_method": method}, "test_secret", method)  # type: ignore[arg-type]


def test_canonical_string_sorts_and_skips_sign_and_empties() -> None:
    """The signed string is name+value sorted by name, without sign or empty values."""
    params = {**PARAMS, "sign_method": "md5", "sign": "XXX", "empty": ""}

    assert (
        "app_key12345678formatjsonmethodtaobao.time.getsessionsess-abcsign_methodmd5"
        "simplifytruetimestamp2024-01-02 03:04:05v2.0"
    ) == canonical_string(params)


def test_unknown_sign_method_is_refused() -> None:
    """An unknown method is a ValueError, not a silent fallback."""
    with pytest.raises(ValueError, match="sign_method"):
        sign(PARAMS, "s", "sha1")  # type: ignore[arg-type]


def test_signed_params_drop_empty_values_and_sign_the_rest() -> None:
    """None and empty parameters are neither sent nor signed; the result verifies."""
    from datetime import datetime

    from taobao_ordersync._time import CST

    form = signed_params(
        "taobao.trades.sold.get",
        {"fields": ("tid", "modified"), "status": None, "use_has_next": True},
        app_key="k",
        secret="s",
        sign_method="hmac",
        timestamp=datetime(2024, 1, 2, 3, 4, 5, tzinfo=CST),
    )

    assert "status" not in form
    assert "session" not in form
    assert "tid,modified" == form["fields"]
    assert "true" == form["use_has_next"]
    assert "2024-01-02 03:04:05" == form["timestamp"]
    assert sign(form, "s", "hmac") == form["sign"]
