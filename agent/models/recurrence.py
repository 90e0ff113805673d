"""Recurrence: how often a series has reached a level on its recent days.

A line (with its noise and its daily profile) says when a trend carries a series to a
threshold. It does not say that the series has touched that threshold on five of its last seven
days, in bursts the window of the line never saw: a level reached day after day is likely
reached again, whatever the last hours' line says. `DailyExtremes` keeps each series' highest
and lowest value of each of its last RECURRENCE_DAYS days (UTC days: today and the week
before it), learnt in O(1) per sample. `per_day` turns them into a chance per day of reaching a threshold, which a
breach estimate combines with the line's own (`combine`): a forecast whose stated breach
probability was 1 % when the series crossed on most days stops being that sure.

A level never reached on the days kept adds nothing: a disk filling for the first time, a
leak, a queue that never overflowed are forecast by their line alone, as before.

Imports nothing of the agent (and nothing but numpy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DAY = 86400.0
RECURRENCE_DAYS = 8  # days of extremes kept per series: today and the seven days before it
MIN_DAYS = 2  # days before today with samples before a series' recurrence counts
NO_DAY = -(2**62)  # `DailyExtremes.day` of a slot without samples


@dataclass
class DailyExtremes:
    """Per slot: `day`, the newest UTC day number (floor(t / DAY)) with a sample; `hi` and
    `lo`, the highest and lowest value of each of the last RECURRENCE_DAYS days (position
    day % RECURRENCE_DAYS; -inf / +inf where a day had no sample)."""

    day: np.ndarray
    hi: np.ndarray
    lo: np.ndarray

    @classmethod
    def empty(cls, capacity: int) -> DailyExtremes:
        return cls(day=np.full(capacity, NO_DAY, dtype=np.int64), hi=np.full((capacity, RECURRENCE_DAYS), -np.inf),
                   lo=np.full((capacity, RECURRENCE_DAYS), np.inf))

    def grow(self, capacity: int) -> DailyExtremes:
        out = DailyExtremes.empty(capacity)
        n = len(self.day)
        out.day[:n], out.hi[:n], out.lo[:n] = self.day, self.hi, self.lo
        return out

    def reset(self, rows: np.ndarray) -> None:
        self.day[rows] = NO_DAY
        self.hi[rows] = -np.inf
        self.lo[rows] = np.inf

    def update(self, slots: np.ndarray, t: np.ndarray, v: np.ndarray) -> None:
        """One sample per slot (distinct slots, t not older than the slot's last sample)."""
        d = np.floor(t / DAY).astype(np.int64)
        old = self.day[slots]
        moved = d > old
        if moved.any():
            rows, new, was = slots[moved], d[moved], old[moved]
            # the days between the newest kept and this one held no sample: clear their positions
            gap = np.where(was == NO_DAY, RECURRENCE_DAYS, np.minimum(new - was, RECURRENCE_DAYS))
            for back in range(int(gap.max())):
                sel = back < gap
                pos = (new[sel] - back) % RECURRENCE_DAYS
                self.hi[rows[sel], pos] = -np.inf
                self.lo[rows[sel], pos] = np.inf
            self.day[rows] = new
        pos = self.day[slots] % RECURRENCE_DAYS
        self.hi[slots, pos] = np.maximum(self.hi[slots, pos], v)
        self.lo[slots, pos] = np.minimum(self.lo[slots, pos], v)

    def fill(self, slot: int, t: np.ndarray, v: np.ndarray) -> None:
        """A slot's extremes from its history (t ascending), as `update` sample by sample would leave them."""
        self.reset(np.array([slot]))
        if len(t) == 0:
            return
        d = np.floor(t / DAY).astype(np.int64)
        newest = int(d[-1])
        keep = d > newest - RECURRENCE_DAYS
        d, v = d[keep], v[keep]
        pos = d % RECURRENCE_DAYS
        hi, lo = self.hi[slot], self.lo[slot]
        np.maximum.at(hi, pos, v)
        np.minimum.at(lo, pos, v)
        self.day[slot] = newest

    def per_day(self, slots: np.ndarray, threshold: float, below: bool, now: float) -> np.ndarray:
        """Per slot, the chance per day of reaching `threshold` going `below` or above: of the
        seven days before `now`'s day that had samples, those whose extreme reached it, k of n,
        as k / (n + 1) (never certain from a few days); 0 with fewer than MIN_DAYS such days or
        none reaching it. Today is left out: it is not over, and a breach now is the estimate's
        own business."""
        if len(slots) == 0:
            return np.zeros(0)
        ext = self.lo[slots] if below else self.hi[slots]
        newest = self.day[slots]
        # position p holds the day newest - ((newest - p) mod D); it is recent if within D days of now
        ages = (newest % RECURRENCE_DAYS)[:, None] - np.arange(RECURRENCE_DAYS)[None, :]
        day_of = newest[:, None] - np.mod(ages, RECURRENCE_DAYS)
        today = np.floor(now / DAY)
        recent = (day_of < today) & (day_of >= today - (RECURRENCE_DAYS - 1))
        seen = np.isfinite(ext) & recent & (newest != NO_DAY)[:, None]
        reached = seen & ((ext <= threshold) if below else (ext >= threshold))
        n = seen.sum(axis=1)
        k = reached.sum(axis=1)
        return np.where(n >= MIN_DAYS, k / (n + 1.0), 0.0)


def within(per_day: np.ndarray, hs: np.ndarray) -> np.ndarray:
    """P(reaching the level by now + hs) per slot (rows) and horizon, at `per_day` a day
    spread evenly over the day: 1 - (1 - per_day) ** (hs / DAY)."""
    stay = np.clip(1.0 - np.asarray(per_day, dtype=float), 0.0, 1.0)
    return 1.0 - stay[:, None] ** (np.asarray(hs, dtype=float)[None, :] / DAY)


def combine(cdf: np.ndarray, per_day: np.ndarray, hs: np.ndarray) -> np.ndarray:
    """A breach-time CDF (slots x horizons) combined with the recurrence's: the breach comes
    when either the line carries the series there or it reaches the level again as it has
    on its recent days, taken as independent."""
    return 1.0 - (1.0 - cdf) * (1.0 - within(per_day, hs))
