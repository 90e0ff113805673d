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

from agent.store.series import Store

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
    # Locate each window by one binary search over keys ordering samples by (series, time).
    # When the range is a whole number of steps, a window's start is an earlier step's end, so
    # one search over the extended grid of ends serves both.
    span = float(ends[-1] - ends[0]) + range_seconds + 1.0
    base = float(ends[0]) - range_seconds
    keys = w.segment * span + (t - base)
    row = (np.arange(n_series) * span)[:, None]
    starts = ends - range_seconds
    shift = int(np.searchsorted(starts, ends[0], side="left"))  # windows starting before the first end
    if 0 < shift < n_steps and np.array_equal(starts[shift:], ends[:n_steps - shift]):
        upto = np.searchsorted(keys, row + (np.concatenate((starts[:shift], ends))[None, :] - base), side="right")
        lo, hi = upto[:, :n_steps], upto[:, shift:]
    else:
        hi = np.searchsorted(keys, row + (ends[None, :] - base), side="right")
        lo = np.searchsorted(keys, row + (starts[None, :] - base), side="right")
    count = hi - lo
    out = np.zeros((n_series, n_steps))
    if name in ("count_over_time", "present_over_time", "last_over_time", "resets", "changes"):
        ok = count >= 1
        if name == "count_over_time":
            out = count.astype(np.float64)
        elif name == "present_over_time":
            out = np.ones((n_series, n_steps))
        elif name == "last_over_time":
            out[ok] = v[hi[ok] - 1]
        else:
            prev = np.empty_like(v)
            if v.size:
                prev[0] = np.nan
                prev[1:] = v[:-1]
            if name == "resets":
                event = v < prev
            else:
                event = (v != prev) & ~(np.isnan(v) & np.isnan(prev))
            # Pairs (j-1, j) inside a window: j in (lo, hi); a pair never spans two series then.
            events = np.zeros(v.size + 1, dtype=np.int64)
            np.cumsum(event, out=events[1:])
            start = np.minimum(lo + 1, hi)
            out = (events[hi] - events[start]).astype(np.float64)
        return ok, out
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
        result = v[last] - v[first]
        is_counter = name != "delta"
        if is_counter:
            prev = np.empty_like(v)
            if v.size:
                prev[0] = np.inf
                prev[1:] = v[:-1]
            reset = v < prev
            reset[offsets[:-1][offsets[:-1] < v.size]] = False  # a series' first sample resets nothing
            if reset.any():
                corr = np.where(reset, prev, 0.0)
                cum = np.zeros(v.size + 1)
                np.cumsum(corr, out=cum[1:])
                resets = np.zeros(v.size + 1, dtype=np.int64)
                np.cumsum(reset, out=resets[1:])
                has = resets[last + 1] - resets[first + 1] > 0
                result = result + np.where(has, cum[last + 1] - cum[first + 1], 0.0)
        step_end = ends[None, :]
        out = extrapolate(result, v[first], t[first], t[last], count.astype(np.float64),
                          step_end - range_seconds, step_end, range_seconds, is_counter, name == "rate")
    return ok, out

