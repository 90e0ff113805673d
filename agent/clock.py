"""One clock drives everything: wall time in the daemon, simulated in `test` and `backtest`."""

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
