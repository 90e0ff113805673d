"""Online anomaly scores for many series at once.

Per sample and series, O(1):

1. **Baseline.** A level (a robust exponentially weighted mean: residuals are clipped
   before they move it) plus a time-of-day profile, so a daily rhythm is expected,
   not anomalous. ``expected = level + season[bucket(t)]``.
2. **Residual scale.** A clipped exponentially weighted mean absolute residual, floored
   by a small fraction of the range seen so far (a flat series stays quiet on rounding).
3. **Anomaly likelihood.** The surprise of a sample is its residual in scale units
   (capped). Its short-run mean (~20 samples) is compared with the series' own long-run
   distribution of surprise (mean and variance over ~3000 samples); the Gaussian tail
   probability of that short-run mean, in log scale (1e-10 -> 1), is the likelihood.
   One noisy sample barely moves the short-run mean; a sustained change drives it far
   into the tail.
4. **Range break.** The value, or its smoothed value, beyond everything seen so far
   (by a 2 % margin) scores 0.5 to 1, graded by how far; repeated breaks in a row
   score less (a climb is news once, not at every new high).
5. **Rarity.** A histogram of the smoothed value over its range, with a memory of
   ~500 samples: a stay in a part of the range seldom visited lately scores up to 0.3
   (a dip to a level seen long ago, a plateau in the middle of a daily swing).
6. **Recent break.** The value beyond the envelope of recent values (a max and a min
   that relax toward the smoothed value, ~300 samples) by more than the envelope's width
   scores up to 0.3: a spike far above anything seen lately, though not above everything
   ever seen (a burst after a quiet month).
7. **Refractory.** The score is scaled by (1 - a decaying memory of recent scores): an
   anomaly is news when it starts. The level and scale keep adapting meanwhile, so a
   level shift is scored when it happens and then becomes the norm.

The maths lives in one function, :func:`_step`, written against a tiny operations
namespace so the same lines run on numpy arrays (a batch of series: the daemon) and on
Python floats (one long series: ``forewarn detect``, ~10x faster than 1-element arrays).
Nothing here does I/O or reads a clock: arrays and timestamps in, arrays out.

Warm-up: a series scores 0 for its first ``warmup_samples`` samples.
NaN values (including Prometheus stale markers) leave the state untouched and score 0.
Timestamps may be irregular and have gaps; they only choose the time-of-day bucket.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

_LN_1E10 = math.log(1e-10)  # score 1.0 means a tail probability of 1e-10 or less


@dataclass(frozen=True)
class AnomalyParams:
    """The detector's one configuration (used for every series; tuned on NAB as a whole,
    see benchmarks/nab.py). Weights are per sample."""

    warmup_samples: int = 100  # scores are 0 before this many samples
    level_alpha: float = 0.05  # weight of a new (clipped) residual in the level
    season_buckets: int = 24  # time-of-day buckets; 1 disables the seasonal profile
    season_alpha: float = 0.2  # weight of a residual in its bucket's offset
    scale_alpha: float = 0.04  # weight of a new |residual| in the scale
    clip_k: float = 4.0  # residuals are clipped at clip_k * scale before they teach
    scale_floor_range: float = 0.002  # scale floor, as a fraction of the range seen
    z_cap: float = 10.0  # one sample's surprise (|residual| / scale) is capped here
    short_alpha: float = 0.1  # short-run mean of surprise (~ the last 20 samples)
    long_alpha: float = 0.0003  # long-run mean and variance of surprise (~ 3000 samples)
    likelihood_weight: float = 1.0  # scale of the likelihood in the score
    smooth_alpha: float = 0.05  # smoothed value (~ the last 40 samples): range and rarity feature
    feature_start: int = 20  # samples before the smoothed value's range is tracked
    range_tolerance: float = 0.02  # a break must pass min/max by this fraction of the range
    range_grade: float = 0.1  # a break by this many ranges scores ~0.82
    range_memory: float = 0.9  # decay of the memory of recent breaks (repeat breaks score less)
    rarity_bins: int = 10  # histogram of the smoothed value over its range
    rarity_alpha: float = 0.002  # histogram memory (~ 500 samples); rarity scores after that
    rarity_mass: float = 0.0005  # a bin holding this share of the history scores e^-1
    rarity_weight: float = 0.3  # scale of the rarity in the score
    refractory: float = 0.995  # decay of the memory of recent scores (news is scored once)
    band_k: float = 3.0  # half-width of the expected band, in sigma
    recent_alpha: float = 0.003  # recent envelope: max/min relaxing toward the smoothed value (~ 300 samples)
    recent_tolerance: float = 1.0  # a recent break must pass the envelope by this many envelope widths
    recent_grade: float = 1.0  # a recent break by tolerance + this many widths scores 63 % of its weight
    recent_weight: float = 0.3  # scale of the recent break in the score


DEFAULT_PARAMS = AnomalyParams()

# medium ~ the NAB-optimal threshold of all three profiles (0.248), high a little more
# eager, low: only strong, fresh surprises (range breaks score >= 0.5).
SENSITIVITY_THRESHOLDS = {"low": 0.5, "medium": 0.25, "high": 0.2}


def sensitivity_threshold(sensitivity: str | float) -> float:
    """Score threshold for a rule's ``sensitivity``: low / medium / high, or a number in
    (0, 1] taken as the threshold itself."""
    if isinstance(sensitivity, str):
        try:
            return SENSITIVITY_THRESHOLDS[sensitivity]
        except KeyError:
            raise ValueError(f"sensitivity must be low, medium, high or a number in (0, 1], got {sensitivity!r}") from None
    value = float(sensitivity)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"sensitivity must be in (0, 1], got {value}")
    return value


# State per series: name -> initial value. ``season`` is handled separately (a profile).
_FIELDS: dict[str, float] = {
    "n": 0.0,  # samples seen
    "level": 0.0,  # baseline without the time-of-day offset
    "scale": 0.0,  # mean |residual|
    "short": 0.0,  # short-run mean surprise
    "lr_mean": 0.0,  # long-run mean surprise
    "lr_var": 1.0,  # long-run variance of surprise
    "vmin": math.inf,  # range of the values seen
    "vmax": -math.inf,
    "sm": 0.0,  # smoothed value
    "smin": 0.0,  # range of the smoothed value (valid after feature_start samples)
    "smax": 0.0,
    "breaks": 0.0,  # memory of recent range breaks
    "fired": 0.0,  # memory of recent scores
    "rhi": 0.0,  # recent envelope of the values
    "rlo": 0.0,
}


# Fields added after snapshot version 1, restored from another field when missing.
_ENVELOPE_FALLBACK = {"rhi": "vmax", "rlo": "vmin"}


class _NumpyOps:
    where = staticmethod(np.where)
    abs = staticmethod(np.abs)
    sqrt = staticmethod(np.sqrt)
    log = staticmethod(np.log)
    exp = staticmethod(np.exp)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)

    @staticmethod
    def take(profile: np.ndarray, index: np.ndarray) -> np.ndarray:
        return profile[index]

    @staticmethod
    def put(profile: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
        profile[index] = values

    @staticmethod
    def visit(hist: np.ndarray, rows: np.ndarray, u: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """Share of the history in u's bin (u in [0, 1]); then decay every bin by
        (1 - alpha) and add alpha to u's bin."""
        nb = hist.shape[1]
        b = np.minimum((u * nb).astype(np.int64), nb - 1)
        prob = hist[rows, b]
        h = hist[rows] * (1.0 - alpha)[:, None]
        h[np.arange(len(rows)), b] += alpha
        hist[rows] = h
        return prob


class _ScalarOps:
    @staticmethod
    def where(cond: bool, a: float, b: float) -> float:
        return a if cond else b

    abs = staticmethod(abs)
    sqrt = staticmethod(math.sqrt)
    log = staticmethod(math.log)
    exp = staticmethod(math.exp)
    minimum = staticmethod(min)
    maximum = staticmethod(max)

    @staticmethod
    def take(profile: list, index: int) -> float:
        return profile[index]

    @staticmethod
    def put(profile: list, index: int, value: float) -> None:
        profile[index] = value

    @staticmethod
    def visit(hist: list, row: Any, u: float, alpha: float) -> float:
        nb = len(hist)
        b = min(int(u * nb), nb - 1)
        prob = hist[b]
        if alpha:
            keep = 1.0 - alpha
            hist[:] = [h * keep for h in hist]
            hist[b] += alpha
        return prob


class _State:
    """Attribute bag the step reads and writes: arrays (a batch) or floats (one series)."""

    __slots__ = tuple(_FIELDS) + ("season", "sidx", "hist", "sidx_hist")


def _log_tail(ops: Any, z: Any) -> Any:
    """log of the Gaussian upper tail Q(z) for z >= 0 (Abramowitz-Stegun 7.1.26 for
    erfc; a relative error under 40 % far out, negligible in log scale)."""
    x = z * 0.7071067811865476
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return ops.log(0.5 * poly) - x * x


def _step(p: AnomalyParams, ops: Any, st: _State, x: Any, warm: Any) -> tuple[Any, Any, Any]:
    """Score one sample per series and update the state in place. ``x`` are finite
    values; ``warm`` whether each series is past its warm-up *before* this sample (the
    first sample only initialises). Returns (score, expected, scale)."""
    first = st.n == 0
    seas = ops.take(st.season, st.sidx)
    level = ops.where(first, x - seas, st.level)
    expected = level + seas
    r = x - expected
    vmin, vmax = st.vmin, st.vmax
    rng = ops.where(first, 0.0, vmax - vmin)
    scale = ops.maximum(st.scale, p.scale_floor_range * rng + 1e-12)
    z = ops.minimum(ops.abs(r) / scale, p.z_cap)

    # anomaly likelihood: how far the short-run mean surprise sits in the tail of the
    # series' own long-run distribution of surprise (Gaussian tail, log scale)
    short = st.short + p.short_alpha * (z - st.short)
    zz = ops.maximum((short - st.lr_mean) / (ops.sqrt(st.lr_var) + 1e-3), 0.0)
    likelihood = ops.minimum(_log_tail(ops, zz) / _LN_1E10, 1.0)

    # range break: the value, or its smoothed value, beyond everything seen so far
    novelty = ops.maximum(x - vmax, vmin - x) / (rng + 1e-12)
    sm = ops.where(first, x, st.sm + p.smooth_alpha * (x - st.sm))
    tracked = st.n > p.feature_start
    srng = st.smax - st.smin
    smooth_novelty = ops.maximum(sm - st.smax, st.smin - sm) / (srng + 1e-12)
    novelty = ops.maximum(novelty, ops.where(tracked, smooth_novelty, -1.0)) - p.range_tolerance
    brk = ops.where(novelty > 0.0, 1.0, 0.0)
    range_score = brk * (0.5 + 0.5 * (1.0 - ops.exp(-novelty / p.range_grade))) * (1.0 - st.breaks)

    # rarity: the smoothed value in a part of its range it has seldom visited lately
    u = ops.minimum(ops.maximum((sm - st.smin) / (srng + 1e-12), 0.0), 1.0)
    share = ops.visit(st.hist, st.sidx_hist, u, ops.where(tracked, p.rarity_alpha, 0.0))
    rarity = ops.where(st.n > p.feature_start + 1.0 / p.rarity_alpha, ops.exp(-share / p.rarity_mass), 0.0)

    # recent break: the value far outside the envelope of the recent values
    rhi = ops.where(first, x, st.rhi)
    rlo = ops.where(first, x, st.rlo)
    rnov = ops.maximum(x - rhi, rlo - x) / (rhi - rlo + scale) - p.recent_tolerance
    recent = ops.where(rnov > 0.0, 1.0 - ops.exp(-rnov / p.recent_grade), 0.0)
    st.rhi = ops.maximum(x, rhi + p.recent_alpha * (sm - rhi))
    st.rlo = ops.minimum(x, rlo + p.recent_alpha * (sm - rlo))

    score = ops.maximum(ops.maximum(p.likelihood_weight * likelihood, range_score), p.rarity_weight * rarity)
    score = ops.maximum(score, p.recent_weight * recent)
    score = ops.where(warm, ops.maximum(score, 0.0), 0.0)
    out = score * (1.0 - st.fired)  # what is already known is not news
    st.fired = ops.maximum(st.fired * p.refractory, score)
    st.breaks = ops.maximum(st.breaks * p.range_memory, brk)

    # learn (clipped, so one wild sample moves nothing far)
    lim = p.clip_k * scale
    rc = ops.minimum(ops.maximum(r, -lim), lim)
    st.level = level + p.level_alpha * rc
    ops.put(st.season, st.sidx, seas + p.season_alpha * (1.0 - p.level_alpha) * rc)
    st.scale = ops.where(first, 0.0, st.scale + p.scale_alpha * (ops.abs(rc) - st.scale))
    d = z - st.lr_mean
    st.lr_mean = st.lr_mean + p.long_alpha * d
    st.lr_var = st.lr_var + p.long_alpha * (d * d - st.lr_var)
    st.short = short
    st.vmin = ops.minimum(vmin, x)
    st.vmax = ops.maximum(vmax, x)
    start = st.n == p.feature_start
    st.smin = ops.where(start, sm, ops.where(tracked, ops.minimum(st.smin, sm), st.smin))
    st.smax = ops.where(start, sm, ops.where(tracked, ops.maximum(st.smax, sm), st.smax))
    st.sm = sm
    st.n = st.n + 1.0
    return out, expected, scale


@dataclass
class AnomalyResult:
    """Per-sample outputs, one entry per input slot. ``score`` in [0, 1] (0 during
    warm-up and for NaN values); ``expected`` the baseline; ``band_low``/``band_high``
    the band of usual values around it (NaN before the first sample)."""

    score: np.ndarray
    expected: np.ndarray
    band_low: np.ndarray
    band_high: np.ndarray


class AnomalyBank:
    """Detector state for many series, in numpy arrays indexed by slot.

    Slots are allocated per key (any hashable: a store series id, a label tuple) with
    :meth:`slots_for` and released with :meth:`forget`. :meth:`update` scores one sample
    for each of a batch of slots, vectorised."""

    def __init__(self, params: AnomalyParams = DEFAULT_PARAMS, capacity: int = 64) -> None:
        self.params = params
        self._slot_of: dict[Hashable, int] = {}
        self._free: list[int] = []
        self._cols: dict[str, np.ndarray] = {}
        self._season = np.zeros((0, max(1, params.season_buckets)))
        self._hist = np.zeros((0, max(1, params.rarity_bins)))
        self._capacity = 0
        self._grow(max(1, capacity))

    # ---------------------------------------------------------------- slots
    def _grow(self, need: int) -> None:
        new = max(need, 2 * self._capacity)
        for name, init in _FIELDS.items():
            col = np.full(new, init)
            if name in self._cols:
                col[: self._capacity] = self._cols[name]
            self._cols[name] = col
        season = np.zeros((new, self._season.shape[1]))
        season[: self._capacity] = self._season
        self._season = season
        hist = np.zeros((new, self._hist.shape[1]))
        hist[: self._capacity] = self._hist
        self._hist = hist
        self._free.extend(range(new - 1, self._capacity - 1, -1))
        self._capacity = new

    def _reset(self, slot: int) -> None:
        for name, init in _FIELDS.items():
            self._cols[name][slot] = init
        self._season[slot] = 0.0
        self._hist[slot] = 0.0

    def slots_for(self, keys: Sequence[Hashable]) -> np.ndarray:
        """Slot per key, allocating fresh (cold) slots for new keys."""
        out = np.empty(len(keys), dtype=np.int64)
        for i, key in enumerate(keys):
            slot = self._slot_of.get(key)
            if slot is None:
                if not self._free:
                    self._grow(self._capacity + 1)
                slot = self._free.pop()
                self._reset(slot)
                self._slot_of[key] = slot
            out[i] = slot
        return out

    def forget(self, keys: Iterable[Hashable]) -> None:
        """Release the slots of keys (unknown keys are ignored)."""
        for key in keys:
            slot = self._slot_of.pop(key, None)
            if slot is not None:
                self._free.append(slot)

    def __len__(self) -> int:
        return len(self._slot_of)

    # ---------------------------------------------------------------- scoring
    def update(self, slots: np.ndarray, t: float | np.ndarray, values: np.ndarray) -> AnomalyResult:
        """Score one sample per slot (``t`` in Unix seconds, one for all or one per slot)
        and learn from it. Slots must be distinct within one call."""
        slots = np.asarray(slots, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        m = len(slots)
        ts = np.broadcast_to(np.asarray(t, dtype=np.float64), (m,))
        score = np.zeros(m)
        expected = np.full(m, np.nan)
        half = np.full(m, np.nan)
        ok = np.isfinite(values)
        if not ok.all():
            # NaN / stale: no learning; report the current baseline
            bad = slots[~ok]
            seas = self._season.reshape(-1)[bad * self._season.shape[1] + self._bucket(ts[~ok])]
            seen = self._cols["n"][bad] > 0
            expected[~ok] = np.where(seen, self._cols["level"][bad] + seas, np.nan)
            half[~ok] = np.where(seen, self._cols["scale"][bad] * 1.2533 * self.params.band_k, np.nan)
        if ok.any():
            sl = slots[ok]
            st = _State()
            for name in _FIELDS:
                setattr(st, name, self._cols[name][sl])
            st.season = self._season.reshape(-1)
            st.sidx = sl * self._season.shape[1] + self._bucket(ts[ok])
            st.hist = self._hist
            st.sidx_hist = sl
            warm = st.n >= self.params.warmup_samples
            s, e, sc = _step(self.params, _NumpyOps, st, values[ok], warm)
            for name in _FIELDS:
                self._cols[name][sl] = getattr(st, name)
            score[ok], expected[ok] = s, e
            half[ok] = sc * 1.2533 * self.params.band_k  # mean |residual| -> sigma
        return AnomalyResult(score, expected, expected - half, expected + half)

    def _bucket(self, t: np.ndarray | float) -> Any:
        b = self._season.shape[1]
        return (np.floor_divide(np.mod(t, 86400.0), 86400.0 / b)).astype(np.int64) % b

    # ---------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Plain data (numpy arrays, lists, numbers) for a snapshot; keys are kept as
        given, so they must be serialisable by whoever stores the snapshot."""
        keys = list(self._slot_of)
        idx = np.array([self._slot_of[k] for k in keys], dtype=np.int64)
        out: dict[str, Any] = {"version": 2, "params": {f.name: getattr(self.params, f.name) for f in fields(self.params)}, "keys": keys}
        for name in _FIELDS:
            out[name] = self._cols[name][idx].copy()
        out["season"] = self._season[idx].copy()
        out["hist"] = self._hist[idx].copy()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`. A snapshot taken with another seasonal
        bucket or rarity bin count loses those profiles (the rest is kept)."""
        keys = [k if not isinstance(k, list) else tuple(_tuplify(k)) for k in state["keys"]]
        self._slot_of.clear()
        self._cols.clear()
        self._free = []
        self._capacity = 0
        self._season = np.zeros((0, max(1, self.params.season_buckets)))
        self._hist = np.zeros((0, max(1, self.params.rarity_bins)))
        self._grow(max(1, len(keys)))
        slots = self.slots_for(keys)
        for name in _FIELDS:
            if name in state:
                self._cols[name][slots] = np.asarray(state[name], dtype=np.float64)
            elif name in _ENVELOPE_FALLBACK:
                # snapshot from before the recent envelope: start it as wide as the range
                # seen (it narrows within a few hundred samples, and fires nothing meanwhile)
                self._cols[name][slots] = np.asarray(state[_ENVELOPE_FALLBACK[name]], dtype=np.float64)
        season = np.asarray(state["season"], dtype=np.float64)
        if season.ndim == 2 and season.shape[1] == self._season.shape[1]:
            self._season[slots] = season
        hist = np.asarray(state.get("hist", []), dtype=np.float64)
        if hist.ndim == 2 and hist.shape[1] == self._hist.shape[1]:
            self._hist[slots] = hist


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(i) for i in x) if isinstance(x, list) else x


def score_series(t: np.ndarray, values: np.ndarray, params: AnomalyParams = DEFAULT_PARAMS) -> AnomalyResult:
    """Score one series sample by sample, exactly as :class:`AnomalyBank` would with
    one slot, using Python floats (the same :func:`_step`). ``t`` in Unix seconds."""
    t = np.asarray(t, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    score = np.zeros(n)
    expected = np.full(n, np.nan)
    half = np.full(n, np.nan)
    b = max(1, params.season_buckets)
    buckets = ((np.floor_divide(np.mod(t, 86400.0), 86400.0 / b)).astype(np.int64) % b).tolist()
    st = _State()
    for name, init in _FIELDS.items():
        setattr(st, name, float(init))
    st.season = [0.0] * b
    st.hist = [0.0] * max(1, params.rarity_bins)
    st.sidx_hist = 0
    warmup = params.warmup_samples
    band = 1.2533 * params.band_k
    step = _step
    ops = _ScalarOps
    seen = False
    out_s, out_e, out_h = [0.0] * n, [math.nan] * n, [math.nan] * n
    for i, x in enumerate(values.tolist()):
        if x != x or x in (math.inf, -math.inf):
            if seen:
                out_e[i] = st.level + st.season[buckets[i]]
                out_h[i] = st.scale * band
            continue
        st.sidx = buckets[i]
        s, e, sc = step(params, ops, st, x, st.n >= warmup)
        seen = True
        out_s[i], out_e[i], out_h[i] = s, e, sc * band
    score[:] = out_s
    expected[:] = out_e
    half[:] = out_h
    return AnomalyResult(score, expected, expected - half, expected + half)
