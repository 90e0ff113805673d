"""Seasonality: which of the candidate periods (hourly, daily, weekly) a series repeats at, and
its seasonal profile in phase bins; bin means on a regular grid.

numpy only, so it runs in the main process (warm start) and in the refit worker alike.
Imports nothing of the agent.
"""

from __future__ import annotations

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
