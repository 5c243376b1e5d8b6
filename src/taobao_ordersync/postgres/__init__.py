"""``PostgresStore``: checkpoints, the shared shop registry and leases in PostgreSQL.

Needs the ``postgres`` extra (``pip install 'taobao-ordersync[postgres]'``, which
brings asyncpg); asyncpg is imported when a store first connects, never before.

Everything lives in one PostgreSQL schema (``taobao_ordersync`` by default) that
the library creates and migrates itself, under an advisory lock so that many
workers may start at once:

- ``checkpoints``: one versioned JSON document per shop, saved by compare-and-set;
- ``shops``: the registry, and for each shop its lease: ``owner``, ``lease_until``
  and the fencing ``token`` handed out by a sequence at every claim;
- ``workers``: live workers and their heartbeats (the rate budget is shared among them);
- ``app``: the app-wide ``ban_until`` every worker honours;
- ``push_inbox``: TMC messages a worker consumed for a shop another worker holds, until that
  worker delivered them (the consumer confirms them to TMC only then);
- ``schema_version``: the migrations applied.

A save made through ``fenced()`` commits only while the row in ``shops`` still
carries the worker's name and token, checked under a share lock in the same
statement; a worker that lost its lease (a long pause, a partition) is refused
with ``LeaseLostError`` and can never move the new owner's checkpoint.

The SQL is in ``sql/``: the numbered migrations in ``sql/migrations/`` (a new one is
a new file) and each query the store runs, by name, in the ``.sql`` file of its job.
"""

from taobao_ordersync.postgres._database import MIN_SERVER_VERSION
from taobao_ordersync.postgres._database import check_server_version as check_server_version
from taobao_ordersync.postgres._database import describe_dsn as describe_dsn
from taobao_ordersync.postgres._fencing import FencedRevision, FencedStore
from taobao_ordersync.postgres._push import PushedMessage
from taobao_ordersync.postgres._registry import HEARTBEAT_ROUND_TRIPS, Report
from taobao_ordersync.postgres._registry import Heartbeat as Heartbeat
from taobao_ordersync.postgres._sql import SCHEMA_VERSION
from taobao_ordersync.postgres._status import RegisteredShop, ShopSummary, WorkerRecord
from taobao_ordersync.postgres._store import PostgresStore

__all__ = [
    "HEARTBEAT_ROUND_TRIPS",
    "MIN_SERVER_VERSION",
    "SCHEMA_VERSION",
    "FencedRevision",
    "FencedStore",
    "PostgresStore",
    "PushedMessage",
    "RegisteredShop",
    "Report",
    "ShopSummary",
    "WorkerRecord",
]
