"""Breach estimation: when a forecast path crosses a threshold, how likely it is, and the interval.

Given a Gaussian `Prediction` on a grid of `BREACH_GRID` horizons and each series' last value,
`estimate` finds where the mean path first crosses the threshold (the ETA), where the
pessimistic and optimistic bounds at the chosen confidence cross (the ETA interval), and the
probability of a breach within the horizon. Crossings are located on the grid with linear
interpolation between grid points.

Imports nothing of the agent but the `Prediction` it reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from agent.models.prediction import Prediction

BREACH_GRID = 64  # forecast points per horizon used to locate crossings
DIRECTIONS = ("below", "above")


@dataclass
class BreachEstimates:
    """When each slot's forecast crosses a threshold, one entry per slot (seconds from `now`).

    eta_seconds: where the forecast mean crosses (inf: not within the horizon).
    eta_low_seconds / eta_high_seconds: where the pessimistic / optimistic prediction bound at
      the `confidence` level crosses; eta_low <= eta <= eta_high. eta_high is finite exactly
      when probability >= confidence.
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


def estimate(pred: Prediction, hs: np.ndarray, last: np.ndarray, model: np.ndarray, threshold: float, below: bool,
             horizon: float, confidence: float) -> BreachEstimates:
    """Breach estimates from `pred` on the horizons `hs` (`grid(horizon)`), per series.

    `last`: each series' last value (a series already past the threshold has eta 0 and
    probability 1); `model`: the model name per series, passed through; `confidence` is
    clamped to [0.5, 0.999]. A series whose sd is unknown (too little data) gets bounds equal
    to its mean path and probability 0.
    """
    conf = min(max(float(confidence), 0.5), 0.999)
    z = NormalDist().inv_cdf(conf)
    # unknown spread (too little data): bounds collapse onto the mean, probability 0
    known = np.isfinite(pred.sd)
    mean, sd = pred.mean, np.where(known, pred.sd, 0.0)
    sign = -1.0 if below else 1.0
    # optimistic (no-breach side) and pessimistic bounds; inf sd makes them never cross
    pess = mean + sign * z * sd
    opt = mean - sign * z * sd
    now_past = (last <= threshold) if below else (last >= threshold)
    times = np.concatenate(([0.0], hs))
    start = np.where(np.isfinite(last), last, np.nan)

    def with_now(path: np.ndarray) -> np.ndarray:
        return np.concatenate((np.tile(start, len(path) // max(len(start), 1))[:, None], path), axis=1)

    k = len(last)  # the three paths in one pass: fewer, larger numpy calls
    etas = first_crossing(times, with_now(np.concatenate((mean, pess, opt))), threshold, below) if k \
        else np.zeros(0)
    eta, eta_low, eta_high = etas[:k], etas[k:2 * k], etas[2 * k:]
    eta_low = np.minimum(eta_low, eta)
    eta_high = np.maximum(eta_high, eta)
    with np.errstate(divide="ignore", invalid="ignore"):
        zscore = sign * (mean - threshold) / sd
    zscore = np.where(known & ~np.isnan(zscore), zscore, -np.inf)
    prob = normal_cdf(np.max(zscore, axis=1)) if len(hs) else np.zeros(k)
    prob = np.where(now_past, 1.0, prob)
    value = mean[:, -1] if len(hs) else np.full(k, np.nan)
    # probability >= conf <=> the optimistic bound crosses somewhere (up to grid effects)
    eta_high = np.where(prob >= conf, np.minimum(eta_high, horizon), np.inf)
    return BreachEstimates(eta, eta_low, eta_high, prob, value, model, prob >= conf)
