"""Options of Syncer, Fleet and Worker: typed for mypy, and a wrong one is a ConfigurationError naming it."""

from __future__ import annotations

import inspect
import re
import textwrap
import typing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from taobao_ordersync import Batch, ConfigurationError, Fleet, FleetOptions, MemoryStore, Shop, Syncer, SyncerOptions
from taobao_ordersync import TopClient as Client
from taobao_ordersync.postgres import PostgresStore
from taobao_ordersync.worker import Worker

ROOT = Path(__file__).resolve().parents[2]


async def ignore(shop: Shop, batch: Batch) -> None:
    pass


def client() -> Client:
    return Client("app", "secret", url="http://127.0.0.1:9/router/rest")  # built, never called


def fleet(**options: Any) -> Fleet:
    return Fleet(client(), store=MemoryStore(), handler=ignore, **options)


def worker(**options: Any) -> Worker:
    return Worker(client(), PostgresStore("postgresql://app@127.0.0.1:9/orders"), ignore, {}.get, **options)


@pytest.mark.parametrize("build", [fleet, worker], ids=["Fleet", "Worker"])
def test_a_misspelt_option_is_named_with_the_one_meant(build: Any) -> None:
    """A typo is a ConfigurationError at the call that made it, naming it and the closest option."""
    with pytest.raises(ConfigurationError, match=r"unknown option 'fulinfo' \(did you mean 'fullinfo'\?\)"):
        build(fulinfo=True)


def test_a_worker_names_a_misspelt_fleet_option() -> None:
    """The Worker checks the options it hands to its Fleet, and names the Worker."""
    with pytest.raises(ConfigurationError, match=r"^Worker\(\) got an unknown option 'concurency'.*'concurrency'"):
        worker(concurency=4)


def test_an_option_that_is_no_ones_is_named() -> None:
    """Nothing close: the name alone."""
    with pytest.raises(ConfigurationError, match=r"^Fleet\(\) got an unknown option 'colour'$"):
        fleet(colour="blue")


WRONG = [
    ("lag", "5"),
    ("lag", float("nan")),
    ("lag", True),
    ("overlap", -1),
    ("page_size", "50"),
    ("page_size", 50.0),
    ("page_size", 0),
    ("max_window_orders", 10),
    ("fullinfo", "no"),
    ("fullinfo_concurrency", True),
    ("types", "fixed"),
    ("types", ()),
    ("fields", [1, 2]),
    ("on_expired", "ignore"),
    ("on_progress", 5),
]


@pytest.mark.parametrize(("name", "value"), WRONG)
@pytest.mark.parametrize("build", [fleet, worker], ids=["Fleet", "Worker"])
def test_a_wrong_syncer_option_is_named(build: Any, name: str, value: object) -> None:
    """A Syncer option of the wrong type or value, passed through a Fleet or a Worker, is named."""
    with pytest.raises(ConfigurationError, match=name):
        build(**{name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("concurrency", "16"),
        ("concurrency", 0),
        ("turn_batches", 2.5),
        ("seed", "x"),
        ("policy", {"min_interval": 5}),
        ("on_event", "print"),
    ],
)
def test_a_wrong_fleet_option_is_named(name: str, value: object) -> None:
    """The Fleet's own options too."""
    with pytest.raises(ConfigurationError, match=name):
        fleet(**{name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [("lease", "30"), ("lease", 0), ("heartbeat", -1.0), ("release_paused_after", "60"), ("min_stay", -5)],
)
def test_a_wrong_worker_option_is_named(name: str, value: object) -> None:
    """And the Worker's (a string from a config file is not a number of seconds)."""
    with pytest.raises(ConfigurationError, match=name):
        worker(**{name: value})


def test_good_options_pass_through_to_the_syncer() -> None:
    """Options given to a Worker reach its Fleet and that fleet's Syncer."""
    built = worker(concurrency=3, lag=7, fullinfo=True, types=["fixed"])

    syncer = built.fleet.syncer
    assert 3 == built.fleet.concurrency
    assert (timedelta(seconds=7), True, ("fixed",)) == (syncer.lag, syncer.fullinfo, syncer.types)


def keyword_hints(function: Any, *, leave_out: set[str]) -> dict[str, Any]:
    hints = typing.get_type_hints(function)
    return {
        name: hints[name]
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind is parameter.KEYWORD_ONLY and name not in leave_out
    }


def test_syncer_options_name_every_option_of_the_syncer_with_its_type() -> None:
    """SyncerOptions is the Syncer's keyword list, name for name and type for type (no drift)."""
    assert keyword_hints(Syncer.__init__, leave_out={"store"}) == typing.get_type_hints(SyncerOptions)


def test_fleet_options_are_the_fleets_own_and_the_syncers() -> None:
    """FleetOptions: what a Worker may hand to its Fleet (policy and on_event are the Worker's own)."""
    fleets = keyword_hints(Fleet.__init__, leave_out={"store", "handler", "policy", "on_event"})

    assert fleets | typing.get_type_hints(SyncerOptions) == typing.get_type_hints(FleetOptions)


@pytest.mark.parametrize("owner", [Syncer, Fleet, Worker], ids=lambda owner: owner.__name__)
def test_no_option_is_typed_any(owner: type) -> None:
    """No ``Any`` (nor a bare ``**kwargs``) in the signatures: mypy checks every option."""
    for name, parameter in inspect.signature(owner.__init__).parameters.items():
        if name != "self":
            assert parameter.annotation is not inspect.Parameter.empty, name
            assert not re.search(r"\bAny\b", str(parameter.annotation)), name


MISUSE = """\
    from taobao_ordersync import Batch, Fleet, MemoryStore, Shop, TopClient
    from taobao_ordersync.postgres import PostgresStore
    from taobao_ordersync.worker import Worker


    async def handler(shop: Shop, batch: Batch) -> None: ...


    def sessions(shop_id: str) -> str | None: ...


    def build(client: TopClient, store: PostgresStore) -> None:
        Fleet(client, store=MemoryStore(), handler=handler, lag=5, fullinfo=True, page_size=50)
        Worker(client, store, handler, sessions, concurrency=4, lag=5.0, types=["fixed"])
        Fleet(client, store=MemoryStore(), handler=handler, fulinfo=True)
        Fleet(client, store=MemoryStore(), handler=handler, lag="5")
        Worker(client, store, handler, sessions, concurency=4)
        Worker(client, store, handler, sessions, fullinfo="no")
"""


def test_mypy_checks_the_options_of_fleet_and_worker(tmp_path: Path) -> None:
    """mypy (strict, the project's settings) flags a misspelt or mistyped option, and only those."""
    api = pytest.importorskip("mypy.api")
    source = tmp_path / "misuse.py"
    source.write_text(textwrap.dedent(MISUSE))

    out, _, _ = api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache"), str(source)]
    )

    errors = sorted(re.findall(r"misuse\.py:(\d+): error: .*?\"(\w+)\".*\[([\w-]+)\]", out))
    assert [
        ("15", "fulinfo", "call-arg"),
        ("16", "lag", "arg-type"),
        ("17", "concurency", "call-arg"),
        ("18", "fullinfo", "arg-type"),
    ] == errors, out
