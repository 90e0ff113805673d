"""The detector's maths: one step per sample, written once.

`step` is written and type-checked for numpy arrays (a batch of series: the daemon's
`AnomalyBank.update`). `scalar_step()` is the same source recompiled for Python floats (one
long series: ``forewarn detect``, `AnomalyBank.replay`), several times faster than
1-element arrays: ``ops.where(c, a, b)`` becomes ``a if c else b`` and
``ops.minimum/maximum/abs`` the builtins (see `scalarise`). Everything else the step
needs of its numbers goes through its `ops` argument (`NumpyOps` or `ScalarOps`), so the
maths exists once; a test checks the two paths agree. See the package docstring for what
each component means.

Imports numpy and this package's `params` and `state`; never the rule layer, tickets, web or
statsmodels.
"""

from __future__ import annotations

import ast
import functools
import inspect
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar, cast

import numpy as np
from numpy.typing import ArrayLike

from agent.models.anomaly.params import DAY, WEEK, AnomalyParams
from agent.models.anomaly.state import SeriesState

LN_1E10 = math.log(1e-10)  # the likelihood scores 1.0 at a tail probability of 1e-10 or less
SIGMA_PER_MAD = 1.2533  # mean |residual| -> standard deviation, for Gaussian noise

V = TypeVar("V")


@dataclass(slots=True)
class StepOut(Generic[V]):
    """One step's outputs per series: the score, the contextual baseline and the band's
    half-width around it, whether the sample was scored (past the warm-up), and the new
    daily and weekly profile entries of the sample's phase."""

    score: V
    expected: V
    half: V
    warm: V
    daily: V
    weekly: V


class Weights(NamedTuple):
    """Per running mean, the weight of a sample ``dte`` seconds after the previous one
    (``1 - exp(-dte / duration)``); per decaying memory (``keep_``), what it keeps."""

    fast: Any
    slow: Any
    scale: Any
    short: Any
    long: Any
    context: Any
    keep_context_max: Any
    selection: Any
    rarity: Any
    recent: Any
    keep_fired: Any
    keep_breaks: Any
    recover: Any


def time_weights(exp: Callable[[Any], Any], p: AnomalyParams, dte: Any, stretch: Any) -> Weights:
    """The `Weights` of a step of ``dte`` seconds (durations stretched by ``stretch``)."""

    def w(duration: float) -> Any:
        return 1.0 - exp(-dte / (duration * stretch))

    return Weights(w(p.fast_seconds), w(p.slow_seconds), w(p.scale_seconds), w(p.short_seconds), w(p.long_seconds),
                   w(p.context_seconds), 1.0 - w(p.context_memory_seconds), w(p.selection_seconds),
                   w(p.rarity_seconds), w(p.recent_seconds), 1.0 - w(p.refractory_seconds),
                   1.0 - w(p.range_memory_seconds), w(p.recover_seconds))


class NumpyOps:
    """The step's operations on arrays. ``hist`` is the bank's rarity histograms and
    ``rows`` the rows of the series in this batch."""

    def __init__(self, hist: np.ndarray, rows: np.ndarray) -> None:
        self.hist = hist
        self.rows = rows

    @staticmethod
    def where(cond: ArrayLike, a: ArrayLike, b: ArrayLike) -> np.ndarray:
        return np.where(cond, a, b)

    @staticmethod
    def minimum(a: ArrayLike, b: ArrayLike) -> np.ndarray:
        return np.minimum(a, b)

    @staticmethod
    def maximum(a: ArrayLike, b: ArrayLike) -> np.ndarray:
        return np.maximum(a, b)

    @staticmethod
    def abs(a: ArrayLike) -> np.ndarray:
        return np.abs(a)

    @staticmethod
    def sqrt(a: ArrayLike) -> np.ndarray:
        return np.sqrt(a)

    @staticmethod
    def log(a: ArrayLike) -> np.ndarray:
        return np.log(a)

    @staticmethod
    def exp(a: ArrayLike) -> np.ndarray:
        return np.exp(a)

    def visit(self, u: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """Share of each series' history in u's bin (u in [0, 1]); then every bin decays
        by (1 - alpha) and u's bin gains alpha."""
        nb = self.hist.shape[1]
        b = np.minimum((u * nb).astype(np.int64), nb - 1)
        prob = self.hist[self.rows, b]
        h = self.hist[self.rows] * (1.0 - alpha)[:, None]
        h[np.arange(len(self.rows)), b] += alpha
        self.hist[self.rows] = h
        return prob

    def weights(self, p: AnomalyParams, dte: np.ndarray, stretch: np.ndarray) -> Weights:
        return time_weights(np.exp, p, dte, stretch)


# A regularly sampled series has the same interval at almost every step: its weights are
# computed once (by the same function as the batch path's). Bounded: cleared when full.
_WEIGHTS_CACHE: dict[tuple[int, float, float], tuple[AnomalyParams, Weights]] = {}
_WEIGHTS_CACHE_MAX = 256


class ScalarOps:
    """The step's operations on floats, for one series whose rarity histogram is ``hist``."""

    abs = staticmethod(abs)
    sqrt = staticmethod(math.sqrt)
    log = staticmethod(math.log)
    exp = staticmethod(math.exp)
    minimum = staticmethod(min)
    maximum = staticmethod(max)

    def __init__(self, hist: list[float]) -> None:
        self.hist = hist

    @staticmethod
    def where(cond: bool, a: float, b: float) -> float:
        return a if cond else b

    def visit(self, u: float, alpha: float) -> float:
        hist = self.hist
        nb = len(hist)
        b = min(int(u * nb), nb - 1)
        prob = hist[b]
        if alpha:
            keep = 1.0 - alpha
            hist[:] = [h * keep for h in hist]
            hist[b] += alpha
        return prob

    def weights(self, p: AnomalyParams, dte: float, stretch: float) -> Weights:
        key = (id(p), dte, stretch)
        hit = _WEIGHTS_CACHE.get(key)
        if hit is not None and hit[0] is p:
            return hit[1]
        if len(_WEIGHTS_CACHE) >= _WEIGHTS_CACHE_MAX:
            _WEIGHTS_CACHE.clear()
        w = time_weights(math.exp, p, dte, stretch)
        _WEIGHTS_CACHE[key] = (p, w)
        return w


def log_tail(log: Callable[[Any], Any], z: Any) -> Any:
    """log of the Gaussian upper tail Q(z) for z >= 0 (Abramowitz-Stegun 7.1.26 for
    erfc; a relative error under 40 % far out, negligible in log scale)."""
    x = z * 0.7071067811865476
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return log(0.5 * poly) - x * x


def step(p: AnomalyParams, ops: NumpyOps, st: SeriesState[np.ndarray], x: np.ndarray, t: np.ndarray,
         d: np.ndarray, w: np.ndarray) -> StepOut[np.ndarray]:
    """Score one sample per series and update ``st`` in place. ``x`` are finite values,
    ``t`` their times (Unix seconds), ``d`` and ``w`` the daily and weekly profile
    entries of this sample's phase; the result has their new values. Written for arrays
    (and type-checked so); :data:`scalar_step` is the same source compiled for floats."""
    first = st.n == 0
    # -- time. A gap (or a clock going back) carries no more news than a few samples.
    dt = ops.where(first | (st.t_last != st.t_last), 0.0, ops.maximum(t - st.t_last, 0.0))
    dt_typ = ops.where(st.dt_typ > 0.0, st.dt_typ + 0.05 * (ops.minimum(dt, 4.0 * st.dt_typ) - st.dt_typ), dt)
    dte = ops.minimum(dt, p.gap_intervals * dt_typ)
    obs = st.obs + dte
    # until a duration has passed, running means are plain means of what was seen
    ramp = dte / ops.maximum(obs, 1e-9)
    stretch = ops.maximum(dt_typ / p.reference_interval, 1.0)
    a_fast, a_slow, a_scale, a_short, a_long, a_ctx, k_cmax, a_sel, a_rare, a_recent, k_fired, k_breaks, a_rec = \
        ops.weights(p, dte, stretch)
    a_slow = ops.maximum(a_slow, ramp)
    a_scale = ops.maximum(a_scale, ramp)
    a_long = ops.maximum(a_long, ramp)
    a_sel = ops.maximum(a_sel, ramp)
    warm = (st.n >= p.warmup_samples) & (st.obs >= p.warmup_seconds * stretch)

    # -- which seasonal profiles the series shows: each must beat the simpler model's
    # error by the margin (and keeps its place until it is within half of it)
    if p.seasonality == "auto":
        use_d = (st.ed < (1.0 - p.season_margin * ops.where(st.sd > 0.0, 0.5, 1.0)) * st.e0) & (obs >= DAY)
        use_w = (st.ew < (1.0 - p.season_margin * ops.where(st.sw > 0.0, 0.5, 1.0)) * ops.where(use_d, st.ed, st.e0)) \
            & (obs >= WEEK)
    else:
        use_d = (obs >= DAY) & (p.seasonality != "none")
        use_w = (obs >= WEEK) & (p.seasonality == "weekly")
    season = ops.where(use_w, w, ops.where(use_d, d, 0.0))

    # -- baselines: fast (the last hours) and contextual (this phase of earlier seasons)
    lf = ops.where(first, x - season, st.lf)
    ls = ops.where(first, x - season, st.ls)
    rf = x - lf - season
    rc = x - ls - season
    vmin, vmax = st.vmin, st.vmax
    rng = ops.where(first, 0.0, vmax - vmin)
    floor = p.scale_floor_range * rng + 1e-12
    scf = ops.maximum(st.scf, floor)
    scc = ops.maximum(st.scc, floor)

    # surprise likelihood: how far the short-run mean |fast residual| sits in the tail of
    # the series' own long-run distribution of it
    z = ops.minimum(ops.abs(rf) / scf, p.z_cap)
    short = st.short + a_short * (z - st.short)
    zz = ops.maximum((short - st.lr_mean) / (ops.sqrt(st.lr_var) + 1e-3), 0.0)
    likelihood = ops.minimum(log_tail(ops.log, zz) / LN_1E10, 1.0)

    # contextual record: the short-run mean of the signed residual against the seasonal
    # baseline, beyond the largest such deviation of the last week (a shift, or values
    # normal in level but not for this time of day or week)
    zc = ops.minimum(ops.maximum(rc / (SIGMA_PER_MAD * scc), -p.context_cap), p.context_cap)
    mc = st.mc + a_ctx * (zc - st.mc)
    ma = st.ma + a_ctx * (ops.abs(zc) - st.ma)  # unsigned: the shape is wrong, or the noise grew
    # (a mean deviation under half a sigma, or a mean |deviation| under 1.2, is never news)
    cnov = ops.maximum(ops.abs(mc) / ops.maximum(st.cmax, 0.5), ma / ops.maximum(st.amax, 1.2)) - 1.0 - p.context_tolerance
    context = ops.where((st.obs_c >= DAY) & (cnov > 0.0),
                        0.5 + 0.5 * (1.0 - ops.exp(-ops.maximum(cnov, 0.0) / p.context_grade)), 0.0)

    # range break: the value, or its smoothed value, beyond everything seen so far
    novelty = ops.maximum(x - vmax, vmin - x) / (rng + 1e-12)
    sm = ops.where(first, x, st.sm + a_fast * (x - st.sm))
    srng = st.smax - st.smin
    tracked = srng >= 0.0
    # (the smoothed range is tracked from the warm-up on, and counts once it has had the
    # smoothing's own duration to open: a range a few samples wide is no norm to break)
    settled = tracked & (st.obs >= (p.warmup_seconds + p.fast_seconds) * stretch)
    smooth_novelty = ops.where(settled, ops.maximum(sm - st.smax, st.smin - sm) / (srng + 1e-12), -1.0)
    # (until a whole day is known, the day's own rhythm sets new records: then only a
    # break by half the range counts)
    novelty = ops.maximum(novelty, smooth_novelty) - ops.where(st.obs >= DAY, p.range_tolerance, 0.5)
    brk = ops.where(novelty > 0.0, 1.0, 0.0)
    range_score = brk * (0.5 + 0.5 * (1.0 - ops.exp(-ops.maximum(novelty, 0.0) / p.range_grade))) * (1.0 - st.breaks)

    # rarity: the smoothed value in a part of its range seldom visited lately
    u = ops.minimum(ops.maximum((sm - st.smin) / (srng + 1e-12), 0.0), 1.0)
    share = ops.visit(u, ops.where(tracked, a_rare, 0.0))
    rarity = ops.where(st.obs > (p.warmup_seconds + p.rarity_seconds) * stretch, ops.exp(-share / p.rarity_mass), 0.0)

    # recent break: the value far outside the envelope of the recent values
    rhi = ops.where(first, x, st.rhi)
    rlo = ops.where(first, x, st.rlo)
    rnov = ops.maximum(x - rhi, rlo - x) / (rhi - rlo + scf) - p.recent_tolerance
    recent = ops.where(rnov > 0.0, 1.0 - ops.exp(-ops.maximum(rnov, 0.0) / p.recent_grade), 0.0)
    st.rhi = ops.maximum(x, rhi + a_recent * (sm - rhi))
    st.rlo = ops.minimum(x, rlo + a_recent * (sm - rlo))

    raw = ops.maximum(ops.maximum(p.likelihood_weight * likelihood, p.range_weight * range_score),
                      ops.maximum(p.context_weight * context, p.rarity_weight * rarity))
    raw = ops.where(warm, ops.maximum(raw, p.recent_weight * recent), 0.0)
    # news: a score is reported in full when it rises clearly (by news_step) above what
    # was reported lately, and is damped by that memory otherwise
    damp = 1.0 - st.fired
    out = ops.where(raw > st.fired + p.news_step, raw, raw * damp * damp)
    # the memory holds what was reported, and what has lasted a while (its short-run
    # mean): a score that stays high is not news again when the memory fades
    lag = st.lag + a_ctx * (raw - st.lag)
    st.fired = ops.maximum(ops.maximum(st.fired * k_fired, out), lag)
    st.lag = lag
    st.breaks = ops.maximum(st.breaks * k_breaks, brk)

    # level shift: a score reported at shift_score (the rule's threshold) while the value
    # is outside the contextual band starts one, and freezes the band it left; it is over
    # once most samples of the last recover_seconds are back inside that band
    half = p.band_k * SIGMA_PER_MAD * scc
    base = ls + season
    lu = ops.where(first, x - season, st.lu + a_fast * (x - season - st.lu))
    start = (st.shifted == 0.0) & warm & (out >= p.shift_score) & (ops.abs(x - base) > half)
    sh_level = ops.where(start, ls, st.sh_level)
    sh_half = ops.where(start, half, st.sh_half)
    st.sh_since = ops.where(start, t, st.sh_since)
    st.sh_dir = ops.where(start, ops.where(x > base, 1.0, -1.0), st.sh_dir)
    inside = ops.where(ops.abs(x - season - sh_level) <= sh_half, 1.0, 0.0)
    sh_in = ops.where(start, 0.0, st.sh_in + a_rec * (inside - st.sh_in))
    st.shifted = ops.where(start, 1.0, ops.where(sh_in > 0.5, 0.0, st.shifted))
    st.sh_level, st.sh_half, st.sh_in, st.lu = sh_level, sh_half, sh_in, lu

    # -- learn (clipped, so one wild sample moves nothing far)
    limf = p.clip_k * scf
    limc = p.clip_k * scc
    rfc = ops.minimum(ops.maximum(rf, -limf), limf)
    rcc = ops.minimum(ops.maximum(rc, -limc), limc)
    st.lf = lf + a_fast * rfc
    st.ls = ls + a_slow * rcc
    st.scf = st.scf + a_scale * (ops.abs(rfc) - st.scf)
    st.scc = st.scc + a_slow * (ops.abs(rcc) - st.scc)  # slow: the contextual band must not chase an anomaly
    # Each profile learns the value's offset from the slow level at its phase, on the
    # scale of the series' whole swing (so a sharp seasonal edge is learnt while a wild
    # sample moves little); an entry's first seasons weigh more, until there are
    # season_memory of them.
    limp = p.clip_k * ops.maximum(st.e0, floor)
    rd = ops.minimum(ops.maximum(x - ls - d, -limp), limp)
    rw = ops.minimum(ops.maximum(x - ls - w, -limp), limp)
    vd = ops.minimum(ops.maximum(1.0 / p.season_memory, 1.0 / (1.0 + obs / DAY)), 0.9)
    vw = ops.minimum(ops.maximum(1.0 / p.season_memory, 1.0 / (1.0 + obs / WEEK)), 0.9)
    wd = 1.0 - ops.exp(dte * (p.daily_buckets / DAY) * ops.log(1.0 - vd))
    ww = 1.0 - ops.exp(dte * (p.weekly_buckets / WEEK) * ops.log(1.0 - vw))
    st.e0 = st.e0 + a_sel * (ops.abs(x - ls) - st.e0)
    st.ed = st.ed + a_sel * (ops.abs(x - ls - d) - st.ed)
    st.ew = st.ew + a_sel * (ops.abs(x - ls - w) - st.ew)
    dl = z - st.lr_mean
    st.lr_mean = st.lr_mean + a_long * dl
    st.lr_var = st.lr_var + a_long * (dl * dl - st.lr_var)
    st.short = short
    # the largest contextual deviation is learnt afresh when the seasonal model changes
    sd = ops.where(use_d, 1.0, 0.0)
    sw = ops.where(use_w, 1.0, 0.0)
    changed = (sd != st.sd) | (sw != st.sw)
    st.obs_c = ops.where(changed, 0.0, st.obs_c + dte)
    # The remembered maxima decay over context_memory_seconds and creep up toward a larger
    # deviation over slow_seconds, not at once: a deviation that builds up over an hour is
    # a record as it goes, and one that lasts half a day becomes the norm.
    st.cmax = ops.maximum(st.cmax * k_cmax, st.cmax + a_slow * (ops.abs(mc) - st.cmax))
    st.amax = ops.maximum(st.amax * k_cmax, st.amax + a_slow * (ma - st.amax))
    st.mc = mc
    st.ma = ma
    st.sd, st.sw = sd, sw
    st.vmin = ops.minimum(vmin, x)
    st.vmax = ops.maximum(vmax, x)
    st.smin = ops.where(warm, ops.where(tracked, ops.minimum(st.smin, sm), sm), st.smin)
    st.smax = ops.where(warm, ops.where(tracked, ops.maximum(st.smax, sm), sm), st.smax)
    st.sm = sm
    st.dt_typ = dt_typ
    st.obs = obs
    st.t_last = t
    st.n = st.n + 1.0
    return StepOut(out, base, half, warm, d + wd * rd, w + ww * rw)




class _Inline(ast.NodeTransformer):
    """``ops.where(c, a, b)`` -> ``a if c else b``; ``ops.minimum/maximum/abs`` -> the
    builtins; annotations dropped (they name the array types)."""

    BUILTINS = {"minimum": "min", "maximum": "max", "abs": "abs"}

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "ops":
            if f.attr == "where":
                return ast.IfExp(test=node.args[0], body=node.args[1], orelse=node.args[2])
            if f.attr in self.BUILTINS:
                node.func = ast.Name(self.BUILTINS[f.attr], ast.Load())
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.generic_visit(node)
        node.returns = None
        for a in node.args.args:
            a.annotation = None
        return node


def scalarise(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` recompiled for Python floats (see the module docstring): the same source,
    so the maths stays one, without a function call per selection; only the chosen
    branch of a selection is evaluated, which is all a scalar needs."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    tree = ast.fix_missing_locations(_Inline().visit(tree))
    namespace: dict[str, Any] = {}
    exec(compile(tree, f"<scalar {fn.__name__}>", "exec"), fn.__globals__, namespace)
    return cast(Callable[..., Any], namespace[fn.__name__])


ScalarStep = Callable[[AnomalyParams, ScalarOps, SeriesState[float], float, float, float, float], StepOut[float]]


@functools.cache
def scalar_step() -> ScalarStep:
    """`step` for floats, compiled on first use (nothing runs at import)."""
    return cast(ScalarStep, scalarise(step))
