"""TOP's gateway, without I/O: the checks every call passes, in TOP's order, and the parameter readers.

A check that fails raises ``Refusal``, which the fake gateway turns into an ``error_response``.
The order (docs/emulator.md, "Validation order and error codes"): method, app key,
timestamp, version, format, signature (``check_system_parameters``); then the app's call
limit (``CallLimit``); then, for calls on a seller's behalf, the session (``shop_of_session``);
then each API's own parameters, read with the ``read_*`` helpers.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Final

from taobao_ordersync import _wire
from taobao_ordersync._time import parse_time, parse_timestamp_param
from taobao_ordersync.signing import SIGN_METHODS, sign
from taobao_ordersync.testing._chaos import Dice
from taobao_ordersync.testing._shop import ShopState

__all__ = [
    "CallLimit",
    "Refusal",
    "bad_param",
    "check_system_parameters",
    "read_fields",
    "read_flag",
    "read_int",
    "read_required_time",
    "read_time",
    "shop_of_session",
]

#: How far a request's ``timestamp`` may be from the gateway's clock (TOP: 10 minutes).
MAX_SKEW_SECONDS: Final = 600


class Refusal(Exception):
    """An ``error_response`` to answer with (control flow inside the fake gateway, never raised to users)."""

    def __init__(self, code: int, msg: str, sub_code: str | None = None, sub_msg: str | None = None) -> None:
        super().__init__(msg)
        self.code, self.msg, self.sub_code, self.sub_msg = code, msg, sub_code, sub_msg

    def __repr__(self) -> str:
        return f"Refusal({self.code}, {self.msg!r}, {self.sub_code!r})"


def bad_param(name: str, why: str) -> Refusal:
    """A business parameter TOP's backend refuses (code 15, ``isv.invalid-parameter:<name>``)."""
    return Refusal(15, "Remote service error", f"isv.invalid-parameter:{name}", why)


# -- system parameters ------------------------------------------------------------------


def check_system_parameters(
    params: Mapping[str, str], *, methods: Collection[str], app_key: str, app_secret: str, now: datetime
) -> str:
    """Check what every call carries, in TOP's order, and return the method.

    Raises:
        Refusal: the first check that fails (codes 21-25, 28-34).
    """
    method = params.get("method")
    if not method:
        raise Refusal(21, "Missing Method")
    if method not in methods:
        raise Refusal(22, "Invalid Method")
    if not params.get("app_key"):
        raise Refusal(28, "Missing App Key")
    if params["app_key"] != app_key:
        raise Refusal(29, "Invalid App Key")
    _check_timestamp(params.get("timestamp"), now)
    version = params.get("v")
    if not version:
        raise Refusal(32, "Missing Version")
    if version != _wire.API_VERSION:
        if version.replace(".", "").isdigit():
            raise Refusal(34, "Unsupported Version")
        raise Refusal(33, "Invalid Version")
    if params.get("format", "xml") != "json":
        raise Refusal(23, "Invalid Format", sub_msg="the emulator answers format=json only")
    _check_signature(params, app_secret)
    return method


def _check_timestamp(raw: str | None, now: datetime) -> None:
    if not raw:
        raise Refusal(30, "Missing Timestamp")
    try:
        stamp = parse_timestamp_param(raw)
    except ValueError:
        raise Refusal(31, "Invalid timestamp") from None
    if abs((stamp - now).total_seconds()) > MAX_SKEW_SECONDS:
        raise Refusal(31, "Invalid timestamp")


def _check_signature(params: Mapping[str, str], app_secret: str) -> None:
    given = params.get("sign")
    if not given:
        raise Refusal(24, "Missing Signature")
    sign_method = params.get("sign_method", "md5")
    if sign_method not in SIGN_METHODS:
        raise Refusal(25, "Invalid Signature", sub_msg=f"unknown sign_method {sign_method}")
    if given.upper() != sign(params, app_secret, sign_method):
        raise Refusal(25, "Invalid Signature")


# -- the app's call limit ---------------------------------------------------------------


class CallLimit:
    """Code-7 bans for the whole app: a ban in force, a chaos ban drawn, or ``Chaos.rate_limit`` exceeded.

    It runs on a monotonic clock (seconds), not on the gateway's clock, so ``Emulator.advance``
    jumps shop activity forward without lifting a ban or refilling the rate limit's bucket.
    """

    def __init__(self, dice: Dice) -> None:
        self.bans_issued = 0
        self._dice = dice
        self._ban_until = 0.0
        self._bucket = 0.0
        self._bucket_at = 0.0

    def check(self, monotonic: float) -> None:
        """Let one call through at ``monotonic``, or refuse it with code 7."""
        chaos = self._dice.chaos
        if monotonic < self._ban_until:
            self._ban(max(1, round(self._ban_until - monotonic)))
        if self._dice.bans():
            self._ban_until = monotonic + chaos.ban_seconds
            self._ban(chaos.ban_seconds)
        if chaos.rate_limit:
            # Token bucket with one second of burst.
            elapsed = monotonic - self._bucket_at
            self._bucket = min(chaos.rate_limit, self._bucket + elapsed * chaos.rate_limit)
            self._bucket_at = monotonic
            if self._bucket < 1:
                self._ban_until = monotonic + 1
                self._ban(1)
            self._bucket -= 1

    def _ban(self, seconds: int) -> None:
        self.bans_issued += 1
        raise Refusal(
            7,
            "App Call Limited",
            "accesscontrol.limited-by-api-access-count",
            f"This ban will last for {seconds} more seconds",
        )


# -- the session --------------------------------------------------------------------------


def shop_of_session(params: Mapping[str, str], shops_by_session: Mapping[str, ShopState]) -> ShopState:
    """The shop whose valid ``session`` the call carries.

    Raises:
        Refusal: 26 without a session, 27 for an unknown, replaced or expired one.
    """
    session = params.get("session")
    if not session:
        raise Refusal(26, "Missing Session", "session-is-blank")
    shop = shops_by_session.get(session)
    if shop is None or not shop.session_valid:
        raise Refusal(
            27, "Invalid session", "invalid-sessionkey", "非法或过期的SessionKey参数，请使用有效的SessionKey参数"
        )
    return shop


# -- business parameters ------------------------------------------------------------------


def read_fields(params: Mapping[str, str]) -> frozenset[str]:
    """``fields``: required, comma-separated, blanks ignored."""
    fields = params.get("fields", "")
    if not fields.strip():
        raise Refusal(40, "Missing Required Arguments:fields")
    return frozenset(name.strip() for name in fields.split(",") if name.strip())


def read_int(params: Mapping[str, str], name: str, *, default: int, low: int, high: int) -> int:
    """An optional integer in ``[low, high]`` (``default`` when absent or empty)."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise Refusal(41, f"Invalid Arguments:{name}")
    return int(raw)


def read_time(params: Mapping[str, str], name: str) -> datetime | None:
    """An optional ``yyyy-MM-dd HH:mm:ss`` (GMT+8) time."""
    raw = params.get(name)
    if not raw:
        return None
    try:
        return parse_time(raw)
    except ValueError:
        raise Refusal(41, f"Invalid Arguments:{name}") from None


def read_required_time(params: Mapping[str, str], name: str) -> datetime:
    """A required ``yyyy-MM-dd HH:mm:ss`` (GMT+8) time."""
    moment = read_time(params, name)
    if moment is None:
        raise Refusal(40, f"Missing Required Arguments:{name}")
    return moment


def read_flag(params: Mapping[str, str], name: str) -> bool:
    """A boolean: TOP's Java gateway reads ``true`` in any case (SDKs send ``True``)."""
    return params.get(name, "").strip().lower() == "true"
