"""Detector state for many series (the daemon's path) and the single-series driver
(``forewarn detect``), both running :func:`agent.models.anomaly.maths.step`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Sequence

import numpy as np

from agent.models.anomaly.maths import FIELDS, SIGMA_PER_MAD, NumpyOps, ScalarOps, State, scalar_step, step
from agent.models.anomaly.params import DAY, DEFAULT_PARAMS, WEEK, AnomalyParams

STATE_VERSION = 3


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
      seconds), NaN while not shifted;
    - ``warming``: the series is still warming up (its score is 0 for that reason)."""

    score: np.ndarray
    expected: np.ndarray
    band_low: np.ndarray
    band_high: np.ndarray
    shifted: np.ndarray
    shift_low: np.ndarray
    shift_high: np.ndarray
    shifted_since: np.ndarray
    warming: np.ndarray


def phases(p: AnomalyParams, t: Any) -> tuple[np.ndarray, np.ndarray]:
    """Daily and weekly profile entries of times ``t`` (UTC; weeks start on Monday)."""
    t = np.asarray(t, dtype=np.float64)
    d = np.floor(np.mod(t, DAY) * (p.daily_buckets / DAY)).astype(np.int64) % p.daily_buckets
    # the epoch was a Thursday: shift by three days so that entry 0 is Monday 00:00
    w = np.floor(np.mod(t + 3 * DAY, WEEK) * (p.weekly_buckets / WEEK)).astype(np.int64) % p.weekly_buckets
    return d, w


class AnomalyBank:
    """Detector state for many series, in numpy arrays indexed by slot.

    Slots are allocated per key (any hashable: a store series id, a label tuple) with
    :meth:`slots_for` and released with :meth:`forget`. :meth:`update` scores one sample
    for each of a batch of slots, vectorised; :meth:`replay` feeds a stored history into
    one slot (a restart that rebuilds state from the store). :meth:`warming` and
    :meth:`accept` serve the rule layer; :meth:`state_dict` / :meth:`load_state_dict`
    a snapshot."""

    def __init__(self, params: AnomalyParams = DEFAULT_PARAMS, capacity: int = 64) -> None:
        self.params = params
        self._slot_of: dict[Hashable, int] = {}
        self._free: list[int] = []
        self._cols: dict[str, np.ndarray] = {}
        self._daily = np.zeros((0, params.daily_buckets))
        self._weekly = np.zeros((0, params.weekly_buckets))
        self._hist = np.zeros((0, max(1, params.rarity_bins)))
        self._capacity = 0
        self._grow(max(1, capacity))

    # ---------------------------------------------------------------- slots
    def _grow(self, need: int) -> None:
        new = max(need, 2 * self._capacity)
        for name, init in FIELDS.items():
            col = np.full(new, init)
            if name in self._cols:
                col[: self._capacity] = self._cols[name]
            self._cols[name] = col
        for attr in ("_daily", "_weekly", "_hist"):
            old = getattr(self, attr)
            grown = np.zeros((new, old.shape[1]))
            grown[: self._capacity] = old
            setattr(self, attr, grown)
        self._free.extend(range(new - 1, self._capacity - 1, -1))
        self._capacity = new

    def _reset(self, slot: int) -> None:
        for name, init in FIELDS.items():
            self._cols[name][slot] = init
        self._daily[slot] = 0.0
        self._weekly[slot] = 0.0
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
    def _state(self, slots: np.ndarray, bd: np.ndarray, bw: np.ndarray) -> State:
        p = self.params
        st = State()
        for name in FIELDS:
            setattr(st, name, self._cols[name][slots])
        st.daily = self._daily.reshape(-1)
        st.weekly = self._weekly.reshape(-1)
        st.di = slots * p.daily_buckets + bd
        st.wi = slots * p.weekly_buckets + bw
        st.hist = self._hist
        st.hrow = slots
        return st

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
        ok = np.isfinite(values)
        warming = np.ones(m, dtype=bool)
        if ok.any():
            sl = slots[ok]
            st = self._state(sl, bd[ok], bw[ok])
            s, e, h, warm = step(self.params, NumpyOps, st, values[ok], ts[ok])
            for name in FIELDS:
                self._cols[name][sl] = getattr(st, name)
            score[ok], expected[ok], half[ok], warming[ok] = s, e, h, ~warm
        if not ok.all():
            e, h = self._baseline(slots[~ok], bd[~ok], bw[~ok])
            expected[~ok], half[~ok], warming[~ok] = e, h, self.warming(slots[~ok])
        return self._result(slots, bd, bw, score, expected, half, warming)

    def _season(self, slots: np.ndarray, bd: np.ndarray, bw: np.ndarray) -> np.ndarray:
        """The seasonal offset in use for slots at the phases (bd, bw)."""
        p = self.params
        c = self._cols
        d = self._daily.reshape(-1)[slots * p.daily_buckets + bd]
        w = self._weekly.reshape(-1)[slots * p.weekly_buckets + bw]
        return np.where(c["sw"][slots] > 0, w, np.where(c["sd"][slots] > 0, d, 0.0))

    def _baseline(self, slots: np.ndarray, bd: np.ndarray, bw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self._cols
        seen = c["n"][slots] > 0
        e = np.where(seen, c["ls"][slots] + self._season(slots, bd, bw), np.nan)
        floor = self.params.scale_floor_range * np.where(seen, c["vmax"][slots] - c["vmin"][slots], 0.0) + 1e-12
        h = np.where(seen, self.params.band_k * SIGMA_PER_MAD * np.maximum(c["scc"][slots], floor), np.nan)
        return e, h

    def _result(self, slots: np.ndarray, bd: np.ndarray, bw: np.ndarray, score: np.ndarray, expected: np.ndarray,
                half: np.ndarray, warming: np.ndarray) -> AnomalyResult:
        c = self._cols
        shifted = c["shifted"][slots] > 0
        if shifted.any():
            centre = np.where(shifted, c["sh_level"][slots] + self._season(slots, bd, bw), np.nan)
        else:
            centre = np.full(len(slots), np.nan)
        width = np.where(shifted, c["sh_half"][slots], np.nan)
        return AnomalyResult(score, expected, expected - half, expected + half, shifted, centre - width,
                             centre + width, np.where(shifted, c["sh_since"][slots], np.nan), warming)

    # ---------------------------------------------------------------- rule-layer helpers
    def warming(self, slots: np.ndarray) -> np.ndarray:
        """Per slot: still warming up (its next score will be 0 for that reason)."""
        p = self.params
        slots = np.asarray(slots, dtype=np.int64)
        c = self._cols
        stretch = np.maximum(c["dt_typ"][slots] / p.reference_interval, 1.0)
        return ~((c["n"][slots] >= p.warmup_samples) & (c["obs"][slots] >= p.warmup_seconds * stretch))

    def accept(self, slots: np.ndarray) -> None:
        """Accept each slot's current level as the new normal: a level shift in progress
        ends (``shifted`` false) and the contextual baseline moves to the current (fast)
        level, so the series is no longer compared with its pre-change band."""
        slots = np.asarray(slots, dtype=np.int64)
        c = self._cols
        seen = slots[c["n"][slots] > 0]
        c["ls"][seen] = c["lu"][seen]
        c["lf"][seen] = c["lu"][seen]
        c["mc"][seen] = 0.0
        c["shifted"][slots] = 0.0
        for name in ("sh_level", "sh_half", "sh_since"):
            c[name][slots] = math.nan

    def replay(self, key: Hashable, t: np.ndarray, values: np.ndarray) -> AnomalyResult:
        """Feed a history (ascending times, Unix seconds) into ``key``'s slot through the
        single-series path (fast: no per-sample array overhead), exactly as that many
        :meth:`update` calls would. Returns the per-sample result, like
        :func:`score_series`."""
        slot = int(self.slots_for([key])[0])
        p = self.params
        st = State()
        for name in FIELDS:
            setattr(st, name, float(self._cols[name][slot]))
        st.daily = self._daily[slot].tolist()
        st.weekly = self._weekly[slot].tolist()
        st.hist = self._hist[slot].tolist()
        st.hrow = 0
        out = _run(p, st, np.asarray(t, dtype=np.float64), np.asarray(values, dtype=np.float64))
        for name in FIELDS:
            self._cols[name][slot] = getattr(st, name)
        self._daily[slot] = st.daily
        self._weekly[slot] = st.weekly
        self._hist[slot] = st.hist
        return out

    # ---------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Plain data (numpy arrays, lists, numbers) for a snapshot; keys are kept as
        given, so they must be serialisable by whoever stores the snapshot."""
        keys = list(self._slot_of)
        idx = np.array([self._slot_of[k] for k in keys], dtype=np.int64)
        out: dict[str, Any] = {"version": STATE_VERSION, "keys": keys,
                               "shape": [self.params.daily_buckets, self.params.weekly_buckets, self.params.rarity_bins]}
        for name in FIELDS:
            out[name] = self._cols[name][idx].copy()
        out["daily"] = self._daily[idx].copy()
        out["weekly"] = self._weekly[idx].copy()
        out["hist"] = self._hist[idx].copy()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`, also from older versions (1 and 2, written
        before the seasonal profiles and the contextual baseline existed: see
        :func:`_upgrade`). Profiles of another shape are dropped (the rest is kept)."""
        if int(state.get("version", 1)) < 3:
            state = _upgrade(state, self.params)
        keys = [tuple(_tuplify(k)) if isinstance(k, list) else k for k in state["keys"]]
        self._slot_of.clear()
        self._cols.clear()
        self._free = []
        self._capacity = 0
        p = self.params
        self._daily = np.zeros((0, p.daily_buckets))
        self._weekly = np.zeros((0, p.weekly_buckets))
        self._hist = np.zeros((0, max(1, p.rarity_bins)))
        self._grow(max(1, len(keys)))
        slots = self.slots_for(keys)
        if not len(keys):
            return
        for name in FIELDS:
            if name in state:
                self._cols[name][slots] = np.asarray(state[name], dtype=np.float64)
        for attr, name in (("_daily", "daily"), ("_weekly", "weekly"), ("_hist", "hist")):
            m = np.asarray(state.get(name, []), dtype=np.float64)
            target = getattr(self, attr)
            if m.ndim == 2 and m.shape == (len(keys), target.shape[1]):
                target[slots] = m


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(i) for i in x) if isinstance(x, list) else x


def _upgrade(old: dict[str, Any], p: AnomalyParams) -> dict[str, Any]:
    """A version 1/2 snapshot as version 3. Those kept one fast level, one residual scale,
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
    new: dict[str, Any] = {"version": 3, "keys": keys}
    for name, init in FIELDS.items():
        new[name] = np.full(m, init)
    was_warm = n >= 100
    new["n"] = n
    # a warm old series had a day's worth of range at least (100 samples of 15 s ... 5 min
    # and more); counting a day lets its range breaks work at once
    new["obs"] = np.where(was_warm, max(DAY, p.warmup_seconds), 0.0)
    new["sm"] = col("sm", 0.0)
    new["ls"] = level
    new["lf"] = level
    new["scf"] = scale
    new["scc"] = scale
    for name in ("short", "lr_mean", "lr_var", "vmin", "vmax", "smin", "smax", "breaks", "fired"):
        if name in old:
            new[name] = col(name, FIELDS[name])
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


def _run(p: AnomalyParams, st: State, t: np.ndarray, values: np.ndarray) -> AnomalyResult:
    """The single-series loop over Python floats (state ``st`` holds floats and lists)."""
    n = len(values)
    bd, bw = phases(p, t)
    bdl, bwl, tl = bd.tolist(), bw.tolist(), t.tolist()
    out_s, out_e, out_h = [0.0] * n, [math.nan] * n, [math.nan] * n
    out_shift, out_lo, out_hi, out_since = [False] * n, [math.nan] * n, [math.nan] * n, [math.nan] * n
    out_warm = [True] * n
    ops = ScalarOps
    band = p.band_k * SIGMA_PER_MAD
    for i, x in enumerate(values.tolist()):
        if x != x or x in (math.inf, -math.inf):
            # a gap: nothing learnt; report the baseline and the states as they are
            if st.n > 0:
                season = _scalar_season(st, bdl[i], bwl[i])
                out_e[i] = st.ls + season
                out_h[i] = band * max(st.scc, p.scale_floor_range * (st.vmax - st.vmin) + 1e-12)
            stretch = max(st.dt_typ / p.reference_interval, 1.0)
            out_warm[i] = not (st.n >= p.warmup_samples and st.obs >= p.warmup_seconds * stretch)
        else:
            st.di = bdl[i]
            st.wi = bwl[i]
            s, e, h, warm = scalar_step(p, ops, st, x, tl[i])
            out_s[i], out_e[i], out_h[i] = s, e, h
            out_warm[i] = not warm
        if st.shifted:
            sea = _scalar_season(st, bdl[i], bwl[i])
            out_shift[i] = True
            out_lo[i] = st.sh_level + sea - st.sh_half
            out_hi[i] = st.sh_level + sea + st.sh_half
            out_since[i] = st.sh_since
    e = np.array(out_e)
    h = np.array(out_h)
    return AnomalyResult(np.array(out_s), e, e - h, e + h, np.array(out_shift, dtype=bool), np.array(out_lo),
                         np.array(out_hi), np.array(out_since), np.array(out_warm, dtype=bool))


def _scalar_season(st: State, di: int, wi: int) -> float:
    return st.weekly[wi] if st.sw else (st.daily[di] if st.sd else 0.0)


def score_series(t: np.ndarray, values: np.ndarray, params: AnomalyParams = DEFAULT_PARAMS) -> AnomalyResult:
    """Score one series sample by sample, exactly as :class:`AnomalyBank` would with one
    slot, using Python floats (the same step). ``t`` in Unix seconds, ascending (a clock
    going back counts as no time passing)."""
    st = State()
    for name, init in FIELDS.items():
        setattr(st, name, float(init))
    st.daily = [0.0] * params.daily_buckets
    st.weekly = [0.0] * params.weekly_buckets
    st.hist = [0.0] * max(1, params.rarity_bins)
    st.hrow = 0
    return _run(params, st, np.asarray(t, dtype=np.float64), np.asarray(values, dtype=np.float64))
