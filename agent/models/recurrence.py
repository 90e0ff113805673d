"""Recurrence: how often a series has reached a level on its recent days.

A line (with its noise and its daily profile) says when a trend carries a series to a
threshold. It does not say that the series has touched that threshold on five of its last seven
days, in bursts the window of the line never saw: a level reached day after day is likely
reached again, whatever the last hours' line says. `DailyExtremes` keeps each series' highest
and lowest value of each of its last RECURRENCE_DAYS days (UTC days: today and the week
before it), learnt in O(1) per sample. `per_day` turns them into a chance per day of reaching
a threshold, which a breach estimate combines with the line's own (`combine`): a forecast whose stated breach
probability was 1 % when the series crossed on most days stops being that sure.

A level never reached on the days kept adds nothing: a disk filling for the first time, a
leak, a queue that never overflowed are forecast by their line alone, as before.

The same days bound the noise (`excursion`): each day's highest and lowest sample less the
day's mean is the largest excursion it made. A breach estimate takes the noise of one sample
as Gaussian; a series with large clipped spikes has a wide Gaussian that puts a few per mille
of every sample past levels its spikes never reach, and over a day's samples that adds up to a
likely breach. Past the largest excursion of its last days, the noise's chance of touching is
divided by the days it did not (`beyond`): the same k / (n + 1) rule, with k = 0. Only days
seen sample by sample bound the noise: days learnt from coarser history (the store keeps
5-minute means beyond its raw tier, and a mean hides a spike) still count for recurrence, but
their excursions would understate the noise and are not used (`exact`).

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
    day % RECURRENCE_DAYS; -inf / +inf where a day had no sample); `total` and `count`, the
    sum and number of its samples; `exact`, whether all of them were seen as they came (not
    learnt from coarser history)."""

    day: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    total: np.ndarray
    count: np.ndarray
    exact: np.ndarray

    @classmethod
    def empty(cls, capacity: int) -> DailyExtremes:
        shape = (capacity, RECURRENCE_DAYS)
        return cls(day=np.full(capacity, NO_DAY, dtype=np.int64), hi=np.full(shape, -np.inf),
                   lo=np.full(shape, np.inf), total=np.zeros(shape), count=np.zeros(shape, dtype=np.float32),
                   exact=np.ones(shape, dtype=bool))

    def grow(self, capacity: int) -> DailyExtremes:
        out = DailyExtremes.empty(capacity)
        n = len(self.day)
        out.day[:n], out.hi[:n], out.lo[:n], out.total[:n], out.count[:n], out.exact[:n] = \
            self.day, self.hi, self.lo, self.total, self.count, self.exact
        return out

    def reset(self, rows: np.ndarray) -> None:
        self.day[rows] = NO_DAY
        self.hi[rows] = -np.inf
        self.lo[rows] = np.inf
        self.total[rows] = 0.0
        self.count[rows] = 0.0
        self.exact[rows] = True

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
                self.total[rows[sel], pos] = 0.0
                self.count[rows[sel], pos] = 0.0
                self.exact[rows[sel], pos] = True
            self.day[rows] = new
        pos = d % RECURRENCE_DAYS  # the slot's newest day is now this sample's
        self.hi[slots, pos] = np.maximum(self.hi[slots, pos], v)
        self.lo[slots, pos] = np.minimum(self.lo[slots, pos], v)
        self.total[slots, pos] += v
        self.count[slots, pos] += 1

    def fill(self, slot: int, t: np.ndarray, v: np.ndarray, exact: bool = True) -> None:
        """A slot's extremes from its history (t ascending), as `update` sample by sample would
        leave them. `exact=False`: the history is coarser than the samples (means over
        intervals), so its days count for recurrence but do not bound the noise."""
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
        self.total[slot] = np.bincount(pos, weights=v, minlength=RECURRENCE_DAYS)
        self.count[slot] = np.bincount(pos, minlength=RECURRENCE_DAYS)
        self.exact[slot] = exact
        self.day[slot] = newest

    def _days(self, slots: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Which positions hold one of the seven days before `now`'s day, and which hold `now`'s
        day itself (slots x positions, with samples)."""
        newest = self.day[slots]
        # position p holds the day newest - ((newest - p) mod D)
        ages = (newest % RECURRENCE_DAYS)[:, None] - np.arange(RECURRENCE_DAYS)[None, :]
        day_of = newest[:, None] - np.mod(ages, RECURRENCE_DAYS)
        today = np.floor(now / DAY)
        seen = (self.count[slots] > 0) & (newest != NO_DAY)[:, None]
        return seen & (day_of < today) & (day_of >= today - (RECURRENCE_DAYS - 1)), seen & (day_of == today)

    def excursion(self, slots: np.ndarray, below: bool, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Per slot, the largest excursion from its day's mean towards the breach's side (up,
        or down with `below`) over today and the seven days before it, and how many of those
        seven days had samples (what `beyond` divides by), counting `exact` days only; an inf
        excursion where fewer than MIN_DAYS such days."""
        before, today = self._days(slots, now)
        exact = self.exact[slots]
        before, today = before & exact, today & exact
        counted = before | today
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.total[slots] / np.where(self.count[slots] > 0, self.count[slots], 1.0)
            ext = (mean - self.lo[slots]) if below else (self.hi[slots] - mean)
        reach = np.max(np.where(counted, ext, -np.inf), axis=1, initial=-np.inf)
        days = before.sum(axis=1)
        return np.where(days >= MIN_DAYS, reach, np.inf), days

    def per_day(self, slots: np.ndarray, threshold: float, below: bool, now: float) -> np.ndarray:
        """Per slot, the chance per day of reaching `threshold` going `below` or above: of the
        seven days before `now`'s day that had samples, those whose extreme reached it, k of n,
        as k / (n + 1) (never certain from a few days); 0 with fewer than MIN_DAYS such days or
        none reaching it. Today is left out: it is not over, and a breach now is the estimate's
        own business."""
        ext = self.lo[slots] if below else self.hi[slots]
        hit = (ext <= threshold) if below else (ext >= threshold)
        out = np.zeros(len(slots))
        # at every evaluation, for every series: most never reached the level on any day kept,
        # and one comparison says so; only the others need their days dated
        rows = np.nonzero(hit.any(axis=1))[0]
        if len(rows):
            seen, _ = self._days(slots[rows], now)
            n = seen.sum(axis=1)
            k = (seen & hit[rows]).sum(axis=1)
            out[rows] = np.where(n >= MIN_DAYS, k / (n + 1.0), 0.0)
        return out


def beyond(p: np.ndarray, needed: np.ndarray, reach: np.ndarray, days: np.ndarray) -> np.ndarray:
    """The chance `p` of one sample's noise touching a level `needed` away (any shape whose
    first axis is the slots), divided by days + 1 where that is past the slot's largest
    `reach` of its recent days: a noise that in `days` days never went that far is taken to go
    that far once in days + 1 times as often as its Gaussian says."""
    extra = (slice(None),) + (None,) * (np.ndim(p) - 1)
    past = needed > reach[extra]
    return np.where(past, p / (np.asarray(days, dtype=float)[extra] + 1.0), p)


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
