"""Refits off the hot path: statsmodels fits in one background worker process, and its metrics.

The main process builds `RefitJob`s (`ForecastBank.refit_jobs`), hands them to a `RefitWorker`
and installs the `RefitResult`s it polls (`ForecastBank.apply_refit`). The worker is a single
'spawn' process pinned to one CPU and niced, so fits use at most one core, and statsmodels is
imported only there: the main process never loads it (its RSS does not grow with fits).
The queue is bounded (`max_pending`), so at most that many histories are in flight. The worker
is a collector: `collect()` yields its `forewarn_refit_*` families for /metrics.

`fit_job(job)` is the fit itself (also callable directly in benchmarks): detect the period if
needed, regularise the history onto a grid (coarser when a season has more steps than the
bank keeps bins for, or the history has more than MAX_POINTS samples), fit damped Holt and
Holt-Winters with statsmodels on the first 75 %, then replay the rest through a one-slot
ForecastBank (the same online code the daemon runs) and score every candidate model by its
held-out multi-step error scaled by the in-sample naive error (MASE); the lowest wins `auto`.

Imports nothing of the agent outside `agent.models` but the metric families (`agent.metrics`).
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import queue
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue

import numpy as np

from agent.metrics import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from agent.models.ets import EtsParams
from agent.models.forecast import MODELS, ForecastBank
from agent.models.schedule import RefitJob, RefitResult
from agent.models.seasonality import DAY, bin_means, detect_period
from agent.processes import one_blas_thread, step_aside

MAX_POINTS = 2000  # fit on at most this many grid points (a fit of a week at 5 minutes: ~0.2 s)
MIN_POINTS = 24
TRAIN_SHARE = 0.75
MAX_ORIGINS = 60  # held-out forecast origins scored per job

# fit times: a short daily series takes ~10 ms, a long weekly one a few seconds
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OUTCOMES = ("submitted", "fitted", "failed", "lost")

log = logging.getLogger(__name__)

# Histories in flight to the worker at most (samples; ~16 bytes each in the queue), whatever
# max_pending allows: 8 days at 15 s is 46,080 samples, so ~40 such jobs.
MAX_PENDING_SAMPLES = 2_000_000
LAG_WARN_SECONDS = 600.0  # refits this late are logged (at most every LAG_LOG_EVERY seconds)
LAG_LOG_EVERY = 900.0


# ---- the fit -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """A history on the grid it is fitted on: grid times `t`, values `y`, the grid step in
    seconds and in raw samples (`k`), the seasonal period (seconds, 0: none) and its length in
    grid steps `m`, and where the held-out part starts (`split`)."""

    t: np.ndarray
    y: np.ndarray
    step: float
    k: int
    period: float
    m: int
    split: int


@dataclass(frozen=True)
class Scores:
    """The held-out MASE of each candidate model, the winner, and the replay bank (one slot,
    "s") holding the online state at the end of the history."""

    errors: dict[str, float]
    choice: str
    bank: ForecastBank


def _regularise(t: np.ndarray, v: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Bin means on a grid of `step` seconds aligned to multiples of `step`; gaps interpolated.
    Returns (bin centre times, means)."""
    g0, y = bin_means(t, v, step)
    return (np.arange(len(y)) + g0) * step + step / 2, y


def _per_step(x: float, k: float) -> float:
    """Smoothing weight per raw sample equivalent to weight `x` per grid step of k samples."""
    return 1.0 - (1.0 - min(max(x, 0.0), 1.0)) ** (1.0 / k)


def _to_raw(p: EtsParams, k: int) -> EtsParams:
    """Parameters per grid step of k samples -> per raw sample (gamma is converted apart)."""
    if k == 1:
        return EtsParams(p.alpha, p.beta, p.phi)
    a = _per_step(p.alpha, k)
    beta_star = p.beta / p.alpha if p.alpha > 0 else 0.0
    return EtsParams(a, a * beta_star, p.phi ** (1.0 / k))


def fit_ets(y: np.ndarray, m: int) -> EtsParams:
    """statsmodels' damped Holt (m = 0) or additive Holt-Winters with period m (grid steps) on
    y; parameters in error-correction form per step. Raises ValueError on non-finite ones."""
    # Only the worker process (and tests that fit inline) pays for statsmodels and scipy.
    from statsmodels.tsa.holtwinters import ExponentialSmoothing  # noqa: PLC0415 - costly, worker process only

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if m:
            model = ExponentialSmoothing(y, trend="add", damped_trend=True, seasonal="add",
                                         seasonal_periods=m, initialization_method="heuristic")
        else:
            model = ExponentialSmoothing(y, trend="add", damped_trend=True, initialization_method="estimated")
        # statsmodels' default brute-force grid of starting values costs more than the fit
        # itself (0.4 s of 0.6 s for a daily season at 5 minutes) and found the same optimum
        # on our series: the optimiser starts from its defaults instead
        p = model.fit(use_brute=False).params
    alpha = float(p["smoothing_level"])
    beta_star = float(p["smoothing_trend"])
    phi = float(p["damping_trend"])
    gamma = float(p["smoothing_seasonal"]) if m else 0.0
    params = EtsParams(alpha, alpha * beta_star, phi, gamma)
    if not all(np.isfinite((params.alpha, params.beta, params.phi, params.gamma))):
        raise ValueError("statsmodels returned non-finite parameters")
    return params


def _grid(job: RefitJob) -> Grid:
    """The job's history cleaned (finite, time-ordered), its period, and the fitting grid.
    Raises ValueError when there is too little of it."""
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
    return Grid(tg, y, step, k, float(period), m, split)


def _score(job: RefitJob, g: Grid, holt: EtsParams, hw: EtsParams) -> Scores:
    """Replay the held-out part through a one-slot bank warmed on the training part, with the
    fitted (grid-step) parameters, and score each candidate model's forecasts."""
    # linear scored as the job's bank runs it: with its daily profile unless its season says not
    bank = ForecastBank("auto", job.lookback, g.period, linear_buckets=job.linear_buckets,
                        season_bins=max(job.season_bins, g.m, 1) if g.m else 1,
                        daily=job.period is None or job.period == DAY)
    bank.warm("s", g.t[: g.split], g.y[: g.split])
    s = bank.slots_for(["s"])
    slot = int(s[0])
    bank.holt.set_params(slot, holt)
    bank.hw.set_params(slot, hw)
    bank.seasonal.gamma[slot] = hw.gamma
    y, split = g.y, g.split
    test = len(y) - split
    horizon_steps = max(1, int(round(job.horizon / g.step)))
    hsteps = np.unique(np.clip(np.array([1, horizon_steps // 4, horizon_steps // 2, horizon_steps]), 1, max(test // 2, 1)))
    candidates = [mdl for mdl in job.models if mdl in MODELS and (mdl != "holt_winters" or g.m)]
    if not candidates:
        candidates = ["linear"]
    last_origin = len(y) - int(hsteps[-1]) - 1
    stride = max(1, (last_origin - split) // MAX_ORIGINS) if last_origin > split else 1
    origins = set(range(split, last_origin + 1, stride))
    scale = float(np.mean(np.abs(np.diff(y[:split])))) or 1.0
    errs: dict[str, list[np.ndarray]] = {mdl: [] for mdl in candidates}
    for i in range(split, len(y)):
        bank.update(s, g.t[i], y[i : i + 1])
        if i in origins:
            actual = y[i + hsteps]
            for mdl in candidates:
                fc = bank.forecast(s, g.t[i], hsteps * g.step, model=mdl).mean[0]
                errs[mdl].append(np.abs(fc - actual) / scale)
    scores = {mdl: float(np.nanmean(e)) if e else math.inf for mdl, e in errs.items()}
    scores = {mdl: (sc if np.isfinite(sc) else math.inf) for mdl, sc in scores.items()}
    return Scores(scores, min(candidates, key=lambda mdl: scores[mdl]), bank)


def _fit(job: RefitJob) -> RefitResult:
    g = _grid(job)
    train = g.y[: g.split]
    holt = fit_ets(train, 0)
    hw = fit_ets(train, g.m) if g.m else EtsParams(holt.alpha, holt.beta, holt.phi, 0.0)
    sc = _score(job, g, holt, hw)
    slot = int(sc.bank.slots_for(["s"])[0])
    raw_holt, raw_hw = _to_raw(holt, g.k), _to_raw(hw, g.k)
    season = sc.bank.seasonal.profile[slot, : int(sc.bank.seasonal.nbins[slot])].copy() if g.m else None
    # parameters and state per raw sample step
    return RefitResult(key=job.key, slot=job.slot, gen=job.gen, ok=True, period=g.period,
                       alpha=raw_holt.alpha, beta=raw_holt.beta, phi=raw_holt.phi,
                       hw_alpha=raw_hw.alpha, hw_beta=raw_hw.beta, hw_phi=raw_hw.phi, gamma=_per_step(hw.gamma, g.k),
                       choice=sc.choice, errors=sc.errors, t_end=float(g.t[-1]), level=float(sc.bank.hw.level[slot]),
                       trend=float(sc.bank.hw.trend[slot]) / g.k, season=season)


def fit_job(job: RefitJob) -> RefitResult:
    """Fit one series (see the module docstring). Never raises: failures come back as ok=False."""
    started = time.perf_counter()
    try:
        res = _fit(job)
    except Exception as exc:  # a bad series must not kill the worker
        res = RefitResult(key=job.key, slot=job.slot, gen=job.gen, ok=False, error=f"{type(exc).__name__}: {exc}")
    res.fit_seconds = time.perf_counter() - started
    return res


# ---- the worker process ------------------------------------------------------------------------


def _worker_main(jobs: Queue[RefitJob | None], results: Queue[RefitResult]) -> None:
    """Worker process loop: one job at a time until the None sentinel."""
    step_aside()
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
    """A background process that runs `fit_job` on submitted jobs, and a metrics collector.

    RefitWorker(max_pending, period, max_samples): at most `max_pending` jobs queued or
    running, and histories of at most `max_samples` samples; with `period` (how often the
    owner polls and submits, seconds), `free()` asks for enough jobs to keep the process busy
    until the next poll (from the measured time per fit) rather than a fixed batch.
    `submit(jobs)` returns how many it took (take only `free()` jobs from the bank), `poll()`
    returns the results that are ready (never blocks), `close()` stops the process. The process is
    started on first use and restarted if it dies (its in-flight jobs are lost; the bank
    reissues them after refit_interval).

    `collect()` yields forewarn_refit_jobs_total{outcome}, forewarn_refit_duration_seconds,
    forewarn_refit_queue, forewarn_refit_lag_seconds (what the owner last reported with
    `set_lag`) and forewarn_refit_worker_restarts_total, from the first submitted job on: an
    agent whose models never refit has no worker process and no refit families.
    """

    def __init__(self, max_pending: int = 8, period: float | None = None,
                 max_samples: int = MAX_PENDING_SAMPLES) -> None:
        self.max_pending = int(max_pending)
        self.period = period
        self.max_samples = int(max_samples)
        self._inflight: deque[int] = deque()  # samples of each pending job, oldest first (answered in order)
        self._fit_ewma = 0.5  # seconds per job, until measured
        self._size_ewma = 10_000.0  # samples per job, until measured
        self._lag_logged = -math.inf
        self._ctx = mp.get_context("spawn")
        self._jobs: Queue[RefitJob | None] | None = None
        self._results: Queue[RefitResult] | None = None
        self._proc: BaseProcess | None = None
        self.pending = 0
        self.restarts = 0
        self._lock = threading.Lock()  # counters are read by scrapes on the web server's threads
        self._jobs_total = dict.fromkeys(OUTCOMES, 0)
        self._duration_counts = [0] * (len(DURATION_BUCKETS) + 1)  # per bucket (not cumulative), +Inf last
        self._duration_sum = 0.0
        self._lag_seconds = 0.0
        self._used = False

    @property
    def fit_seconds_total(self) -> float:
        """Time the answered jobs' fits took, in seconds."""
        return self._duration_sum

    def _lose_pending(self) -> None:
        """The process died: what it held is gone (the bank reissues it after refit_interval)."""
        with self._lock:
            self._jobs_total["lost"] += self.pending
        self.restarts += 1
        self.pending = 0
        self._inflight.clear()

    def _ensure(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        if self._proc is not None:
            self._lose_pending()
        self._jobs = self._ctx.Queue()
        self._results = self._ctx.Queue()
        self._proc = self._ctx.Process(target=_worker_main, args=(self._jobs, self._results),
                                       name="forewarn-refit", daemon=True)
        with one_blas_thread():
            self._proc.start()

    def free(self) -> int:
        """How many more jobs `submit` will accept now: up to `max_pending` in flight, fewer
        when the histories in flight near `max_samples`; with a `period`, only as many as the
        process can fit before the next poll (plus one, so it never idles)."""
        target = self.max_pending
        if self.period is not None:
            target = min(target, math.ceil(self.period / max(self._fit_ewma, 1e-3)) + 1)
        room = (self.max_samples - sum(self._inflight)) // max(int(self._size_ewma), 1)
        return max(min(target - self.pending, room), 0)

    def submit(self, jobs: Sequence[RefitJob]) -> int:
        """Queue up to `free()` jobs; returns how many were taken (the rest are not queued)."""
        take = list(jobs)[: max(self.max_pending - self.pending, 0)]
        if not take:
            return 0
        self._ensure()
        assert self._jobs is not None  # _ensure made it
        for job in take:
            self._jobs.put(job)
            size = len(job.t) if job.t is not None else 0
            self._inflight.append(size)
            self._size_ewma += 0.1 * (size - self._size_ewma)
        self.pending += len(take)
        with self._lock:
            self._used = True
            self._jobs_total["submitted"] += len(take)
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
        for _ in range(min(len(out), len(self._inflight))):
            self._inflight.popleft()
        self._count(out)
        if self.pending and self._proc is not None and not self._proc.is_alive():
            self._lose_pending()
            self._proc = None
        return out

    def _count(self, results: Sequence[RefitResult]) -> None:
        with self._lock:
            for r in results:
                self._jobs_total["fitted" if r.ok else "failed"] += 1
                i = next((i for i, b in enumerate(DURATION_BUCKETS) if r.fit_seconds <= b), len(DURATION_BUCKETS))
                self._duration_counts[i] += 1
                self._duration_sum += r.fit_seconds
                self._fit_ewma += 0.1 * (r.fit_seconds - self._fit_ewma)

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

    # ---- metrics ---------------------------------------------------------------------------------

    def set_lag(self, seconds: float) -> None:
        """How far behind the refit schedule the longest waiting model is (its owner knows the
        banks: `ForecastBank.refit_lag`), exposed as forewarn_refit_lag_seconds and logged as
        a warning (every LAG_LOG_EVERY seconds at most) while it exceeds LAG_WARN_SECONDS."""
        lag = max(float(seconds), 0.0)
        with self._lock:
            self._lag_seconds = lag
        now = time.monotonic()
        if lag > LAG_WARN_SECONDS and now - self._lag_logged >= LAG_LOG_EVERY:
            self._lag_logged = now
            log.warning("forecast model refits are %.0f s behind schedule: the refit worker fits about %.0f models "
                        "a minute (%.2f s each); models wait longer than their refit interval between fits "
                        "(forewarn_refit_lag_seconds)", lag, 60.0 / max(self._fit_ewma, 1e-3), self._fit_ewma)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if not self._used:
                return
            jobs_total = dict(self._jobs_total)
            counts, total_seconds, lag = list(self._duration_counts), self._duration_sum, self._lag_seconds
        pending, restarts = self.pending, self.restarts
        jobs = CounterMetricFamily("forewarn_refit_jobs", "Model refit jobs: submitted to the worker process, "
                                   "fitted, failed (the series could not be fitted), lost (the worker died).",
                                   labels=["outcome"])
        for outcome in OUTCOMES:
            jobs.add_metric([outcome], jobs_total[outcome])
        yield jobs
        durations = HistogramMetricFamily("forewarn_refit_duration_seconds", "Time one model refit took in the worker process.")
        cumulative = np.cumsum(counts).tolist()
        buckets: list[tuple[str | float, float]] = [*zip(DURATION_BUCKETS, cumulative[:-1]), ("+Inf", cumulative[-1])]
        durations.add_metric([], buckets, total_seconds)
        yield durations
        yield GaugeMetricFamily("forewarn_refit_queue", "Refit jobs submitted to the worker process and not answered yet.",
                                value=pending)
        yield GaugeMetricFamily("forewarn_refit_lag_seconds", "How long the longest waiting forecast model has been due "
                                "for a refit without a job issued for it (0 when none waits).", value=lag)
        yield CounterMetricFamily("forewarn_refit_worker_restarts", "Times the refit worker process died and was restarted.",
                                  value=restarts)

