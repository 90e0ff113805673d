"""One clock drives everything: wall time in the daemon, simulated in `test` and `backtest`;
and the one RFC 3339 formatter and parser. A foundation: it imports nothing of the agent."""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""


class WallClock:
    def now(self) -> float:
        return time.time()


class SimulatedClock:
    """A clock that only moves when told to, for replays and tests."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def set(self, t: float) -> None:
        self._now = float(t)

    def advance(self, seconds: float) -> None:
        self._now += seconds


def parse_time(text: str) -> float:
    """Unix seconds, or RFC 3339 (`2026-11-23T10:00:00Z`, an offset, or none meaning UTC; a
    space may stand for the `T`) -> Unix seconds. Raises ValueError naming the text."""
    s = str(text).strip()
    try:
        x = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(x):
            raise ValueError(f"not a valid time: {text!r}")
        return x
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        t = dt.datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"not a valid time: {text!r} (use Unix seconds or RFC 3339, e.g. 2026-11-23T10:00:00Z)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def rfc3339(t: float, fraction: str = "nano") -> str:
    """Unix seconds as an RFC 3339 UTC time ending in `Z`. `fraction` picks the sub-second part
    as each reader expects it: "nano" is Go's RFC3339Nano (up to 9 digits, trailing zeros
    dropped: Prometheus's API), "micro" is 6 digits or none when zero, "milli" always 3 digits
    (Alertmanager's API), "seconds" none."""
    if fraction == "nano":
        whole = math.floor(t)
        nanos = int(round((t - whole) * 1e9))
        if nanos >= 1_000_000_000:
            whole, nanos = whole + 1, nanos - 1_000_000_000
        base = dt.datetime.fromtimestamp(whole, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        frac = f"{nanos:09d}".rstrip("0")
        return base + (f".{frac}" if frac else "") + "Z"
    d = dt.datetime.fromtimestamp(t, tz=dt.UTC)
    base = d.strftime("%Y-%m-%dT%H:%M:%S")
    if fraction == "seconds":
        return base + "Z"
    if fraction == "milli":
        return f"{base}.{d.microsecond // 1000:03d}Z"
    if fraction == "micro":
        return f"{base}.{d.microsecond:06d}Z" if d.microsecond else base + "Z"
    raise ValueError(f"unknown fraction {fraction!r}")


def human_time(t: float | None) -> str:
    """A time for people reading a terminal or a ticket: `2026-11-23 10:00:00Z`; `-` for none."""
    if t is None or not math.isfinite(t):
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
