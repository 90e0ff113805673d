"""Date and time functions of Unix timestamps (`minute`, `hour`, `day_of_week`,
`day_of_month`, `day_of_year`, `days_in_month`, `month`, `year`), in UTC as Prometheus
computes them, vectorised with integer civil-calendar arithmetic (valid far beyond the years
Python's datetime handles).

Prometheus converts each value with `time.Unix(int64(v), 0).UTC()`: fractions of a second are
truncated towards zero. Values that are NaN, infinite or outside int64 have no defined date in
Go; here they give NaN."""

from __future__ import annotations

import numpy as np

SECONDS_PER_DAY = 86400
_INT64_LIMIT = 9.2e18


def _seconds(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(whole seconds as int64, which values are usable)."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v) & (np.abs(v) < _INT64_LIMIT)
    secs = np.trunc(np.where(ok, v, 0.0)).astype(np.int64)
    return secs, ok


def civil_from_days(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(year, month 1-12, day 1-31) of days since 1970-01-01 in the proleptic Gregorian
    calendar (Howard Hinnant's algorithm)."""
    z = days + 719468
    era = np.floor_divide(z, 146097)
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    return year, month, day


def days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of a proleptic Gregorian date (inverse of civil_from_days)."""
    y = year - (month <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = np.where(month > 2, month - 3, month + 9)
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _is_leap(year: np.ndarray) -> np.ndarray:
    return (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))


def _fields(name: str, secs: np.ndarray) -> np.ndarray:
    days = np.floor_divide(secs, SECONDS_PER_DAY)
    of_day = secs - days * SECONDS_PER_DAY
    if name == "minute":
        return (of_day % 3600) // 60
    if name == "hour":
        return of_day // 3600
    if name == "day_of_week":
        return (days + 4) % 7  # 1970-01-01 was a Thursday; Sunday is 0
    year, month, day = civil_from_days(days)
    if name == "day_of_month":
        return day
    if name == "month":
        return month
    if name == "year":
        return year
    if name == "day_of_year":
        return days - days_from_civil(year, np.ones_like(year), np.ones_like(year)) + 1
    if name == "days_in_month":
        lengths = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
        return lengths[month - 1] + ((month == 2) & _is_leap(year))
    raise KeyError(name)


def date_field(name: str, values: np.ndarray) -> np.ndarray:
    """`name`(v) for every Unix time in `values`, as floats (NaN where undefined)."""
    secs, ok = _seconds(values)
    out = _fields(name, secs).astype(np.float64)
    return np.where(ok, out, np.nan)


DATE_FUNCTIONS: frozenset[str] = frozenset({
    "minute", "hour", "day_of_week", "day_of_month", "day_of_year", "days_in_month", "month", "year",
})
