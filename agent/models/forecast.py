"""The forecast bank: online forecasters with prediction intervals for many series at once.

One `ForecastBank` holds the state of many series, one slot each (`slots.SlotTable`). Every
slot carries the state of all model families at once, so `auto` can switch per series
without replaying history; each family's state is a declared dataclass of numpy arrays:

- `linear` and `robust_linear` (`agent.models.linear`): least squares as Prometheus'
  `predict_linear`, and Theil's robust line, over time buckets of the last `lookback`. Where a
  series has a daily rhythm (`seasonality.DailyProfile`, learnt online and detected per
  series), the line is fitted to the series less its daily profile and the forecast adds the
  profile back at the future times of day: a queue that fills every afternoon is not a leak,
  and a leak under that rhythm breaches at an afternoon peak.
- `holt` and `holt_winters` (`agent.models.ets`): damped-trend exponential smoothing, the
  latter with additive seasonality in at most `season_bins` phase bins.
- `auto`: per slot, the model with the lowest held-out error, chosen by the refit worker
  (`agent.models.refit`), `linear` until the first refit.

Smoothing parameters are fitted off the hot path by the refit worker (statsmodels, in a
separate process); the bank issues `RefitJob`s on a schedule (`agent.models.schedule`) and
installs the `RefitResult`s. Between refits `update` is O(1) per sample per slot. Breach
estimates come from `agent.models.breach` on the forecast path.

Models do no I/O: arrays and times in, arrays out. Times are seconds (Unix epoch or any
consistent origin). Slots given to one call must be distinct. This module imports nothing of
the agent outside `agent.models` (never rules, tickets, web, store or promql).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from agent.models import breach, ets, linear, recurrence
from agent.models.breach import BreachEstimates
from agent.models.ets import EtsState, Season
from agent.models.linear import NO_BUCKET, Buckets, Sums
from agent.models.prediction import Prediction
from agent.models.recurrence import NO_DAY, DailyExtremes
from agent.models.schedule import RefitJob, RefitResult, RefitState, spread
from agent.models.seasonality import CANDIDATE_PERIODS, DAY, NO_BIN, DailyProfile, detect_period, phase_values, seasonal_profile
from agent.models.slots import CHUNK_ROWS, SlotTable, state_nbytes

MODELS: tuple[str, ...] = ("linear", "robust_linear", "holt", "holt_winters")
LINEAR, ROBUST_LINEAR, HOLT, HOLT_WINTERS = range(4)
MODEL_CHOICES: tuple[str, ...] = MODELS + ("auto",)

_DT_RATE = 0.05  # EW rate of the sampling interval estimate
# `breach` screens every series on a coarse grid with the widest interval a model can state;
# only series whose breach probability can reach SCREEN_PROBABILITY get the full estimate.
SCREEN_PROBABILITY = 1e-4
SCREEN_POINTS = 8
# The screen takes a linear slot's variance factor and a bound on its curvature from its last
# full estimate, each with this margin, and estimates it in full again when that is older
# than SCREEN_REFRESH lookbacks.
SCREEN_MARGIN = 2.0
SCREEN_REFRESH = 1 / 16
_MAX_GAP_STEPS = 100_000
STATE_VERSION = 1
# The linear models' window: LINEAR_BUCKETS buckets by default; a least-squares `linear` window
# of more evaluations than that keeps about EVALUATIONS_PER_BUCKET a bucket, at least
# MIN_LINEAR_BUCKETS (`window_buckets`).
LINEAR_BUCKETS = 64
MIN_LINEAR_BUCKETS = 32
EVALUATIONS_PER_BUCKET = 8


def window_buckets(model: str, lookback: float, interval: float | None) -> int:
    """Buckets of the window of a `model` forecast evaluated every `interval` seconds. The bank
    gets one sample per evaluation, so a window of at most LINEAR_BUCKETS evaluations keeps
    that many buckets: one sample or none each, and the line is `predict_linear`'s exactly. A
    longer window quantises its left edge to a bucket whatever the count (the edge bucket is
    in or out by its samples' mean time); there a least-squares `linear` forecast keeps about
    EVALUATIONS_PER_BUCKET evaluations a bucket, at least MIN_LINEAR_BUCKETS (the edge moves
    by at most 1/32 of the window): the ring is most of its series' memory. The other models
    keep LINEAR_BUCKETS: Theil's line takes half as many slopes as there are buckets, and
    `auto` chooses between the two."""
    if model != "linear" or not interval or interval <= 0:
        return LINEAR_BUCKETS
    evaluations = lookback / interval
    if evaluations <= LINEAR_BUCKETS:
        return LINEAR_BUCKETS
    return int(min(LINEAR_BUCKETS, max(MIN_LINEAR_BUCKETS, math.ceil(evaluations / EVALUATIONS_PER_BUCKET))))

History = Callable[[Hashable, float, float], tuple[np.ndarray, np.ndarray]]


@dataclass
class Forecast:
    """Point forecasts and predictive standard deviations, one row per slot.

    `mean` and `sd` have shape (len(slots), len(horizons)); NaN where a slot has too little data.
    `model` is the model name used for each slot; `noise` and `step` (per slot) describe the
    noise around each model's path, as in `Prediction`.
    """

    mean: np.ndarray
    sd: np.ndarray
    model: np.ndarray
    noise: np.ndarray | None = None
    step: np.ndarray | None = None

    def prediction(self) -> Prediction:
        """The forecast as the `Prediction` breach estimation reads."""
        return Prediction(self.mean, self.sd, self.noise, self.step)


@dataclass(frozen=True)
class Screen:
    """`ForecastBank.breach`'s first pass: which slots get the full estimate, and for the
    others the breach probability (an upper estimate) and the forecast at the horizon."""

    candidate: np.ndarray
    probability: np.ndarray
    value: np.ndarray


@dataclass
class ScreenState:
    """Per slot, what the breach screen remembers of the last full linear estimate: the most
    curvature its window allowed and its variance factor (`linear.LineForecast`), and when
    they were measured (-inf: never). Derived state, not in snapshots."""

    curvature: np.ndarray
    factor: np.ndarray
    measured: np.ndarray

    @classmethod
    def empty(cls, capacity: int) -> ScreenState:
        return cls(np.zeros(capacity), np.ones(capacity), np.full(capacity, -np.inf))

    def grow(self, capacity: int) -> ScreenState:
        out = ScreenState.empty(capacity)
        n = len(self.measured)
        out.curvature[:n], out.factor[:n], out.measured[:n] = self.curvature, self.factor, self.measured
        return out

    def reset(self, rows: np.ndarray | slice) -> None:
        self.curvature[rows] = 0.0
        self.factor[rows] = 1.0
        self.measured[rows] = -np.inf


@dataclass
class Sampling:
    """Per-slot facts about the samples seen: time and value of the last one, the sampling
    interval (an EW estimate, NaN before the second sample) and how many were taken."""

    t_last: np.ndarray
    v_last: np.ndarray
    dt0: np.ndarray
    nseen: np.ndarray

    @classmethod
    def empty(cls, capacity: int) -> Sampling:
        return cls(t_last=np.full(capacity, np.nan), v_last=np.full(capacity, np.nan), dt0=np.full(capacity, np.nan),
                   nseen=np.zeros(capacity))

    def put(self, rows: np.ndarray | slice, src: Sampling) -> None:
        self.t_last[rows] = src.t_last
        self.v_last[rows] = src.v_last
        self.dt0[rows] = src.dt0
        self.nseen[rows] = src.nseen

    def grow(self, capacity: int) -> Sampling:
        out = Sampling.empty(capacity)
        out.put(slice(0, len(self.t_last)), self)
        return out

    def reset(self, rows: np.ndarray | slice) -> None:
        self.put(rows, Sampling.empty(1))


class ForecastBank:
    """Online forecasters for many series; see the module docstring for the models.

    ForecastBank(model="auto", lookback=6h, season=None): `model` is one of MODEL_CHOICES;
    `lookback` (seconds) is the linear models' window; `season` (seconds) fixes the
    holt_winters period, None detects it per series among hourly, daily and weekly, 0 turns
    seasonality off. Keyword options: `horizon` (what `auto` optimises for; default lookback),
    `refit_interval` (seconds between refits of a series), `history` (seconds of history a
    refit asks for), `linear_buckets`, `season_bins`, `min_refit_points`, `capacity` (slots
    to start with; the bank grows as needed), `daily` (whether the linear models learn and
    take out a daily profile; default: unless `season` is 0 or another period than a day).

    State, one row per slot: `sampling` (`Sampling`), `buckets` (the linear models'), `daily`
    (`seasonality.DailyProfile`, the linear models' daily profile; not learnt when `season` is 0
    or another period than a day),
    `holt` and `hw` (`ets.EtsState`), `seasonal` (`ets.Season`, holt_winters' seasonal state)
    and `refits` (`schedule.RefitState`).

    Typical use (the rules layer):
        slots = bank.slots_for(keys)                 # stable slot per key
        bank.update(slots, t, values)                # each new sample, O(1)
        est = bank.breach(slots, now, 0.0, "below", 86400, 0.9)
        for job in bank.refit_jobs(now, history=lambda key, start, end: store.history(...)): ...
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
        linear_buckets: int = LINEAR_BUCKETS,
        season_bins: int = 288,
        min_refit_points: int = 48,
        capacity: int = 16,
        daily: bool | None = None,
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
        self.width = self.lookback / self.linear_buckets
        self.uses_season = model in ("holt_winters", "auto") and self.season != 0
        self.season_bins = int(season_bins) if self.uses_season else 0  # 0: no seasonal state at all
        self.min_refit_points = int(min_refit_points)
        self.needs_refit = model in ("holt", "holt_winters", "auto")
        # a linear bank keeps the linear models' state only: the exponential smoothing states
        # would double the cost of every update for forecasts nobody reads
        self.keeps_ets = model != "linear"
        # the linear models take out a daily profile where one is detected, unless the rule
        # turned seasonality off or named another period
        self.uses_daily = (self.season is None or self.season == DAY) if daily is None else bool(daily)
        self.chunk_rows = CHUNK_ROWS  # slots per `breach` pass (tests set it to compare)
        self.table = SlotTable(capacity)
        self._allocate(self.table.capacity)
        self.full_estimates = 0  # slots the last `breach` estimated in full (the others were screened out)

    def _allocate(self, capacity: int) -> None:
        self.sampling = Sampling.empty(capacity)
        self.buckets = Buckets.empty(capacity, self.linear_buckets + 1)
        self.sums = Sums.empty(capacity)
        self.daily = DailyProfile.empty(capacity)
        self.extremes = DailyExtremes.empty(capacity)
        self.screen = ScreenState.empty(capacity)
        # a linear bank keeps no rows of smoothing state at all (`_smoothing` shows a new
        # slot's in its snapshots): 15 vectors, 6 MB at 50,000 series
        ets_rows = capacity if self.keeps_ets else 0
        self.holt = EtsState.empty(ets_rows)
        self.hw = EtsState.empty(ets_rows)
        self.seasonal = Season.empty(ets_rows, self.season_bins)
        self.refits = RefitState.empty(capacity)

    def _grow(self, capacity: int) -> None:
        self.sampling = self.sampling.grow(capacity)
        self.buckets = self.buckets.grow(capacity)
        self.sums = self.sums.grow(capacity)
        self.daily = self.daily.grow(capacity)
        self.extremes = self.extremes.grow(capacity)
        self.screen = self.screen.grow(capacity)
        if self.keeps_ets:
            self.holt = self.holt.grow(capacity)
            self.hw = self.hw.grow(capacity)
            self.seasonal = self.seasonal.grow(capacity)
        self.refits = self.refits.grow(capacity)

    def _reset(self, slots: np.ndarray) -> None:
        self.sampling.reset(slots)
        self.buckets.reset(slots)
        self.sums.reset(slots)
        self.daily.reset(slots)
        self.extremes.reset(slots)
        self.screen.reset(slots)
        self.refits.reset(slots)
        if self.keeps_ets:
            self.holt.reset(slots)
            self.hw.reset(slots)
            self.seasonal.reset(slots)
            if self.season:
                self.seasonal.period[slots] = self.season

    # ---- slots ----------------------------------------------------------------------------

    def slots_for(self, keys: Sequence[Hashable]) -> np.ndarray:
        """Slot index per key (int64 array), allocating fresh zeroed state for new keys."""
        assignment = self.table.assign(keys)
        if self.table.capacity > len(self.refits.gen):
            self._grow(self.table.capacity)
        if len(assignment.new):
            self._reset(assignment.new)
        return assignment.slots

    def forget(self, keys: Sequence[Hashable]) -> None:
        """Drop the state of `keys` (series gone); their slots are reused."""
        released = self.table.forget(keys)
        self.refits.gen[released] += 1

    def keys(self) -> list[Hashable]:
        return self.table.keys()

    def __len__(self) -> int:
        return len(self.table)

    def memory_bytes(self) -> int:
        """The per-slot state arrays (every allocated row) and the slot table."""
        return self._state_bytes() + self.table.memory_bytes()

    def row_bytes(self) -> int:
        """What one slot's state arrays cost, its times' statistics counted as a bucket group
        of its own: what a slot costs when no other shares its sample times, so the models'
        budget holds whatever the sharing."""
        b = self.buckets
        return (self._state_bytes() - b.group_bytes()) // max(1, self.table.capacity) + b.group_row_bytes()

    def _state_bytes(self) -> int:
        return state_nbytes(self.sampling, self.buckets, self.sums, self.screen, self.daily, self.extremes, self.holt,
                            self.hw, self.seasonal, self.refits)

    # ---- online update ---------------------------------------------------------------------

    def update(self, slots: np.ndarray, t: float | np.ndarray, values: np.ndarray) -> None:
        """Feed one new sample per slot (distinct slots). O(1) per slot, vectorised.

        NaN values (including Prometheus stale markers) and samples not newer than the slot's
        last one are ignored.
        """
        slots = np.asarray(slots, dtype=np.int64)
        v = np.asarray(values, dtype=float)
        ts = np.broadcast_to(np.asarray(t, dtype=float), slots.shape)
        s = self.sampling
        last = s.t_last[slots]
        ok = np.isfinite(v) & ~(ts <= last)
        if not ok.all():
            slots, ts, v, last = slots[ok], ts[ok], v[ok], last[ok]
        if len(slots) == 0:
            return
        first = np.isnan(last)
        dt = ts - last
        dt0 = s.dt0[slots]
        dt0 = np.where(np.isnan(dt0), dt, dt0 + _DT_RATE * (np.clip(dt, 0.25 * dt0, 4 * dt0) - dt0))
        s.dt0[slots] = dt0
        s.t_last[slots] = ts
        s.v_last[slots] = v
        n = s.nseen[slots] + 1
        s.nseen[slots] = n
        self.buckets.add(slots, ts, v, self.width, self.sums)
        if self.uses_daily:
            self.daily.update(slots, ts, v)
        self.extremes.update(slots, ts, v)
        k = np.where(first | ~np.isfinite(dt0), 1.0, np.clip(np.rint(dt / np.where(dt0 > 0, dt0, 1.0)), 1, _MAX_GAP_STEPS))
        if not self.keeps_ets:
            return
        rate = np.maximum(1.0 / n, ets.SCALE_RATE)
        ets.update(self.holt, slots, ts, v, k, rate, first, dt0)
        if self.season_bins:
            ets.update(self.hw, slots, ts, v, k, rate, first, dt0, self.seasonal)

    # ---- forecasts -------------------------------------------------------------------------

    def model_codes(self, slots: np.ndarray) -> np.ndarray:
        """Model code (index into MODELS) used for each slot."""
        if self.model == "auto":
            return self.refits.choice[slots].astype(np.int64)
        return np.full(len(slots), MODELS.index(self.model), dtype=np.int64)

    def _code(self, model: str) -> int:
        code = MODELS.index(model)
        if code not in (LINEAR, ROBUST_LINEAR) and not self.keeps_ets:
            raise ValueError(f"a linear forecast bank keeps no {model} state")
        return code

    def forecast(self, slots: np.ndarray, now: float, horizons: np.ndarray | Sequence[float],
                 model: str | None = None, above: bool | None = None) -> Forecast:
        """Forecast mean and sd at now + each horizon (seconds) for each slot.

        `model` overrides the bank's model choice (e.g. to compare models); default: the
        bank's model, or per-slot choice for `auto`. A linear bank keeps only `linear` and
        `robust_linear` (ValueError for the others). `above` (True / False: a breach above /
        below the forecast is what counts) lets the linear models count only the noise on that
        side (`linear.forecast`); `breach` sets it.
        """
        slots = np.asarray(slots, dtype=np.int64)
        hs = np.asarray(horizons, dtype=float)
        codes = self.model_codes(slots) if model is None else np.full(len(slots), self._code(model))
        mean = np.full((len(slots), len(hs)), np.nan)
        sd = np.full_like(mean, np.nan)
        noise = np.zeros(len(slots))
        step = np.full(len(slots), np.inf)
        # Codes index MODELS: bincount finds those in use without np.unique, whose plain form
        # imports numpy.ma (1.3 MB resident for good) on its first call.
        for code in np.flatnonzero(np.bincount(codes)):
            rows = np.nonzero(codes == code)[0]
            p = self._predict(int(code), slots[rows], now, hs, above)
            mean[rows], sd[rows] = p.mean, p.sd
            if p.noise is not None:
                noise[rows] = p.noise
            if p.step is not None:
                step[rows] = p.step
        return Forecast(mean, sd, np.asarray(MODELS, dtype=object)[codes], noise, step)

    def _predict(self, code: int, slots: np.ndarray, now: float, hs: np.ndarray,
                 above: bool | None = None) -> Prediction:
        if code in (LINEAR, ROBUST_LINEAR):
            rows = self.buckets.take(slots)
            daily = self.daily.detected(slots) if self.uses_daily else np.zeros(len(slots), dtype=bool)
            prof = self.daily.centred(slots[daily]) if daily.any() else None
            if prof is not None:
                # the line is fitted to the series less its daily profile: each bucket's values
                # less the profile at the bucket's mean time (its values' reference `c` moves)
                n = rows.n[daily]
                tb = rows.ids(daily) * self.width + rows.st[daily] / np.where(n > 0, n, 1.0)
                rows.c[daily] -= phase_values(prof, tb)
            lf = linear.forecast(rows, now, hs, self.lookback, self.width,
                                 robust=code == ROBUST_LINEAR, dt0=self.sampling.dt0[slots], above=above)
            if code == LINEAR:  # what the breach screen assumes until the next full estimate
                self.screen.curvature[slots] = lf.curvature
                self.screen.factor[slots] = lf.factor
                self.screen.measured[slots] = now
            if prof is None:
                return lf.prediction
            p = lf.prediction
            mean = p.mean.copy()
            mean[daily] += phase_values(prof, now + hs)  # and forecast with it at the future times of day
            return Prediction(mean, p.sd, p.noise, p.step)
        s = self.sampling
        seasonal = code == HOLT_WINTERS
        return ets.forecast(self.hw.take(slots) if seasonal else self.holt.take(slots), s.t_last[slots], s.dt0[slots],
                            s.nseen[slots], now, hs, self.seasonal.take(slots) if seasonal and self.season_bins else None)

    def breach(self, slots: np.ndarray, now: float, threshold: float, direction: str,
               horizon: float, confidence: float, model: str | None = None) -> BreachEstimates:
        """Estimate when each slot's series crosses `threshold` going `direction` ("below" or
        "above") within `horizon` seconds, with an interval at level `confidence` (0.5-0.999).

        A slot already past the threshold (its last sample) has eta 0 and probability 1; a
        slot with too little data has eta inf and probability 0. `model` overrides the model
        as in `forecast`. Besides the model's path, the estimate counts the levels the series
        reached on its recent days and bounds its noise by their excursions (`recurrence`).

        Cost: every slot is screened in O(1) on a coarse grid with an interval wider than its
        model states (linear: twice the variance factor and curvature of its last full
        estimate, at most lookback / 16 old; a mean path between the line and the window's
        mean level, wherever the full estimate's slope shrinkage puts it) and a union bound
        over its samples; only slots whose probability could reach SCREEN_PROBABILITY (and
        robust or seasonal ones, whose paths the screen does not bound, and those whose
        recurrence alone reaches it) are estimated in full. The others are reported as they
        are: no crossing within the horizon (every eta inf) and the screen's probability,
        below SCREEN_PROBABILITY (a fresh full estimate of a window whose bend grew since it
        was measured may say a few percent: far from a rule's confidence).
        """
        slots = np.asarray(slots, dtype=np.int64)
        if len(slots) <= self.chunk_rows:
            return self._breach(slots, now, threshold, direction, horizon, confidence, model)
        parts = []
        full = 0
        for lo in range(0, len(slots), self.chunk_rows):
            parts.append(self._breach(slots[lo:lo + self.chunk_rows], now, threshold, direction, horizon, confidence,
                                      model))
            full += self.full_estimates
        self.full_estimates = full
        return BreachEstimates(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(BreachEstimates)))

    def _breach(self, slots: np.ndarray, now: float, threshold: float, direction: str,
                horizon: float, confidence: float, model: str | None) -> BreachEstimates:
        below = breach.is_below(direction)
        hs = breach.grid(horizon)
        codes = self.model_codes(slots) if model is None else np.full(len(slots), self._code(model))
        last = self.sampling.v_last[slots]
        names = np.asarray(MODELS, dtype=object)[codes]
        screen = self._screen(slots, codes, now, hs, threshold, below, last)
        per_day = self.extremes.per_day(slots, threshold, below, now)
        again = recurrence.within(per_day, hs[-1:])[:, 0] if len(hs) else np.zeros(len(slots))
        full = np.nonzero(screen.candidate | (again >= SCREEN_PROBABILITY))[0]
        self.full_estimates = len(full)
        inf = np.full(len(slots), np.inf)
        out = BreachEstimates(inf, inf.copy(), inf.copy(), 1.0 - (1.0 - screen.probability) * (1.0 - again),
                              screen.value, names, np.zeros(len(slots), dtype=bool))
        if len(full):
            fc = self.forecast(slots[full], now, hs, model=model, above=not below)
            reach, days = self.extremes.excursion(slots[full], below, now)
            est = breach.estimate(fc.prediction(), hs, last[full], fc.model, threshold, below, horizon, confidence,
                                  per_day[full], (reach, days))
            for name in ("eta_seconds", "eta_low_seconds", "eta_high_seconds", "probability", "value_at_horizon",
                         "breached"):
                getattr(out, name)[full] = getattr(est, name)
        return out

    def _screen(self, slots: np.ndarray, codes: np.ndarray, now: float, hs: np.ndarray, threshold: float,
                below: bool, last: np.ndarray) -> Screen:
        """Which slots need the full breach estimate (see `breach`)."""
        # the first grid point too: a series next to its threshold but moving away is likeliest
        # to touch it at once
        coarse = np.concatenate((hs[:1], hs[len(hs) // SCREEN_POINTS - 1 :: len(hs) // SCREEN_POINTS])) \
            if len(hs) >= SCREEN_POINTS else hs
        k = len(slots)
        mean = np.full((k, len(coarse)), np.nan)
        sd = np.full_like(mean, np.nan)
        candidate = np.ones(k, dtype=bool)
        lin = np.nonzero(codes == LINEAR)[0]
        daily = np.zeros(0, dtype=np.int64)
        if len(lin) and self.uses_daily:
            seasonal = self.daily.detected(slots[lin])
            daily, lin = lin[seasonal], lin[~seasonal]
        full_grid = None
        if len(daily):
            # a line less a daily profile: its O(1) line is not the one forecast, and the
            # profile's peak may fall between the coarse points, so the whole grid (O(buckets))
            full_grid = self._predict(LINEAR, slots[daily], now, hs, above=not below)
            step = len(hs) // SCREEN_POINTS if len(hs) >= SCREEN_POINTS else 1
            cols = np.concatenate(([0], np.arange(step - 1, len(hs), step))) if len(hs) >= SCREEN_POINTS \
                else np.arange(len(hs))
            mean[daily], sd[daily] = full_grid.mean[:, cols], full_grid.sd[:, cols]
            candidate[daily] = ~np.isfinite(full_grid.sd).all(axis=1)  # warming up after a gap: in full
        if len(lin):
            stats = linear.line(self.sums, self.buckets, slots[lin], now, self.lookback, self.width)
            excess = self.screen.curvature[slots[lin]] * SCREEN_MARGIN
            factor = np.minimum(self.screen.factor[slots[lin]] * SCREEN_MARGIN, linear.FACTOR_MAX)
            bend = linear.screen_curvature(stats, excess, linear.CURVATURE_REACH * self.lookback)
            p = linear.predict(stats, coarse, factor, curve=bend)
            # the full estimate shrinks the slope (`linear.shrink_slope`) by a share the screen
            # does not know: its mean lies between this line and the window's mean level, so
            # the screen takes whichever of the two is nearer the threshold (a window still
            # warming up keeps its line)
            warm = linear.warming(stats, self.lookback)
            centre = (stats.value + stats.slope * stats.xbar)[:, None]
            nearer = np.minimum(p.mean, centre) if below else np.maximum(p.mean, centre)
            mean[lin] = np.where(warm[:, None], p.mean, nearer)
            sd[lin] = p.sd
            # not measured for a while (or never): estimated in full, which measures it again.
            # A window still warming up has no spread: its full estimate is the mean's crossing
            # alone (probability 0), so only one whose line comes near the threshold needs it.
            # (Every new series warms up for a quarter of the lookback: estimating them all in
            # full made a start at scale cost several times the steady state.)
            line = mean[lin]
            tol = 1e-6 * (abs(threshold) + np.nanmax(np.abs(line), axis=1, initial=0.0))
            near = (np.nanmin(line, axis=1, initial=np.inf) <= threshold + tol) if below \
                else (np.nanmax(line, axis=1, initial=-np.inf) >= threshold - tol)
            stale = ~(self.screen.measured[slots[lin]] >= now - SCREEN_REFRESH * self.lookback)
            candidate[lin] = np.where(warm, near | ~np.isfinite(line).all(axis=1), stale)
            sd[lin[warm]] = np.nan  # its probability is 0, as the full estimate says
        hol = np.nonzero(codes == HOLT)[0]
        if len(hol):
            p = self._predict(HOLT, slots[hol], now, coarse)
            mean[hol], sd[hol] = p.mean, p.sd
            candidate[hol] = False
        # a union bound on the first passage: each sample up to the horizon at most as likely
        # past the threshold as the likeliest point of the coarse grid
        samples = np.maximum(np.nan_to_num(hs[-1] / self.sampling.dt0[slots], nan=1.0), 1.0) if len(hs) else 1.0
        prob = np.minimum(breach.crossing_probability(Prediction(mean, sd), threshold, below) * samples, 1.0)
        if full_grid is not None:
            each = samples[daily] if isinstance(samples, np.ndarray) else samples
            prob[daily] = np.minimum(breach.crossing_probability(full_grid, threshold, below) * each, 1.0)
        past = (last <= threshold) if below else (last >= threshold)
        candidate |= past | (prob >= SCREEN_PROBABILITY)
        value = mean[:, -1] if len(coarse) else np.full(k, np.nan)
        return Screen(candidate, prob, value)

    # ---- warm start from history -------------------------------------------------------------

    def warm(self, key: Hashable, t: np.ndarray, v: np.ndarray, exact: bool = True) -> None:
        """Seed a key's state from its history (e.g. the store after a restart), vectorised.

        Resets the key's state. Linear buckets are exact; holt / holt_winters start from a
        regression on the last `lookback` (seasonal profile removed when a period is known or
        detected) and the key is due for a refit at once. `exact=False` says the history is
        partly coarser than the samples (the store's 5-minute means): its days then count for
        recurrence but do not bound the noise (`recurrence.DailyExtremes.fill`).
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
        s = self.sampling
        s.t_last[slot], s.v_last[slot], s.dt0[slot], s.nseen[slot] = end, v[-1], dt0, len(t)
        self.buckets.fill(slot, t, v, self.width)
        self.sums.rebuild(self.buckets, np.array([slot]), self.width)
        if self.uses_daily:
            self.daily.fill(slot, t, v)
        self.extremes.fill(slot, t, v, exact)
        if self.keeps_ets:
            self._warm_ets(slot, t, v, dt0)
        if self.needs_refit and len(t) >= self.min_refit_points:
            self.refits.next_refit[slot] = -np.inf

    def _warm_ets(self, slot: int, t: np.ndarray, v: np.ndarray, dt0: float) -> None:
        """ETS states from a line through the recent window (t ascending, distinct, finite),
        with the seasonal profile taken out for holt_winters when a period is known or found."""
        end = t[-1]
        period = self.season if self.season is not None else 0.0
        if self.season_bins and self.season is None and len(t) >= self.min_refit_points:
            period = detect_period(t, v, CANDIDATE_PERIODS) or 0.0
        recent = t > end - max(self.lookback, 10 * (dt0 if np.isfinite(dt0) else 0))
        tr, vr = t[recent], v[recent]
        line = linear.line_at(tr, vr, end)
        step = dt0 if np.isfinite(dt0) and dt0 > 0 else 1.0
        self.holt.level[slot], self.holt.trend[slot], self.holt.s2[slot] = line.value, line.slope * step, line.s2
        self.hw.level[slot], self.hw.trend[slot], self.hw.s2[slot] = line.value, line.slope * step, line.s2
        if self.season_bins and period > 0 and np.isfinite(dt0):
            nbins = int(np.clip(round(period / step), 1, self.season_bins))
            prof = seasonal_profile(t, v, period, nbins)
            self.seasonal.install(slot, period, prof)
            bins = np.floor(np.mod(tr, period) / period * nbins).astype(np.int64)
            line = linear.line_at(tr, vr - prof[np.clip(bins, 0, nbins - 1)], end)
            self.hw.level[slot], self.hw.trend[slot], self.hw.s2[slot] = line.value, line.slope * step, line.s2

    # ---- refits ------------------------------------------------------------------------------

    def _due(self, now: float) -> np.ndarray:
        used = self.table.used()
        return self.refits.due(used, self.sampling.nseen[used] >= self.min_refit_points, now, self.refit_interval)

    def refit_jobs(self, now: float, history: History | None = None, limit: int | None = None) -> list[RefitJob]:
        """Refit work due at `now` (at most `limit`, most overdue first).

        A key is first due once it has `min_refit_points` samples, then every refit_interval at
        a per-key offset so refits spread over time. `history(key, start, end) -> (t, v)` fills
        each job's data; without it the caller sets `job.t`/`job.v` for start < t <= end. A job
        not answered within refit_interval is given up and reissued.
        """
        if not self.needs_refit or not len(self.table):
            return []
        due = self._due(now)
        if limit is not None:
            due = due[: max(limit, 0)]
        period = self.season if self.uses_season else 0.0
        models = MODELS if self.model == "auto" else (self.model,)
        jobs = []
        for slot in due:
            key = self.table.key(int(slot))
            job = RefitJob(key=key, slot=int(slot), gen=int(self.refits.gen[slot]), start=now - self.history, end=now,
                           period=period, candidates=CANDIDATE_PERIODS, lookback=self.lookback, horizon=self.horizon,
                           season_bins=self.season_bins, linear_buckets=self.linear_buckets, models=models)
            if history is not None:
                job.t, job.v = history(key, job.start, job.end)
            jobs.append(job)
            self.refits.issued(int(slot), now, spread(key, now, self.refit_interval))
        return jobs

    def refit_lag(self, now: float) -> float:
        """How far behind its refit schedule the longest waiting series is at `now`, in seconds:
        due and no job issued for it yet (0 when none waits, or the bank needs no refits)."""
        if not self.needs_refit or not len(self.table):
            return 0.0
        return self.refits.lag(self._due(now), now)

    def apply_refit(self, results: Sequence[RefitResult]) -> int:
        """Install fitted parameters; results for forgotten or reused slots are ignored.

        Returns how many were applied. Online states are kept (they are newer than the fit)
        unless the seasonal period changed, in which case the fitted seasonal state is taken.
        """
        applied = 0
        for r in results:
            s = r.slot
            if s >= self.table.capacity or int(self.refits.gen[s]) != r.gen or self.table.key(s) != r.key:
                continue
            self.refits.pending_since[s] = np.nan
            if not r.ok or not self.keeps_ets:
                continue
            self.holt.set_params(s, r.holt)
            self.hw.set_params(s, r.holt_winters)
            self.seasonal.gamma[s] = r.gamma
            if r.choice in MODELS:
                self.refits.choice[s] = MODELS.index(r.choice)
            if self.season_bins and self.season is None and r.period != self.seasonal.period[s] \
                    and (r.season is not None or r.period == 0):
                self._install_season(s, r)
            applied += 1
        return applied

    def _install_season(self, s: int, r: RefitResult) -> None:
        """Take the fitted seasonal state of a result whose period differs from the slot's:
        the profile resampled onto the slot's bins, level and trend carried to its last sample."""
        step = self.sampling.dt0[s] if self.sampling.dt0[s] > 0 else np.nan
        if r.period <= 0 or not np.isfinite(step):
            self.seasonal.install(s, 0.0, np.zeros(0))
            return
        nbins = int(np.clip(round(r.period / step), 1, self.season_bins))
        src = np.asarray(r.season, dtype=float)
        # resample the fitted profile by phase onto this slot's bins
        phase_dst = (np.arange(nbins) + 0.5) / nbins
        phase_src = (np.arange(len(src)) + 0.5) / len(src)
        self.seasonal.install(s, r.period, np.interp(phase_dst, phase_src, src, period=1.0))
        if np.isfinite(r.level):
            k = max((self.sampling.t_last[s] - r.t_end) / step, 0.0)
            phi = self.hw.phi[s]
            self.hw.level[s] = r.level + r.trend * float(ets.damped_sum(np.float64(phi), np.float64(k)))
            self.hw.trend[s] = r.trend * phi**k

    # ---- persistence -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: arrays plus keys and configuration (picklable).

        Format version 1: {"version", "config", "keys" (the key of every slot, None where
        free), "arrays" (name -> array with one row per slot)}; the array names are those of
        the bank's first release, so snapshots stay readable both ways. A bucket's first value
        (`lb_c`) is float32-rounded since the bank keeps it so; a state whose first values are
        not loads with its sums of y moved to the rounded ones (`linear.Buckets.load_c`).
        """
        times = self.buckets.times_of(slice(None))  # (a row per slot: fresh arrays, not copied again below)
        named = self._named_arrays(times)
        if self.daily.bin[self.table.used()].max(initial=NO_BIN) != NO_BIN:
            named.update(self._daily_arrays())  # (a bank that saw no sample writes the first release's format)
        if self.extremes.day[self.table.used()].max(initial=NO_DAY) != NO_DAY:
            named.update(self._extremes_arrays())
        arrays = {}
        for name, arr in named.items():
            arrays[name] = arr if name in ("lb_n", "lb_st", "lb_stt") else arr.copy()
            if name == "lb_c":
                # each position's bucket number, as the first release kept them, where it kept
                # them (the bank keeps only the newest per slot): snapshots stay readable both ways
                arrays["lb_id"] = self.buckets.ids()
        return {"version": STATE_VERSION, "config": self._config(), "keys": self.table.slot_keys(), "arrays": arrays}

    def _smoothing(self, table: SlotTable) -> tuple[EtsState, EtsState, Season]:
        """The smoothing states, `holt`, `hw` and `seasonal`, one row per slot of `table`: a
        linear bank's are made up as a new slot's would be (its snapshots keep the first
        release's format)."""
        if self.keeps_ets:
            return self.holt, self.hw, self.seasonal
        seasonal = Season.empty(table.capacity, self.season_bins)
        if self.season:
            seasonal.period[table.used()] = self.season
        return EtsState.empty(table.capacity), EtsState.empty(table.capacity), seasonal

    def _named_arrays(self, times: tuple[np.ndarray, np.ndarray, np.ndarray],
                      table: SlotTable | None = None) -> dict[str, np.ndarray]:
        """The state arrays by their snapshot names, for the slots of `table` (the bank's own,
        or the one a state being loaded brings); `times` are the buckets' count, st and stt with
        a row per slot (`linear.Buckets` keeps them per group of slots)."""
        (h, w, z), s, r, b = self._smoothing(self.table if table is None else table), self.sampling, self.refits, self.buckets
        return {
            "t_last": s.t_last, "v_last": s.v_last, "dt0": s.dt0, "nseen": s.nseen,
            "h_l": h.level, "h_b": h.trend, "h_s2": h.s2, "h_alpha": h.alpha, "h_beta": h.beta, "h_phi": h.phi,
            "w_l": w.level, "w_b": w.trend, "w_s2": w.s2, "period": z.period, "nbins": z.nbins,
            "w_alpha": w.alpha, "w_beta": w.beta, "w_phi": w.phi, "w_gamma": z.gamma,
            "choice": r.choice, "next_refit": r.next_refit, "pending_since": r.pending_since, "gen": r.gen,
            "lb_n": times[0], "lb_st": times[1], "lb_sv": b.sv, "lb_stt": times[2], "lb_stv": b.stv, "lb_svv": b.svv,
            "lb_c": b.c,
            "season_state": z.profile,
        }

    def _daily_arrays(self) -> dict[str, np.ndarray]:
        """The daily profile's arrays: optional in a state (one written before it had them
        loads with the profiles to learn again)."""
        d = self.daily
        return {"dp_bin": d.bin, "dp_sum": d.sum, "dp_n": d.n, "dp_profile": d.profile, "dp_resid": d.resid,
                "dp_learnt": d.learnt}

    def _extremes_arrays(self) -> dict[str, np.ndarray]:
        """The recurrence's daily extremes: optional as the daily profile's (an older state
        loads with them rebuilt from the days to come)."""
        e = self.extremes
        return {"ext_day": e.day, "ext_hi": e.hi, "ext_lo": e.lo, "ext_total": e.total, "ext_count": e.count,
                "ext_exact": e.exact}

    def _config(self) -> dict[str, Any]:
        return {"model": self.model, "lookback": self.lookback, "season": self.season,
                "linear_buckets": self.linear_buckets + 1, "season_bins": self.season_bins}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()` output. Raises ValueError if it came from an incompatible bank
        (other model, lookback, season or bin counts) or is damaged: the caller then warms
        from history. Jobs that were out when it was written are forgotten."""
        if state.get("version") != STATE_VERSION or state.get("config") != self._config():
            raise ValueError("forecast state does not match this bank's configuration")
        keys = list(state["keys"])
        table = SlotTable.from_keys(keys)
        kept = (self.sampling, self.buckets, self.sums, self.screen, self.daily, self.extremes, self.holt, self.hw,
                self.seasonal, self.refits)
        self._allocate(table.capacity)
        try:
            shape = (table.capacity, self.buckets.ring)
            times = (np.zeros(shape, dtype=np.float32), np.zeros(shape), np.zeros(shape))
            for name, arr in self._named_arrays(times, table).items():
                if name != "lb_c":  # (`load_c` below: float64 first values move the sums they centre)
                    arr[: len(keys)] = state["arrays"][name]
            for name, arr in (self._daily_arrays() | self._extremes_arrays()).items():
                if name in state["arrays"]:
                    arr[: len(keys)] = state["arrays"][name]
            rows = slice(0, len(keys))
            arrays = state["arrays"]
            self.buckets.load(rows, times[0][rows], times[1][rows], times[2][rows], NO_BUCKET)
            self.buckets.load_c(rows, np.asarray(arrays["lb_c"], dtype=np.float64))
            ids = np.full((self.buckets.capacity, self.buckets.ring), -1, dtype=np.int64)
            ids[: len(keys)] = arrays["lb_id"]
            self.buckets.keep_ids(ids)
            self.buckets.merge()
        except (KeyError, ValueError) as exc:
            # all of it, the derived sums and screen too: they must match the buckets kept
            (self.sampling, self.buckets, self.sums, self.screen, self.daily, self.extremes, self.holt, self.hw,
             self.seasonal, self.refits) = kept
            raise ValueError(f"forecast state is damaged: {exc!r}") from exc
        self.table = table
        self.sums = Sums.empty(table.capacity)
        self.sums.rebuild(self.buckets, table.used(), self.width)
        self.daily.refresh(table.used())
        self.screen = ScreenState.empty(table.capacity)
        self.refits.pending_since[:] = np.nan
