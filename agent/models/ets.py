"""Exponential smoothing: online Holt (ETS(A,Ad,N)) and Holt-Winters (ETS(A,Ad,A)) for many series.

- `holt`: additive damped trend in error-correction form; `EtsState` holds level, trend, the
  one-step residual variance (tracked online) and the smoothing parameters per series.
- `holt_winters`: the same plus additive seasonality; `Season` holds the seasonal state in at
  most `season_bins` phase bins per period, so weekly seasonality at a 15 s scrape interval
  costs `season_bins` floats, not 40,320.

`update` is one O(1) error-correction step per series; `forecast` gives the mean path and the
analytic ETS variance sigma^2 * (1 + sum_{j<h} c_j^2) (`variance_factor`). The smoothing
parameters come from the refit worker (`EtsParams`); until then the defaults below apply.
Times are seconds; a "step" is one sampling interval of the series.

Imports nothing of the agent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.models.prediction import Prediction

# Defaults until the refit worker has fitted a series: moderate smoothing, mild damping.
DEFAULT_ALPHA = 0.2
DEFAULT_BETA = 0.01
DEFAULT_PHI = 0.98
DEFAULT_GAMMA = 0.1
PHI_MAX = 0.9999  # phi == 1 is the undamped limit; kept below so closed forms stay finite

SCALE_RATE = 0.02  # EW rate of the one-step residual variance (~50 samples memory)
_SCALE_CLIP = 25.0  # residuals beyond 5 sigma count as 5 sigma in the scale estimate

Rows = np.ndarray | slice  # which slots of a state: an int64 array of slots, or a range


@dataclass(frozen=True)
class EtsParams:
    """Smoothing parameters of one series in error-correction form, per sampling step:
    level weight alpha, trend weight beta, damping phi, seasonal weight gamma (0 for holt)."""

    alpha: float
    beta: float
    phi: float
    gamma: float = 0.0


@dataclass
class EtsState:
    """Per-slot state of one ETS model: level and trend (per step) after the last sample,
    s2 the one-step residual variance (NaN until there is a residual), and the parameters."""

    level: np.ndarray
    trend: np.ndarray
    s2: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    phi: np.ndarray

    @classmethod
    def empty(cls, capacity: int) -> EtsState:
        """`capacity` slots with no data and the default parameters."""
        return cls(level=np.full(capacity, np.nan), trend=np.zeros(capacity), s2=np.full(capacity, np.nan),
                   alpha=np.full(capacity, DEFAULT_ALPHA), beta=np.full(capacity, DEFAULT_BETA),
                   phi=np.full(capacity, DEFAULT_PHI))

    def take(self, rows: Rows) -> EtsState:
        """The state of `rows` (a copy)."""
        return EtsState(self.level[rows], self.trend[rows], self.s2[rows], self.alpha[rows], self.beta[rows],
                        self.phi[rows])

    def put(self, rows: Rows, src: EtsState) -> None:
        """Set `rows` from `src` (one row of `src` is broadcast to all of them)."""
        self.level[rows] = src.level
        self.trend[rows] = src.trend
        self.s2[rows] = src.s2
        self.alpha[rows] = src.alpha
        self.beta[rows] = src.beta
        self.phi[rows] = src.phi

    def grow(self, capacity: int) -> EtsState:
        """This state with empty slots added up to `capacity`."""
        out = EtsState.empty(capacity)
        out.put(slice(0, len(self.level)), self)
        return out

    def reset(self, rows: Rows) -> None:
        self.put(rows, EtsState.empty(1))

    def set_params(self, slot: int, params: EtsParams) -> None:
        """Install fitted parameters (gamma is the seasonal state's, see `Season`)."""
        self.alpha[slot], self.beta[slot], self.phi[slot] = params.alpha, params.beta, min(params.phi, PHI_MAX)


@dataclass
class Season:
    """Per-slot seasonal state of Holt-Winters: the period (seconds, 0 for none), how many of
    the `profile` columns it uses (`nbins`, 0 until the sampling interval is known), the
    seasonal weight gamma and the seasonal offset per phase bin."""

    period: np.ndarray
    nbins: np.ndarray
    gamma: np.ndarray
    profile: np.ndarray

    @classmethod
    def empty(cls, capacity: int, bins: int) -> Season:
        return cls(period=np.zeros(capacity), nbins=np.zeros(capacity), gamma=np.full(capacity, DEFAULT_GAMMA),
                   profile=np.zeros((capacity, bins)))

    @property
    def bins(self) -> int:
        """Phase bins per slot at most (`season_bins`)."""
        return int(self.profile.shape[1])

    def take(self, rows: Rows) -> Season:
        return Season(self.period[rows], self.nbins[rows], self.gamma[rows], self.profile[rows])

    def put(self, rows: Rows, src: Season) -> None:
        self.period[rows] = src.period
        self.nbins[rows] = src.nbins
        self.gamma[rows] = src.gamma
        self.profile[rows] = src.profile

    def grow(self, capacity: int) -> Season:
        out = Season.empty(capacity, self.bins)
        out.put(slice(0, len(self.period)), self)
        return out

    def reset(self, rows: Rows) -> None:
        self.put(rows, Season.empty(1, self.bins))

    def install(self, slot: int, period: float, profile: np.ndarray) -> None:
        """Seasonal state of `slot`: `profile` per phase bin of `period` (an empty profile and
        period 0 clear it)."""
        self.period[slot], self.nbins[slot] = period, len(profile)
        self.profile[slot] = 0.0
        self.profile[slot, : len(profile)] = profile

    def bins_at(self, slots: np.ndarray, t: np.ndarray, dt0: np.ndarray) -> np.ndarray:
        """Phase bin of time `t` per slot. A slot whose period was fixed before its sampling
        interval `dt0` was known gets its bin count now."""
        per = self.period[slots]
        nbins = self.nbins[slots]
        unset = (per > 0) & (nbins == 0)
        if unset.any():
            nb = np.clip(np.rint(per / np.where(dt0 > 0, dt0, per)), 1, self.bins)
            nb = np.where(np.isfinite(dt0) & (dt0 > 0), nb, 0)
            nbins = np.where(unset, nb, nbins)
            self.nbins[slots] = nbins
        safe = np.where(per > 0, per, 1.0)
        b = np.floor(np.mod(t, safe) / safe * nbins).astype(np.int64)
        return np.clip(b, 0, max(self.bins - 1, 0))


def damped_sum(phi: np.ndarray | np.float64, k: np.ndarray | np.float64) -> np.ndarray | np.float64:
    """sum_{i=1..k} phi^i for real k >= 0 (the trend multiplier of a damped forecast),
    elementwise for arrays."""
    return phi * (1.0 - phi**k) / (1.0 - phi)


def variance_factor(alpha: np.ndarray, beta: np.ndarray, phi: np.ndarray, gamma: np.ndarray,
                    m: np.ndarray, h: np.ndarray) -> np.ndarray:
    """1 + sum_{j=1}^{h-1} c_j^2 with c_j = alpha + beta*sum_{i<=j} phi^i + gamma*[m | j].

    Closed form of the h-step forecast variance factor of ETS(A,Ad,A) (Hyndman et al. 2008,
    ch. 6); gamma = 0 gives ETS(A,Ad,N). `h` may be fractional (linear in between).
    """
    n = np.maximum(h - 1.0, 0.0)
    B = beta * phi / (1.0 - phi)
    A = alpha + B
    sum_c2 = n * A * A - 2 * A * B * damped_sum(phi, n) + B * B * damped_sum(phi * phi, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(m > 0, np.floor(n / np.where(m > 0, m, 1.0)), 0.0)
        pm = phi ** np.where(m > 0, m, 1.0)
        sum_cm = k * A - B * np.where(k > 0, pm * (1 - pm**k) / (1 - pm), 0.0)
    sum_c2 = sum_c2 + np.where(k > 0, 2 * gamma * sum_cm + k * gamma * gamma, 0.0)
    return 1.0 + np.maximum(sum_c2, 0.0)


def update(state: EtsState, slots: np.ndarray, t: np.ndarray, v: np.ndarray, k: np.ndarray, rate: np.ndarray,
           first: np.ndarray, dt0: np.ndarray, season: Season | None = None) -> None:
    """One error-correction step for each of `slots` (distinct) with its new sample (t, v).

    `k`: sampling steps since the slot's previous sample (the forecast to correct is k steps
    ahead); `rate`: weight of this residual in the variance estimate; `first`: the slot had no
    sample before (the level starts at v); `dt0`: the slots' sampling intervals (seasonal bin
    counts); `season`: Holt-Winters' seasonal state, None for holt.
    """
    level, trend, s2 = state.level, state.trend, state.s2
    alpha, beta, phi = state.alpha[slots], state.beta[slots], state.phi[slots]
    l0, b0 = level[slots], trend[slots]
    start = first | np.isnan(l0)
    l0 = np.where(start, v, l0)
    b0 = np.where(start, 0.0, b0)
    l_pred = l0 + b0 * damped_sum(phi, k)
    b_pred = b0 * phi**k
    if season is None:
        e = np.where(start, 0.0, v - l_pred)
    else:
        has = season.period[slots] > 0
        bins = season.bins_at(slots, t, dt0)
        sv = np.where(has, season.profile[slots, bins], 0.0)
        e = np.where(start, 0.0, v - (l_pred + sv))
    level[slots] = l_pred + alpha * e
    trend[slots] = b_pred + beta * e
    if season is not None:
        g = np.where(has, season.gamma[slots], 0.0)
        season.profile[slots, bins] = sv + g * e
    old = s2[slots]
    bound = _SCALE_CLIP * np.nan_to_num(old) + (1e-6 * (np.abs(v) + 1.0)) ** 2
    e2 = np.where(np.isnan(old), e * e, np.minimum(e * e, bound))
    s2[slots] = np.where(start, np.nan, np.where(np.isnan(old), e2, old + rate * (e2 - old)))


def forecast(rows: EtsState, t_last: np.ndarray, dt0: np.ndarray, nseen: np.ndarray, now: float, hs: np.ndarray,
             season: Season | None = None) -> Prediction:
    """Mean and sd at now + hs (seconds) per series, from states taken for those series (`rows`,
    `season` likewise; None for holt) and their last sample time, sampling interval and sample
    count. sd is NaN for a series with fewer than three samples."""
    safe_dt = np.where(dt0 > 0, dt0, np.nan)
    steps = np.maximum((now + hs[None, :] - t_last[:, None]) / safe_dt[:, None], 0.0)
    mean = rows.level[:, None] + rows.trend[:, None] * damped_sum(rows.phi[:, None], steps)
    gamma = np.zeros(len(t_last))
    m = np.zeros(len(t_last))
    if season is not None:
        per = season.period
        has = (per > 0) & (season.nbins > 0)
        tgt = now + hs[None, :]
        safe = np.where(has, per, 1.0)[:, None]
        bins = np.floor(np.mod(tgt, safe) / safe * season.nbins[:, None]).astype(np.int64)
        bins = np.clip(bins, 0, season.bins - 1)
        sv = np.take_along_axis(season.profile, bins, axis=1)
        mean = mean + np.where(has[:, None], sv, 0.0)
        gamma = np.where(has, season.gamma, 0.0)
        m = np.where(has, per / safe_dt, 0.0)
    fac = variance_factor(rows.alpha[:, None], rows.beta[:, None], rows.phi[:, None], gamma[:, None], m[:, None],
                          np.maximum(steps, 1.0))
    sd = np.sqrt(rows.s2[:, None] * fac)
    sd = np.where(nseen[:, None] >= 3, sd, np.nan)
    # of the one-step error, the share that does not carry into the level is noise around the
    # path: (1 - alpha) * s2, as in the local level model's steady state
    noise = np.sqrt(np.clip(1.0 - rows.alpha, 0.0, 1.0) * rows.s2)
    return Prediction(mean, sd, noise=noise, step=np.asarray(dt0, dtype=float))
