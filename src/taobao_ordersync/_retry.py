"""What to retry and how long to wait (pure). The client applies it per request."""

from __future__ import annotations

from attrs import frozen

from taobao_ordersync.errors import (
    ResponseFormatError,
    ServerError,
    TransportError,
    WindowTooLargeError,
)

__all__ = ["RetryPolicy"]


@frozen(kw_only=True)
class RetryPolicy:
    """How the client retries one request.

    Transient failures (network, timeouts, HTTP 5xx, non-JSON bodies, ``isp.*``)
    retry with exponential backoff and full jitter, at most ``max_tries`` attempts
    within ``max_time`` seconds. Code-7 bans pause the whole client for the stated
    time plus ``ban_margin`` when it is at most ``max_ban_wait`` seconds, at most
    ``max_bans`` times in a row; a longer ban raises ``RateLimitedError``.
    """

    max_tries: int = 6
    max_time: float = 120.0
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_ban_wait: float = 120.0
    ban_margin: float = 1.0
    max_bans: int = 8
    default_ban: float = 1.0

    @classmethod
    def no_wait(cls, *, max_tries: int = 6) -> RetryPolicy:
        """Retries without delays: for tests against the emulator."""
        return cls(max_tries=max_tries, base_delay=0.0, max_delay=0.0, ban_margin=0.0)


def is_transient(exc: BaseException, *, oversize_is_final: bool = False) -> bool:
    """Whether retrying the same request can succeed."""
    if isinstance(exc, WindowTooLargeError) and oversize_is_final:
        return False
    if isinstance(exc, TransportError | ServerError):
        return True
    return isinstance(exc, ResponseFormatError) and exc.is_transient
