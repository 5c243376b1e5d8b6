"""The one exception tree of taobao_ordersync.

Every failure the library reports is a ``TaobaoOrderSyncError``. Branches are
grouped by what the caller can do about them::

    TaobaoOrderSyncError
    ├── ConfigurationError (also ValueError)      fix the arguments
    ├── TransportError                            retried; network trouble
    │   ├── ConnectError                          gateway unreachable
    │   └── TransportTimeout (also TimeoutError)  no answer in time
    ├── ResponseFormatError                       body not JSON, HTTP error status, bad shape
    ├── ApiError                                  TOP said error_response (code, sub_code, ...)
    │   ├── RateLimitedError                      code 7 & co.; ``retry_after`` seconds
    │   ├── AuthenticationError                   26/27: the seller must re-authorise
    │   ├── PermissionDeniedError                 11/12/13: the app lacks a permission
    │   ├── InvalidRequestError                   9, 21-25, 28-34, 40-43, isv.invalid/missing-parameter
    │   ├── ServerError                           isp.*, 10, HTTP-level TOP trouble; retried
    │   │   └── WindowTooLargeError               a list window Taobao refused as too big
    │   └── BusinessError                         other isv.* rules, e.g. isv.trade-not-exist
    ├── CheckpointError                           checkpoint store trouble
    │   ├── CheckpointConflictError               another writer moved the checkpoint
    │   │   └── LeaseLostError                    this worker's lease on the shop is gone (fencing)
    │   ├── CheckpointCorruptError                stored data cannot be read
    │   ├── CheckpointVersionError                a checkpoint written by a newer library
    │   ├── StoreUnavailableError                 the database cannot be reached
    │   ├── SchemaVersionError                    the database was set up by a newer library
    │   └── HeartbeatFailedError                  a worker could not renew its leases for too long
    ├── SessionUnavailableError                   the app's session provider had no session for a shop
    └── SyncError                                 the sync engine refuses to risk a loss
        ├── CheckpointExpiredError                checkpoint older than the API's horizon
        ├── WindowTooDenseError                   one second Taobao will not list whole (retried later)
        └── TradeUnavailableError                 listed trades fullinfo does not know (retried later)

No foreign exception (aiohttp, asyncpg, sqlite3, json) reaches a caller; each is
translated at the boundary with ``raise ... from``. No message ever contains the
app secret or a session key.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BusinessError",
    "CheckpointConflictError",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointExpiredError",
    "CheckpointVersionError",
    "ConfigurationError",
    "ConnectError",
    "HeartbeatFailedError",
    "InvalidRequestError",
    "LeaseLostError",
    "PermissionDeniedError",
    "RateLimitedError",
    "ResponseFormatError",
    "SchemaVersionError",
    "ServerError",
    "SessionUnavailableError",
    "StoreUnavailableError",
    "SyncError",
    "TaobaoOrderSyncError",
    "TradeUnavailableError",
    "TransportError",
    "TransportTimeout",
    "WindowTooDenseError",
    "WindowTooLargeError",
]


class TaobaoOrderSyncError(Exception):
    """Root of every exception raised by taobao_ordersync."""


class ConfigurationError(TaobaoOrderSyncError, ValueError):
    """An argument or setting is invalid; nothing was sent."""


class TransportError(TaobaoOrderSyncError):
    """The request did not complete at the network level (retried)."""


class ConnectError(TransportError):
    """The gateway could not be reached or dropped the connection."""


class TransportTimeout(TransportError, TimeoutError):
    """No complete answer arrived within the configured timeout."""


class ResponseFormatError(TaobaoOrderSyncError):
    """The reply was not a TOP JSON envelope of the expected shape.

    ``status`` is the HTTP status; ``is_transient`` tells whether a retry can help
    (HTTP 5xx, an HTML error page or a truncated body from a proxy).
    """

    def __init__(self, message: str, *, status: int = 200, is_transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.is_transient = is_transient


class ApiError(TaobaoOrderSyncError):
    """TOP answered with an ``error_response``."""

    def __init__(
        self,
        *,
        code: int,
        msg: str = "",
        sub_code: str | None = None,
        sub_msg: str | None = None,
        request_id: str | None = None,
        method: str | None = None,
    ) -> None:
        self.code = code
        self.msg = msg
        self.sub_code = sub_code
        self.sub_msg = sub_msg
        self.request_id = request_id
        self.method = method
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [f"TOP error {self.code}: {self.msg}"]
        if self.sub_code:
            parts.append(f"[{self.sub_code}]")
        if self.sub_msg:
            parts.append(self.sub_msg)
        if self.method:
            parts.append(f"(method {self.method}")
            parts[-1] += f", request_id {self.request_id})" if self.request_id else ")"
        return " ".join(parts)


class RateLimitedError(ApiError):
    """Taobao throttled the app; ``retry_after`` is the ban in seconds, if stated."""

    def __init__(self, *, retry_after: float | None = None, **kwargs: object) -> None:
        self.retry_after = retry_after
        super().__init__(**kwargs)  # type: ignore[arg-type]


class AuthenticationError(ApiError):
    """The seller's session is missing, invalid or expired: re-authorise the shop."""


class PermissionDeniedError(ApiError):
    """The app or user lacks permission for this API."""


class InvalidRequestError(ApiError):
    """The request itself is wrong (a bug or bad argument); retrying cannot help."""


class ServerError(ApiError):
    """A transient failure inside Taobao (``isp.*``); retried with backoff."""


class WindowTooLargeError(ServerError):
    """Taobao timed out listing a window: split it rather than retry it."""


class BusinessError(ApiError):
    """A business rule refused the call (``isv.*``), e.g. a trade that does not exist."""


class CheckpointError(TaobaoOrderSyncError):
    """The checkpoint store failed."""


class CheckpointConflictError(CheckpointError):
    """The checkpoint changed since it was loaded: another worker owns this shop."""


class LeaseLostError(CheckpointConflictError):
    """The commit carried a stale fencing token: another worker now owns the shop.

    ``token`` is the fencing token the refused commit carried (None: the worker held no lease at all).
    """

    def __init__(self, message: str, *, token: int | None = None) -> None:
        super().__init__(message)
        self.token = token


class CheckpointCorruptError(CheckpointError):
    """A stored checkpoint cannot be decoded."""


class CheckpointVersionError(CheckpointError):
    """A stored checkpoint has a format newer than this library knows: a newer release wrote it.

    Not corruption: during a rolling upgrade the newer workers can read it. Upgrade this one.
    """

    def __init__(self, shop_id: str, *, found: int, known: int) -> None:
        self.shop_id = shop_id
        self.found = found
        self.known = known
        super().__init__(
            f"shop {shop_id!r}: checkpoint format {found} is newer than format {known}, the newest this "
            "taobao-ordersync reads; a newer release wrote it: upgrade this one"
        )


class StoreUnavailableError(CheckpointError):
    """The checkpoint database cannot be reached (down, wrong address, refused login)."""


class SchemaVersionError(CheckpointError):
    """The database holds a schema newer than this library understands: upgrade the library."""


class HeartbeatFailedError(CheckpointError):
    """A worker's heartbeats failed for ``give_up_after`` seconds: it gave up (the CLI exits with 11).

    The database was unreachable or refused the heartbeat (the cause is chained); the worker held no
    lease any more and synced nothing. Restart it (under a supervisor) once the database is fixed.
    """


class SessionUnavailableError(TaobaoOrderSyncError):
    """The application's session provider gave no usable session key for a shop."""


class SyncError(TaobaoOrderSyncError):
    """The sync engine stopped rather than risk losing trades."""


class CheckpointExpiredError(SyncError):
    """The checkpoint is older than the 3 months Taobao can list: a gap would open."""

    def __init__(self, shop_id: str, checkpoint: datetime, horizon: datetime) -> None:
        self.shop_id = shop_id
        self.checkpoint = checkpoint
        self.horizon = horizon
        super().__init__(
            f"shop {shop_id!r}: checkpoint {checkpoint:%Y-%m-%d %H:%M:%S} is older than "
            f"Taobao's 3-month horizon ({horizon:%Y-%m-%d %H:%M:%S}); changes in between "
            "cannot be listed. Pass Syncer(on_expired='rebackfill') to backfill again."
        )


class WindowTooDenseError(SyncError):
    """One second cannot be listed whole: Taobao refuses it as too big, or its ties keep moving.

    Transient: the window is read again later (a Fleet backs off); nothing is committed past it.
    """


class TradeUnavailableError(SyncError):
    """Trades the list calls show but ``taobao.trade.fullinfo.get`` does not know (``tids``).

    Transient: the window is not committed and is read again later.
    """

    def __init__(self, shop_id: str, tids: list[int]) -> None:
        shown = ", ".join(map(str, tids[:5])) + (" ..." if len(tids) > 5 else "")
        super().__init__(f"shop {shop_id}: fullinfo does not know {len(tids)} listed trade(s): {shown}")
        self.shop_id = shop_id
        self.tids = tuple(tids)


def leaf_error(exc: BaseException, *, prefer: Callable[[BaseException], bool] | None = None) -> BaseException:
    """The error inside a (nested) ``ExceptionGroup`` (a task group's failures): the first one
    ``prefer`` picks, else the first; ``exc`` itself when it is no group."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [leaf_error(inner, prefer=prefer) for inner in exc.exceptions]
    return next((leaf for leaf in leaves if prefer is not None and prefer(leaf)), leaves[0])
