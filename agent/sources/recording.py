"""Recorded samples for `forewarn backtest`: read from a CSV file or a Prometheus-compatible
server, held as time-sorted arrays, and fed into a `Store` tick by tick.

CSV formats (the header row decides which; `#` lines and blank lines are skipped):

- long:  `timestamp,series,value`, one sample per row; `series` in PromQL series notation,
  `node_filesystem_avail_bytes{mountpoint="/var",host="db-7"}` (quote the field, as CSV
  requires for commas). Also accepted: `metric,labels,timestamp,value` with `labels` as
  `{name="value",...}` (or empty).
- wide:  `timestamp,<series>,<series>,...`, one row per time, one column per series
  (column headers in the same series notation); an empty cell is no sample.

Timestamps are Unix seconds (`1700000000`, `1700000000.5`) or RFC 3339
(`2026-11-01T12:00:00Z`, `2026-11-01T12:00:00+01:00`; no offset means UTC). Values are
numbers, `NaN`, `+Inf`/`-Inf`, or `stale` (a Prometheus stale marker). Rows need not be
sorted. Every bad row is reported as `PATH:LINE: message` (at most MAX_ERRORS of them).

From a server, `fetch_recording` reads the raw samples of each selector in chunks with the
query source's own HTTP code (`agent.sources.query.QuerySource`: a range selector in an
instant query returns the stored samples, not resampled ones).

Imports `agent.store`, `agent.config`, `agent.promql` (series notation) and the query source;
never rules, tickets, web, the pipeline or the daemon.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.clock import parse_time
from agent.config.decode import Duration
from agent.config.schema import QueryConfig
from agent.promql.notation import parse_metric
from agent.sources.query import QueryError, QuerySource
from agent.store import STALE_NAN, Labels, Store, make_labels

MAX_ERRORS = 20
LONG_HEADER = ("timestamp", "series", "value")
LONG4_HEADER = ("metric", "labels", "timestamp", "value")


class ReplayInputError(Exception):
    """Unreadable input; `messages` are `PATH:LINE: message` lines."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


@dataclass
class Recording:
    """Samples of many series, sorted by time (stable: file order within one timestamp).

    `labels[i]` is series i; `t`, `series`, `v` are parallel arrays (seconds, series index,
    value). Empty recordings have zero-length arrays."""

    labels: list[Labels]
    t: np.ndarray
    series: np.ndarray
    v: np.ndarray

    @classmethod
    def from_arrays(cls, labels: list[Labels], t: np.ndarray, series: np.ndarray, v: np.ndarray) -> Recording:
        order = np.argsort(t, kind="stable")
        return cls(labels, np.asarray(t, dtype=np.float64)[order], np.asarray(series, dtype=np.int64)[order],
                   np.asarray(v, dtype=np.float64)[order])

    def __len__(self) -> int:
        return int(self.t.size)

    def window(self, start: float | None, end: float | None) -> Recording:
        """The samples with start <= t <= end (None: unbounded)."""
        lo = 0 if start is None else int(np.searchsorted(self.t, start, side="left"))
        hi = len(self) if end is None else int(np.searchsorted(self.t, end, side="right"))
        return Recording(self.labels, self.t[lo:hi], self.series[lo:hi], self.v[lo:hi])

    def samples_per_series(self) -> np.ndarray:
        return np.bincount(self.series, minlength=len(self.labels))

    def series_values(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(t, v) of series i."""
        m = self.series == i
        return self.t[m], self.v[m]

    def median_interval(self) -> float:
        """Typical spacing of one series' samples (seconds; 60 when unknown)."""
        counts = self.samples_per_series()
        if not counts.size or counts.max() < 2:
            return 60.0
        t, _ = self.series_values(int(np.argmax(counts)))
        return float(np.median(np.diff(t))) or 60.0


# ---- parsing helpers ----------------------------------------------------------------------------


def parse_value(text: str) -> float:
    s = text.strip()
    if s.lower() == "stale":
        return STALE_NAN
    try:
        return float(s)
    except ValueError:
        raise ValueError(f"bad value {s!r} (want a number, NaN, +Inf, -Inf or stale)") from None


class _SeriesNames:
    """Series notation -> index in `labels`, parsed once per distinct text."""

    def __init__(self) -> None:
        self.labels: list[Labels] = []
        self._index: dict[Labels, int] = {}
        self._by_text: dict[str, int] = {}

    def index(self, text: str) -> int:
        """The index of the series written as `text`; raises ValueError."""
        i = self._by_text.get(text)
        if i is None:
            i = self._by_text[text] = self.add(parse_series(text))
        return i

    def add(self, lab: Labels) -> int:
        """The index of the series `lab`, added if new."""
        i = self._index.get(lab)
        if i is None:
            i = self._index[lab] = len(self.labels)
            self.labels.append(lab)
        return i


def parse_series(text: str) -> Labels:
    """`name{a="b",...}` -> canonical labels. Raises ValueError."""
    lab = parse_metric(text)
    if not lab:
        raise ValueError(f"empty series {text!r}")
    return lab


# ---- CSV --------------------------------------------------------------------------------------


def read_csv(path: str) -> Recording:
    """Read a long or wide CSV (see the module docstring). Raises ReplayInputError."""
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise ReplayInputError([f"{path}:0: cannot read file: {e.strerror}"]) from None
    with f:
        rows = ((n, r) for n, r in enumerate(csv.reader(f), start=1)
                if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#"))
        try:
            lineno, header = next(rows)
        except StopIteration:
            raise ReplayInputError([f"{path}:1: empty file (want a header row)"]) from None
        except (csv.Error, UnicodeDecodeError) as e:
            raise ReplayInputError([f"{path}:1: {e}"]) from None
        head = tuple(c.strip().lower() for c in header)
        if head == LONG_HEADER or head == LONG4_HEADER:
            return _read_long(path, rows, head == LONG4_HEADER)
        if head and head[0] == "timestamp" and len(head) >= 2:
            return _read_wide(path, lineno, header, rows)
        raise ReplayInputError([
            f"{path}:{lineno}: unknown header {','.join(header)!r}: want 'timestamp,series,value' (long), "
            "'metric,labels,timestamp,value' (long) or 'timestamp,<series>,<series>...' (wide)"])


def _rows_checked(path: str, rows: Iterable[tuple[int, list[str]]], errors: list[str]) -> Iterable[tuple[int, list[str]]]:
    it = iter(rows)
    while True:
        try:
            yield next(it)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as e:
            errors.append(f"{path}:?: {e}")
            return


def _raise_if(errors: list[str]) -> None:
    if errors:
        if len(errors) > MAX_ERRORS:
            errors = errors[:MAX_ERRORS] + [f"... and {len(errors) - MAX_ERRORS} more errors"]
        raise ReplayInputError(errors)


def _read_long(path: str, rows: Iterable[tuple[int, list[str]]], four: bool) -> Recording:
    names = _SeriesNames()
    ts: list[float] = []
    idx: list[int] = []
    vals: list[float] = []
    errors: list[str] = []
    width = 4 if four else 3
    for lineno, r in _rows_checked(path, rows, errors):
        if len(r) != width:
            errors.append(f"{path}:{lineno}: want {width} fields, got {len(r)}")
            continue
        try:
            if four:
                metric, labels, tcell, vcell = r
                labels = labels.strip()
                if labels and not labels.startswith("{"):
                    labels = "{" + labels + "}"
                series = metric.strip() + labels
            else:
                tcell, series, vcell = r
            i = names.index(series.strip())
            t = parse_time(tcell)
            v = parse_value(vcell)
        except ValueError as e:
            errors.append(f"{path}:{lineno}: {e}")
            continue
        ts.append(t)
        idx.append(i)
        vals.append(v)
        if len(errors) > MAX_ERRORS:
            break
    _raise_if(errors)
    return Recording.from_arrays(names.labels, np.asarray(ts, dtype=np.float64), np.asarray(idx, dtype=np.int64),
                                 np.asarray(vals, dtype=np.float64))


def _read_wide(path: str, header_line: int, header: list[str], rows: Iterable[tuple[int, list[str]]]) -> Recording:
    names = _SeriesNames()
    errors: list[str] = []
    cols: list[int] = []
    for c, text in enumerate(header[1:], start=2):
        try:
            i = names.index(text.strip())
        except ValueError as e:
            errors.append(f"{path}:{header_line}: column {c}: {e}")
            continue
        if i in cols:
            errors.append(f"{path}:{header_line}: column {c}: series {text.strip()!r} appears twice")
        cols.append(i)
    _raise_if(errors)
    n = len(cols)
    times: list[float] = []
    blocks: list[np.ndarray] = []
    holes: list[tuple[int, int]] = []  # (row, column) of empty cells
    for lineno, r in _rows_checked(path, rows, errors):
        if len(r) != n + 1:
            errors.append(f"{path}:{lineno}: want {n + 1} fields (timestamp and {n} series), got {len(r)}")
            continue
        try:
            t = parse_time(r[0])
        except ValueError as e:
            errors.append(f"{path}:{lineno}: {e}")
            continue
        times.append(t)
        blocks.append(_wide_row(r[1:], f"{path}:{lineno}", len(blocks), holes, errors))
        if len(errors) > MAX_ERRORS:
            break
    _raise_if(errors)
    if not blocks:
        return Recording(names.labels, np.empty(0), np.empty(0, dtype=np.int64), np.empty(0))
    grid = np.vstack(blocks)  # rows x series
    present = np.ones(grid.shape, dtype=bool)
    if holes:
        hr, hc = np.asarray(holes).T
        present[hr, hc] = False
    ts = np.repeat(np.asarray(times, dtype=np.float64), n)[present.ravel()]
    ss = np.tile(np.asarray(cols, dtype=np.int64), len(times))[present.ravel()]
    return Recording.from_arrays(names.labels, ts, ss, grid.ravel()[present.ravel()])


def _wide_row(cells: list[str], where: str, row: int, holes: list[tuple[int, int]], errors: list[str]) -> np.ndarray:
    """One wide row's values; empty cells are recorded in `holes`, bad ones in `errors`."""
    try:
        return np.array(cells, dtype=np.float64)  # fast path: every cell a plain number
    except ValueError:
        pass
    values = np.zeros(len(cells))
    for c, cell in enumerate(cells):
        if not cell.strip():
            holes.append((row, c))
            continue
        try:
            values[c] = parse_value(cell)
        except ValueError as e:
            errors.append(f"{where}: column {c + 2}: {e}")
    return values


# ---- Prometheus-compatible server ----------------------------------------------------------------

FETCH_CHUNK_SECONDS = 6 * 3600.0  # one request covers at most this much history
FETCH_TIMEOUT_SECONDS = 60.0
MAX_FETCH_SAMPLES = 50_000_000  # bounded: a backtest that needs more should narrow --query


def fetch_recording(url: str, selectors: list[str], start: float, end: float,
                    session: Any = None, timeout: float = FETCH_TIMEOUT_SECONDS) -> Recording:
    """Raw samples with start <= t <= end of each selector from a Prometheus-compatible server.
    Raises ReplayInputError (with the server's message) when a request fails."""
    cfg = QueryConfig(name="backtest", url=url, queries=list(selectors))
    cfg.timeout = Duration(timeout)
    # Only the source's HTTP exchange (auth, timeout, status and error handling) is used;
    # the store it is given stays empty.
    source = QuerySource(cfg, Store(raw_capacity=2, max_series=1), session=session)
    chunks = _Chunks(url)
    end = round(end, 3)
    for selector in selectors:
        # Windows are (lo, hi] on the millisecond grid the API's `time` parameter uses;
        # starting 1 ms early includes a sample exactly at `start`.
        lo = round(start, 3) - 0.001
        while lo < end:
            hi = round(min(end, lo + FETCH_CHUNK_SECONDS), 3)
            rng = max(1, int(math.ceil(hi - lo)))
            try:
                result = source._get({"query": f"{selector}[{rng}s]", "time": f"{hi:.3f}"})
            except QueryError as e:
                raise ReplayInputError([f"{url}: query {selector!r}: {e}"]) from None
            for series in result:
                chunks.add(series, lo, hi)
            lo = hi
    return chunks.recording()


class _Chunks:
    """The samples fetched so far, per series; chunks overlap by a rounding second, so each
    series keeps only samples newer than its last."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.names = _SeriesNames()
        self.t: list[np.ndarray] = []
        self.s: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.total = 0
        self.last: dict[int, float] = {}

    def add(self, series: dict[str, Any], lo: float, hi: float) -> None:
        i = self.names.add(make_labels(None, series["metric"]))
        values = series.get("values") or []
        if not values:
            return
        t = np.fromiter((float(p[0]) for p in values), dtype=np.float64, count=len(values))
        v = np.fromiter((float(p[1]) for p in values), dtype=np.float64, count=len(values))
        keep = (t > max(lo, self.last.get(i, -np.inf))) & (t <= hi)
        t, v = t[keep], v[keep]
        if t.size:
            self.last[i] = float(t[-1])
        self.t.append(t)
        self.s.append(np.full(t.size, i, dtype=np.int64))
        self.v.append(v)
        self.total += t.size
        if self.total > MAX_FETCH_SAMPLES:
            raise ReplayInputError([f"{self.url}: more than {MAX_FETCH_SAMPLES} samples; narrow --query or --from/--to"])

    def recording(self) -> Recording:
        if not self.t:
            return Recording(self.names.labels, np.empty(0), np.empty(0, dtype=np.int64), np.empty(0))
        return Recording.from_arrays(self.names.labels, np.concatenate(self.t), np.concatenate(self.s),
                                     np.concatenate(self.v))


# ---- feeding a store --------------------------------------------------------------------------


def store_for(recording: Recording, raw_window: float) -> Store:
    """A Store sized for the recording: raw rings hold `raw_window` seconds of the densest
    series (PromQL ranges and model warm-ups read raw samples), history spans the data."""
    counts = recording.samples_per_series()
    step = max(recording.median_interval(), 1e-3)
    per_window = int(math.ceil(raw_window / step * 1.25)) + 16
    cap = max(16, min(int(counts.max(initial=0)) + 1, per_window))
    span = float(recording.t[-1] - recording.t[0]) if len(recording) else 0.0
    return Store(raw_capacity=cap, retention=max(span + 86400.0, 86400.0), downsample_interval=300.0,
                 max_series=max(len(recording.labels), 1) + 10_000, stale_after=math.inf)


class Feeder:
    """Appends a recording's samples to a store in time order, up to a given time."""

    def __init__(self, recording: Recording, store: Store) -> None:
        self.rec = recording
        self.store = store
        self.ids = store.series_ids(recording.labels) if recording.labels else np.empty(0, dtype=np.int64)
        self.pos = 0
        # Samples sharing one timestamp go in with one vectorised append; runs are precomputed.
        t = recording.t
        self._run_ends = np.flatnonzero(np.diff(t) != 0) + 1 if t.size else np.empty(0, dtype=np.int64)
        # Store.append wants distinct ids; check once whether any series repeats within a timestamp.
        self._repeats = _repeats_within_runs(t, recording.series)

    def feed_until(self, until: float) -> int:
        """Append every sample with t <= until not appended yet; returns how many."""
        hi = int(np.searchsorted(self.rec.t, until, side="right"))
        lo = self.pos
        if hi <= lo:
            return 0
        t, s, v = self.rec.t, self.rec.series, self.rec.v
        ends = self._run_ends
        a = int(np.searchsorted(ends, lo, side="right"))
        b = int(np.searchsorted(ends, hi, side="left"))
        bounds = [lo] + ends[a:b].tolist() + [hi]
        if len(bounds) - 1 > 4 * len(self.rec.labels):
            # many distinct timestamps (unaligned series): one extend per series is cheaper
            seg_s = s[lo:hi]
            order = np.argsort(seg_s, kind="stable")
            seg_s, seg_t, seg_v = seg_s[order], t[lo:hi][order], v[lo:hi][order]
            cuts = np.flatnonzero(np.diff(seg_s)) + 1
            for st, tt, vv in zip(np.split(seg_s, cuts), np.split(seg_t, cuts), np.split(seg_v, cuts)):
                tt, first = np.unique(tt, return_index=True)  # duplicate timestamps: first wins
                self.store.extend(int(self.ids[st[0]]), tt, vv[first])
        else:
            for x, y in zip(bounds[:-1], bounds[1:]):
                if self._repeats:
                    ids, first = np.unique(self.ids[s[x:y]], return_index=True)  # a repeat: first wins
                    self.store.append(ids, t[x], v[x:y][first])
                else:
                    self.store.append(self.ids[s[x:y]], t[x], v[x:y])
        self.pos = hi
        return hi - lo


def _repeats_within_runs(t: np.ndarray, series: np.ndarray) -> bool:
    """Whether some series has two samples with the same timestamp."""
    if not t.size:
        return False
    order = np.lexsort((series, t))
    ts, ss = t[order], series[order]
    return bool(np.any((np.diff(ts) == 0) & (np.diff(ss) == 0)))
