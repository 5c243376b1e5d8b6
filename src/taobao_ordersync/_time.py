"""Taobao's wall-clock format: ``yyyy-MM-dd HH:mm:ss`` in China Standard Time.

Pure helpers. CST is UTC+8 with no daylight saving, so a fixed offset is exact.
Every datetime leaving this module is timezone-aware.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

CST = timezone(timedelta(hours=8), "CST")
WIRE_FORMAT = "%Y-%m-%d %H:%M:%S"
SECOND = timedelta(seconds=1)
# An aware epoch and its naive twin: ``_EPOCH + (naive - _NAIVE_EPOCH)`` attaches CST
# several times faster than ``naive.replace(tzinfo=CST)``.
_EPOCH = datetime(2000, 1, 1, tzinfo=CST)
_NAIVE_EPOCH = _EPOCH.replace(tzinfo=None)


def format_time(moment: datetime) -> str:
    """Render an aware datetime as Taobao's GMT+8 wall-clock string."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: pass a timezone-aware datetime")
    return moment.astimezone(CST).strftime(WIRE_FORMAT)


def parse_time(text: str) -> datetime:
    """Parse Taobao's ``yyyy-MM-dd HH:mm:ss`` (GMT+8) into an aware datetime (surrounding blanks allowed)."""
    if len(text) == 19 and text[10] == " " and text[4] == text[7] == "-" and text[13] == text[16] == ":":
        try:
            return _EPOCH + (datetime.fromisoformat(text) - _NAIVE_EPOCH)
        except ValueError:
            pass  # let strptime word the error
    return datetime.strptime(text.strip(), WIRE_FORMAT).replace(tzinfo=CST)


def parse_timestamp_param(text: str) -> datetime:
    """Parse a request ``timestamp``: the wall-clock form or epoch milliseconds."""
    stripped = text.strip()
    if stripped.isdigit():
        return datetime.fromtimestamp(int(stripped) / 1000, tz=CST)
    return parse_time(stripped)


def floor_second(moment: datetime) -> datetime:
    """Drop sub-second precision: Taobao's times have 1-second resolution."""
    return moment.replace(microsecond=0)


def from_epoch(seconds: float) -> datetime:
    """An aware CST datetime from POSIX seconds."""
    return datetime.fromtimestamp(seconds, tz=CST)
