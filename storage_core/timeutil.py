"""UTC time helpers: microsecond timestamps and the `YYYY-MM` months quotas are counted in."""

from __future__ import annotations

import datetime as dt
import time


def now_us() -> int:
    return time.time_ns() // 1000


def year_month_of(timestamp_us: int) -> str:
    return dt.datetime.fromtimestamp(timestamp_us / 1_000_000, dt.UTC).strftime("%Y-%m")


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; every datetime stored here is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def seconds_to_next_month(timestamp_us: int) -> int:
    """Whole seconds from ``timestamp_us`` to the start of the next UTC month (at least 1)."""
    now = dt.datetime.fromtimestamp(timestamp_us / 1_000_000, dt.UTC)
    first = dt.datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=dt.UTC)
    return max(1, int(-(-(first - now).total_seconds() // 1)))


def recent_months(year_month: str, count: int) -> list[str]:
    """``count`` months ending with ``year_month`` (``YYYY-MM``), newest first."""
    year, month = (int(part) for part in year_month.split("-"))
    index = year * 12 + month - 1
    return [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(index, index - count, -1)]
