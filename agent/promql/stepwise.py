"""Range functions of one range selector evaluated at many steps in a single pass, for
subqueries such as `max_over_time(rate(x[5m])[1h:1m])`: one read of the store covering every
step's window, then each (series, step) window located by binary search and reduced with
prefix sums, instead of one store read and one evaluation per step.

Covers the functions whose result needs only a window's ends and counts: `rate`, `increase`,
`delta`, `irate`, `idelta`, `count_over_time`, `present_over_time`, `last_over_time`,
`resets`, `changes`. Results equal the step-by-step evaluation's (the counter-reset correction
of rate/increase is added up in another order, which may change the last bits)."""

from __future__ import annotations

import numpy as np

from agent.store import Store

from .rangefuncs import extrapolate
from .select import range_windows

STEPWISE_FUNCTIONS = frozenset({
    "rate", "increase", "delta", "irate", "idelta", "count_over_time", "present_over_time",
    "last_over_time", "resets", "changes",
})


def evaluate(name: str, store: Store, ids: np.ndarray, ends: np.ndarray,
             range_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """`name` over the windows (end - range, end] of every series at every end time:
    (ok, values), both shaped (series, steps); values are meaningful where ok."""
    n_series, n_steps = ids.size, ends.size
    w = range_windows(store, ids, float(ends[0]) - range_seconds, float(ends[-1]))
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
                corr = np.zeros(v.size + 1)
                np.cumsum(np.where(drop, v[:-1], 0.0), out=corr[2:])
                resets = np.zeros(v.size + 1, dtype=np.int64)
                np.cumsum(drop, out=resets[2:])
                has = resets[last + 1] - resets[first + 1] > 0
                result = result + np.where(has, corr[last + 1] - corr[first + 1], 0.0)
        step_end = ends[None, :]
        out = extrapolate(result, first_v, t[first], t[last], count.astype(np.float64),
                          step_end - range_seconds, step_end, range_seconds, is_counter, name == "rate")
    return ok, out
