"""Refits off the hot path: statsmodels fits in one background worker process.

The main process builds `RefitJob`s (`ForecastBank.refit_jobs`), hands them to a `RefitWorker`
and installs the `RefitResult`s it polls (`ForecastBank.apply_refit`). The worker is a single
'spawn' process pinned to one CPU and niced, so fits use at most one core, and statsmodels is
imported only there: the main process never loads it (its RSS does not grow with fits).
The queue is bounded (`max_pending`), so at most that many histories are in flight.

`fit_job(job)` is the fit itself (also callable directly in benchmarks): detect the period if
needed, regularise the history onto a grid (coarser when a season has more steps than the
bank keeps bins for, or the history has more than MAX_POINTS samples), fit damped Holt and
Holt-Winters with statsmodels on the first 75 %, then replay the rest through a one-slot
ForecastBank (the same online code the daemon runs) and score every candidate model by its
held-out multi-step error scaled by the in-sample naive error (MASE); the lowest wins `auto`.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Sequence

import numpy as np

from agent.models.forecast import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_GAMMA,
    DEFAULT_PHI,
    MODELS,
    PHI_MAX,
    ForecastBank,
    RefitJob,
    RefitResult,
)
from agent.models.seasonality import bin_means, detect_period

MAX_POINTS = 4000  # fit on at most this many grid points (keeps one fit well under a second)
MIN_POINTS = 24
TRAIN_SHARE = 0.75
MAX_ORIGINS = 120  # held-out forecast origins scored per job

_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def _regularise(t: np.ndarray, v: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Bin means on a grid of `step` seconds aligned to multiples of `step`; gaps interpolated."""
    g0, y = bin_means(t, v, step)
    return (np.arange(len(y)) + g0) * step + step / 2, y


def _per_step(x: float, k: float) -> float:
    """Smoothing weight per raw sample equivalent to weight `x` per grid step of k samples."""
    return 1.0 - (1.0 - min(max(x, 0.0), 1.0)) ** (1.0 / k)


def _fit_ets(y: np.ndarray, m: int) -> tuple[float, float, float, float]:
    """statsmodels fit; returns (alpha, beta, phi, gamma) in error-correction form per step."""
    import warnings

    from statsmodels.tsa.holtwinters import ExponentialSmoothing  # worker process only

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if m:
            model = ExponentialSmoothing(y, trend="add", damped_trend=True, seasonal="add",
                                         seasonal_periods=m, initialization_method="heuristic")
        else:
            model = ExponentialSmoothing(y, trend="add", damped_trend=True, initialization_method="estimated")
        p = model.fit().params
    alpha = float(p["smoothing_level"])
    beta_star = float(p["smoothing_trend"])
    phi = float(p["damping_trend"])
    gamma = float(p["smoothing_seasonal"]) if m else 0.0
    vals = (alpha, alpha * beta_star, phi, gamma)
    if not all(np.isfinite(vals)):
        raise ValueError("statsmodels returned non-finite parameters")
    return vals


def fit_job(job: RefitJob) -> RefitResult:
    """Fit one series (see the module docstring). Never raises: failures come back as ok=False."""
    started = time.perf_counter()
    res = RefitResult(key=job.key, slot=job.slot, gen=job.gen, ok=False)
    try:
        _fit_into(job, res)
        res.ok = True
    except Exception as exc:  # a bad series must not kill the worker
        res.ok = False
        res.error = f"{type(exc).__name__}: {exc}"
    res.fit_seconds = time.perf_counter() - started
    return res


def _fit_into(job: RefitJob, res: RefitResult) -> None:
    if job.t is None or job.v is None:
        raise ValueError("job has no history")
    t = np.asarray(job.t, dtype=float)
    v = np.asarray(job.v, dtype=float)
    ok = np.isfinite(t) & np.isfinite(v)
    t, v = t[ok], v[ok]
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    if len(t) < MIN_POINTS:
        raise ValueError(f"too little history ({len(t)} samples)")
    dt0 = float(np.median(np.diff(t)))
    if dt0 <= 0:
        raise ValueError("timestamps do not advance")
    period = job.period
    if period is None:
        period = detect_period(t, v, job.candidates) or 0.0
    k = 1
    if period > 0 and job.season_bins and period / dt0 > job.season_bins:
        k = math.ceil(period / dt0 / job.season_bins)
    k = max(k, math.ceil((t[-1] - t[0]) / dt0 / MAX_POINTS))
    step = k * dt0
    tg, y = _regularise(t, v, step) if k > 1 or np.ptp(np.diff(t)) > 0.1 * dt0 else (t, v)
    m = int(round(period / step)) if period > 0 else 0
    split = int(len(y) * TRAIN_SHARE)
    if m and split < 2 * m + 4:
        m, period = 0, 0.0
    if split < MIN_POINTS // 2:
        raise ValueError("too little history to hold out")
    train = y[:split]
    h_alpha, h_beta, h_phi, _ = _fit_ets(train, 0)
    w_alpha, w_beta, w_phi, gamma = _fit_ets(train, m) if m else (h_alpha, h_beta, h_phi, 0.0)

    # replay through the online model with the fitted (grid-step) parameters
    bank = ForecastBank("auto", job.lookback, period, linear_buckets=job.linear_buckets,
                        season_bins=max(job.season_bins, m, 1) if m else 1)
    bank.warm("s", tg[:split], y[:split])
    s = bank.slots_for(["s"])
    bank.h_alpha[s], bank.h_beta[s], bank.h_phi[s] = h_alpha, h_beta, min(h_phi, PHI_MAX)
    bank.w_alpha[s], bank.w_beta[s], bank.w_phi[s], bank.w_gamma[s] = w_alpha, w_beta, min(w_phi, PHI_MAX), gamma
    test = len(y) - split
    horizon_steps = max(1, int(round(job.horizon / step)))
    hsteps = np.unique(np.clip(np.array([1, horizon_steps // 4, horizon_steps // 2, horizon_steps]), 1, max(test // 2, 1)))
    candidates = [mdl for mdl in job.models if mdl in MODELS and (mdl != "holt_winters" or m)]
    if not candidates:
        candidates = ["linear"]
    last_origin = len(y) - int(hsteps[-1]) - 1
    stride = max(1, (last_origin - split) // MAX_ORIGINS) if last_origin > split else 1
    origins = set(range(split, last_origin + 1, stride))
    scale = float(np.mean(np.abs(np.diff(train)))) or 1.0
    errs = {mdl: [] for mdl in candidates}
    for i in range(split, len(y)):
        bank.update(s, tg[i], y[i : i + 1])
        if i in origins:
            actual = y[i + hsteps]
            for mdl in candidates:
                fc = bank.forecast(s, tg[i], hsteps * step, model=mdl).mean[0]
                errs[mdl].append(np.abs(fc - actual) / scale)
    scores = {mdl: float(np.nanmean(e)) if e else math.inf for mdl, e in errs.items()}
    scores = {mdl: (sc if np.isfinite(sc) else math.inf) for mdl, sc in scores.items()}
    res.errors = scores
    res.choice = min(candidates, key=lambda mdl: scores[mdl])
    # parameters per raw sample step
    res.alpha, res.beta, res.phi = _to_raw(h_alpha, h_beta, h_phi, k)
    res.hw_alpha, res.hw_beta, res.hw_phi = _to_raw(w_alpha, w_beta, w_phi, k)
    res.gamma = _per_step(gamma, k)
    res.period = float(period)
    res.t_end = float(tg[-1])
    res.level = float(bank.w_l[s][0])
    res.trend = float(bank.w_b[s][0]) / k
    if m:
        res.season = bank.season_state[s[0], : int(bank.nbins[s][0])].copy()


def _to_raw(alpha: float, beta: float, phi: float, k: int) -> tuple[float, float, float]:
    if k == 1:
        return alpha, beta, phi
    a = _per_step(alpha, k)
    beta_star = beta / alpha if alpha > 0 else 0.0
    return a, a * beta_star, phi ** (1.0 / k)


def _limit_to_one_cpu() -> None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
    except (AttributeError, OSError):
        pass
    try:
        os.nice(10)
    except OSError:
        pass


def _worker_main(jobs: mp.Queue, results: mp.Queue) -> None:
    """Worker process loop: one job at a time until the None sentinel."""
    _limit_to_one_cpu()
    parent = os.getppid()
    while True:
        try:
            job = jobs.get(timeout=5.0)
        except queue.Empty:
            if os.getppid() != parent:  # the daemon died without closing us: do not linger
                return
            continue
        if job is None:
            return
        results.put(fit_job(job))


class RefitWorker:
    """A background process that runs `fit_job` on submitted jobs.

    RefitWorker(max_pending): at most `max_pending` jobs queued or running; `submit(jobs)`
    returns how many it took (take only `free()` jobs from the bank), `poll()` returns the
    results that are ready (never blocks), `close()` stops the process. The process is
    started on first use and restarted if it dies (its in-flight jobs are lost; the bank
    reissues them after refit_interval).
    """

    def __init__(self, max_pending: int = 8) -> None:
        self.max_pending = int(max_pending)
        self._ctx = mp.get_context("spawn")
        self._jobs: mp.Queue | None = None
        self._results: mp.Queue | None = None
        self._proc = None
        self.pending = 0
        self.restarts = 0
        self.fit_seconds_total = 0.0
        self.completed = 0

    def _ensure(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        if self._proc is not None:
            self.restarts += 1
            self.pending = 0
        self._jobs = self._ctx.Queue()
        self._results = self._ctx.Queue()
        saved = {name: os.environ.get(name) for name in _THREAD_ENV}
        os.environ.update({name: "1" for name in _THREAD_ENV})  # inherited by the child: one BLAS thread
        try:
            self._proc = self._ctx.Process(target=_worker_main, args=(self._jobs, self._results),
                                           name="forewarn-refit", daemon=True)
            self._proc.start()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def free(self) -> int:
        """How many more jobs `submit` will accept now."""
        return max(self.max_pending - self.pending, 0)

    def submit(self, jobs: Sequence[RefitJob]) -> int:
        """Queue up to `free()` jobs; returns how many were taken (the rest are not queued)."""
        take = list(jobs)[: self.free()]
        if not take:
            return 0
        self._ensure()
        assert self._jobs is not None
        for job in take:
            self._jobs.put(job)
        self.pending += len(take)
        return len(take)

    def poll(self) -> list[RefitResult]:
        """Results finished since the last poll (non-blocking)."""
        out: list[RefitResult] = []
        if self._results is None:
            return out
        while True:
            try:
                r = self._results.get_nowait()
            except queue.Empty:
                break
            out.append(r)
        self.pending = max(self.pending - len(out), 0)
        self.completed += len(out)
        self.fit_seconds_total += sum(r.fit_seconds for r in out)
        if self.pending and self._proc is not None and not self._proc.is_alive():
            self.restarts += 1
            self.pending = 0
            self._proc = None
        return out

    def wait(self, timeout: float) -> list[RefitResult]:
        """Poll until every pending job has answered or `timeout` seconds passed (tests, benchmarks)."""
        out: list[RefitResult] = []
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            got = self.poll()
            out.extend(got)
            if not got:
                time.sleep(0.02)
        return out

    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker process (pending jobs are dropped)."""
        if self._proc is None:
            return
        try:
            if self._proc.is_alive() and self._jobs is not None:
                self._jobs.put(None)
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout)
        finally:
            for q in (self._jobs, self._results):
                if q is not None:
                    q.cancel_join_thread()
                    q.close()
            self._proc = None
            self._jobs = self._results = None
            self.pending = 0


__all__ = ["RefitWorker", "fit_job", "DEFAULT_ALPHA", "DEFAULT_BETA", "DEFAULT_GAMMA", "DEFAULT_PHI"]
