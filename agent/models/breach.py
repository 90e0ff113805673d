"""Breach estimation: when a forecast path crosses a threshold, how likely it is, and the interval.

Given a Gaussian `Prediction` on a grid of `BREACH_GRID` horizons and each series' last value,
`estimate` finds where the mean path first crosses the threshold (the ETA), where the
pessimistic and optimistic bounds of the central `INTERVAL` (80 %) prediction interval cross
(the ETA interval: the breach comes before its low end with 10 % probability, after its high
end with 10 %), and the probability of a breach within the horizon. Crossings are located on
the grid with linear interpolation between grid points. `latch` is the hysteresis a rule puts
on that probability.

A series that has reached the threshold on several of its recent days (`recurrence`) is likelier
to breach than its line alone says: `estimate` combines the two.

Imports nothing of the agent but the `Prediction` it reads and `recurrence`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from agent.models import recurrence
from agent.models.prediction import Prediction

BREACH_GRID = 64  # forecast points per horizon used to locate crossings
INTERVAL = 0.8  # central probability of the stated ETA interval, whatever a rule's confidence
DIRECTIONS = ("below", "above")


@dataclass
class BreachEstimates:
    """When each slot's forecast crosses a threshold, one entry per slot (seconds from `now`).

    eta_seconds: where the forecast mean crosses (inf: not within the horizon).
    eta_low_seconds / eta_high_seconds: the ETA interval, where the pessimistic / optimistic
      bound of the central INTERVAL prediction interval crosses (the 10th and 90th percentiles
      of the breach time); eta_low <= eta <= eta_high. eta_high is finite exactly when the
      breach is at least 90 % likely within the horizon (inf: beyond it).
    probability: P(breach within the horizon) from the predictive distribution (the largest
      per-time crossing probability along the horizon; 1 when already breached).
    value_at_horizon: forecast mean at now + horizon.
    model: model name used per slot.
    breached: probability >= confidence (what a rule reports).
    """

    eta_seconds: np.ndarray
    eta_low_seconds: np.ndarray
    eta_high_seconds: np.ndarray
    probability: np.ndarray
    value_at_horizon: np.ndarray
    model: np.ndarray
    breached: np.ndarray


def is_below(direction: str) -> bool:
    """True for "below", False for "above"; ValueError for anything else."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'below' or 'above', not {direction!r}")
    return direction == "below"


def default_recovery(confidence: float) -> float:
    """The probability below which an active forecast clears when a rule does not say:
    2 * confidence - 1 (0.9 -> 0.8, 0.95 -> 0.9), at least half the confidence."""
    return max(2.0 * confidence - 1.0, 0.5 * confidence)


def latch(probability: np.ndarray, was: np.ndarray, enter: float, leave: float) -> np.ndarray:
    """Hysteresis on the breach probability: active where it reaches `enter`, or where it was
    active and has not fallen below `leave` (<= enter). A forecast whose probability hovers
    around `enter` (a breach near the horizon's edge) stays one problem instead of flapping."""
    p = np.asarray(probability, dtype=float)
    return (p >= enter) | (np.asarray(was, dtype=bool) & (p >= leave))


def grid(horizon: float) -> np.ndarray:
    """The BREACH_GRID horizons (seconds) a breach is looked for at: horizon/G, 2*horizon/G, ..., horizon."""
    return horizon * np.arange(1, BREACH_GRID + 1) / BREACH_GRID


def normal_cdf(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF, vectorised (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7)."""
    z = np.asarray(z, dtype=float)
    x = np.abs(z) / math.sqrt(2.0)
    tt = 1.0 / (1.0 + 0.3275911 * x)
    poly = tt * (0.254829592 + tt * (-0.284496736 + tt * (1.421413741 + tt * (-1.453152027 + tt * 1.061405429))))
    erf = 1.0 - poly * np.exp(-x * x)
    return 0.5 * (1.0 + np.where(z >= 0, erf, -erf))


def crossing_probability(pred: Prediction, threshold: float, below: bool) -> np.ndarray:
    """P(breach within the horizons of `pred`) per series: the largest per-time probability of
    being past `threshold` (0 where the spread is unknown)."""
    known = np.isfinite(pred.sd)
    sign = -1.0 if below else 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = sign * (pred.mean - threshold) / np.where(known, pred.sd, 0.0)
    z = np.where(known & ~np.isnan(z), z, -np.inf)
    return normal_cdf(np.max(z, axis=1)) if z.shape[1] else np.zeros(len(z))


def first_crossing(hs: np.ndarray, path: np.ndarray, threshold: float, below: bool) -> np.ndarray:
    """Seconds until `path` (series x grid, grid at times `hs`) first reaches `threshold`,
    interpolated linearly between grid points; inf if it never does."""
    cross = path <= threshold if below else path >= threshold
    hit = cross.any(axis=1)
    i = np.argmax(cross, axis=1)
    rows = np.arange(len(path))
    im1 = np.maximum(i - 1, 0)
    p0, p1 = path[rows, im1], path[rows, i]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip((p0 - threshold) / (p0 - p1), 0.0, 1.0)
    frac = np.where(np.isfinite(frac), frac, 1.0)
    eta = np.where(i == 0, hs[0], hs[im1] + (hs[i] - hs[im1]) * frac)
    return np.where(hit, eta, np.inf)


# First passage: the uncertainty of the path (the model's own: its line or smoothed state) is
# integrated over PATH_NODES equally likely quantiles u of a standard normal.
PATH_NODES = 16
_U = np.array([NormalDist().inv_cdf((k + 0.5) / PATH_NODES) for k in range(PATH_NODES)])
CHUNK_ROWS = 2048  # rows per block of the first-passage integral (bounds its temporary arrays)


def passage_cdf(pred: Prediction, hs: np.ndarray, threshold: float, below: bool,
                excursion: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """P(first sample at or past `threshold` by now + hs) per series (rows) and horizon.

    The series is the model's path (its mean, and the sd of the path itself) plus
    independent noise of sd `pred.noise` at one sample every `pred.step` seconds: the breach
    is the first sample that touches the threshold, so noise brings it forward. Given the
    path, the chance of surviving a stretch of time is the product of its samples' chances
    of staying inside; the path's own uncertainty is integrated over (PATH_NODES quantiles).
    Never less than the chance that the path alone has crossed (the largest z along it),
    which is all that counts without noise. Rows without a known spread get 0. `excursion`
    (`recurrence.DailyExtremes.excursion`: per series, the largest excursion of its recent
    days and their number) lowers the noise's chance of touching past that excursion
    (`recurrence.beyond`)."""
    k, g = pred.mean.shape
    out = np.zeros((k, g))
    if not k or not g:
        return out
    noise = pred.noise if pred.noise is not None else np.zeros(k)
    step = pred.step if pred.step is not None else np.full(k, np.inf)
    sign = -1.0 if below else 1.0
    cells = np.diff(np.concatenate(([0.0], hs)))
    for lo in range(0, k, CHUNK_ROWS):
        rows = slice(lo, min(lo + CHUNK_ROWS, k))
        sd = pred.sd[rows]
        nz = np.where(np.isfinite(noise[rows]), noise[rows], 0.0)[:, None]
        path = np.sqrt(np.maximum(sd * sd - nz * nz, 0.0))
        d = sign * (pred.mean[rows] - threshold)  # > 0: past the threshold
        with np.errstate(divide="ignore", invalid="ignore"):
            zp = np.where(path > 0, d / path, np.where(d >= 0, np.inf, -np.inf))
            alone = normal_cdf(np.maximum.accumulate(np.where(np.isnan(zp), -np.inf, zp), axis=1))
            per = cells[None, :] / np.where(step[rows] > 0, step[rows], np.inf)[:, None]  # samples per grid cell
            cdf = alone
            if (per > 0).any() and (nz > 0).any():
                num = d[:, None, :] + _U[None, :, None] * path[:, None, :]
                z = num / np.broadcast_to(nz[:, None, :], num.shape)
                z = np.where(np.isnan(z), np.where(num >= 0, np.inf, -np.inf), z)
                touch = normal_cdf(z)
                if excursion is not None:
                    touch = recurrence.beyond(touch, -num, excursion[0][rows], excursion[1][rows])
                stay = np.cumsum(per[:, None, :] * np.log1p(-np.minimum(touch, 1.0)), axis=2)
                crossed = np.maximum.accumulate(num >= 0, axis=2).mean(axis=1)  # the nodes' paths alone
                # the chance that noise touches first where the path has not crossed, measured on
                # the same nodes (so their coarseness cancels), added to the path's own crossing
                touched = (1.0 - np.exp(stay)).mean(axis=1) - crossed
                cond = np.where(crossed < 1, touched / np.where(crossed < 1, 1.0 - crossed, 1.0), 0.0)
                cdf = np.maximum.accumulate(alone + (1.0 - alone) * np.clip(cond, 0.0, 1.0), axis=1)
        known = np.isfinite(sd) & np.isfinite(pred.mean[rows])
        out[rows] = np.where(known, np.nan_to_num(cdf), 0.0)
    return out


def estimate(pred: Prediction, hs: np.ndarray, last: np.ndarray, model: np.ndarray, threshold: float, below: bool,
             horizon: float, confidence: float, per_day: np.ndarray | None = None,
             excursion: tuple[np.ndarray, np.ndarray] | None = None) -> BreachEstimates:
    """Breach estimates from `pred` on the horizons `hs` (`grid(horizon)`), per series.

    The breach time is the first passage (`passage_cdf`): `probability` is its chance within
    the horizon, `eta` its median, `eta_low` and `eta_high` its 10th and 90th percentiles
    (inf where the horizon does not reach them). `last`: each series' last value (a series
    already past the threshold has eta 0 and probability 1); `model`: the model name per
    series, passed through; `confidence` (clamped to [0.5, 0.999]) decides `breached`. A
    series whose spread is unknown (too little data) gets its mean path's crossing as eta and
    both bounds, and probability 0. `per_day` (`recurrence.DailyExtremes.per_day`): each
    series' chance a day of reaching the threshold as on its recent days, combined with the
    first passage (`recurrence.combine`) where the spread is known; `excursion` as in
    `passage_cdf`.
    """
    conf = min(max(float(confidence), 0.5), 0.999)
    low_q, high_q = 0.5 - INTERVAL / 2, 0.5 + INTERVAL / 2
    k = len(last)
    now_past = (last <= threshold) if below else (last >= threshold)
    times = np.concatenate(([0.0], hs))
    cdf = passage_cdf(pred, hs, threshold, below, excursion)
    known = np.isfinite(pred.sd).all(axis=1) if len(hs) else np.zeros(k, dtype=bool)
    if per_day is not None and len(hs) and (per_day[known] > 0).any():
        cdf = np.where(known[:, None], recurrence.combine(cdf, per_day, hs), cdf)
    with_zero = np.concatenate((np.zeros((k, 1)), cdf), axis=1)
    qs = np.concatenate([first_crossing(times, with_zero, q, False) for q in (0.5, low_q, high_q)]) if k \
        else np.zeros(0)
    eta, eta_low, eta_high = qs[:k], qs[k:2 * k], qs[2 * k:]
    if not known.all():
        unknown = ~known
        start = np.where(np.isfinite(last), last, np.nan)[unknown]
        mean_eta = first_crossing(times, np.concatenate((start[:, None], pred.mean[unknown]), axis=1), threshold,
                                  below)
        eta[unknown] = eta_low[unknown] = mean_eta
        eta_high[unknown] = np.inf
    prob = np.where(now_past, 1.0, cdf[:, -1] if len(hs) else 0.0)
    eta = np.where(now_past, 0.0, eta)
    eta_low = np.where(now_past, 0.0, eta_low)
    eta_high = np.where(now_past, 0.0, eta_high)
    value = pred.mean[:, -1] if len(hs) else np.full(k, np.nan)
    return BreachEstimates(eta, eta_low, eta_high, prob, value, model, prob >= conf)
