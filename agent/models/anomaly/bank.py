"""Detector state for many series (the daemon's path) and the single-series driver
(``forewarn detect``, `AnomalyBank.replay`), both running the one step of
`agent.models.anomaly.maths`.

What this module owns: `AnomalyBank` (slots through `agent.models.slots.SlotTable`, the
storage `state.BankState`, scoring, acceptance of a new normal, snapshots and their
upgrade from older versions), `AnomalyResult` and `score_series`. Imports numpy, the slot
table and this package's modules; never the rule layer, tickets, web or statsmodels.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.models.anomaly.maths import SIGMA_PER_MAD, NumpyOps, ScalarOps, scalar_step, step
from agent.models.anomaly.params import DAY, DEFAULT_PARAMS, WEEK, AnomalyParams
from agent.models.anomaly.state import (
    FIELDS,
    INITIAL,
    INITIAL_EXP,
    QUANTA,
    BankState,
    Layout,
    Profile,
    SeriesState,
    exponent_for,
    new_series,
    read_profile,
    write_profile,
)
from agent.models.slots import CHUNK_ROWS, SlotTable

# 4: which way a shift went (sh_dir) and the share of recent samples back in its band (sh_in)
# added. 5: the profiles in 16 bits with a power of two per row (``daily_exp``,
# ``weekly_exp``). Versions 1 and 2 (the previous detector), 3 and 4 are read and upgraded.
STATE_VERSION = 5


@dataclass
class AnomalyResult:
    """Per-sample outputs, one entry per input slot (or row, for :func:`score_series`).

    - ``score`` in [0, 1]: 0 while warming up and for NaN values;
    - ``expected``: the contextual baseline (this phase of earlier seasons, level
      adapting over ``slow_seconds``); ``band_low``/``band_high`` the band of usual
      values around it (NaN before the first sample);
    - ``shifted``: the series' level is outside the band it was in before a level shift
      (see the package docstring); ``shift_low``/``shift_high`` that pre-change band at
      this phase of the season and ``shifted_since`` when the shift started (Unix
      seconds), NaN while not shifted, and ``shift_direction`` which way it went (1 above
      that band, -1 below, 0 while not shifted);
    - ``warming``: the series is still warming up (its score is 0 for that reason)."""

    score: np.ndarray
    expected: np.ndarray
    band_low: np.ndarray
    band_high: np.ndarray
    shifted: np.ndarray
    shift_low: np.ndarray
    shift_high: np.ndarray
    shifted_since: np.ndarray
    shift_direction: np.ndarray
    warming: np.ndarray


@dataclass
class Warmup:
    """Per slot: how much data a series needs before it is scored (seconds, at its
    sampling interval: :func:`agent.models.anomaly.params.warmup_seconds`) and how much of
    it is still missing (0 once warm)."""

    needed: np.ndarray
    left: np.ndarray


def phases(p: AnomalyParams, t: Any) -> tuple[np.ndarray, np.ndarray]:
    """Daily and weekly profile entries of times ``t`` (UTC; weeks start on Monday)."""
    t = np.asarray(t, dtype=np.float64)
    d = np.floor(np.mod(t, DAY) * (p.daily_buckets / DAY)).astype(np.int64) % p.daily_buckets
    # the epoch was a Thursday: shift by three days so that entry 0 is Monday 00:00
    w = np.floor(np.mod(t + 3 * DAY, WEEK) * (p.weekly_buckets / WEEK)).astype(np.int64) % p.weekly_buckets
    return d, w


def is_warm(p: AnomalyParams, n: Any, obs: Any, dt_typ: Any) -> Any:
    """Past the warm-up: ``warmup_samples`` samples and ``warmup_seconds`` of data (stretched
    like every duration for coarse sampling). The step's own test, for the bank's helpers."""
    stretch = np.maximum(np.asarray(dt_typ, dtype=np.float64) / p.reference_interval, 1.0)
    return (np.asarray(n) >= p.warmup_samples) & (np.asarray(obs) >= p.warmup_seconds * stretch)


class AnomalyBank:
    """Detector state for many series, one row of `state` per slot.

    Slots are allocated per key (any hashable: a store series id, a label tuple) with
    :meth:`slots_for` and released with :meth:`forget` (`agent.models.slots.SlotTable`:
    new keys get fresh rows). :meth:`update` scores one sample for each of a batch of
    slots, vectorised; :meth:`replay` feeds a stored history into one slot (a restart that
    rebuilds state from the store). :meth:`warming` and :meth:`accept` serve the rule
    layer; :meth:`state_dict` / :meth:`load_state_dict` a snapshot."""

    def __init__(self, params: AnomalyParams = DEFAULT_PARAMS, capacity: int = 64) -> None:
        self.params = params
        self.table = SlotTable(capacity)
        self.state = BankState.empty(self.table.capacity, Layout.of(params))
        self.chunk_rows = CHUNK_ROWS  # rows per `update` pass (tests set it to compare)

    # ---------------------------------------------------------------- slots
    def slots_for(self, keys: Sequence[Hashable]) -> np.ndarray:
        """Slot per key, allocating fresh (cold) slots for new keys."""
        assigned = self.table.assign(keys)
        if self.table.capacity > self.state.capacity:
            self.state = self.state.grow(self.table.capacity)
        if len(assigned.new):
            self.state.reset(assigned.new)
        return assigned.slots

    def forget(self, keys: Iterable[Hashable]) -> None:
        """Release the slots of keys (unknown keys are ignored)."""
        self.table.forget(keys)

    def keys(self) -> list[Hashable]:
        return self.table.keys()

    def __len__(self) -> int:
        return len(self.table)

    def memory_bytes(self) -> int:
        """The state's arrays (every allocated row) and the slot table."""
        return self.state.memory_bytes() + self.table.memory_bytes()

    def row_bytes(self) -> int:
        """What one slot's state arrays cost."""
        return self.state.memory_bytes() // max(1, self.state.capacity)

    def reconfigure(self, params: AnomalyParams) -> bool:
        """Go on with `params` (a rule's new seasonality or sensitivity) on the same state,
        if it has the same layout (profile and histogram sizes); False otherwise."""
        if Layout.of(params) != self.state.layout:
            return False
        self.params = params
        return True

    # ---------------------------------------------------------------- scoring
    def update(self, slots: np.ndarray, t: float | np.ndarray, values: np.ndarray) -> AnomalyResult:
        """Score one sample per slot (``t`` in Unix seconds, one for all or one per slot)
        and learn from it. Slots must be distinct within one call. A NaN value (a gap, a
        stale marker) scores 0 and changes nothing; the result then reports the current
        baseline and states."""
        slots = np.asarray(slots, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        m = len(slots)
        ts = np.broadcast_to(np.asarray(t, dtype=np.float64), (m,))
        bd, bw = phases(self.params, ts)
        score = np.zeros(m)
        expected = np.full(m, np.nan)
        half = np.full(m, np.nan)
        warming = np.ones(m, dtype=bool)
        ok = np.isfinite(values)
        s = self.state
        learn = np.flatnonzero(ok)
        for lo in range(0, len(learn), self.chunk_rows):
            at = learn[lo:lo + self.chunk_rows]
            rows, d_at, w_at, t_at = slots[at], bd[at], bw[at], ts[at]
            st = s.take(rows)
            out = step(self.params, NumpyOps(s.hist, rows), st, values[at], t_at,
                       read_profile(s.daily, s.daily_exp, rows, d_at), read_profile(s.weekly, s.weekly_exp, rows, w_at))
            s.put(rows, st)
            write_profile(s.daily, s.daily_exp, rows, d_at, out.daily, t_at)
            write_profile(s.weekly, s.weekly_exp, rows, w_at, out.weekly, t_at)
            score[at], expected[at], half[at], warming[at] = out.score, out.expected, out.half, ~out.warm
        if not ok.all():
            gap = ~ok
            expected[gap], half[gap] = self._baseline(slots[gap], bd[gap], bw[gap])
            warming[gap] = self.warming(slots[gap])
        return self._result(slots, bd, bw, score, expected, half, warming)

    def _season(self, slots: np.ndarray, bd: np.ndarray, bw: np.ndarray) -> np.ndarray:
        """The seasonal offset in use for slots at the phases (bd, bw)."""
        s = self.state
        return np.where(s.series.sw[slots] > 0, read_profile(s.weekly, s.weekly_exp, slots, bw),
                        np.where(s.series.sd[slots] > 0, read_profile(s.daily, s.daily_exp, slots, bd), 0.0))

    def _baseline(self, slots: np.ndarray, bd: np.ndarray, bw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.state.series
        seen = c.n[slots] > 0
        e = np.where(seen, c.ls[slots] + self._season(slots, bd, bw), np.nan)
        floor = self.params.scale_floor_range * np.where(seen, c.vmax[slots] - c.vmin[slots], 0.0) + 1e-12
        h = np.where(seen, self.params.band_k * SIGMA_PER_MAD * np.maximum(c.scc[slots], floor), np.nan)
        return e, h

    def _result(self, slots: np.ndarray, bd: np.ndarray, bw: np.ndarray, score: np.ndarray, expected: np.ndarray,
                half: np.ndarray, warming: np.ndarray) -> AnomalyResult:
        c = self.state.series
        shifted = c.shifted[slots] > 0
        if shifted.any():
            centre = np.where(shifted, c.sh_level[slots] + self._season(slots, bd, bw), np.nan)
        else:
            centre = np.full(len(slots), np.nan)
        width = np.where(shifted, c.sh_half[slots], np.nan)
        return AnomalyResult(score, expected, expected - half, expected + half, shifted, centre - width,
                             centre + width, np.where(shifted, c.sh_since[slots], np.nan),
                             np.where(shifted, c.sh_dir[slots], 0.0), warming)

    # ---------------------------------------------------------------- rule-layer helpers
    def warming(self, slots: np.ndarray) -> np.ndarray:
        """Per slot: still warming up (its next score will be 0 for that reason)."""
        slots = np.asarray(slots, dtype=np.int64)
        c = self.state.series
        return ~is_warm(self.params, c.n[slots], c.obs[slots], c.dt_typ[slots])

    def last_sample(self, slots: np.ndarray) -> np.ndarray:
        """Per slot: the time of its last sample (Unix seconds; NaN before the first)."""
        return self.state.series.t_last[np.asarray(slots, dtype=np.int64)].copy()

    def warmup(self, slots: np.ndarray) -> Warmup:
        """Per slot: the warm-up it needs and what is left of it (see `Warmup`)."""
        p = self.params
        c = self.state.series
        slots = np.asarray(slots, dtype=np.int64)
        dt = c.dt_typ[slots]
        long = p.warmup_seconds * np.maximum(dt / p.reference_interval, 1.0)
        needed = np.maximum(long, p.warmup_samples * dt)
        left = np.maximum(np.maximum(long - c.obs[slots], (p.warmup_samples - c.n[slots]) * dt), 0.0)
        return Warmup(needed, np.where(self.warming(slots), left, 0.0))

    def accept(self, slots: np.ndarray) -> None:
        """Accept each slot's current level as the new normal: a level shift in progress
        ends (``shifted`` false) and the contextual baseline moves to the current (fast)
        level, so the series is no longer compared with its pre-change band."""
        slots = np.asarray(slots, dtype=np.int64)
        c = self.state.series
        seen = slots[c.n[slots] > 0]
        c.ls[seen] = c.lu[seen]
        c.lf[seen] = c.lu[seen]
        c.mc[seen] = 0.0
        c.shifted[slots] = 0.0
        c.sh_in[slots] = 0.0
        c.sh_level[slots] = math.nan
        c.sh_half[slots] = math.nan
        c.sh_since[slots] = math.nan
        c.sh_dir[slots] = 0.0

    def replay(self, key: Hashable, t: np.ndarray, values: np.ndarray) -> AnomalyResult:
        """Feed a history (ascending times, Unix seconds) into ``key``'s slot through the
        single-series path (fast: no per-sample array overhead), exactly as that many
        :meth:`update` calls would. Returns the per-sample result, like
        :func:`score_series`."""
        slot = int(self.slots_for([key])[0])
        s = self.state
        st = s.row(slot)
        daily, weekly, hist = s.daily_row(slot), s.weekly_row(slot), s.hist[slot].tolist()
        out = run_series(self.params, st, daily, weekly, hist, np.asarray(t, dtype=np.float64),
                         np.asarray(values, dtype=np.float64))
        s.put_row(slot, st)
        s.put_profiles(slot, daily, weekly)
        s.hist[slot] = hist
        return out

    # ---------------------------------------------------------------- persistence
    def state_dict(self, copy: bool = True) -> dict[str, Any]:
        """Plain data (numpy arrays, lists, numbers) for a snapshot: ``version``, ``keys``
        (as given: whoever stores the snapshot must be able to serialise them), ``shape``
        (the layout), one array per field of `state.SeriesState` and the ``daily``,
        ``weekly`` and ``hist`` matrices, row i belonging to ``keys[i]``. With ``copy=False``
        the arrays are views of the bank's where its held slots are its first rows in order
        (the usual case): for a writer that is done before the bank changes again (80 MB
        of copies at 50,000 series otherwise)."""
        keys = self.table.keys()
        used = self.table.used()
        rows: np.ndarray | slice = slice(0, len(keys)) if not copy and np.array_equal(used, np.arange(len(keys))) else used
        s = self.state
        lay = s.layout
        out: dict[str, Any] = {"version": STATE_VERSION, "keys": keys,
                               "shape": [lay.daily_buckets, lay.weekly_buckets, lay.rarity_bins]}
        taken = s.take(rows)
        for name in FIELDS:
            out[name] = getattr(taken, name)
        out["daily"], out["weekly"], out["hist"] = s.daily[rows], s.weekly[rows], s.hist[rows]
        out["daily_exp"], out["weekly_exp"] = s.daily_exp[rows], s.weekly_exp[rows]
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`, also from older versions (1 and 2, written
        before the seasonal profiles and the contextual baseline existed: see
        :func:`upgrade_v2`; 3, without the fields version 4 added; 3 and 4, with float
        profiles, quantised by :func:`quantise_rows`). Profiles of another shape are dropped
        (the rest is kept). Raises ValueError on damaged data."""
        version = int(state.get("version", 1))
        if version < 3:
            state = upgrade_v2(state, self.params)
        keys = [tuplify(k) for k in state["keys"]]
        m = len(keys)
        table = SlotTable.from_keys(keys)
        fresh = BankState.empty(table.capacity, Layout.of(self.params))
        rows = np.arange(m, dtype=np.int64)
        if m:
            cols = {name: np.asarray(state[name], dtype=np.float64).reshape(m) for name in FIELDS if name in state}
            loaded = fresh.take(rows)
            for name, col in cols.items():
                getattr(loaded, name)[:] = col
            fresh.put(rows, loaded)
            mat = np.asarray(state.get("hist", []), dtype=np.float64)
            if mat.ndim == 2 and mat.shape == (m, fresh.hist.shape[1]):
                fresh.hist[:m] = mat
            for target, exps, name in ((fresh.daily, fresh.daily_exp, "daily"), (fresh.weekly, fresh.weekly_exp, "weekly")):
                mat = np.asarray(state.get(name, []))
                if mat.ndim != 2 or mat.shape != (m, target.shape[1]):
                    continue
                if version >= 5:
                    target[:m] = mat
                    exps[:m] = np.asarray(state[f"{name}_exp"]).reshape(m)
                else:
                    target[:m], exps[:m] = quantise_rows(mat.astype(np.float64))
        self.table, self.state = table, fresh


def quantise_rows(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float profile rows (a version 3 or 4 snapshot) as 16-bit entries and the exponent of
    each row, rounded to the nearest quantum."""
    largest = np.max(np.abs(np.nan_to_num(mat)), axis=1, initial=0.0)
    exps = np.where(largest > 0, exponent_for(largest), INITIAL_EXP)
    q = np.floor(np.ldexp(np.nan_to_num(mat), -exps[:, None]) + 0.5)
    return np.clip(q, -QUANTA, QUANTA).astype(np.int16), exps.astype(np.int16)


def tuplify(x: Any) -> Any:
    """A key read back from JSON: lists (of lists) as tuples."""
    return tuple(tuplify(i) for i in x) if isinstance(x, list) else x


def upgrade_v2(old: dict[str, Any], p: AnomalyParams) -> dict[str, Any]:
    """A version 1/2 snapshot as version 4. Those kept one fast level, one residual scale,
    a 24-bucket time-of-day profile around the fast level, and counted samples, not
    seconds. The level seeds both baselines and the scale both scales; the old profile
    is not carried over (it was relative to a fast level, not a seasonal shape), so the
    season is learnt again from the next day on. Sampling interval and observed time are
    unknown: the interval is measured again from the next two samples, and a series that
    was past the old warm-up (100 samples) is taken as warm, with a day of data seen."""
    keys = list(old["keys"])
    m = len(keys)

    def col(name: str, default: float) -> np.ndarray:
        v = old.get(name)
        return np.full(m, default) if v is None else np.asarray(v, dtype=np.float64).reshape(m)

    n = col("n", 0.0)
    level = col("level", 0.0)
    scale = col("scale", 0.0)
    new: dict[str, Any] = {"version": STATE_VERSION, "keys": keys}
    for name in FIELDS:
        new[name] = np.full(m, getattr(INITIAL, name))
    was_warm = n >= 100
    new["n"] = n
    # a warm old series had a day's worth of range at least (100 samples of 15 s ... 5 min
    # and more); counting a day lets its range breaks work at once
    new["obs"] = np.where(was_warm, max(DAY, p.warmup_seconds), 0.0)
    new["sm"] = col("sm", 0.0)
    new["ls"] = level
    new["lf"] = level
    new["lu"] = level
    new["scf"] = scale
    new["scc"] = scale
    for name in ("short", "lr_mean", "lr_var", "vmin", "vmax", "smin", "smax", "breaks", "fired"):
        if name in old:
            new[name] = col(name, getattr(INITIAL, name))
    if old.get("smin") is not None and np.all(n <= 20):
        # the old smoothed range was valid after 20 samples only
        new["smin"], new["smax"] = np.zeros(m), np.full(m, -1.0)
    # the recent envelope appeared in version 2; a version 1 snapshot starts it as wide as
    # the range seen (it narrows within a day, and fires nothing meanwhile)
    new["rhi"] = col("rhi", 0.0) if "rhi" in old else col("vmax", 0.0)
    new["rlo"] = col("rlo", 0.0) if "rlo" in old else col("vmin", 0.0)
    for name in ("rhi", "rlo"):
        new[name] = np.where(np.isfinite(new[name]), new[name], level)
    hist = np.asarray(old.get("hist", []), dtype=np.float64)
    if hist.ndim == 2 and hist.shape == (m, max(1, p.rarity_bins)):
        new["hist"] = hist
    return new


def run_series(p: AnomalyParams, st: SeriesState[float], daily: Profile, weekly: Profile, hist: list[float],
               t: np.ndarray, values: np.ndarray) -> AnomalyResult:
    """The single-series loop over Python floats: ``st`` and the profile lists are
    updated in place."""
    n = len(values)
    bd, bw = phases(p, t)
    bdl, bwl, tl = bd.tolist(), bw.tolist(), t.tolist()
    out_s, out_e, out_h = [0.0] * n, [math.nan] * n, [math.nan] * n
    out_shift, out_lo, out_hi, out_since = [False] * n, [math.nan] * n, [math.nan] * n, [math.nan] * n
    out_dir = [0.0] * n
    out_warm = [True] * n
    ops = ScalarOps(hist)
    one_step = scalar_step()
    band = p.band_k * SIGMA_PER_MAD
    for i, x in enumerate(values.tolist()):
        di, wi = bdl[i], bwl[i]
        if x != x or x in (math.inf, -math.inf):
            # a gap: nothing learnt; report the baseline and the states as they are
            if st.n > 0:
                out_e[i] = st.ls + (weekly[wi] if st.sw else (daily[di] if st.sd else 0.0))
                out_h[i] = band * max(st.scc, p.scale_floor_range * (st.vmax - st.vmin) + 1e-12)
            out_warm[i] = not bool(is_warm(p, st.n, st.obs, st.dt_typ))
        else:
            r = one_step(p, ops, st, x, tl[i], daily[di], weekly[wi])
            daily.write(di, r.daily, tl[i])
            weekly.write(wi, r.weekly, tl[i])
            out_s[i], out_e[i], out_h[i] = r.score, r.expected, r.half
            out_warm[i] = not r.warm
        if st.shifted:
            centre = st.sh_level + (weekly[wi] if st.sw else (daily[di] if st.sd else 0.0))
            out_shift[i] = True
            out_lo[i] = centre - st.sh_half
            out_hi[i] = centre + st.sh_half
            out_since[i] = st.sh_since
            out_dir[i] = st.sh_dir
    e = np.array(out_e)
    h = np.array(out_h)
    return AnomalyResult(np.array(out_s), e, e - h, e + h, np.array(out_shift, dtype=bool), np.array(out_lo),
                         np.array(out_hi), np.array(out_since), np.array(out_dir), np.array(out_warm, dtype=bool))


def score_series(t: np.ndarray, values: np.ndarray, params: AnomalyParams = DEFAULT_PARAMS) -> AnomalyResult:
    """Score one series sample by sample, exactly as :class:`AnomalyBank` would with one
    slot, using Python floats (the same step). ``t`` in Unix seconds, ascending (a clock
    going back counts as no time passing)."""
    lay = Layout.of(params)
    return run_series(params, new_series(), Profile.zeros(lay.daily_buckets), Profile.zeros(lay.weekly_buckets),
                      [0.0] * lay.rarity_bins, np.asarray(t, dtype=np.float64), np.asarray(values, dtype=np.float64))
