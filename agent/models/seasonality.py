"""Seasonality: which of the candidate periods (hourly, daily, weekly) a series repeats at, and
its seasonal profile in phase bins; bin means on a regular grid; `DailyProfile`, a daily
profile learnt online (O(1) per sample) that the linear forecasts take out of their window.

numpy only, so it runs in the main process (warm start) and in the refit worker alike.
Imports nothing of the agent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def bin_means(t: np.ndarray, v: np.ndarray, step: float, origin: float = 0.0) -> tuple[int, np.ndarray]:
    """(first bin number, mean of each bin) on a grid of `step` seconds, bins numbered
    floor((t - origin) / step); empty bins are filled by linear interpolation. `t` ascending."""
    g = np.floor((t - origin) / step).astype(np.int64)
    g0 = int(g[0])
    idx = g - g0
    n = int(idx[-1]) + 1
    cnt = np.bincount(idx, minlength=n)
    tot = np.bincount(idx, weights=v, minlength=n)
    have = cnt > 0
    y = np.empty(n)
    y[have] = tot[have] / cnt[have]
    if not have.all():
        pos = np.arange(n)
        y[~have] = np.interp(pos[~have], pos[have], y[have])
    return g0, y

HOUR = 3600.0
DAY = 86400.0
WEEK = 7 * DAY
CANDIDATE_PERIODS: tuple[float, ...] = (HOUR, DAY, WEEK)

# Phase bins used to estimate a candidate's seasonal profile. Enough to resolve a daily shape at
# 15-minute granularity while keeping the profile estimate well determined with two cycles.
_PROFILE_BINS = 96
# Minimum noise-corrected share of variance a profile must explain to count as seasonal.
_MIN_STRENGTH = 0.3
# A shorter period wins when its strength is this close to the best one (weekly data also
# repeats daily; the shorter period needs less history and fewer seasonal states).
_PREFER_SHORTER = 0.85


def seasonal_strength(t: np.ndarray, v: np.ndarray, period: float, min_cycles: float = 2.0) -> float:
    """Noise-corrected share of detrended variance explained by a period-`period` profile.

    0 for no seasonality (or too little history: fewer than `min_cycles` periods, or fewer than
    four samples per cycle), up to 1 for a series that is exactly periodic around a slow trend.
    """
    t = np.asarray(t, dtype=float)
    v = np.asarray(v, dtype=float)
    ok = np.isfinite(t) & np.isfinite(v)
    t, v = t[ok], v[ok]
    if len(t) < 8 or t[-1] - t[0] < min_cycles * period:
        return 0.0
    dt = float(np.median(np.diff(t)))
    if dt <= 0:
        return 0.0
    nbins = int(min(_PROFILE_BINS, period // dt))
    if nbins < 4:
        return 0.0
    step = period / nbins
    _, grid = bin_means(t, v, step, origin=t[0])
    n = len(grid)
    # Remove everything slower than the period: centred moving average over one full cycle.
    if n < 2 * nbins:
        return 0.0
    csum = np.concatenate(([0.0], np.cumsum(grid)))
    ma = (csum[nbins:] - csum[:-nbins]) / nbins  # ma[i] = mean(grid[i:i+nbins])
    half = nbins // 2
    resid = grid[half : half + len(ma)] - ma
    phase = (np.arange(half, half + len(ma)) + int(round((t[0] % period) / step))) % nbins
    pc = np.bincount(phase, minlength=nbins)
    profile = np.bincount(phase, weights=resid, minlength=nbins) / np.maximum(pc, 1)
    total = float(np.var(resid))
    if total <= 0:
        return 0.0
    explained = 1.0 - float(np.var(resid - profile[phase])) / total
    chance = nbins / len(resid)  # share a profile of pure noise explains by construction
    if chance >= 1:
        return 0.0
    return max(0.0, (explained - chance) / (1.0 - chance))


def detect_period(
    t: np.ndarray, v: np.ndarray, candidates: tuple[float, ...] = CANDIDATE_PERIODS, min_cycles: float = 2.0
) -> float | None:
    """The seasonal period (seconds) among `candidates`, or None when none is convincing.

    Needs at least `min_cycles` cycles of history for a candidate to be considered.
    """
    strengths = [(p, seasonal_strength(t, v, p, min_cycles)) for p in sorted(candidates)]
    best = max((s for _, s in strengths), default=0.0)
    if best < _MIN_STRENGTH:
        return None
    for p, s in strengths:
        if s >= _PREFER_SHORTER * best:
            return float(p)
    return None


def seasonal_profile(t: np.ndarray, v: np.ndarray, period: float, nbins: int) -> np.ndarray:
    """Mean-zero seasonal profile of (t, v) in `nbins` phase bins of `period` (detrended by a
    one-period moving average of the bin-regularised series)."""
    g0, grid = bin_means(t, v, period / nbins)
    n = len(grid)
    pos = np.arange(n)
    if n > nbins:
        csum = np.concatenate(([0.0], np.cumsum(grid)))
        ma = (csum[nbins:] - csum[:-nbins]) / nbins
        half = nbins // 2
        resid = grid[half : half + len(ma)] - ma
        ph = (pos[half : half + len(ma)] + g0) % nbins
    else:
        resid = grid - grid.mean()
        ph = (pos + g0) % nbins
    pc = np.bincount(ph, minlength=nbins)
    prof = np.bincount(ph, weights=resid, minlength=nbins) / np.maximum(pc, 1)
    if (pc == 0).any() and (pc > 0).any():
        k = np.arange(nbins)
        prof[pc == 0] = np.interp(k[pc == 0], k[pc > 0], prof[pc > 0], period=nbins)
    return prof - prof.mean()


# ---- the online daily profile (linear forecasts) --------------------------------------------

PROFILE_BINS = 48  # phase bins of a day in the online profile: 30 minutes each
PROFILE_RATE = 1 / 7  # weight of each new day in a bin's profile once a week is learnt (a week's memory)
PROFILE_COVERAGE = 0.75  # share of a day's bins that must hold samples for that day's mean to count
# A bin's count is 16 bits: a bin takes its first BIN_COUNT_MAX samples (one every 27 ms over
# 30 minutes) and leaves out the rest, so its mean stays the mean of what it counted.
BIN_COUNT_MAX = np.iinfo(np.uint16).max
NO_BIN = -(2**62)  # `DailyProfile.bin` of a slot without samples


def phase_values(profile: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A daily profile (series x PROFILE_BINS, bin j centred at (j + 0.5) * DAY / bins after
    midnight UTC) at times `t` (series x k, or k shared by all series), interpolated linearly
    between bin centres around the day."""
    p = profile.shape[1]
    t = np.broadcast_to(np.asarray(t, dtype=float), (profile.shape[0],) + np.shape(t)[-1:])
    x = np.mod(t, DAY) / (DAY / p) - 0.5
    lo = np.floor(x)
    f = x - lo
    j0 = np.mod(lo.astype(np.int64), p)
    j1 = np.mod(j0 + 1, p)
    return np.take_along_axis(profile, j0, axis=1) * (1 - f) + np.take_along_axis(profile, j1, axis=1) * f


@dataclass
class DailyProfile:
    """Per slot, what the series does at each time of day, learnt online in O(1) per sample.

    The last day is kept as a ring of PROFILE_BINS bins (`sum` and `n` of the samples in each,
    position bin % PROFILE_BINS; `bin` the newest bin number, floor(t / bin width)). When a
    sample opens a new bin, the bin half a day older is learnt: its mean less the mean of the
    day centred on it (the ring's bin means: a centred day's mean takes a linear trend, or a
    slow bend, out exactly, so a leak that starts does not leak into the profile), averaged
    over the days (`profile`, a running mean, then exponentially weighted at PROFILE_RATE).
    `resid` is the mean square of a day's bin deviation around the profile before it learnt
    that day (a bin's noise), `learnt` how many bins were learnt.

    `detected` says where the profile is worth using: two days learnt, and a profile whose
    variance, less what noise alone puts in it, explains at least MIN_STRENGTH of a bin's
    variance (the threshold `detect_period` uses for a season). It is measured when a slot
    learns (`on`, derived state: `refresh` rebuilds it), so a forecast reads one flag."""

    bin: np.ndarray
    sum: np.ndarray
    n: np.ndarray
    profile: np.ndarray
    resid: np.ndarray
    learnt: np.ndarray
    on: np.ndarray

    @classmethod
    def empty(cls, capacity: int, bins: int = PROFILE_BINS) -> DailyProfile:
        # counts in 16 bits (BIN_COUNT_MAX), the profile in float32 (7 digits of a deviation):
        # the ring's sums stay float64, they hold the level itself
        return cls(bin=np.full(capacity, NO_BIN, dtype=np.int64), sum=np.zeros((capacity, bins)),
                   n=np.zeros((capacity, bins), dtype=np.uint16), profile=np.zeros((capacity, bins), dtype=np.float32),
                   resid=np.zeros(capacity), learnt=np.zeros(capacity), on=np.zeros(capacity, dtype=bool))

    @property
    def bins(self) -> int:
        return int(self.sum.shape[1])

    @property
    def width(self) -> float:
        return DAY / self.bins

    def put(self, rows: np.ndarray | slice, src: DailyProfile) -> None:
        for name in ("bin", "sum", "n", "profile", "resid", "learnt", "on"):
            getattr(self, name)[rows] = getattr(src, name)

    def grow(self, capacity: int) -> DailyProfile:
        out = DailyProfile.empty(capacity, self.bins)
        out.put(slice(0, len(self.bin)), self)
        return out

    def reset(self, rows: np.ndarray | slice) -> None:
        self.put(rows, DailyProfile.empty(1, self.bins))

    def update(self, slots: np.ndarray, t: np.ndarray, v: np.ndarray) -> None:
        """One sample per slot (distinct slots, t after the slot's last sample, v finite)."""
        p = self.bins
        b = np.floor(t / self.width).astype(np.int64)
        last = self.bin[slots]
        moved = b != last
        if moved.any():
            self._advance(slots[moved], last[moved], b[moved])
        i = slots * p + b % p
        count = self.n.reshape(-1)
        room = count[i] < BIN_COUNT_MAX
        if not room.all():
            i, v = i[room], v[room]
        self.sum.reshape(-1)[i] += v
        count[i] += 1

    def _advance(self, slots: np.ndarray, last: np.ndarray, new: np.ndarray) -> None:
        """Slots whose sample opens bin `new` (their newest was `last`): learn the bin half a
        day before `last`, then clear the ring positions of the bins after `last` up to `new`
        (yesterday's, or everything after a gap of a day)."""
        p = self.bins
        had = last != NO_BIN
        if had.any():
            self._learn(slots[had], last[had])
        k = np.where(had, np.minimum(new - last, p), p)
        one = k == 1
        if one.any():
            i = slots[one] * p + new[one] % p
            self.sum.reshape(-1)[i] = 0.0
            self.n.reshape(-1)[i] = 0.0
        if not one.all():
            s = slots[~one]
            off = np.mod(np.arange(p)[None, :] - (last[~one] + 1)[:, None], p)
            keep = off >= k[~one][:, None]
            self.sum[s] = np.where(keep, self.sum[s], 0.0)
            self.n[s] = np.where(keep, self.n[s], 0.0)
        self.bin[slots] = new

    def _learn(self, slots: np.ndarray, last: np.ndarray) -> None:
        p = self.bins
        sums, counts = self.sum[slots], self.n[slots]
        have = counts > 0
        cover = have.sum(axis=1)
        means = np.where(have, sums / np.where(have, counts, 1.0), 0.0)
        day = means.sum(axis=1) / np.maximum(cover, 1)
        pos = np.mod(last - p // 2, p)
        rows = np.arange(len(slots))
        ok = have[rows, pos] & (cover >= PROFILE_COVERAGE * p)
        if not ok.any():
            return
        s, pos = slots[ok], pos[ok]
        d = means[rows[ok], pos] - day[ok]
        learnt = self.learnt[s]
        days = np.floor(learnt / p)  # days each bin has learnt (about)
        old = self.profile[s, pos].astype(float)
        r = d - old
        seen = days >= 1  # the deviation around a profile that has learnt this bin at least once
        rate_r = np.maximum(PROFILE_RATE / p, 1.0 / np.maximum(learnt - p + 1, 1.0))
        self.resid[s] = np.where(seen, self.resid[s] + rate_r * (r * r - self.resid[s]), self.resid[s])
        self.profile[s, pos] = old + np.maximum(PROFILE_RATE, 1.0 / (days + 1)) * r
        self.learnt[s] = learnt + 1
        self.refresh(s)

    def detected(self, slots: np.ndarray) -> np.ndarray:
        """Which slots have a daily profile worth forecasting with (see the class)."""
        return self.on[slots]

    def refresh(self, slots: np.ndarray) -> None:
        """Measure again whether the slots' profiles are worth using (`detected`)."""
        prof = self.profile[slots].astype(float)
        var = prof.var(axis=1)
        days = self.learnt[slots] / self.bins
        resid = self.resid[slots]
        # a bin's profile is a mean of its days' deviations: noise alone gives it this variance
        chance = resid * np.maximum(PROFILE_RATE / (2 - PROFILE_RATE), 1.0 / np.maximum(days, 1.0))
        true = var - chance
        with np.errstate(invalid="ignore", divide="ignore"):
            strength = true / (true + resid)
        self.on[slots] = (days >= 2) & (true > 0) & (strength >= _MIN_STRENGTH)

    def centred(self, slots: np.ndarray) -> np.ndarray:
        """The slots' profiles with their mean taken out (series x bins)."""
        prof = self.profile[slots].astype(float)
        return prof - prof.mean(axis=1, keepdims=True)

    def fill(self, slot: int, t: np.ndarray, v: np.ndarray) -> None:
        """Load a (reset) slot from a history: t ascending and distinct, v finite. Learns as
        `update` of each sample in turn would, one day of bins at a time."""
        if len(t) == 0:
            return
        p = self.bins
        b = np.floor(t / self.width).astype(np.int64)
        b0, b1 = int(b[0]), int(b[-1])
        g = b1 - b0 + 1
        cnt = np.bincount(b - b0, minlength=g).astype(float)
        tot = np.bincount(b - b0, weights=v, minlength=g)
        have = cnt > 0
        means = np.where(have, tot / np.where(have, cnt, 1.0), 0.0)
        # bin c is learnt when a sample opens a bin after c + p//2 (which must hold samples:
        # the ring's newest), from the ring's bins c + p//2 - p + 1 ..= c + p//2
        cs = np.concatenate(([0.0], np.cumsum(means)))
        ch = np.concatenate(([0], np.cumsum(have)))
        c = np.arange(g)
        hi = c + p // 2
        lo_c, hi_c = np.clip(hi - p + 1, 0, g), np.clip(hi + 1, 0, g)
        cover = ch[hi_c] - ch[lo_c]
        day = (cs[hi_c] - cs[lo_c]) / np.maximum(cover, 1)
        newest = np.zeros(g, dtype=bool)  # the ring's newest bin when a later sample came
        newest[: max(g - 1, 0)] = have[: max(g - 1, 0)]
        ok = (hi < g) & newest[np.minimum(hi, g - 1)] & have & (cover >= PROFILE_COVERAGE * p)
        idx = np.nonzero(ok)[0]
        d = means[idx] - day[idx]
        phase = np.mod(idx + b0, p)
        prof = np.zeros(p)
        learnt = 0.0
        resid = 0.0
        for j, ph in enumerate(phase):  # in order: the profile and `resid` evolve as online
            days = np.floor(learnt / p)
            r = d[j] - prof[ph]
            if days >= 1:
                resid += max(PROFILE_RATE / p, 1.0 / max(learnt - p + 1, 1.0)) * (r * r - resid)
            prof[ph] += max(PROFILE_RATE, 1.0 / (days + 1)) * r
            learnt += 1
        self.profile[slot] = prof
        self.resid[slot] = resid
        self.learnt[slot] = learnt
        ring = b > b1 - p
        pos = np.mod(b[ring], p)
        vr = v[ring]
        if len(pos) > BIN_COUNT_MAX and np.bincount(pos).max() > BIN_COUNT_MAX:
            # as `update` would: a bin counts its first BIN_COUNT_MAX samples
            order = np.argsort(pos, kind="stable")
            rank = np.arange(pos.size) - np.searchsorted(pos[order], pos[order])
            first = np.zeros(pos.size, dtype=bool)
            first[order] = rank < BIN_COUNT_MAX
            pos, vr = pos[first], vr[first]
        self.sum[slot] = np.bincount(pos, weights=vr, minlength=p)
        self.n[slot] = np.bincount(pos, minlength=p)
        self.bin[slot] = b1
        self.refresh(np.array([slot]))
