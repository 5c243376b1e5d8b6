"""taobao_ordersync: keep a complete copy of Taobao sellers' orders, losing none.

The public API is exactly ``__all__``.
"""

from taobao_ordersync._retry import RetryPolicy
from taobao_ordersync._wire import ALL_TRADE_TYPES
from taobao_ordersync.checkpoint import Checkpoint
from taobao_ordersync.client import DEFAULT_URL, TopClient
from taobao_ordersync.clock import Clock, ClockEstimate, SystemClock
from taobao_ordersync.errors import (
    ApiError,
    AuthenticationError,
    BusinessError,
    CheckpointConflictError,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointExpiredError,
    CheckpointVersionError,
    ConfigurationError,
    ConnectError,
    HeartbeatFailedError,
    InvalidRequestError,
    LeaseLostError,
    PermissionDeniedError,
    RateLimitedError,
    ResponseFormatError,
    SchemaVersionError,
    ServerError,
    SessionUnavailableError,
    StoreUnavailableError,
    SyncError,
    TaobaoOrderSyncError,
    TradeUnavailableError,
    TransportError,
    TransportTimeout,
    WindowTooDenseError,
    WindowTooLargeError,
)
from taobao_ordersync.fleet import Fleet, FleetEvent, FleetOptions, PollPolicy, PushObserver
from taobao_ordersync.models import Order, Shop, Trade, TradePage
from taobao_ordersync.planner import Window
from taobao_ordersync.status import Lease, Schedule, ShopStatus
from taobao_ordersync.stores import CheckpointStore, MemoryStore, SqliteStore, StoredCheckpoint
from taobao_ordersync.syncer import HORIZON, Batch, ShopProgress, Syncer, SyncerOptions
from taobao_ordersync.tmc import PushMode, TmcConsumer, TmcMessage, TmcStats
from taobao_ordersync.transport import AiohttpTransport, RawResponse, Transport

__version__ = "0.1.0"

__all__ = [
    "ALL_TRADE_TYPES",
    "DEFAULT_URL",
    "HORIZON",
    "AiohttpTransport",
    "ApiError",
    "AuthenticationError",
    "Batch",
    "BusinessError",
    "Checkpoint",
    "CheckpointConflictError",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointExpiredError",
    "CheckpointStore",
    "CheckpointVersionError",
    "Clock",
    "ClockEstimate",
    "ConfigurationError",
    "ConnectError",
    "Fleet",
    "FleetEvent",
    "FleetOptions",
    "HeartbeatFailedError",
    "InvalidRequestError",
    "Lease",
    "LeaseLostError",
    "MemoryStore",
    "Order",
    "PermissionDeniedError",
    "PollPolicy",
    "PushMode",
    "PushObserver",
    "RateLimitedError",
    "RawResponse",
    "ResponseFormatError",
    "RetryPolicy",
    "Schedule",
    "SchemaVersionError",
    "ServerError",
    "SessionUnavailableError",
    "Shop",
    "ShopProgress",
    "ShopStatus",
    "SqliteStore",
    "StoreUnavailableError",
    "StoredCheckpoint",
    "SyncError",
    "Syncer",
    "SyncerOptions",
    "SystemClock",
    "TaobaoOrderSyncError",
    "TmcConsumer",
    "TmcMessage",
    "TmcStats",
    "TopClient",
    "Trade",
    "TradePage",
    "TradeUnavailableError",
    "Transport",
    "TransportError",
    "TransportTimeout",
    "Window",
    "WindowTooDenseError",
    "WindowTooLargeError",
    "__version__",
]
