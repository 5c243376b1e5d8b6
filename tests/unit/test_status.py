"""ShopStatus: one shape for every runner, one table for `status`, the fleet's old names for one release."""

from __future__ import annotations

from datetime import timedelta

import pytest

from taobao_ordersync import Lease, Schedule, ShopStatus
from taobao_ordersync._time import parse_time
from taobao_ordersync.status import render_status

POSITION = parse_time("2026-12-01 10:00:00")


def test_the_table_shows_the_schedule_or_the_lease_only_where_some_status_has_one() -> None:
    plain = ShopStatus(shop_id="s1", phase="backfill", position=POSITION, behind=timedelta(hours=25))
    [header, row] = render_status([plain])
    assert header.split() == ["shop", "state", "phase", "checkpoint", "(CST)", "behind"]
    assert row.split() == ["s1", "-", "backfill", "2026-12-01", "10:00:00", "1", "day,", "1:00:00"]

    scheduled = ShopStatus(
        shop_id="s2",
        state="backing_off",
        phase="increments",
        position=POSITION,
        last_error="ServerError: isp.busy",
        schedule=Schedule(interval=60, next_poll_in=12.4),
    )
    [header, first, second] = render_status([plain, scheduled])
    assert header.endswith("next poll") and "owner" not in header
    assert first.split()[-1] == "-"  # no schedule known for that one
    assert second.endswith("0:00:12  ServerError: isp.busy")

    leased = ShopStatus(shop_id="s3", state="waiting", lease=Lease(owner="w1", seconds_left=-3, token=7))
    free = ShopStatus(shop_id="s4", lease=Lease(owner=None))
    [header, held, unheld] = render_status([leased, free])
    assert header.split()[:3] == ["shop", "owner", "lease"]
    assert held.split()[:5] == ["s3", "w1", "expired", "3s", "ago"]
    assert unheld.split()[:3] == ["s4", "-", "free"]


def test_the_fleets_old_flat_names_still_read_for_one_release() -> None:
    status = ShopStatus(shop_id="s", schedule=Schedule(interval=30.0, next_poll_in=5.0, polls=3, failures=1))
    with pytest.warns(DeprecationWarning, match="schedule.polls"):
        assert 3 == status.polls
    with pytest.warns(DeprecationWarning, match="schedule.interval"):
        assert 30.0 == status.interval
    with pytest.warns(DeprecationWarning, match="schedule.next_poll_in"):
        assert 5.0 == status.next_poll_in
    with pytest.warns(DeprecationWarning, match="schedule.failures"):
        assert 1 == status.failures


def test_a_status_hides_its_error_object_from_repr_and_equality() -> None:
    error = RuntimeError("boom")
    status = ShopStatus(shop_id="s", last_error="RuntimeError: boom", error=error)
    assert "RuntimeError('boom')" not in repr(status)
    assert status == ShopStatus(shop_id="s", last_error="RuntimeError: boom")
