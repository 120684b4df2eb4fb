"""UTC time helpers: microsecond timestamps and the `YYYY-MM` months quotas are counted in."""

from __future__ import annotations

import datetime as dt
import time


def now_us() -> int:
    return time.time_ns() // 1000


def year_month_of(timestamp_us: int) -> str:
    return dt.datetime.fromtimestamp(timestamp_us / 1_000_000, dt.UTC).strftime("%Y-%m")


def current_year_month() -> str:
    return year_month_of(now_us())


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; every datetime stored here is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
