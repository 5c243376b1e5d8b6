"""The checkpoint's versioned JSON: round trips, compact output and unreadable documents."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taobao_ordersync._time import CST
from taobao_ordersync.checkpoint import MAX_BOUNDARY, Checkpoint
from taobao_ordersync.errors import CheckpointCorruptError, CheckpointVersionError

BASE = datetime(2024, 1, 1, tzinfo=CST)
FIELDS = {"format", "shop_id", "origin", "cursor", "backfill_from", "backfilled_to", "boundary"}


def at(seconds: int) -> datetime:
    return BASE + timedelta(seconds=seconds)


def sample(**overrides: Any) -> Checkpoint:
    fields: dict[str, Any] = {
        "shop_id": "shop-1",
        "origin": at(0),
        "cursor": at(3_600),
        "backfill_from": at(-90 * 86_400),
        "backfilled_to": at(-86_400),
        "boundary": frozenset({(1001, at(3_600), "TRADE_FINISHED"), (1002, at(3_600), None)}),
    }
    fields.update(overrides)
    return Checkpoint(**fields)


def document(**overrides: Any) -> dict[str, Any]:
    """A valid stored document for shop-1, with fields replaced (a value of ... removes the key)."""
    stored: dict[str, Any] = json.loads(sample().to_json())
    stored.update(overrides)
    return {key: value for key, value in stored.items() if value is not ...}


moments = st.integers(-(10**8), 10**8).flatmap(
    lambda seconds: st.sampled_from([CST, UTC]).map(lambda zone: at(seconds).astimezone(zone))
)
checkpoints = st.builds(
    Checkpoint,
    shop_id=st.text(max_size=20),
    origin=moments,
    cursor=moments,
    backfill_from=moments,
    backfilled_to=st.none() | moments,
    boundary=st.frozensets(
        st.tuples(st.integers(0, 2**63 - 1), moments, st.none() | st.sampled_from(["WAIT_BUYER_PAY", "状态"])),
        max_size=30,
    ),
)


@settings(max_examples=200, deadline=None)
@given(checkpoints)
def test_round_trip(checkpoint: Checkpoint) -> None:
    """Any checkpoint with whole-second times reads back equal from its JSON."""
    assert checkpoint == Checkpoint.from_json(checkpoint.to_json(), shop_id=checkpoint.shop_id)


def test_round_trip_of_a_finished_backfill() -> None:
    """backfilled_to=None (backfill complete) is stored as null and read back as None."""
    checkpoint = sample(backfilled_to=None, boundary=frozenset())

    loaded = Checkpoint.from_json(checkpoint.to_json(), shop_id="shop-1")

    assert checkpoint == loaded
    assert loaded.backfill_done
    assert json.loads(checkpoint.to_json())["backfilled_to"] is None


def test_position_is_the_backfills_until_it_is_done_then_the_cursor() -> None:
    """position: how far the backfill read (creation time) while it runs, then the increments' cursor."""
    backfilling = sample(backfilled_to=at(-86_400))
    done = sample(backfilled_to=None)

    assert (False, at(-86_400)) == (backfilling.backfill_done, backfilling.position)
    assert (True, at(3_600)) == (done.backfill_done, done.position)


def test_round_trip_with_a_boundary() -> None:
    """The boundary keys come back as (tid, modified, status): one version each."""
    checkpoint = sample()

    assert (
        frozenset({(1001, at(3_600), "TRADE_FINISHED"), (1002, at(3_600), None)})
        == Checkpoint.from_json(checkpoint.to_json(), shop_id="shop-1").boundary
    )


def test_a_format_1_boundary_is_read_without_statuses() -> None:
    """The previous format's [tid, modified] keys read with no status: they match no delivered version,
    so those trades come once more (a duplicate after the upgrade, never a loss)."""
    old = document(format=1, boundary=[[1001, "2024-01-01 01:00:00"]])

    loaded = Checkpoint.from_json(json.dumps(old), shop_id="shop-1")

    assert frozenset({(1001, at(3_600), None)}) == loaded.boundary
    assert 2 == json.loads(loaded.to_json())["format"]


def test_output_is_compact_versioned_json_without_a_session() -> None:
    """The document is compact JSON, format 2, wall-clock times, and holds no session field."""
    text = sample().to_json()
    stored = json.loads(text)

    assert json.dumps(stored, separators=(",", ":")) == text
    assert ", " not in text
    assert ": " not in text
    assert "\n" not in text
    assert 2 == stored["format"]
    assert type(stored["format"]) is int
    assert FIELDS == set(stored)
    assert not [key for key in stored if "session" in key.lower()]
    assert "2024-01-01 01:00:00" == stored["cursor"]
    assert [[1001, "2024-01-01 01:00:00", "TRADE_FINISHED"], [1002, "2024-01-01 01:00:00", None]] == stored["boundary"]


def test_times_are_stored_in_china_standard_time() -> None:
    """A UTC time is written as the same instant on Taobao's GMT+8 clock."""
    stored = json.loads(sample(cursor=datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC)).to_json())

    assert "2024-01-01 08:00:00" == stored["cursor"]


def test_an_oversized_boundary_is_dropped_on_save() -> None:
    """Beyond MAX_BOUNDARY keys the boundary is saved empty: duplicates later, never a loss."""
    boundary = frozenset((tid, at(3_600), None) for tid in range(MAX_BOUNDARY + 1))
    checkpoint = sample(boundary=boundary)

    loaded = Checkpoint.from_json(checkpoint.to_json(), shop_id="shop-1")

    assert [] == json.loads(checkpoint.to_json())["boundary"]
    assert sample(boundary=frozenset()) == loaded


def test_a_boundary_of_exactly_max_boundary_is_kept() -> None:
    """MAX_BOUNDARY keys are still saved in full."""
    boundary = frozenset((tid, at(3_600), None) for tid in range(MAX_BOUNDARY))

    assert boundary == Checkpoint.from_json(sample(boundary=boundary).to_json(), shop_id="shop-1").boundary


@settings(max_examples=50, deadline=None)
@given(st.integers(MAX_BOUNDARY - 3, MAX_BOUNDARY + 3))
def test_saved_boundary_never_gains_keys(size: int) -> None:
    """The saved boundary is all of it or nothing: never a key that was not delivered."""
    boundary = frozenset((tid, at(tid % 7), None) for tid in range(size))

    saved = Checkpoint.from_json(sample(boundary=boundary).to_json(), shop_id="shop-1").boundary

    assert saved in (boundary, frozenset())
    assert (boundary == saved) == (size <= MAX_BOUNDARY)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("not json", id="not-json"),
        pytest.param('{"format": 1, "shop_id": "shop-1"', id="truncated"),
        pytest.param("[]", id="list"),
        pytest.param(json.dumps([document()]), id="list-of-document"),
        pytest.param("null", id="null"),
        pytest.param('"text"', id="string"),
        pytest.param(json.dumps(document(origin=...)), id="missing-origin"),
        pytest.param(json.dumps(document(cursor=...)), id="missing-cursor"),
        pytest.param(json.dumps(document(backfill_from=...)), id="missing-backfill_from"),
        pytest.param(json.dumps(document(backfilled_to=...)), id="missing-backfilled_to"),
        pytest.param(json.dumps(document(boundary=...)), id="missing-boundary"),
        pytest.param(json.dumps(document(shop_id=...)), id="missing-shop_id"),
        pytest.param(json.dumps(document(cursor="2024-13-01 00:00:00")), id="bad-month"),
        pytest.param(json.dumps(document(cursor="yesterday")), id="bad-time-text"),
        pytest.param(json.dumps(document(origin="2024-01-01T00:00:00+08:00")), id="iso-time"),
        pytest.param(json.dumps(document(backfilled_to=1_700_000_000)), id="time-as-number"),
        pytest.param(json.dumps(document(cursor=None)), id="null-cursor"),
        pytest.param(json.dumps(document(boundary=None)), id="null-boundary"),
        pytest.param(json.dumps(document(boundary=[["x", "2024-01-01 00:00:00"]])), id="bad-tid"),
        pytest.param(json.dumps(document(boundary=[[1, "noon"]])), id="bad-boundary-time"),
        pytest.param(json.dumps(document(boundary=[[1]])), id="short-boundary-key"),
        pytest.param(json.dumps(document(shop_id="shop-2")), id="other-shop"),
    ],
)
def test_unreadable_documents_raise(text: str) -> None:
    """Anything but a valid format-1 or format-2 document for this shop raises CheckpointCorruptError."""
    with pytest.raises(CheckpointCorruptError, match="shop-1"):
        Checkpoint.from_json(text, shop_id="shop-1")


def test_another_shops_checkpoint_names_the_owner() -> None:
    """Loading shop-2's document for shop-1 fails and says whose it is."""
    with pytest.raises(CheckpointCorruptError, match="shop-2"):
        Checkpoint.from_json(sample(shop_id="shop-2").to_json(), shop_id="shop-1")


@pytest.mark.parametrize("version", [3, 99])
def test_a_newer_format_is_a_version_error_not_corruption(version: int) -> None:
    """A format newer than this library knows was written by a newer release (a rolling upgrade):
    CheckpointVersionError, which is not CheckpointCorruptError, so a fleet waits instead of pausing."""
    with pytest.raises(CheckpointVersionError, match="newer") as caught:
        Checkpoint.from_json(json.dumps(document(format=version)), shop_id="shop-1")

    assert not isinstance(caught.value, CheckpointCorruptError)
    assert version == caught.value.found


@pytest.mark.parametrize("version", [0, -1, "2", 2.0, None, True], ids=["0", "-1", "string-2", "float", "null", "true"])
def test_a_format_no_release_ever_wrote_is_corrupt(version: object) -> None:
    """Older than any release, or not an integer: the document is damaged, not from the future."""
    with pytest.raises(CheckpointCorruptError, match="format"):
        Checkpoint.from_json(json.dumps(document(format=version)), shop_id="shop-1")


def test_corrupt_error_keeps_the_cause() -> None:
    """The JSON decoder's error is chained, not leaked."""
    with pytest.raises(CheckpointCorruptError) as caught:
        Checkpoint.from_json("not json", shop_id="shop-1")

    assert isinstance(caught.value.__cause__, json.JSONDecodeError)
