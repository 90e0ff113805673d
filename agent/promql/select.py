"""Series selection: label matchers resolved through the store's label index, and the raw
windows of the selected series gathered in one vectorised read. The one module of PromQL
that reads the store's internals (index, ring windows); it imports nothing after the store."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import promql_parser as pp

from agent import ints
from agent.store import Labels, Store, is_stale

from .parse import PromQLError
from .regex import RegexError, compile_anchored
from .values import NAME


def matcher_predicate(op: pp.MatchOp, value: str) -> Callable[[str], bool]:
    """The test a label value must pass; regexes are RE2, fully anchored (see regex.py)."""
    if op == pp.MatchOp.Equal:
        return lambda s: s == value
    if op == pp.MatchOp.NotEqual:
        return lambda s: s != value
    try:
        rx = compile_anchored(value)
    except RegexError as e:
        raise PromQLError(f"invalid regular expression {value!r}: {e}") from None
    if op == pp.MatchOp.Re:
        return rx.matches
    return lambda s: not rx.matches(s)


def selector_matchers(vs: pp.VectorSelector) -> list[tuple[str, Callable[[str], bool], pp.MatchOp, str]]:
    """(label name, predicate, op, value) for every matcher, the metric name included."""
    out = []
    if vs.name is not None:
        out.append((NAME, matcher_predicate(pp.MatchOp.Equal, vs.name), pp.MatchOp.Equal, vs.name))
    for m in vs.matchers.matchers:
        out.append((m.name, matcher_predicate(m.op, m.value), m.op, m.value))
    return out


def select_ids(store: Store, vs: pp.VectorSelector) -> np.ndarray:
    """Ids of the series matching every matcher, sorted. A matcher that matches the empty
    string also matches series that lack the label, as in Prometheus. Set operations are numpy
    ones over the index's posting lists (sorted id arrays), never Python sets of ids."""
    matchers = selector_matchers(vs)
    # Start from the most selective positive matchers to keep the arrays small.
    candidates: np.ndarray | None = None
    for name, _, op, value in matchers:
        if op == pp.MatchOp.Equal and value != "":
            ids = np.sort(store.postings(name, value))
            candidates = ids if candidates is None else np.intersect1d(candidates, ids, assume_unique=True)
    if candidates is None:
        candidates = np.sort(store.all_ids())
    for name, pred, op, value in matchers:
        if not candidates.size:
            break
        if op == pp.MatchOp.Equal and value != "":
            continue  # already applied
        if pred(""):
            # Series lacking the label pass; drop those whose value fails.
            failing = store.matching_postings(name, lambda v, p=pred: not p(v))  # type: ignore[misc]
            if failing.size:
                candidates = np.setdiff1d(candidates, failing, assume_unique=True)
        else:
            passing = store.matching_postings(name, pred)
            candidates = np.intersect1d(candidates, passing, assume_unique=True)
    return candidates.astype(np.int64, copy=False)


class LabelIds:
    """Interns label sets as small integers, so vectors can be matched with numpy. Bounded:
    when full it starts afresh under a new epoch (ids of different epochs never compare).
    Number i of an epoch is `_by_id[i]`, the label set object first given for it."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self.max_entries = max_entries
        self.epoch = 0
        self._ids: dict[Labels, int] = {}
        self._by_id: list[Labels] = []
        self._lock = threading.Lock()

    def ids(self, labels: list[Labels]) -> tuple[np.ndarray, int]:
        out, epoch, _ = self._number(labels, canonical=False)
        return out, epoch

    def intern(self, labels: list[Labels]) -> tuple[list[Labels], np.ndarray, int]:
        """`ids`, and the label sets as the table's own objects: a caller that keeps them
        (a selection's label sets without __name__, rebuilt whenever the series set changes)
        holds one object per label set with the table, not one more per build."""
        out, epoch, canonical = self._number(labels, canonical=True)
        assert canonical is not None
        return canonical, out, epoch

    def _number(self, labels: list[Labels], canonical: bool) -> tuple[np.ndarray, int, list[Labels] | None]:
        with self._lock:
            if len(self._ids) + len(labels) > self.max_entries:
                self._ids = {}
                self._by_id = []
                self.epoch += 1
            table = self._ids
            base = len(table)  # a new label set takes the next number: base + how many came before it
            numbers = ints.span(base, base + len(labels))
            out = np.fromiter((table.setdefault(lab, numbers[len(table) - base]) for lab in labels), dtype=np.int64,
                              count=len(labels))
            by_id = self._by_id
            if len(table) > len(by_id):  # the new numbers, in the order they were given
                new = np.flatnonzero(out >= len(by_id))
                vals = out[new]  # a number's first position: where it exceeds every number before it
                before = np.concatenate(([len(by_id) - 1], np.maximum.accumulate(vals)[:-1]))
                by_id.extend(labels[i] for i in new[vals > before].tolist())
            return out, self.epoch, ([by_id[i] for i in out.tolist()] if canonical else None)


class Selection:
    """Resolved series of a selector. The lists are shared by results (never mutate them),
    which also lets per-list work such as grouping be cached by identity.

    `nameless` (the same label sets without __name__, for functions) and their ids in
    `label_ids` (`nameless_ids`, of `epoch`) are built on first use: a selector a rule reads
    as it is (a forecast's, an anomaly rule's) never needs them, and they cost two objects a
    series (about 170 bytes: 8.5 MB for 50,000 series)."""

    __slots__ = ("ids", "labels", "_label_ids", "_nameless", "_lock")

    def __init__(self, ids: np.ndarray, labels: list[Labels], label_ids: LabelIds) -> None:
        self.ids = ids
        self.labels = labels
        self._label_ids = label_ids
        self._nameless: tuple[list[Labels], np.ndarray, int] | None = None
        self._lock = threading.Lock()

    def _built(self) -> tuple[list[Labels], np.ndarray, int]:
        got = self._nameless
        if got is None:
            with self._lock:  # results share a selection across threads: build it once
                got = self._nameless
                if got is None:
                    nameless = [tuple(p for p in lab if p[0] != NAME) for lab in self.labels]
                    got = self._nameless = self._label_ids.intern(nameless)
        return got

    @property
    def nameless(self) -> list[Labels]:
        return self._built()[0]

    @property
    def nameless_ids(self) -> np.ndarray:
        return self._built()[1]

    @property
    def epoch(self) -> int:
        return self._built()[2]

    def match_ids(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """The ids of `rows` (all when None) and their epoch: a vector's `match_later`."""
        _, ids, epoch = self._built()
        return (ids if rows is None else ids[rows]), epoch


class SelectionCache:
    """Resolved selectors, valid while the store's set of series is unchanged."""

    def __init__(self, store: Store, max_entries: int = 512) -> None:
        self.store = store
        self.max_entries = max_entries
        # Bound the memory too: at most this many label-set references across all entries.
        self.max_labels = 4 * store.max_series + 10000
        self._labels_held = 0
        self._generation = -1
        self._entries: dict[str, Selection] = {}
        self.label_ids = LabelIds(max_entries=4 * store.max_series + 10000)

    def get(self, vs: pp.VectorSelector) -> Selection:
        if self.store.generation != self._generation:
            self._entries = {}
            self._labels_held = 0
            self._generation = self.store.generation
        key = _selector_key(vs)
        sel = self._entries.get(key)
        if sel is None:
            with self.store.lock:
                generation = self.store.generation
                ids = select_ids(self.store, vs)
                labels = [self.store.labels(int(i)) for i in ids]
            sel = Selection(ids, labels, self.label_ids)
            if generation != self._generation:
                return sel  # the series set changed meanwhile: use it once, do not keep it
            if len(self._entries) >= self.max_entries or self._labels_held + len(ids) > self.max_labels:
                self._entries = {}
                self._labels_held = 0
            self._entries[key] = sel
            self._labels_held += len(ids)
        return sel


def _selector_key(vs: pp.VectorSelector) -> str:
    parts = [vs.name or ""]
    for m in vs.matchers.matchers:
        parts.append(f"{m.name}\x00{m.op}\x00{m.value}")
    return "\x01".join(parts)


@dataclass
class Windows:
    """Raw samples of many series: series i is t[offsets[i]:offsets[i+1]]."""

    t: np.ndarray
    v: np.ndarray
    offsets: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def segment(self) -> np.ndarray:
        """For each sample, the index of its series."""
        return np.repeat(np.arange(self.offsets.size - 1), self.lengths)


@dataclass
class RangeVector:
    """A range argument of a function, from a range selector or a subquery: series i has the
    samples of segment i of `windows`, all within (start, end]."""

    labels: list[Labels]  # with __name__ where the series have one
    nameless: list[Labels]  # the same without __name__, for functions that drop it
    windows: Windows
    start: float
    end: float
    range_seconds: float
    nameless_ids: np.ndarray | None = None  # LabelIds of `nameless`, when known
    epoch: int = -1


def range_windows(store: Store, ids: np.ndarray, start: float, end: float) -> Windows:
    """Samples with start < t <= end, stale markers removed (range vectors never contain them)."""
    t, v, offsets = store.windows(ids, start, end)
    stale = is_stale(v)
    if stale.any():
        keep = ~stale
        seg = np.repeat(np.arange(ids.size), np.diff(offsets))
        lens = np.bincount(seg[keep], minlength=ids.size)
        offsets = np.zeros(ids.size + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        t, v = t[keep], v[keep]
    return Windows(t, v, offsets)


@dataclass
class Grid:
    """Windows of series that hold the very same sample times: the series at `rows` (positions
    into the ids asked for, ascending) have times `t` (L,) and values `v` (len(rows), L), a
    copy. None of the values is a stale marker."""

    rows: np.ndarray
    t: np.ndarray
    v: np.ndarray


@dataclass
class GridWindows:
    """The windows of many series split into grids (series sharing their sample times) and the
    positions of the series left over (`rest`, ascending), to be read with range_windows."""

    grids: list[Grid]
    rest: np.ndarray


GRID_MIN_SAMPLES = 8192


def grid_windows(store: Store, ids: np.ndarray, start: float, end: float,
                 min_samples: int = GRID_MIN_SAMPLES) -> GridWindows:
    """Samples with start < t <= end of many series, as grids where series share their sample
    times. Series scraped together are appended with one timestamp and have written as many
    samples (the same ring slots), so a grid needs one time axis and no per-sample offsets; a
    function evaluated at many steps then searches the time axis once for all of them.

    Candidates are grouped by (samples written, newest time); a group becomes a grid when its
    windows hold at least `min_samples` samples in all (below that, the fixed cost of a grid
    outweighs what it saves: measured with 40 to 10,000 series a group), every series with
    exactly the reference's times in the window and no stale marker there. Everything else
    goes to `rest`."""
    ids = np.asarray(ids, dtype=np.int64)
    grids: list[Grid] = []
    cap = store.raw_capacity
    if ids.size == 0:
        return GridWindows([], np.zeros(0, dtype=np.int64))
    if ids.size * cap < min_samples:
        return GridWindows([], np.arange(ids.size))
    with store.lock:  # appends run on other threads: the slots (and the time base) must not move while read
        # Stored time offsets are compared with thresholds of the same type: offset > after
        # exactly when the time is > start, offset <= upto exactly when it is <= end.
        after, upto = store.offset_at_or_before(start), store.offset_at_or_before(end)
        n = store.raw_n[ids]
        # empty ones: one group, skipped below
        newest = np.where(n > 0, store.time_rows[store.time_rows_of(ids), (n - 1) % cap], 0)
        order = np.lexsort((newest, n))  # stable: rows of a group stay ascending
        sn, st = n[order], newest[order]
        cut = np.nonzero((sn[1:] != sn[:-1]) | (st[1:] != st[:-1]))[0] + 1
        bounds = np.concatenate(([0], cut, [ids.size]))
        # Samples in each group's window, from its first series' slots (an estimate where a
        # reused id's slots hold older times; _grid counts exactly): small groups are skipped
        # without a closer look.
        ring = store.time_rows[store.time_rows_of(ids[order[bounds[:-1]]])]
        per_series = np.count_nonzero((ring > after) & (ring <= upto), axis=1)
        big = (per_series >= 2) & (np.diff(bounds) * per_series >= min_samples) & (sn[bounds[:-1]] > 0)
        rest = np.ones(ids.size, dtype=bool)
        for g in np.nonzero(big)[0].tolist():
            rows = order[bounds[g]:bounds[g + 1]]
            grid = _grid(store, ids[rows], int(n[rows[0]]), after, upto, min_samples)
            if grid is not None:
                grids.append(Grid(rows, grid[0], grid[1]))
                rest[rows] = False
    left = np.flatnonzero(rest)
    return GridWindows(grids, left)


CHUNK_SAMPLES = 1 << 23  # 64 MiB of float64 values
CHUNK_MIN_ROWS = 1024


def row_chunks(store: Store, ids: np.ndarray, start: float, end: float) -> list[slice]:
    """Slices of `ids` whose windows (start, end] hold about CHUNK_SAMPLES samples or fewer
    each (at least CHUNK_MIN_ROWS series a chunk), estimated from the first series' window, so
    that a long range over many series (`increase(x[24h])`) is read and reduced a chunk at a
    time."""
    if ids.size == 0:
        return [slice(0, 0)]
    t, _ = store.raw(int(ids[0]), start, end)
    rows = max(CHUNK_MIN_ROWS, CHUNK_SAMPLES // max(1, t.size))
    return [slice(i, min(i + rows, ids.size)) for i in range(0, ids.size, rows)]


def _grid(store: Store, ids: np.ndarray, written: int, after: np.integer, upto: np.integer,
          min_samples: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(times, values) of the window (offsets `after` < o <= `upto`, thresholds from
    Store.offset_at_or_before) of series that all wrote `written` samples, when they share the
    first one's times there, hold `min_samples` or more in all and no stale marker; else
    None. Caller holds the store's lock."""
    cap = store.raw_capacity
    count = min(written, cap)
    head = written % cap if written > cap else 0
    rows = store.time_rows_of(ids)
    ring = store.time_rows[rows[0]]
    logical = np.concatenate((ring[head:], ring[:head])) if head else ring[:count]
    lo = int(np.searchsorted(logical, after, side="right"))
    hi = int(np.searchsorted(logical, upto, side="right"))
    if hi - lo < 2 or ids.size * (hi - lo) < min_samples:
        return None
    p0 = (head + lo) % cap
    cols: slice | np.ndarray
    if p0 + hi - lo <= cap:
        cols = slice(p0, p0 + hi - lo)
    else:
        cols = np.concatenate((np.arange(p0, cap), np.arange(0, p0 + hi - lo - cap)))
    first = int(ids[0])
    c = np.arange(cap)[cols]
    if ids[-1] - first == ids.size - 1 and bool(np.all(np.diff(ids) == 1)):
        # Consecutive ids (a selection of everything one target or metric wrote, usually): a view.
        v = store.raw_v[first:first + ids.size, cols].copy()
    elif 2 * (hi - lo) >= cap:  # most of each row: gather whole rows, then the columns
        v = store.raw_v.take(ids, axis=0)[:, cols]
    else:
        v = store.raw_v[ids[:, None], c[None, :]]
    offsets = logical[lo:hi]
    # Series of one time row (a target's, usually) share their times: only others are compared.
    other = np.unique(rows[rows != rows[0]])
    if other.size and not bool((store.time_rows[other[:, None], c[None, :]] == offsets).all()):
        return None
    if bool(is_stale(v).any()):
        return None
    return store.times_of(offsets), v  # copies in every branch: the slots are overwritten once the lock is released


def instant_samples(store: Store, ids: np.ndarray, t: float, lookback: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For an instant selector at `t`: (positions into ids that have a value, their sample
    times, their values). The newest sample within the lookback delta counts, unless it is a
    stale marker."""
    with store.lock:
        lt, lv = store.latest(ids)
    if ids.size and bool(np.all((lt <= t) | np.isnan(lt))):
        # Evaluating at or after every series' newest sample (the daemon's and a replay's usual
        # case): the newest sample is the answer, no window search needed.
        have = np.nonzero(lt > t - lookback)[0]
        fresh = ~is_stale(lv[have])
        return have[fresh], lt[have][fresh], lv[have][fresh]
    wt, wv, offsets = store.windows(ids, t - lookback, t)
    lens = np.diff(offsets)
    have = np.nonzero(lens > 0)[0]
    last = offsets[have + 1] - 1
    times, values = wt[last], wv[last]
    fresh = ~is_stale(values)
    return have[fresh], times[fresh], values[fresh]


def read_back_seconds(expr: pp.Expr, lookback_delta: float = 300.0) -> float:
    """How far back from the evaluation time an expression reads raw samples: the longest
    range plus offset of its range selectors and subqueries (nested ones add up), or the
    lookback delta plus offset of an instant selector. `@` pins a selector to a fixed time, and
    is counted like its offset alone (the rule cannot know the time). 0 for no selector."""

    def seconds(td: object) -> float:
        return float(td.total_seconds()) if td is not None else 0.0  # type: ignore[attr-defined]

    def offset(node: pp.Expr) -> float:
        return max(0.0, seconds(getattr(node, "offset", None)))

    def walk(e: pp.Expr, base: float) -> float:
        if isinstance(e, pp.VectorSelector):
            return base + offset(e) + lookback_delta
        if isinstance(e, pp.MatrixSelector):
            vs = e.vector_selector
            return base + offset(vs) + seconds(e.range)
        if isinstance(e, pp.SubqueryExpr):
            return walk(e.expr, base + offset(e) + seconds(e.range))
        best = 0.0
        for child in _children(e):
            best = max(best, walk(child, base))
        return best

    return walk(expr, 0.0)


def _children(e: pp.Expr) -> list[pp.Expr]:
    if isinstance(e, (pp.ParenExpr, pp.UnaryExpr)):
        return [e.expr]
    if isinstance(e, pp.BinaryExpr):
        return [e.lhs, e.rhs]
    if isinstance(e, pp.AggregateExpr):
        return [x for x in (e.expr, e.param) if x is not None]
    if isinstance(e, pp.Call):
        return list(e.args)
    return []
