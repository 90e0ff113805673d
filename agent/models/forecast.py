"""Forecasters with prediction intervals, updated online and vectorised across series.

One `ForecastBank` holds the state of many series ("slots"). Every slot carries the state of all
forecasters at once, so `auto` can switch per series without replaying history:

- `linear`: least squares over the last `lookback` seconds, the method of Prometheus
  `predict_linear` (regress on t - eval_time, predict the value at eval_time + horizon). Kept as
  sufficient statistics in `linear_buckets` time buckets of `lookback / linear_buckets` seconds;
  the result equals `predict_linear` exactly when no bucket straddles the window's left edge
  with more than one sample (always true when samples are further apart than a bucket),
  otherwise the left edge is quantised to one bucket.
- `robust_linear`: Theil's incomplete method (median of slopes between the i-th and the
  (i + n/2)-th bucket centroid) on the same buckets: a single spike moves one slope of n/2.
- `holt`: additive damped trend (ETS(A,Ad,N)) in error-correction form.
- `holt_winters`: the same plus additive seasonality (ETS(A,Ad,A)); the seasonal state is kept
  in at most `season_bins` phase bins per period, so weekly seasonality at a 15 s scrape
  interval costs `season_bins` floats, not 40,320.
- `auto`: per slot, the model with the lowest held-out error, chosen by the refit worker
  (`agent.models.refit`), `linear` until the first refit.

Smoothing parameters are fitted off the hot path by the refit worker (statsmodels, in a
separate process); between refits `update` is O(1) per sample per slot. Prediction intervals
are Gaussian: the regression interval for the linear models, the analytic ETS variance
sigma^2 * (1 + sum_{j<h} c_j^2) for holt / holt_winters with sigma^2 tracked online.

Models do no I/O: arrays and times in, arrays out. Times are seconds (Unix epoch or any
consistent origin). Slots given to one call must be distinct.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from agent.models.seasonality import CANDIDATE_PERIODS, bin_means, detect_period

MODELS: tuple[str, ...] = ("linear", "robust_linear", "holt", "holt_winters")
LINEAR, ROBUST_LINEAR, HOLT, HOLT_WINTERS = range(4)
MODEL_CHOICES: tuple[str, ...] = MODELS + ("auto",)

# Defaults until the refit worker has fitted a series: moderate smoothing, mild damping.
DEFAULT_ALPHA = 0.2
DEFAULT_BETA = 0.01
DEFAULT_PHI = 0.98
DEFAULT_GAMMA = 0.1
PHI_MAX = 0.9999  # phi == 1 is the undamped limit; kept below so closed forms stay finite

_SCALE_RATE = 0.02  # EW rate of the one-step residual variance (~50 samples memory)
_SCALE_CLIP = 25.0  # residuals beyond 5 sigma count as 5 sigma in the scale estimate
_DT_RATE = 0.05  # EW rate of the sampling interval estimate
_MAX_GAP_STEPS = 100_000
_BREACH_GRID = 64  # forecast points per horizon used to locate crossings (linear interpolation between)


@dataclass
class Forecast:
    """Point forecasts and predictive standard deviations, one row per slot.

    `mean` and `sd` have shape (len(slots), len(horizons)); NaN where a slot has too little data.
    `model` is the model name used for each slot.
    """

    mean: np.ndarray
    sd: np.ndarray
    model: np.ndarray


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


@dataclass
class RefitJob:
    """Work for the refit worker: one series' history and what to fit.

    `t`/`v` are the history (seconds, values); `refit_jobs(now, history=...)` fills them, or the
    caller sets them for `start < t <= end` before submitting. `period`: seasonal period in
    seconds, None to detect among `candidates`, 0 for no seasonality.
    """

    key: Hashable
    slot: int
    gen: int
    start: float
    end: float
    period: float | None
    candidates: tuple[float, ...]
    lookback: float
    horizon: float
    season_bins: int
    linear_buckets: int
    models: tuple[str, ...]
    t: np.ndarray | None = None
    v: np.ndarray | None = None


@dataclass
class RefitResult:
    """What the worker sends back; parameters are per raw sample step of the series."""

    key: Hashable
    slot: int
    gen: int
    ok: bool
    error: str = ""
    period: float = 0.0
    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA
    phi: float = DEFAULT_PHI
    hw_alpha: float = DEFAULT_ALPHA
    hw_beta: float = DEFAULT_BETA
    hw_phi: float = DEFAULT_PHI
    gamma: float = DEFAULT_GAMMA
    choice: str = "linear"
    errors: dict[str, float] = field(default_factory=dict)
    # state at `t_end` for the seasonal model, used when the period changed
    t_end: float = math.nan
    level: float = math.nan
    trend: float = math.nan
    season: np.ndarray | None = None
    fit_seconds: float = 0.0


def predict_linear(t: np.ndarray, v: np.ndarray, eval_time: float, horizon: float) -> float:
    """Prometheus `predict_linear(v[range], horizon)` evaluated at `eval_time` on the samples given.

    Least squares of v on (t - eval_time); returns intercept + slope * horizon. NaN with fewer
    than two samples.
    """
    t = np.asarray(t, dtype=float)
    v = np.asarray(v, dtype=float)
    if len(t) < 2:
        return math.nan
    x = t - eval_time
    n = len(x)
    sx, sy = x.sum(), v.sum()
    cov = (x * v).sum() - sx * sy / n
    var = (x * x).sum() - sx * sx / n
    if var == 0:
        return math.nan
    slope = cov / var
    intercept = sy / n - slope * sx / n
    return float(intercept + slope * horizon)


def normal_cdf(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF, vectorised (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7)."""
    z = np.asarray(z, dtype=float)
    x = np.abs(z) / math.sqrt(2.0)
    tt = 1.0 / (1.0 + 0.3275911 * x)
    poly = tt * (0.254829592 + tt * (-0.284496736 + tt * (1.421413741 + tt * (-1.453152027 + tt * 1.061405429))))
    erf = 1.0 - poly * np.exp(-x * x)
    return 0.5 * (1.0 + np.where(z >= 0, erf, -erf))


def _damped_sum(phi: np.ndarray, k: np.ndarray) -> np.ndarray:
    """sum_{i=1..k} phi^i for real k >= 0 (the trend multiplier of a damped forecast)."""
    return phi * (1.0 - phi**k) / (1.0 - phi)


def _ets_var_factor(alpha: np.ndarray, beta: np.ndarray, phi: np.ndarray, gamma: np.ndarray,
                    m: np.ndarray, h: np.ndarray) -> np.ndarray:
    """1 + sum_{j=1}^{h-1} c_j^2 with c_j = alpha + beta*sum_{i<=j} phi^i + gamma*[m | j].

    Closed form of the h-step forecast variance factor of ETS(A,Ad,A) (Hyndman et al. 2008,
    ch. 6); gamma = 0 gives ETS(A,Ad,N). `h` may be fractional (linear in between).
    """
    n = np.maximum(h - 1.0, 0.0)
    B = beta * phi / (1.0 - phi)
    A = alpha + B
    sum_c2 = n * A * A - 2 * A * B * _damped_sum(phi, n) + B * B * _damped_sum(phi * phi, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(m > 0, np.floor(n / np.where(m > 0, m, 1.0)), 0.0)
        pm = phi ** np.where(m > 0, m, 1.0)
        sum_cm = k * A - B * np.where(k > 0, pm * (1 - pm**k) / (1 - pm), 0.0)
    sum_c2 = sum_c2 + np.where(k > 0, 2 * gamma * sum_cm + k * gamma * gamma, 0.0)
    return 1.0 + np.maximum(sum_c2, 0.0)


def _first_crossing(hs: np.ndarray, path: np.ndarray, threshold: float, below: bool) -> np.ndarray:
    """Seconds until `path` (slots x grid, grid at times `hs`) first reaches threshold; inf if never."""
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


class ForecastBank:
    """Online forecasters for many series; see the module docstring for the models.

    ForecastBank(model="auto", lookback=6h, season=None): `model` is one of MODEL_CHOICES;
    `lookback` (seconds) is the linear models' window; `season` (seconds) fixes the
    holt_winters period, None detects it per series among hourly, daily and weekly.
    Keyword options: `horizon` (what `auto` optimises for; default lookback), `refit_interval`
    (seconds between refits of a series), `history` (seconds of history a refit asks for),
    `linear_buckets`, `season_bins`, `min_refit_points`.

    Typical use (the rules layer):
        slots = bank.slots_for(keys)                 # stable slot per key
        bank.update(slots, t, values)                # each new sample, O(1)
        est = bank.breach(slots, now, 0.0, "below", 86400, 0.9)
        for job in bank.refit_jobs(now, history=lambda key: store.history(...)): ...
        worker.submit(jobs); bank.apply_refit(worker.poll())
    """

    def __init__(
        self,
        model: str = "auto",
        lookback: float = 6 * 3600.0,
        season: float | None = None,
        *,
        horizon: float | None = None,
        refit_interval: float = 6 * 3600.0,
        history: float = 8 * 86400.0,
        linear_buckets: int = 64,
        season_bins: int = 288,
        min_refit_points: int = 48,
        capacity: int = 16,
    ) -> None:
        if model not in MODEL_CHOICES:
            raise ValueError(f"unknown forecast model {model!r}; expected one of {', '.join(MODEL_CHOICES)}")
        if not lookback > 0:
            raise ValueError("lookback must be positive")
        if season is not None and season < 0:
            raise ValueError("season must be >= 0 seconds (0: no seasonality)")
        self.model = model
        self.lookback = float(lookback)
        self.season = None if season is None else float(season)
        self.horizon = float(horizon) if horizon else self.lookback
        self.refit_interval = float(refit_interval)
        self.history = float(history)
        self.linear_buckets = int(linear_buckets)
        # one ring position more than buckets per window, so the partly-covered oldest bucket
        # survives until the window has fully left it
        self.nb = self.linear_buckets + 1
        self.width = self.lookback / self.linear_buckets
        self.uses_season = model in ("holt_winters", "auto") and self.season != 0
        self.nm = int(season_bins) if self.uses_season else 0
        self.min_refit_points = int(min_refit_points)
        self.needs_refit = model in ("holt", "holt_winters", "auto")
        self._keys: list[Hashable | None] = []
        self._slot_of: dict[Hashable, int] = {}
        self._free: list[int] = []
        self.cap = 0
        self._alloc(max(1, capacity))

    # ---- slot management -------------------------------------------------------------

    _SCALARS = {
        "t_last": np.nan, "v_last": np.nan, "dt0": np.nan, "nseen": 0.0,
        "h_l": np.nan, "h_b": 0.0, "h_s2": np.nan,
        "h_alpha": DEFAULT_ALPHA, "h_beta": DEFAULT_BETA, "h_phi": DEFAULT_PHI,
        "w_l": np.nan, "w_b": 0.0, "w_s2": np.nan, "period": 0.0, "nbins": 0.0,
        "w_alpha": DEFAULT_ALPHA, "w_beta": DEFAULT_BETA, "w_phi": DEFAULT_PHI, "w_gamma": DEFAULT_GAMMA,
        "choice": float(LINEAR), "next_refit": np.nan, "pending_since": np.nan, "gen": 0.0,
    }
    _BUCKETS = ("lb_n", "lb_st", "lb_sv", "lb_stt", "lb_stv", "lb_svv", "lb_c")

    def _alloc(self, cap: int) -> None:
        old = self.cap
        for name, init in self._SCALARS.items():
            arr = np.full(cap, init, dtype=float)
            if old:
                arr[:old] = getattr(self, name)
            setattr(self, name, arr)
        for name in self._BUCKETS:
            arr = np.zeros((cap, self.nb))
            if old:
                arr[:old] = getattr(self, name)
            setattr(self, name, arr)
        lb_id = np.full((cap, self.nb), -1, dtype=np.int64)
        season = np.zeros((cap, self.nm))
        if old:
            lb_id[:old] = self.lb_id
            season[:old] = self.season_state
        self.lb_id = lb_id
        self.season_state = season
        self._keys.extend([None] * (cap - old))
        self._free.extend(range(cap - 1, old - 1, -1))
        self.cap = cap

    def _reset(self, slots: np.ndarray) -> None:
        for name, init in self._SCALARS.items():
            if name != "gen":
                getattr(self, name)[slots] = init
        self.gen[slots] += 1
        for name in self._BUCKETS:
            getattr(self, name)[slots] = 0.0
        self.lb_id[slots] = -1
        self.season_state[slots] = 0.0
        if self.season:
            self.period[slots] = self.season

    def slots_for(self, keys: Sequence[Hashable]) -> np.ndarray:
        """Slot index per key (int64 array), allocating fresh zeroed state for new keys."""
        out = np.empty(len(keys), dtype=np.int64)
        new: list[int] = []
        for i, key in enumerate(keys):
            slot = self._slot_of.get(key)
            if slot is None:
                if not self._free:
                    self._alloc(self.cap * 2)
                slot = self._free.pop()
                self._slot_of[key] = slot
                self._keys[slot] = key
                new.append(slot)
            out[i] = slot
        if new:
            self._reset(np.asarray(new, dtype=np.int64))
        return out

    def forget(self, keys: Sequence[Hashable]) -> None:
        """Drop the state of `keys` (series gone); their slots are reused."""
        for key in keys:
            slot = self._slot_of.pop(key, None)
            if slot is not None:
                self._keys[slot] = None
                self._free.append(slot)
                self.gen[slot] += 1

    def keys(self) -> list[Hashable]:
        return list(self._slot_of)

    def __len__(self) -> int:
        return len(self._slot_of)

    # ---- online update ---------------------------------------------------------------

    def update(self, slots: np.ndarray, t: float | np.ndarray, values: np.ndarray) -> None:
        """Feed one new sample per slot (distinct slots). O(1) per slot, vectorised.

        NaN values (including Prometheus stale markers) and samples not newer than the slot's
        last one are ignored.
        """
        slots = np.asarray(slots, dtype=np.int64)
        v = np.asarray(values, dtype=float)
        t = np.broadcast_to(np.asarray(t, dtype=float), slots.shape)
        last = self.t_last[slots]
        ok = np.isfinite(v) & ~(t <= last)
        if not ok.all():
            slots, t, v, last = slots[ok], t[ok], v[ok], last[ok]
        if len(slots) == 0:
            return
        first = np.isnan(last)
        dt = t - last
        dt0 = self.dt0[slots]
        dt0 = np.where(np.isnan(dt0), dt, dt0 + _DT_RATE * (np.clip(dt, 0.25 * dt0, 4 * dt0) - dt0))
        self.dt0[slots] = dt0
        self.t_last[slots] = t
        self.v_last[slots] = v
        n = self.nseen[slots] + 1
        self.nseen[slots] = n
        self._update_linear(slots, t, v)
        k = np.where(first | ~np.isfinite(dt0), 1.0, np.clip(np.rint(dt / np.where(dt0 > 0, dt0, 1.0)), 1, _MAX_GAP_STEPS))
        rate = np.maximum(1.0 / n, _SCALE_RATE)
        self._update_ets(slots, t, v, k, rate, first, seasonal=False)
        if self.nm:
            self._update_ets(slots, t, v, k, rate, first, seasonal=True)

    def _update_linear(self, slots: np.ndarray, t: np.ndarray, v: np.ndarray) -> None:
        bid = np.floor(t / self.width).astype(np.int64)
        pos = bid % self.nb
        stale = self.lb_id[slots, pos] != bid
        if stale.any():
            s, p = slots[stale], pos[stale]
            for name in self._BUCKETS:
                getattr(self, name)[s, p] = 0.0
            self.lb_id[s, p] = bid[stale]
            self.lb_c[s, p] = v[stale]
        x = t - bid * self.width
        y = v - self.lb_c[slots, pos]
        self.lb_n[slots, pos] += 1.0
        self.lb_st[slots, pos] += x
        self.lb_sv[slots, pos] += y
        self.lb_stt[slots, pos] += x * x
        self.lb_stv[slots, pos] += x * y
        self.lb_svv[slots, pos] += y * y

    def _update_ets(self, slots: np.ndarray, t: np.ndarray, v: np.ndarray, k: np.ndarray,
                    rate: np.ndarray, first: np.ndarray, seasonal: bool) -> None:
        p = "w_" if seasonal else "h_"
        level, trend, s2 = getattr(self, p + "l"), getattr(self, p + "b"), getattr(self, p + "s2")
        alpha, beta, phi = getattr(self, p + "alpha")[slots], getattr(self, p + "beta")[slots], getattr(self, p + "phi")[slots]
        l0, b0 = level[slots], trend[slots]
        start = first | np.isnan(l0)
        l0 = np.where(start, v, l0)
        b0 = np.where(start, 0.0, b0)
        l_pred = l0 + b0 * _damped_sum(phi, k)
        b_pred = b0 * phi**k
        pred = l_pred
        if seasonal:
            per = self.period[slots]
            has = per > 0
            bins = self._bins(slots, t)
            sv = np.where(has, self.season_state[slots, bins], 0.0)
            pred = l_pred + sv
        e = np.where(start, 0.0, v - pred)
        level[slots] = l_pred + alpha * e
        trend[slots] = b_pred + beta * e
        if seasonal:
            g = np.where(has, self.w_gamma[slots], 0.0)
            self.season_state[slots, bins] = sv + g * e
        old = s2[slots]
        bound = _SCALE_CLIP * np.nan_to_num(old) + (1e-6 * (np.abs(v) + 1.0)) ** 2
        e2 = np.where(np.isnan(old), e * e, np.minimum(e * e, bound))
        s2[slots] = np.where(start, np.nan, np.where(np.isnan(old), e2, old + rate * (e2 - old)))

    def _bins(self, slots: np.ndarray, t: np.ndarray) -> np.ndarray:
        per = self.period[slots]
        nbins = self.nbins[slots]
        unset = (per > 0) & (nbins == 0)
        if unset.any():  # period fixed but interval unknown when the slot was created
            dt0 = self.dt0[slots]
            nb = np.clip(np.rint(per / np.where(dt0 > 0, dt0, per)), 1, self.nm)
            nb = np.where(np.isfinite(dt0) & (dt0 > 0), nb, 0)
            nbins = np.where(unset, nb, nbins)
            self.nbins[slots] = nbins
        safe = np.where(per > 0, per, 1.0)
        b = np.floor(np.mod(t, safe) / safe * nbins).astype(np.int64)
        return np.clip(b, 0, max(self.nm - 1, 0))

    # ---- forecasts ----------------------------------------------------------------------

    def model_codes(self, slots: np.ndarray) -> np.ndarray:
        """Model code (index into MODELS) used for each slot."""
        if self.model == "auto":
            codes = self.choice[slots].astype(np.int64)
        else:
            codes = np.full(len(slots), MODELS.index(self.model), dtype=np.int64)
        return codes

    def forecast(self, slots: np.ndarray, now: float, horizons: np.ndarray | Sequence[float],
                 model: str | None = None) -> Forecast:
        """Forecast mean and sd at now + each horizon (seconds) for each slot.

        `model` overrides the bank's model choice (e.g. to compare models); default: the
        bank's model, or per-slot choice for `auto`.
        """
        slots = np.asarray(slots, dtype=np.int64)
        hs = np.asarray(horizons, dtype=float)
        codes = self.model_codes(slots) if model is None else np.full(len(slots), MODELS.index(model))
        mean = np.full((len(slots), len(hs)), np.nan)
        sd = np.full_like(mean, np.nan)
        for code in np.unique(codes):
            rows = np.nonzero(codes == code)[0]
            s = slots[rows]
            if code in (LINEAR, ROBUST_LINEAR):
                m, d = self._forecast_linear(s, now, hs, robust=code == ROBUST_LINEAR)
            else:
                m, d = self._forecast_ets(s, now, hs, seasonal=code == HOLT_WINTERS)
            mean[rows], sd[rows] = m, d
        return Forecast(mean, sd, np.asarray(MODELS, dtype=object)[codes])

    def _window(self, slots: np.ndarray, now: float) -> tuple[np.ndarray, ...]:
        """Per-bucket (n, safe n, bucket start, in-window mask, sum of x offsets) for buckets in
        (now - lookback, now]; x is time relative to the bucket start."""
        n = self.lb_n[slots]
        st = self.lb_st[slots]
        safe_n = np.where(n > 0, n, 1.0)
        start = self.lb_id[slots] * self.width
        edge = now - self.lookback
        # a bucket is whole if its start is inside the window; the edge bucket counts by mean time
        use = (n > 0) & (st / safe_n + start > edge) & (start <= now)
        n = np.where(use, n, 0.0)
        return n, safe_n, start, use, st

    def _linear_fit(self, slots: np.ndarray, now: float):
        n, safe_n, start, use, st = self._window(slots, now)
        off = start - now  # bucket origin relative to now
        c = self.lb_c[slots]
        sv = self.lb_sv[slots]
        N = n.sum(axis=1)
        safeN = np.where(N > 0, N, 1.0)
        sx = np.where(use, st + n * off, 0.0)
        # y relative to a common centre: the mean of the used buckets' c (keeps sums well conditioned)
        used = use.sum(axis=1)
        ref = np.where(used > 0, np.where(use, c, 0.0).sum(axis=1) / np.maximum(used, 1), 0.0)
        dc = c - ref[:, None]
        sy = np.where(use, sv + n * dc, 0.0)
        sxx = np.where(use, self.lb_stt[slots] + 2 * off * st + n * off * off, 0.0)
        sxy = np.where(use, self.lb_stv[slots] + dc * st + off * sv + n * off * dc, 0.0)
        syy = np.where(use, self.lb_svv[slots] + 2 * dc * sv + n * dc * dc, 0.0)
        SX, SY = sx.sum(1), sy.sum(1)
        xbar, ybar = SX / safeN, SY / safeN
        Sxx = sxx.sum(1) - SX * xbar
        Sxy = sxy.sum(1) - SX * ybar
        Syy = syy.sum(1) - SY * ybar
        ok = (N >= 2) & (Sxx > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(ok, Sxy / np.where(ok, Sxx, 1.0), np.nan)
            rss = np.maximum(Syy - slope * Sxy, 0.0)
            s2 = np.where(N > 2, rss / np.maximum(N - 2, 1), np.nan)
        return dict(N=N, xbar=xbar, ybar=ybar, ref=ref, Sxx=Sxx, slope=slope, s2=s2, use=use, n=n,
                    bx=(st / safe_n + off), by=(sv / safe_n + dc))

    def _forecast_linear(self, slots: np.ndarray, now: float, hs: np.ndarray, robust: bool):
        f = self._linear_fit(slots, now)
        N, xbar, Sxx, s2 = f["N"], f["xbar"], f["Sxx"], f["s2"]
        if robust:
            slope, icpt, s2 = self._theil(f)
        else:
            slope = f["slope"]
            icpt = f["ybar"] - slope * xbar
        mean = f["ref"][:, None] + icpt[:, None] + slope[:, None] * hs[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            var = s2[:, None] * (1 + 1 / np.maximum(N, 1)[:, None]
                                 + (hs[None, :] - xbar[:, None]) ** 2 / np.where(Sxx > 0, Sxx, np.inf)[:, None])
        return mean, np.sqrt(var)

    def _theil(self, f: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Theil's incomplete method on bucket centroids: robust slope, intercept, noise variance."""
        use, bx, by, n = f["use"], f["bx"], f["by"], f["n"]
        order = np.argsort(np.where(use, bx, np.inf), axis=1)
        bx = np.take_along_axis(np.where(use, bx, np.nan), order, axis=1)
        by = np.take_along_axis(np.where(use, by, np.nan), order, axis=1)
        cnt = use.sum(axis=1)
        half = cnt // 2
        j = np.arange(self.nb // 2)[None, :]
        i2 = np.minimum(j + half[:, None], self.nb - 1)
        valid = j < half[:, None]
        dx = np.take_along_axis(bx, i2, axis=1) - bx[:, : self.nb // 2]
        dy = np.take_along_axis(by, i2, axis=1) - by[:, : self.nb // 2]
        with np.errstate(divide="ignore", invalid="ignore"), _quiet_nan():
            slopes = np.where(valid & (dx > 0), dy / dx, np.nan)
            slope = np.nanmedian(slopes, axis=1)
            icpt = np.nanmedian(by - slope[:, None] * bx, axis=1)
            mad = np.nanmedian(np.abs(by - icpt[:, None] - slope[:, None] * bx), axis=1)
            per_bucket = np.nanmean(np.where(use, n, np.nan), axis=1)
        s2 = (1.4826 * mad) ** 2 * np.nan_to_num(per_bucket, nan=1.0)
        s2 = np.where(cnt > 2, s2, f["s2"])
        return slope, icpt, s2

    def _forecast_ets(self, slots: np.ndarray, now: float, hs: np.ndarray, seasonal: bool):
        p = "w_" if seasonal else "h_"
        level, trend, s2 = getattr(self, p + "l")[slots], getattr(self, p + "b")[slots], getattr(self, p + "s2")[slots]
        alpha, beta, phi = getattr(self, p + "alpha")[slots], getattr(self, p + "beta")[slots], getattr(self, p + "phi")[slots]
        dt0 = self.dt0[slots]
        safe_dt = np.where(dt0 > 0, dt0, np.nan)
        steps = np.maximum((now + hs[None, :] - self.t_last[slots][:, None]) / safe_dt[:, None], 0.0)
        mean = level[:, None] + trend[:, None] * _damped_sum(phi[:, None], steps)
        gamma = np.zeros(len(slots))
        m = np.zeros(len(slots))
        if seasonal and self.nm:
            per = self.period[slots]
            has = (per > 0) & (self.nbins[slots] > 0)
            tgt = now + hs[None, :]
            safe = np.where(has, per, 1.0)[:, None]
            bins = np.floor(np.mod(tgt, safe) / safe * self.nbins[slots][:, None]).astype(np.int64)
            bins = np.clip(bins, 0, self.nm - 1)
            sv = np.take_along_axis(self.season_state[slots], bins, axis=1)
            mean = mean + np.where(has[:, None], sv, 0.0)
            gamma = np.where(has, self.w_gamma[slots], 0.0)
            m = np.where(has, per / safe_dt, 0.0)
        fac = _ets_var_factor(alpha[:, None], beta[:, None], phi[:, None], gamma[:, None], m[:, None],
                              np.maximum(steps, 1.0))
        sd = np.sqrt(s2[:, None] * fac)
        sd = np.where(self.nseen[slots][:, None] >= 3, sd, np.nan)
        return mean, sd

    def breach(self, slots: np.ndarray, now: float, threshold: float, direction: str,
               horizon: float, confidence: float, model: str | None = None) -> BreachEstimates:
        """Estimate when each slot's series crosses `threshold` going `direction` ("below" or
        "above") within `horizon` seconds, with an interval at level `confidence` (0.5-0.999).

        A slot already past the threshold (its last sample) has eta 0 and probability 1; a
        slot with too little data has eta inf and probability 0. `model` overrides the model
        as in `forecast`.
        """
        if direction not in ("below", "above"):
            raise ValueError(f"direction must be 'below' or 'above', not {direction!r}")
        below = direction == "below"
        slots = np.asarray(slots, dtype=np.int64)
        conf = min(max(float(confidence), 0.5), 0.999)
        z = NormalDist().inv_cdf(conf)
        hs = horizon * np.arange(1, _BREACH_GRID + 1) / _BREACH_GRID
        fc = self.forecast(slots, now, hs, model=model)
        # unknown spread (too little data): bounds collapse onto the mean, probability 0
        known = np.isfinite(fc.sd)
        mean, sd = fc.mean, np.where(known, fc.sd, 0.0)
        sign = -1.0 if below else 1.0
        # optimistic (no-breach side) and pessimistic bounds; inf sd makes them never cross
        pess = mean + sign * z * sd
        opt = mean - sign * z * sd
        last = self.v_last[slots]
        now_past = (last <= threshold) if below else (last >= threshold)
        grid = np.concatenate(([0.0], hs))

        def with_now(path: np.ndarray) -> np.ndarray:
            start = np.where(np.isfinite(last), last, np.nan)
            return np.concatenate((np.tile(start, len(path) // max(len(start), 1))[:, None], path), axis=1)

        k = len(slots)  # the three paths in one pass: fewer, larger numpy calls
        etas = _first_crossing(grid, with_now(np.concatenate((mean, pess, opt))), threshold, below) if k \
            else np.zeros(0)
        eta, eta_low, eta_high = etas[:k], etas[k:2 * k], etas[2 * k:]
        eta_low = np.minimum(eta_low, eta)
        eta_high = np.maximum(eta_high, eta)
        with np.errstate(divide="ignore", invalid="ignore"):
            zscore = sign * (mean - threshold) / sd
        zscore = np.where(known & ~np.isnan(zscore), zscore, -np.inf)
        prob = normal_cdf(np.max(zscore, axis=1)) if len(hs) else np.zeros(len(slots))
        prob = np.where(now_past, 1.0, prob)
        value = mean[:, -1] if len(hs) else np.full(len(slots), np.nan)
        # probability >= conf <=> the optimistic bound crosses somewhere (up to grid effects)
        eta_high = np.where(prob >= conf, np.minimum(eta_high, horizon), np.inf)
        return BreachEstimates(eta, eta_low, eta_high, prob, value, fc.model, prob >= conf)

    # ---- warm start from history ---------------------------------------------------------

    def warm(self, key: Hashable, t: np.ndarray, v: np.ndarray) -> None:
        """Seed a key's state from its history (e.g. the store after a restart), vectorised.

        Resets the key's state. Linear buckets are exact; holt / holt_winters start from a
        regression on the last `lookback` (seasonal profile removed when a period is known or
        detected) and the key is due for a refit at once.
        """
        slot = int(self.slots_for([key])[0])
        self._reset(np.array([slot]))
        t = np.asarray(t, dtype=float)
        v = np.asarray(v, dtype=float)
        ok = np.isfinite(t) & np.isfinite(v)
        t, v = t[ok], v[ok]
        if len(t) == 0:
            return
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        keep = np.concatenate(([True], np.diff(t) > 0))
        t, v = t[keep], v[keep]
        end = t[-1]
        dt0 = float(np.median(np.diff(t))) if len(t) > 1 else np.nan
        self.t_last[slot], self.v_last[slot], self.dt0[slot], self.nseen[slot] = end, v[-1], dt0, len(t)
        # linear buckets: the last nb bucket ids
        bid = np.floor(t / self.width).astype(np.int64)
        sel = bid > bid[-1] - self.nb
        tb, vb, ib = t[sel], v[sel], bid[sel]
        uniq, first_idx, inv = np.unique(ib, return_index=True, return_inverse=True)
        c = vb[first_idx]
        x = tb - ib * self.width
        y = vb - c[inv]
        pos = uniq % self.nb
        self.lb_id[slot, pos] = uniq
        self.lb_c[slot, pos] = c
        for name, w in (("lb_n", np.ones_like(x)), ("lb_st", x), ("lb_sv", y), ("lb_stt", x * x),
                        ("lb_stv", x * y), ("lb_svv", y * y)):
            getattr(self, name)[slot, pos] = np.bincount(inv, weights=w, minlength=len(uniq))
        # ETS states from the recent window
        period = self.season if self.season is not None else 0.0
        if self.nm and self.season is None and len(t) >= self.min_refit_points:
            period = detect_period(t, v, CANDIDATE_PERIODS) or 0.0
        recent = t > end - max(self.lookback, 10 * (dt0 if np.isfinite(dt0) else 0))
        tr, vr = t[recent], v[recent]
        level, slope, s2 = _line_at(tr, vr, end)
        step = dt0 if np.isfinite(dt0) and dt0 > 0 else 1.0
        self.h_l[slot], self.h_b[slot], self.h_s2[slot] = level, slope * step, s2
        self.w_l[slot], self.w_b[slot], self.w_s2[slot] = level, slope * step, s2
        if self.nm and period > 0 and np.isfinite(dt0):
            nbins = int(np.clip(round(period / step), 1, self.nm))
            self.period[slot], self.nbins[slot] = period, nbins
            prof = seasonal_profile(t, v, period, nbins)
            self.season_state[slot, :nbins] = prof
            bins = np.floor(np.mod(tr, period) / period * nbins).astype(np.int64)
            level, slope, s2 = _line_at(tr, vr - prof[np.clip(bins, 0, nbins - 1)], end)
            self.w_l[slot], self.w_b[slot], self.w_s2[slot] = level, slope * step, s2
        if self.needs_refit and len(t) >= self.min_refit_points:
            self.next_refit[slot] = -np.inf

    # ---- refits --------------------------------------------------------------------------

    def _spread(self, key: Hashable, now: float) -> float:
        """Next refit time for `key`: every refit_interval at a stable per-key offset."""
        off = zlib.crc32(repr(key).encode()) % max(int(self.refit_interval), 1)
        return now + self.refit_interval - ((now - off) % self.refit_interval)

    def refit_jobs(self, now: float, history: Callable[[Hashable, float, float], tuple[np.ndarray, np.ndarray]] | None = None,
                   limit: int | None = None) -> list[RefitJob]:
        """Refit work due at `now` (at most `limit`, most overdue first).

        A key is first due once it has `min_refit_points` samples, then every refit_interval at
        a per-key offset so refits spread over time. `history(key, start, end) -> (t, v)` fills
        each job's data; without it the caller sets `job.t`/`job.v` for start < t <= end. A job
        not answered within refit_interval is given up and reissued.
        """
        if not self.needs_refit or not self._slot_of:
            return []
        used = np.fromiter(self._slot_of.values(), dtype=np.int64)
        nr = self.next_refit[used]
        ready = self.nseen[used] >= self.min_refit_points
        nr = np.where(ready & np.isnan(nr), -np.inf, nr)
        self.next_refit[used] = nr
        lost = self.pending_since[used] <= now - self.refit_interval
        free = np.isnan(self.pending_since[used]) | lost
        due = used[ready & free & (nr <= now)]
        due = due[np.argsort(self.next_refit[due], kind="stable")]
        if limit is not None:
            due = due[: max(limit, 0)]
        jobs = []
        period = None if self.season is None else self.season
        if not self.uses_season:
            period = 0.0
        models = MODELS if self.model == "auto" else (self.model,)
        for slot in due:
            key = self._keys[slot]
            job = RefitJob(key=key, slot=int(slot), gen=int(self.gen[slot]), start=now - self.history, end=now,
                           period=period, candidates=CANDIDATE_PERIODS, lookback=self.lookback,
                           horizon=self.horizon, season_bins=self.nm or 0, linear_buckets=self.linear_buckets, models=models)
            if history is not None:
                job.t, job.v = history(key, job.start, job.end)
            jobs.append(job)
            self.pending_since[slot] = now
            self.next_refit[slot] = self._spread(key, now)
        return jobs

    def apply_refit(self, results: Sequence[RefitResult]) -> int:
        """Install fitted parameters; results for forgotten or reused slots are ignored.

        Returns how many were applied. Online states are kept (they are newer than the fit)
        unless the seasonal period changed, in which case the fitted seasonal state is taken.
        """
        applied = 0
        for r in results:
            s = r.slot
            if s >= self.cap or int(self.gen[s]) != r.gen or self._keys[s] != r.key:
                continue
            self.pending_since[s] = np.nan
            if not r.ok:
                continue
            self.h_alpha[s], self.h_beta[s], self.h_phi[s] = r.alpha, r.beta, min(r.phi, PHI_MAX)
            self.w_alpha[s], self.w_beta[s], self.w_phi[s] = r.hw_alpha, r.hw_beta, min(r.hw_phi, PHI_MAX)
            self.w_gamma[s] = r.gamma
            if r.choice in MODELS:
                self.choice[s] = MODELS.index(r.choice)
            if self.nm and self.season is None and r.period != self.period[s] and (r.season is not None or r.period == 0):
                self._install_season(s, r)
            applied += 1
        return applied

    def _install_season(self, s: int, r: RefitResult) -> None:
        step = self.dt0[s] if self.dt0[s] > 0 else np.nan
        if r.period <= 0 or not np.isfinite(step):
            self.period[s], self.nbins[s] = 0.0, 0.0
            self.season_state[s] = 0.0
            return
        nbins = int(np.clip(round(r.period / step), 1, self.nm))
        src = np.asarray(r.season, dtype=float)
        # resample the fitted profile by phase onto this slot's bins
        phase_dst = (np.arange(nbins) + 0.5) / nbins
        phase_src = (np.arange(len(src)) + 0.5) / len(src)
        prof = np.interp(phase_dst, phase_src, src, period=1.0)
        self.period[s], self.nbins[s] = r.period, nbins
        self.season_state[s] = 0.0
        self.season_state[s, :nbins] = prof
        if np.isfinite(r.level):
            k = max((self.t_last[s] - r.t_end) / step, 0.0)
            self.w_l[s] = r.level + r.trend * float(_damped_sum(np.float64(self.w_phi[s]), np.float64(k)))
            self.w_b[s] = r.trend * self.w_phi[s] ** k

    # ---- persistence ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: arrays plus keys and configuration (picklable)."""
        arrays = {name: getattr(self, name).copy() for name in (*self._SCALARS, *self._BUCKETS, "lb_id", "season_state")}
        return {"version": 1, "config": self._config(), "keys": list(self._keys), "arrays": arrays}

    def _config(self) -> dict[str, Any]:
        return {"model": self.model, "lookback": self.lookback, "season": self.season,
                "linear_buckets": self.nb, "season_bins": self.nm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` output. Raises ValueError if it came from an incompatible bank
        (other model, lookback, season or bin counts): the caller then warms from history."""
        if state.get("version") != 1 or state.get("config") != self._config():
            raise ValueError("forecast state does not match this bank's configuration")
        arrays = state["arrays"]
        cap = len(state["keys"])
        self.cap = 0
        self._keys, self._free, self._slot_of = [], [], {}
        self._alloc(cap)
        for name, arr in arrays.items():
            getattr(self, name)[...] = arr
        self._keys = list(state["keys"])
        self._slot_of = {k: i for i, k in enumerate(self._keys) if k is not None}
        self._free = [i for i in range(cap - 1, -1, -1) if self._keys[i] is None]
        self.pending_since[:] = np.nan


class _quiet_nan:
    """Silence numpy's 'All-NaN slice' / 'Mean of empty slice' warnings for slots without data."""

    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)


def _line_at(t: np.ndarray, v: np.ndarray, at: float) -> tuple[float, float, float]:
    """Least-squares line through (t, v): (value at `at`, slope per second, residual variance)."""
    if len(t) == 0:
        return math.nan, 0.0, math.nan
    if len(t) < 3:
        return float(v[-1]), 0.0, math.nan
    x = t - at
    xm, ym = x.mean(), v.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (v - ym)).sum() / sxx) if sxx > 0 else 0.0
    icpt = ym - slope * xm
    resid = v - icpt - slope * x
    return float(icpt), slope, float((resid**2).sum() / (len(t) - 2))


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
