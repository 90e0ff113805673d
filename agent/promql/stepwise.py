"""Range functions of one range selector evaluated at many steps in a single pass, for
subqueries such as `max_over_time(rate(x[5m])[1h:1m])`: one read of the store covering every
step's window, then each (series, step) window located by binary search and reduced with
prefix sums, instead of one store read and one evaluation per step. Series that share their
sample times (scraped together: the usual case) form a grid, where a window is the same
columns for every series, so the search runs once per step and the rest is column gathers
and arithmetic on (series, steps) arrays; other series are searched one by one.

Covers the functions whose result needs only a window's ends and counts: `rate`, `increase`,
`delta`, `irate`, `idelta`, `count_over_time`, `present_over_time`, `last_over_time`,
`resets`, `changes`. Results are the step-by-step evaluation's, bit for bit: the same
arithmetic per window (rangefuncs.extrapolate and add_resets)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.store import Store

from .rangefuncs import add_resets, extrapolate
from .select import GRID_MIN_SAMPLES, Windows, grid_windows, range_windows, row_chunks

STEPWISE_FUNCTIONS = frozenset({
    "rate", "increase", "delta", "irate", "idelta", "count_over_time", "present_over_time",
    "last_over_time", "resets", "changes",
})


@dataclass
class Steps:
    """`name` at every step: `ok` and `values` shaped (series, steps), values meaningful
    where ok; `samples` is how many raw samples were read."""

    ok: np.ndarray
    values: np.ndarray
    samples: int


def evaluate(name: str, store: Store, ids: np.ndarray, ends: np.ndarray, range_seconds: float,
             need_grid: bool = False, min_samples: int = GRID_MIN_SAMPLES) -> Steps | None:
    """`name` over the windows (end - range, end] of every series at every end time, on one
    time axis for groups of series sharing their sample times (`min_samples`: see
    select.grid_windows). With
    `need_grid`, None when there is no such group (the caller has a path as good for that
    case). Series are read in chunks of rows (select.row_chunks), so a long range over many
    series never holds more than one chunk's samples."""
    start, end = float(ends[0]) - range_seconds, float(ends[-1])
    chunks = row_chunks(store, ids, start, end)
    if len(chunks) == 1:
        return _evaluate_rows(name, store, ids, ends, range_seconds, need_grid, min_samples)
    ok = np.zeros((ids.size, ends.size), dtype=bool)
    values = np.zeros((ids.size, ends.size))
    samples = 0
    for i, rows in enumerate(chunks):
        part = _evaluate_rows(name, store, ids[rows], ends, range_seconds, need_grid and i == 0, min_samples)
        if part is None:
            return None
        ok[rows], values[rows] = part.ok, part.values
        samples += part.samples
    return Steps(ok, values, samples)


def _evaluate_rows(name: str, store: Store, ids: np.ndarray, ends: np.ndarray, range_seconds: float,
                   need_grid: bool, min_samples: int) -> Steps | None:
    start, end = float(ends[0]) - range_seconds, float(ends[-1])
    split = grid_windows(store, ids, start, end, min_samples)
    if need_grid and not split.grids:
        return None
    samples = sum(g.v.size for g in split.grids)
    if len(split.grids) == 1 and not split.rest.size:  # every series on one time axis
        g = split.grids[0]
        return Steps(*_on_grid(name, g.t, g.v, ends, range_seconds), samples)
    ok = np.zeros((ids.size, ends.size), dtype=bool)
    values = np.zeros((ids.size, ends.size))
    for g in split.grids:
        ok[g.rows], values[g.rows] = _on_grid(name, g.t, g.v, ends, range_seconds)
    if split.rest.size:
        w = range_windows(store, ids[split.rest], start, end)
        ok[split.rest], values[split.rest] = _on_windows(name, w, ends, range_seconds)
        samples += int(w.offsets[-1])
    return Steps(ok, values, samples)


def _on_grid(name: str, t: np.ndarray, v: np.ndarray, ends: np.ndarray,
             range_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """`name` at every step over series sharing the sample times `t` (values `v`, one row a
    series): a window is the same columns for every series, found by one search per step, and
    the results are column gathers and arithmetic on (series, steps) arrays. Per cell, the
    arithmetic is _on_windows's, so both give the same bits."""
    k, n_steps = v.shape[0], ends.size
    shape = (k, n_steps)
    hi = np.searchsorted(t, ends, side="right")
    lo = np.searchsorted(t, ends - range_seconds, side="right")
    count = hi - lo
    if name in ("count_over_time", "present_over_time", "last_over_time", "resets", "changes"):
        ok = np.broadcast_to(count >= 1, shape)
        if name == "count_over_time":
            return ok, np.broadcast_to(count.astype(np.float64), shape)
        if name == "present_over_time":
            return ok, np.ones(shape)
        if name == "last_over_time":
            return ok, v[:, np.maximum(hi - 1, 0)]
        with np.errstate(invalid="ignore"):
            if name == "resets":
                event = v[:, 1:] < v[:, :-1]
            else:
                event = (v[:, 1:] != v[:, :-1]) & ~(np.isnan(v[:, 1:]) & np.isnan(v[:, :-1]))
        events = np.zeros((k, t.size + 1), dtype=np.int64)
        np.cumsum(event, axis=1, out=events[:, 2:])
        start = np.minimum(lo + 1, hi)
        return ok, (events[:, hi] - events[:, start]).astype(np.float64)
    ok_step = count >= 2
    last = np.clip(hi - 1, 1, t.size - 1)
    first = np.minimum(lo, last)
    with np.errstate(all="ignore"):
        if name in ("irate", "idelta"):
            lv, pv = v[:, last], v[:, last - 1]
            dt = t[last] - t[last - 1]
            if name == "irate":
                out = np.where(lv < pv, lv, lv - pv) / dt
            else:
                out = lv - pv
            return np.broadcast_to(ok_step & (dt != 0), shape), out
        first_v = v[:, first]
        result = v[:, last] - first_v
        is_counter = name != "delta"
        if is_counter:
            drop = v[:, 1:] < v[:, :-1]  # drop[:, j - 1]: a reset at sample j
            with_resets = np.flatnonzero(drop.any(axis=1))
            if with_resets.size:  # only those rows: a few counters reset, most never do
                r, c = np.nonzero(drop[with_resets])
                cells = np.arange(with_resets.size)[:, None] * t.size
                result[with_resets] = add_resets(result[with_resets], v[with_resets].reshape(-1), r * t.size + c,
                                                 cells + first, cells + last)
        out = extrapolate(result, first_v, t[first], t[last], count.astype(np.float64),
                          ends - range_seconds, ends, range_seconds, is_counter, name == "rate")
    return np.broadcast_to(ok_step, shape), out


def _on_windows(name: str, w: Windows, ends: np.ndarray, range_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """`name` at every step over per-series windows of any times."""
    n_series, n_steps = w.offsets.size - 1, ends.size
    t, v, offsets = w.t, w.v, w.offsets
    if t.size == 0:
        return np.zeros((n_series, n_steps), dtype=bool), np.zeros((n_series, n_steps))
    # Locate each window by a binary search. When the range is a whole number of steps, a
    # window's start is an earlier step's end, so one search over the extended grid serves both.
    # Keys order the samples by (series, time): series i's times shifted to [i*span, (i+1)*span).
    # The sums are exact for times on a millisecond (or coarser binary) grid, their magnitude
    # staying below the timestamps', so comparing shifted times and bounds compares the times.
    span = float(ends[-1] - ends[0]) + range_seconds + 1.0
    row = np.arange(n_series) * span - (float(ends[0]) - range_seconds)
    keys = t + np.repeat(row, w.lengths)
    starts = ends - range_seconds
    shift = int(np.searchsorted(starts, ends[0], side="left"))  # windows starting before the first end
    if 0 < shift < n_steps and np.array_equal(starts[shift:], ends[:n_steps - shift]):
        upto = np.searchsorted(keys, row[:, None] + np.concatenate((starts[:shift], ends))[None, :], side="right")
        lo, hi = upto[:, :n_steps], upto[:, shift:]
    else:
        hi = np.searchsorted(keys, row[:, None] + ends[None, :], side="right")
        lo = np.searchsorted(keys, row[:, None] + starts[None, :], side="right")
    count = hi - lo
    if name in ("count_over_time", "present_over_time", "last_over_time", "resets", "changes"):
        ok = count >= 1
        if name == "count_over_time":
            return ok, count.astype(np.float64)
        if name == "present_over_time":
            return ok, np.ones((n_series, n_steps))
        if name == "last_over_time":
            return ok, v[np.maximum(hi - 1, 0)]
        with np.errstate(invalid="ignore"):
            if name == "resets":
                event = v[1:] < v[:-1]
            else:
                event = (v[1:] != v[:-1]) & ~(np.isnan(v[1:]) & np.isnan(v[:-1]))
        # event[j - 1]: samples j-1 and j differ. Only pairs inside a window count, j in
        # (lo, hi), so a pair spanning two series never does.
        events = np.zeros(v.size + 1, dtype=np.int64)
        np.cumsum(event, out=events[2:])
        start = np.minimum(lo + 1, hi)
        return ok, (events[hi] - events[start]).astype(np.float64)
    ok = count >= 2
    # Work on the whole grid (indices clipped where a window has fewer than two samples) and let
    # `ok` say which cells mean something: cheaper than selecting the cells first.
    if v.size < 2:
        return ok, np.zeros((n_series, n_steps))
    last = np.clip(hi - 1, 1, v.size - 1)
    first = np.minimum(lo, last)
    with np.errstate(all="ignore"):
        if name in ("irate", "idelta"):
            lv, pv = v[last], v[last - 1]
            dt = t[last] - t[last - 1]
            if name == "irate":
                out = np.where(lv < pv, lv, lv - pv) / dt
            else:
                out = lv - pv
            return ok & (dt != 0), out
        first_v = v[first]
        result = v[last] - first_v
        is_counter = name != "delta"
        if is_counter:
            drop = v[1:] < v[:-1]  # drop[j - 1]: a reset at sample j
            drop[offsets[1:-1][(offsets[1:-1] > 0) & (offsets[1:-1] < v.size)] - 1] = False  # across series
            if drop.any():
                result = add_resets(result, v, np.flatnonzero(drop), first, last)
        step_end = ends[None, :]
        out = extrapolate(result, first_v, t[first], t[last], count.astype(np.float64),
                          step_end - range_seconds, step_end, range_seconds, is_counter, name == "rate")
    return ok, out
