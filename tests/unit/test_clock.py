"""Taobao's clock from a round trip or a Date header, with its uncertainty."""

from datetime import datetime, timedelta

from taobao_ordersync._time import CST, format_time, parse_time, parse_timestamp_param
from taobao_ordersync.clock import ClockEstimate


def test_round_trip_estimate_halves_the_trip() -> None:
    """A server 300 s ahead, seen over a 0.2 s round trip, is estimated within its bounds."""
    sent = 1_700_000_000.0
    server = datetime.fromtimestamp(sent + 0.1 + 300, tz=CST).replace(microsecond=0)

    estimate = ClockEstimate.from_round_trip(sent=sent, received=sent + 0.2, server=server, measured_at=0.0)

    assert abs(estimate.offset - 300) <= estimate.uncertainty
    assert 0.6 == round(estimate.uncertainty, 6)
    true_now = datetime.fromtimestamp(sent + 10 + 300, tz=CST)
    assert estimate.earliest(sent + 10) <= true_now


def test_date_header_estimate() -> None:
    """An RFC 9110 Date header (whole seconds, GMT) gives the offset."""
    sent = datetime(2024, 1, 2, 3, 0, 0, tzinfo=CST).timestamp()

    estimate = ClockEstimate.from_date_header(
        "Mon, 01 Jan 2024 19:15:00 GMT", sent=sent, received=sent, measured_at=0.0
    )

    assert abs(estimate.offset - 900.5) < 1e-6
    assert timedelta(seconds=900.5) == estimate.skew()


def test_wire_time_round_trip() -> None:
    """GMT+8 strings parse to aware datetimes and format back, from any zone."""
    moment = parse_time("2024-11-11 00:00:00")

    assert "2024-11-11 00:00:00" == format_time(moment.astimezone(datetime.now().astimezone().tzinfo))
    assert moment == parse_timestamp_param(str(int(moment.timestamp() * 1000)))
