"""Taobao's clock from a round trip or a Date header, with its uncertainty."""

from datetime import datetime, timedelta

from taobao_ordersync._time import CST, format_time, parse_time, parse_timestamp_param
from taobao_ordersync.clock import ClockEstimate


def test_round_trip_estimate_halves_the_trip() -> None:
    """A server 300 s ahead of the wall clock, seen over a 0.2 s round trip, is estimated within its bounds."""
    wall, monotonic = 1_700_000_000.0, 5_000.0
    server = datetime.fromtimestamp(wall + 0.1 + 300, tz=CST).replace(microsecond=0)

    estimate = ClockEstimate.from_round_trip(
        sent=monotonic, received=monotonic + 0.2, server=server, wall_gap=wall - monotonic
    )

    assert abs(estimate.offset - (wall - monotonic + 300)) <= estimate.uncertainty
    assert 0.6 == round(estimate.uncertainty, 6)
    assert monotonic + 0.2 == estimate.measured_at
    true_now = datetime.fromtimestamp(wall + 10 + 300, tz=CST)
    assert estimate.earliest(monotonic + 10) <= true_now


def test_date_header_estimate_is_anchored_on_the_monotonic_clock() -> None:
    """An RFC 9110 Date header (whole seconds, GMT) read at monotonic time 42 gives Taobao's time then."""
    estimate = ClockEstimate.from_date_header("Mon, 01 Jan 2024 19:15:00 GMT", sent=42.0, received=42.0)

    assert datetime(2024, 1, 2, 3, 15, 0, 500_000, tzinfo=CST) == estimate.now(42.0)
    assert estimate.now(42.0) + timedelta(seconds=8) == estimate.now(50.0)


def test_wall_drift_is_measured_against_the_gap_at_measurement() -> None:
    """The wall clock stepped back 120 s since the measurement; monotonic time ran on evenly."""
    estimate = ClockEstimate(offset=0.0, uncertainty=0.5, measured_at=10.0, wall_gap=1_000.0)

    assert 0.0 == estimate.wall_drift(wall=1_030.0, monotonic=30.0)
    assert -120.0 == estimate.wall_drift(wall=910.0, monotonic=30.0)


def test_wire_time_round_trip() -> None:
    """GMT+8 strings parse to aware datetimes and format back, from any zone."""
    moment = parse_time("2024-11-11 00:00:00")

    assert "2024-11-11 00:00:00" == format_time(moment.astimezone(datetime.now().astimezone().tzinfo))
    assert moment == parse_timestamp_param(str(int(moment.timestamp() * 1000)))
