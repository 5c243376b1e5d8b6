"""PostgresStore: the checkpoint contract, schema migrations, errors, registry and fenced commits."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from taobao_ordersync.errors import (
    CheckpointConflictError,
    ConfigurationError,
    LeaseLostError,
    SchemaVersionError,
    StoreUnavailableError,
)
from taobao_ordersync.postgres import HEARTBEAT_ROUND_TRIPS, SCHEMA_VERSION, PostgresStore, PushedMessage
from taobao_ordersync.postgres._database import Database
from taobao_ordersync.status import Lease, ShopStatus
from taobao_ordersync.testing.postgres import LocalPostgres
from taobao_ordersync.testing.store_contract import CheckpointStoreContract

from .conftest import new_schema, run_sql

T = TypeVar("T")

pytestmark = pytest.mark.every_postgres  # cheap, and all of it is SQL a server version may change


class TestPostgresStore(CheckpointStoreContract):
    @pytest.fixture
    async def store(self, pg_store: PostgresStore) -> PostgresStore:
        """A fresh PostgresStore on its own schema."""
        return pg_store


async def test_many_workers_creating_the_schema_at_once_all_succeed(postgres_server: LocalPostgres) -> None:
    """Eight stores opening one new schema together: one migrates, the others find it at the latest version."""
    schema = new_schema()
    stores = [PostgresStore(postgres_server.dsn, schema=schema) for _ in range(8)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
        found = await asyncio.gather(*(store.migrate() for store in stores))
    finally:
        await asyncio.gather(*(store.close() for store in stores))

    assert [SCHEMA_VERSION] * 8 == found


async def test_a_schema_of_version_1_is_migrated_in_place(postgres_server: LocalPostgres) -> None:
    """A schema created by a release of schema version 1, with a worker registered, is brought to the
    current version at open: rows kept, the new columns empty, heartbeats and reports work."""
    schema = new_schema()
    old = Database(postgres_server.dsn, schema=schema, pool_size=1, connect_timeout=10, schema_version=1)
    try:
        async with old.connection("test") as connection:  # opens it: the migrations up to version 1
            await connection.execute(
                f"INSERT INTO {schema}.workers (worker_id, host, pid, expires_at) VALUES ('w', 'h', 1, now())"
            )
    finally:
        await old.close()

    async with PostgresStore(postgres_server.dsn, schema=schema) as store:
        assert SCHEMA_VERSION == await store.migrate()
        versions = await run_sql(store, f"SELECT version FROM {schema}.schema_version ORDER BY version")
        assert list(range(1, SCHEMA_VERSION + 1)) == [row["version"] for row in versions]
        assert [("w", None, None)] == [(w.worker_id, w.last_error, w.failing_for) for w in await store.workers()]
        await store.report_heartbeat_failure("w", host="h", pid=1, error="CheckpointError: refused", failing_for=40)
        [failing] = await store.workers()
        assert "CheckpointError: refused" == failing.last_error and failing.failing_for is not None
        assert 40 <= failing.failing_for < 45 and not failing.alive
        await store.heartbeat("w", host="h", pid=1, lease=30, budget=1.0, reports=[])
        [renewed] = await store.workers()
        assert (True, None, None) == (renewed.alive, renewed.last_error, renewed.failing_for)


async def test_schema_newer_than_the_library_is_refused(
    pg_store: PostgresStore, postgres_server: LocalPostgres
) -> None:
    """A database migrated by a newer release is not touched: the error says to upgrade."""
    newer = f"INSERT INTO {pg_store.schema}.schema_version VALUES ($1) RETURNING 1"
    await run_sql(pg_store, newer, SCHEMA_VERSION + 1)

    with pytest.raises(SchemaVersionError, match="upgrade taobao-ordersync"):
        async with PostgresStore(postgres_server.dsn, schema=pg_store.schema):
            pass


async def test_unreachable_server_is_a_clear_error_without_the_password() -> None:
    """Nothing listens on the port: StoreUnavailableError names host and database, never the password."""
    store = PostgresStore("postgresql://app:hunter2@127.0.0.1:9/orders", connect_timeout=2)

    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1:9/orders") as caught:
        await store.open()

    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(store)


async def test_unknown_database_is_a_clear_error(postgres_server: LocalPostgres) -> None:
    """A DSN naming a database that does not exist fails at open with the server's reason."""
    store = PostgresStore(postgres_server.dsn.rsplit("/", 1)[0] + "/no_such_db")

    with pytest.raises(StoreUnavailableError, match="no_such_db"):
        await store.open()


async def test_a_server_older_than_15_is_refused_at_connect(
    postgres_server: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PostgreSQL the upstream project no longer maintains (stubbed as 14.13) is refused at open with
    a message naming its version and the oldest one supported; nothing is created and no pool stays open."""
    import asyncpg

    old = asyncpg.types.ServerVersion(14, 0, 13, "final", 0)
    monkeypatch.setattr(asyncpg.connection.Connection, "get_server_version", lambda self: old)
    schema = new_schema()
    store = PostgresStore(postgres_server.dsn, schema=schema)

    with pytest.raises(StoreUnavailableError, match=r"runs PostgreSQL 14\.13; .*needs PostgreSQL 15 or newer"):
        await store.open()

    assert store._db._pool is None
    monkeypatch.undo()
    async with PostgresStore(postgres_server.dsn, schema=new_schema()) as admin:
        assert admin.server_version is not None and int(admin.server_version.split(".")[0]) >= 15
        assert [] == await run_sql(admin, "SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)


@pytest.mark.parametrize("dsn", ["", "mysql://x@y/z", "127.0.0.1:5432"])
def test_dsn_must_be_a_postgres_uri(dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="postgresql://"):
        PostgresStore(dsn)


@pytest.mark.parametrize(
    "dsn", ["postgresql://app:pw@127.0.0.1:notaport/orders", "postgresql://app:pw@127.0.0.1:9/orders?sslmode=bogus"]
)
async def test_malformed_dsn_is_a_configuration_error_without_the_password(dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid PostgreSQL DSN") as caught:
        await PostgresStore(dsn, connect_timeout=2).open()

    assert "pw@" not in str(caught.value)


def test_schema_name_must_be_an_identifier() -> None:
    with pytest.raises(ConfigurationError, match="identifier"):
        PostgresStore("postgresql://x@y/z", schema="a; DROP TABLE shops")


async def test_registry_add_remove_list(pg_store: PostgresStore) -> None:
    """Shops are added once, listed with no owner, and removed."""
    assert 2 == await pg_store.add_shops("s1", "s2")
    assert 1 == await pg_store.add_shops("s2", "s3")
    assert 1 == await pg_store.remove_shops("s1", "nope")

    shops = await pg_store.statuses()

    assert ["s2", "s3"] == [shop.shop_id for shop in shops]
    assert all(shop.lease is not None and shop.lease.owner is None and shop.checkpoint is None for shop in shops)


async def test_concurrent_claims_never_share_a_shop(pg_store: PostgresStore) -> None:
    """Ten workers claiming from the same 100 candidates at once: each shop goes to exactly one of them."""
    ids = [f"s{i:03}" for i in range(100)]
    await pg_store.add_shops(*ids)

    claims = await asyncio.gather(*(pg_store.claim(f"w{n}", ids, 15, lease=30) for n in range(10)))

    owned = [shop for claimed in claims for shop in claimed]
    assert sorted(owned) == sorted(set(owned))
    assert 100 == len(owned)
    tokens = [token for claimed in claims for token in claimed.values()]
    assert len(set(tokens)) == len(tokens)


async def test_stale_fencing_token_cannot_commit(pg_store: PostgresStore) -> None:
    """A worker whose lease was taken over is refused; the new owner's commit stands and moves on."""
    await pg_store.add_shops("shop")
    old = (await pg_store.claim("old", ["shop"], 1, lease=0.2))["shop"]
    assert 1 == await pg_store.save_fenced("shop", '{"by":"old"}', expected_revision=None, fence=("old", old))
    await asyncio.sleep(0.3)  # the old owner's lease runs out
    new = (await pg_store.claim("new", ["shop"], 1, lease=30))["shop"]
    assert 2 == await pg_store.save_fenced("shop", '{"by":"new"}', expected_revision=1, fence=("new", new))

    with pytest.raises(LeaseLostError, match="stale"):
        await pg_store.save_fenced("shop", '{"by":"old"}', expected_revision=2, fence=("old", old))

    stored = await pg_store.load("shop")
    assert stored is not None
    assert ('{"by":"new"}', 2) == (stored.data, stored.revision)
    assert 1 == pg_store.fencing_refusals


async def test_lease_still_running_cannot_be_claimed(pg_store: PostgresStore) -> None:
    """A live lease is skipped by other claimers."""
    await pg_store.add_shops("shop")
    await pg_store.claim("first", ["shop"], 1, lease=30)

    assert {} == await pg_store.claim("second", ["shop"], 1, lease=30)


async def test_valid_token_with_wrong_revision_is_a_plain_conflict(pg_store: PostgresStore) -> None:
    """The right lease but a stale revision is a CheckpointConflictError, not a lease loss."""
    await pg_store.add_shops("shop")
    token = (await pg_store.claim("me", ["shop"], 1, lease=30))["shop"]
    await pg_store.save_fenced("shop", "{}", expected_revision=None, fence=("me", token))

    with pytest.raises(CheckpointConflictError) as caught:
        await pg_store.save_fenced("shop", "{}", expected_revision=7, fence=("me", token))
    assert not isinstance(caught.value, LeaseLostError)


async def test_fenced_view_refuses_shops_without_a_lease(pg_store: PostgresStore) -> None:
    """The worker's fenced view commits only shops it holds a token for."""
    tokens: dict[str, int] = {}
    view = pg_store.fenced("me", tokens)

    with pytest.raises(LeaseLostError):
        await view.save("shop", "{}", expected_revision=None)
    assert None is await view.load("shop")


async def test_released_shops_are_free_at_once(pg_store: PostgresStore) -> None:
    """A graceful retire hands every shop back without waiting for the lease to run out."""
    await pg_store.add_shops("a", "b")
    await pg_store.claim("leaving", ["a", "b"], 2, lease=30)

    assert 2 == await pg_store.retire("leaving")

    assert {"a", "b"} == set(await pg_store.claim("staying", ["a", "b"], 2, lease=30))


async def test_a_read_commits_with_the_token_it_began_under(pg_store: PostgresStore) -> None:
    """A read begun under an old lease is refused by its token even after the same worker claimed the
    shop back (and holds a newer token for a newer read): the token travels with the read."""
    await pg_store.add_shops("shop")
    tokens = await pg_store.claim("me", ["shop"], 1, lease=0.2)
    view = pg_store.fenced("me", tokens)
    assert None is await view.load("shop")  # the old read begins under the first lease
    await asyncio.sleep(0.3)
    other = pg_store.fenced("other", await pg_store.claim("other", ["shop"], 1, lease=0.2))
    await other.load("shop")  # meanwhile another worker reads and commits
    await other.save("shop", '{"by":"other"}', expected_revision=None)
    await asyncio.sleep(0.3)
    tokens.update(await pg_store.claim("me", ["shop"], 1, lease=30))  # and the shop comes back to "me"
    stored = await view.load("shop")
    assert stored is not None
    assert 2 == await view.save("shop", '{"by":"me, new read"}', expected_revision=stored.revision)

    with pytest.raises(LeaseLostError, match="stale"):
        await view.save("shop", '{"by":"me, old read"}', expected_revision=None)


async def test_two_reads_on_one_revision_each_commit_with_their_own_token(pg_store: PostgresStore) -> None:
    """A read left over from a lost lease and a new read of the same worker, both standing on revision 1:
    the old one is refused by its own (stale) token, the new one commits with the new token. Keyed by
    (shop, revision), both shared the newer token: the old read committed and the new one was refused."""
    await pg_store.add_shops("shop")
    tokens = await pg_store.claim("me", ["shop"], 1, lease=0.2)
    view = pg_store.fenced("me", tokens)
    assert None is await view.load("shop")
    assert 1 == await view.save("shop", '{"by":"first read"}', expected_revision=None)
    old = await view.load("shop")  # begins under the first lease ...
    await asyncio.sleep(0.3)  # ... which runs out; the same worker claims the shop back
    tokens.update(await pg_store.claim("me", ["shop"], 1, lease=30))
    new = await view.load("shop")
    assert old is not None and new is not None and old.revision == new.revision == 1

    with pytest.raises(LeaseLostError, match="stale") as refused:
        await view.save("shop", '{"by":"old read"}', expected_revision=old.revision)
    assert 2 == await view.save("shop", '{"by":"new read"}', expected_revision=new.revision)

    assert refused.value.token is not None and refused.value.token != tokens["shop"]
    stored = await pg_store.load("shop")
    assert stored is not None and '{"by":"new read"}' == stored.data


async def test_two_reads_of_an_absent_checkpoint_each_commit_with_their_own_token(pg_store: PostgresStore) -> None:
    """The same with no checkpoint yet (both reads stand on "absent"), each read in its own task as the
    fleet runs them: the old read is refused, the new one commits revision 1."""
    await pg_store.add_shops("shop")
    tokens = await pg_store.claim("me", ["shop"], 1, lease=0.2)
    view = pg_store.fenced("me", tokens)
    loaded = [asyncio.Event(), asyncio.Event()]
    go = [asyncio.Event(), asyncio.Event()]

    async def read(n: int) -> int:
        assert None is await view.load("shop")
        loaded[n].set()
        await go[n].wait()
        return await view.save("shop", f'{{"read":{n}}}', expected_revision=None)

    old = asyncio.create_task(read(0))
    await loaded[0].wait()
    await asyncio.sleep(0.3)
    tokens.update(await pg_store.claim("me", ["shop"], 1, lease=30))
    new = asyncio.create_task(read(1))
    await loaded[1].wait()
    go[0].set()  # the old read commits first
    with pytest.raises(LeaseLostError, match="stale"):
        await old
    go[1].set()

    assert 1 == await new


async def test_heartbeat_with_and_without_a_ban(pg_store: PostgresStore) -> None:
    """The first heartbeat, with no ban ever set (ban_until is -infinity), registers the worker and reports
    no ban; after a ban, the time left. Before PostgreSQL 17, -infinity minus now() is an error."""
    await pg_store.add_shops("shop")

    beat = await pg_store.heartbeat("w", host="h", pid=1, lease=30, budget=5.0, reports=[])

    assert (1, 0.0, None) == (beat.live_workers, beat.ban_left, beat.next_expiry)
    assert [("shop", None)] == [(row.shop_id, row.owner) for row in beat.rows]
    await pg_store.ban(60)
    beat = await pg_store.heartbeat("w", host="h", pid=1, lease=30, budget=5.0, reports=[])
    assert 55 < beat.ban_left <= 60


async def test_round_trips_count_every_statement_sent(postgres_server: LocalPostgres) -> None:
    """``round_trips`` grows by exactly the statements each call sends (asyncpg's query logger on the
    pool's one connection sees them all; the pool's reset on release is asyncpg's, not ours), and a
    heartbeat is ``HEARTBEAT_ROUND_TRIPS`` of them."""
    async with PostgresStore(postgres_server.dsn, schema=new_schema(), pool_size=1) as store:
        # asyncpg looks up the heartbeat's array types once per connection (three statements of its own).
        await store.heartbeat("warm-up", host="h", pid=1, lease=30, budget=5.0, reports=[])
        sent: list[str] = []
        async with store._db.connection("test") as connection:
            reset = connection.get_reset_query()
            connection.add_query_logger(lambda record: sent.append(record.query))
        counted: dict[str, tuple[int, int]] = {}

        async def count(name: str, call: Awaitable[T]) -> T | None:
            before = (store.round_trips, len(sent))
            result = None
            with contextlib.suppress(LeaseLostError, CheckpointConflictError):
                result = await call
            await asyncio.sleep(0)  # the logger is called soon after each statement, not during it
            statements = [query for query in sent[before[1] :] if query != reset]
            counted[name] = (store.round_trips - before[0], len(statements))
            return result

        await count("add_shops", store.add_shops("a", "b", "c"))
        await count("remove_shops", store.remove_shops("c"))
        tokens = await count("claim", store.claim("w", ["a", "b"], 2, lease=30))
        assert tokens is not None
        await count("claim nothing", store.claim("w", ["a"], 0, lease=30))
        await count("load absent", store.load("a"))
        await count("save new", store.save("x", "{}", expected_revision=None))
        await count("save next", store.save("x", "{}", expected_revision=1))
        await count("save conflict", store.save("x", "{}", expected_revision=1))
        await count("save fenced", store.save_fenced("a", "{}", expected_revision=None, fence=("w", tokens["a"])))
        await count("save refused", store.save_fenced("a", "{}", expected_revision=1, fence=("v", 0)))
        await count("load", store.load("a"))
        await count("shop_ids", store.shop_ids())
        await count("statuses", store.statuses())
        await count("summary", store.summary())
        await count("workers", store.workers())
        reports = [
            ShopStatus(
                shop_id="a",
                state="waiting",
                behind=timedelta(seconds=2),
                lease=Lease(owner="w", token=tokens["a"], weight=1.0),
            )
        ]
        await count("heartbeat", store.heartbeat("w", host="h", pid=1, lease=30, budget=5.0, reports=reports))
        await count("heartbeat failure", store.report_heartbeat_failure("w", host="h", pid=1, error="e", failing_for=1))
        await count("record_error", store.record_error("a", "w", "AuthenticationError: session expired"))
        await count("ban", store.ban(1))
        await count("nudge", store.nudge())
        await count("release some", store.release("w", ["b"]))
        await count("retire", store.retire("w"))
        await count("migrate", store.migrate())

    assert {name: (statements, statements) for name, (_, statements) in counted.items()} == counted
    assert HEARTBEAT_ROUND_TRIPS == counted["heartbeat"][0]


async def test_registry_changes_wake_the_workers_and_non_changes_do_not(pg_store: PostgresStore) -> None:
    """Adding, releasing or removing shops sends one NOTIFY on the schema's `shops` channel; a change
    that changes nothing (a shop already registered) sends none."""
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await pg_store.connect_listener()
    try:
        await listener.add_listener(pg_store.channel("shops"), lambda *args: heard.put_nowait(args[3]))
        await pg_store.add_shops("a", "b")
        assert "changed" == await asyncio.wait_for(heard.get(), 5)
        await pg_store.add_shops("a")
        await pg_store.claim("w", ["a"], 1, lease=30)
        await pg_store.release("w")
        await asyncio.wait_for(heard.get(), 5)
        await pg_store.remove_shops("b")
        await asyncio.wait_for(heard.get(), 5)
        await asyncio.sleep(0.2)
    finally:
        await listener.close()

    assert heard.empty()  # the no-op add sent nothing, and each change sent one notification


def test_a_server_that_cannot_start_leaves_nothing_behind(tmp_path: Path) -> None:
    """Binaries that do not work: a clear error, and no temporary folder left."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("initdb", "pg_ctl"):
        (fake / name).write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
        (fake / name).chmod(0o755)
    before = set(Path(tempfile.gettempdir()).glob("taobao-ordersync-pg-*"))

    with pytest.raises(RuntimeError, match="initdb failed"):
        LocalPostgres(binaries=fake).start()

    assert before == set(Path(tempfile.gettempdir()).glob("taobao-ordersync-pg-*"))


@pytest.mark.every_postgres
async def test_the_push_inbox_holds_a_message_until_its_shops_holder_delivered_it(pg_store: PostgresStore) -> None:
    """A forwarded message waits for its shop's holder; the consumer may confirm it once it was delivered
    (its row is deleted then) or its shop was unregistered, never before. An unregistered shop's message
    is refused, and a redelivered message is kept once."""
    await pg_store.add_shops("a", "b")
    pub_time = datetime(2026, 12, 1, 8, 0, 5, tzinfo=UTC)

    def message(message_id: int, shop_id: str) -> PushedMessage:
        return PushedMessage(
            message_id=message_id, shop_id=shop_id, tid=1000 + message_id, topic="t", pub_time=pub_time
        )

    assert not await pg_store.forward_push(message(9, "unregistered"))
    for message_id, shop_id in ((1, "a"), (1, "a"), (2, "a"), (3, "b")):
        assert await pg_store.forward_push(message(message_id, shop_id))
    assert 3 == await pg_store.push_backlog()
    assert [message(1, "a"), message(2, "a")] == await pg_store.take_push(["a"])
    assert set() == await pg_store.push_settled([1, 2, 3])

    await pg_store.push_delivered([1])
    assert [message(2, "a")] == await pg_store.take_push(["a"])
    assert {1} == await pg_store.push_settled([1, 2, 3])
    assert {1} == await pg_store.push_settled([1])  # its row is gone: still settled for a late asker
    await pg_store.remove_shops("b")
    assert {3} == await pg_store.push_settled([2, 3])
    assert 1 == await pg_store.push_backlog()


async def test_statuses_carry_the_lease_and_the_old_shops_call_still_works(pg_store: PostgresStore) -> None:
    """`statuses()` gives each registered shop's ShopStatus with its lease; `shops()` (RegisteredShop) still
    answers for one release, with a DeprecationWarning; a heartbeat refuses a report without its lease."""
    await pg_store.add_shops("a", "b")
    tokens = await pg_store.claim("w", ["a"], 1, lease=30)
    lease = Lease(owner="w", token=tokens["a"], weight=2.5)
    report = ShopStatus(shop_id="a", state="syncing", behind=timedelta(seconds=4), lease=lease)
    await pg_store.heartbeat("w", host="h", pid=1, lease=30, budget=5.0, reports=[report])

    a, b = await pg_store.statuses()
    assert ("a", "syncing", timedelta(seconds=4)) == (a.shop_id, a.state, a.behind)
    assert a.lease is not None and ("w", tokens["a"], 2.5) == (a.lease.owner, a.lease.token, a.lease.weight)
    assert a.lease.seconds_left is not None and 25 < a.lease.seconds_left <= 30
    assert b.lease is not None and b.lease.owner is None
    with pytest.warns(DeprecationWarning, match="statuses"):
        old = await pg_store.shops()
    assert [("a", "w"), ("b", None)] == [(shop.shop_id, shop.owner) for shop in old]
    with pytest.raises(ConfigurationError, match="with their lease"):
        await pg_store.heartbeat("w", host="h", pid=1, lease=30, budget=5.0, reports=[ShopStatus(shop_id="a")])
