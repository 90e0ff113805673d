"""A fixed forecasting scenario over a few hundred random series, recorded for equivalence tests.

`run()` drives `ForecastBank`s and the refit worker's `fit_job` only through their public calls
(constructor, `slots_for`, `update`, `warm`, `forget`, `forecast`, `breach`, `refit_jobs`,
`apply_refit`, `state_dict`) and returns every number they produced as flat arrays. The same
function ran with the forecasting code as it was before it was split into modules (commit
4bb23e7), and again when breach estimates were calibrated on purpose, and when linear forecasts
began to take out a detected daily profile (`seasonality.DailyProfile`) and to count only the
noise on the breach's side of the line, and when breach estimates began to count the levels a
series reached on its recent days (`recurrence`) and banks stopped doubling their rows, and
when they began to shrink insignificant slopes, and when the bucket ring's first values became
float32 (snapshots only); its output is
`tests/fixtures/forecast_reference.npz`
(`tests/fixtures/make_forecast_reference.py` writes it); `tests/test_forecast_equivalence.py`
runs it again with the code as it is and compares.

statsmodels is replaced by a deterministic stand-in while `fit_job` runs (`fake_statsmodels`):
what is compared is our code around the fit (period detection, regularisation, the online
replay, model choice, parameter conversion, installing a result), not statsmodels' optimiser,
whose last digits may change with its version.
"""

from __future__ import annotations

import contextlib
import json
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

from agent.models.forecast import ForecastBank
from agent.models.refit import fit_job

T0 = 1_700_000_000.0
HOUR = 3600.0
DAY = 86400.0
MODELS = ("linear", "robust_linear", "holt", "holt_winters")
HORIZONS = np.array([0.0, 60.0, 900.0, 3600.0, 6 * HOUR, DAY])
SERIES_PER_BANK = 52

# name, model, lookback, keyword options
BANKS: tuple[tuple[str, str, float, dict[str, Any]], ...] = (
    ("auto", "auto", HOUR, {}),
    ("auto_daily", "auto", 6 * HOUR, {"season": DAY}),
    ("linear16", "linear", 1800.0, {"linear_buckets": 16}),
    ("hw_hourly", "holt_winters", 2 * HOUR, {"season": HOUR, "season_bins": 32, "min_refit_points": 30}),
    ("holt", "holt", HOUR, {"refit_interval": 2 * HOUR}),
    ("auto_noseason", "auto", 2 * HOUR, {"season": 0.0, "linear_buckets": 24}),
)


# ---- series ---------------------------------------------------------------------------------------


def make_series(rng: np.random.Generator, i: int) -> tuple[np.ndarray, np.ndarray]:
    """One random series of kind i % 8: times (with irregular spacing, gaps, repeats and late
    samples for some) and values (with NaNs for some)."""
    kind = i % 8
    step = float(rng.choice([15.0, 60.0, 120.0, 300.0]))
    n = int(rng.integers(150, 900))
    if kind == 2:  # daily season needs days of history
        step, n = 300.0, int(rng.integers(600, 1000))
    if kind == 3:  # hourly season
        step, n = 60.0, int(rng.integers(200, 700))
    dt = np.full(n, step)
    if kind in (4, 5):
        dt = step * rng.uniform(0.5, 1.5, n)
    if kind == 5:
        dt[rng.integers(0, n, 3)] *= rng.uniform(5, 40)  # gaps
    t = T0 + float(rng.uniform(0, 600)) + np.cumsum(dt)
    x = t - T0
    scale = float(10 ** rng.uniform(-2, 11))
    noise = rng.normal(0, 1, n)
    if kind == 0:  # random walk
        v = scale * (1 + 0.01 * np.cumsum(noise))
    elif kind == 1:  # trend with noise
        v = scale * (1 + rng.normal(0, 1e-5) * x + 0.01 * noise)
    elif kind == 2:
        v = scale * (1 + 0.2 * np.sin(2 * np.pi * t / DAY) + 1e-6 * x + 0.01 * noise)
    elif kind == 3:
        v = scale * (1 + 0.3 * np.sin(2 * np.pi * t / HOUR) + 0.02 * noise)
    elif kind == 4:  # steps and spikes
        v = scale * (1 + 0.5 * (x > x[n // 2]) + 0.01 * noise)
        v[rng.integers(0, n, 4)] *= 50
    elif kind == 5:
        v = scale * (2 - 1e-6 * x + 0.05 * noise)
    elif kind == 6:  # constant, then integer-valued counter
        v = np.full(n, scale)
        v[n // 2 :] = np.floor(scale + np.cumsum(rng.poisson(3, n - n // 2)))
    else:  # decline to a threshold, with NaNs and repeated or late timestamps
        v = scale * (1 - x / (x[-1] * rng.uniform(0.8, 3))) + 0.01 * scale * noise
        v[rng.integers(0, n, 5)] = np.nan
        t[rng.integers(1, n, 5)] -= step * rng.uniform(0, 3)
    return t, v


# ---- statsmodels stand-in ---------------------------------------------------------------------


class _FakeFit:
    def __init__(self, params: dict[str, float]) -> None:
        self.params = params


class _FakeExponentialSmoothing:
    """Deterministic parameters from the data, in statsmodels' ExponentialSmoothing shape."""

    def __init__(self, y: np.ndarray, trend: str | None = None, damped_trend: bool = False,
                 seasonal: str | None = None, seasonal_periods: int | None = None,
                 initialization_method: str | None = None) -> None:
        self.y = np.asarray(y, dtype=float)
        self.seasonal = seasonal

    def fit(self, use_brute: bool = True) -> _FakeFit:
        y = self.y
        d = np.diff(y)
        rough = float(np.mean(np.abs(d)) / (np.std(y) + 1e-12))
        drift = float(abs(np.mean(d)) / (np.std(d) + 1e-12))
        params = {"smoothing_level": 0.05 + 0.9 * rough / (1 + rough),
                  "smoothing_trend": 0.02 + 0.3 * drift / (1 + drift),
                  "damping_trend": 0.9 + 0.09 * (len(y) % 7) / 7}
        if self.seasonal:
            params["smoothing_seasonal"] = 0.05 + 0.1 * (len(y) % 5) / 5
        return _FakeFit(params)


@contextlib.contextmanager
def fake_statsmodels() -> Iterator[None]:
    """`from statsmodels.tsa.holtwinters import ExponentialSmoothing` gives the stand-in."""
    name = "statsmodels.tsa.holtwinters"
    saved = sys.modules.get(name)
    module = types.ModuleType(name)
    module.__dict__["ExponentialSmoothing"] = _FakeExponentialSmoothing
    sys.modules[name] = module
    try:
        yield
    finally:
        if saved is None:
            del sys.modules[name]
        else:
            sys.modules[name] = saved


# ---- the scenario -------------------------------------------------------------------------------


def _recorded(slots: np.ndarray, gone: set[int], fresh: np.ndarray,
              last_fed: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """The slots in use (series still there, then the new ones) and their last finite values."""
    used = np.concatenate(([s for j, s in enumerate(slots) if j not in gone], fresh)).astype(np.int64)
    return used, np.array([last_fed.get(int(s), np.nan) for s in used])


def record_forecasts(out: dict[str, np.ndarray], tag: str, bank: ForecastBank, slots: np.ndarray,
                      last: np.ndarray, now: float) -> None:
    out[f"{tag}/at"] = np.concatenate(([now], slots, last))  # what the calls below were given
    for m in MODELS if bank.keeps_ets else MODELS[:2]:  # a linear bank keeps no smoothing state
        fc = bank.forecast(slots, now, HORIZONS, model=m)
        out[f"{tag}/{m}/mean"] = fc.mean
        out[f"{tag}/{m}/sd"] = fc.sd
    fc = bank.forecast(slots, now, HORIZONS)
    out[f"{tag}/default/mean"] = fc.mean
    out[f"{tag}/default/sd"] = fc.sd
    out[f"{tag}/default/model"] = np.array([MODELS.index(str(m)) for m in fc.model])
    span = np.where(np.isfinite(last), np.abs(last), 1.0)
    for direction, sign in (("below", -1.0), ("above", 1.0)):
        for conf, frac, horizon in ((0.9, 0.05, DAY), (0.6, 0.3, 6 * HOUR), (0.999, 0.0, HOUR)):
            # one threshold per call, so slots differ only in how far their series is from it
            threshold = float(np.nanmedian(last + sign * frac * span)) if np.isfinite(last).any() else 0.0
            for model in (None, "robust_linear", "holt_winters") if bank.keeps_ets else (None, "robust_linear"):
                est = bank.breach(slots, now, threshold, direction, horizon, conf, model=model)
                key = f"{tag}/breach/{direction}/{conf}/{model}"
                out[key] = np.stack([est.eta_seconds, est.eta_low_seconds, est.eta_high_seconds,
                                     est.probability, est.value_at_horizon, est.breached.astype(float)])
                out[key + "/model"] = np.array([MODELS.index(str(m)) for m in est.model])


def _result_row(r: Any) -> np.ndarray:
    errors = [r.errors.get(m, np.nan) for m in MODELS]
    return np.array([float(r.ok), r.period, r.alpha, r.beta, r.phi, r.hw_alpha, r.hw_beta, r.hw_phi, r.gamma,
                     MODELS.index(r.choice), r.t_end, r.level, r.trend, *errors])


def run() -> dict[str, np.ndarray]:
    """The whole scenario; keys name what each array is (bank/checkpoint/model/...)."""
    rng = np.random.default_rng(20240917)
    out: dict[str, np.ndarray] = {}
    i_series = 0
    for name, model, lookback, options in BANKS:
        bank = ForecastBank(model, lookback, **options)
        series = [make_series(rng, i_series + j) for j in range(SERIES_PER_BANK)]
        i_series += SERIES_PER_BANK
        keys = [f"{name}-{j}" for j in range(len(series))]
        # every third series is warmed from its first 40 %, the others are streamed throughout
        start = np.zeros(len(series), dtype=np.int64)
        for j in range(0, len(series), 3):
            t, v = series[j]
            start[j] = int(0.4 * len(t))
            bank.warm(keys[j], t[: start[j]], v[: start[j]])
        slots = bank.slots_for(keys)
        out[f"{name}/slots"] = slots.copy()
        n_max = max(len(t) for t, _ in series)
        checkpoints = {n_max // 3: "c1", (2 * n_max) // 3: "c2"}
        gone: set[int] = set()
        fresh = np.zeros(0, dtype=np.int64)
        last_fed: dict[int, float] = {}
        for i in range(int(start.min()), n_max):
            live = [j for j, (t, _) in enumerate(series) if start[j] <= i < len(t) and j not in gone]
            if live:
                values = np.array([series[j][1][i] for j in live])
                bank.update(slots[live], np.array([series[j][0][i] for j in live]), values)
                last_fed.update((int(slots[j]), float(x)) for j, x in zip(live, values) if np.isfinite(x))
            if len(fresh):
                t, v = series[5]
                if i < len(t):
                    bank.update(fresh[:1], t[i], v[i : i + 1] * 0.5)
                    if np.isfinite(v[i]):
                        last_fed[int(fresh[0])] = float(v[i] * 0.5)
            if i in checkpoints:
                tag = f"{name}/{checkpoints[i]}"
                now = max(series[j][0][min(i, len(series[j][0]) - 1)] for j in range(len(series))) + 7.0
                record_forecasts(out, tag, bank, *_recorded(slots, gone, fresh, last_fed), now)
                _refit(out, tag, bank, series, keys, now, i)
                if checkpoints[i] == "c1":  # series 5 and 6 go away; two new ones take their slots
                    bank.forget([keys[5], keys[6]])
                    gone |= {5, 6}
                    fresh = bank.slots_for([f"{name}-new-a", f"{name}-new-b"])
                    out[f"{tag}/reused_slots"] = fresh.copy()
                    for s_ in (5, 6):
                        last_fed.pop(int(slots[s_]), None)
        now = max(t[-1] for t, _ in series) + 30.0
        record_forecasts(out, f"{name}/end", bank, *_recorded(slots, gone, fresh, last_fed), now)
        out[f"{name}/keys"] = np.array(sorted(map(str, bank.keys())))
        if name in ("auto", "hw_hourly"):
            _record_state(out, name, bank)
    return out


def _refit(out: dict[str, np.ndarray], tag: str, bank: ForecastBank, series: list[tuple[np.ndarray, np.ndarray]],
           keys: list[str], now: float, i: int) -> None:
    by_key = dict(zip(keys, series))

    def history(key: Any, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        t, v = by_key.get(key, series[5])
        sel = (t > a) & (t <= b) & (np.arange(len(t)) <= i)
        return t[sel], v[sel]

    jobs = bank.refit_jobs(now, history=history, limit=8)
    out[f"{tag}/jobs"] = np.array([[j.slot, j.gen, j.start, j.end, np.nan if j.period is None else j.period,
                                    j.horizon, j.season_bins, j.linear_buckets, len(j.models)] for j in jobs]).reshape(-1, 9)
    with fake_statsmodels():
        results = [fit_job(j) for j in jobs]
    out[f"{tag}/results"] = np.array([_result_row(r) for r in results]).reshape(-1, 13 + len(MODELS))
    for j, r in enumerate(results):
        if r.season is not None:
            out[f"{tag}/results/{j}/season"] = np.asarray(r.season)
    out[f"{tag}/applied"] = np.array([bank.apply_refit(results)])


def _record_state(out: dict[str, np.ndarray], name: str, bank: ForecastBank) -> None:
    """The bank's snapshot, to check that the new code writes the same and reads the old."""
    state = bank.state_dict()
    meta = {"version": state["version"], "config": state["config"], "keys": state["keys"]}
    out[f"state/{name}/meta"] = np.array(json.dumps(meta))
    for arr_name, arr in state["arrays"].items():
        out[f"state/{name}/arrays/{arr_name}"] = arr
