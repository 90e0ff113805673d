"""One clock drives everything: wall time in the daemon, simulated in `test` and `backtest`."""

from __future__ import annotations

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
