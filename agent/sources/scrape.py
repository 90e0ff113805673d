"""The `scrape_configs` source: Prometheus /metrics targets, scraped like Prometheus does.

One `ScrapeTarget` per (job, target address). `ScrapeManager.scrape(target)` does one scrape:
an HTTP GET under a whole-request deadline, the body parsed (text 0.0.4 or OpenMetrics, by
Content-Type), the samples written to the store at the scrape timestamp with the target's
labels, stale markers for series that vanished, and the synthetic series (`up`,
`scrape_duration_seconds`, ...). A failed scrape (timeout, connection, HTTP status, body or
sample or label limit, malformed body) stores none of its samples, marks the target's series
stale and writes `up 0`.

The daemon schedules one job per target (APScheduler, thread pool): `scrape()` serialises
scrapes of one target on a per-target lock and shares nothing else between targets except
the store, which has its own lock, so a slow target never delays another.

Per target, a cache maps each series' text as exposed (`name{labels}`, the bytes of the line
before its value, as Prometheus's scrape cache does) to a slot holding its final label set and
store id, so a repeated scrape skips label parsing and relabelling: per line, a split and one
dict look-up; values are converted and appended for the whole scrape in a few numpy calls, with
no Python object per sample.

Limits, as Prometheus names them: `sample_limit`, `body_size_limit`, `label_limit`,
`label_name_length_limit`, `label_value_length_limit` fail the scrape; `series_limit` (per
target, default an equal share of max_series) refuses a target's new series beyond it, so one
target cannot starve the others, and the store keeps a reserve for the agent's own series.
Samples are rejected and counted (`forewarn_scrape_samples_rejected_total{reason}`) when their
own timestamp is too far in the future or too old for the store (`out_of_bounds`), and when
they would overwrite the agent's report series for the target (`up`, `scrape_*`: honor_labels
or not, a target cannot override them).

The manager exports the scrape counters (`collect()`). HTTP lives in `scrape_http`, imported
with the first target, so this module never imports requests; nor rules, tickets or web.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlencode

import numpy as np

from agent import ints
from agent.clock import Clock
from agent.config.schema import Config, ScrapeConfig
from agent.metrics import CounterMetricFamily, GaugeMetricFamily, Metric
from agent.sources import exposition
from agent.store import Labels, Store, make_labels

if TYPE_CHECKING:
    import requests

    from agent.sources.scrape_http import TargetClient

log = logging.getLogger(__name__)

# Why a scrape failed; every target's counters carry all of them (zero until it happens).
FAILURE_REASONS = (
    "timeout",
    "connection",
    "http_status",
    "body_size_limit",
    "sample_limit",
    "parse_error",
    "label_limit",
    "credentials",  # a bearer token or password file could not be read
)
# Why single samples of a successful scrape were not stored.
REJECT_REASONS = (
    "too_far_in_future",  # an explicit timestamp more than FUTURE_TOLERANCE ahead of the scrape
    "out_of_bounds",  # an explicit timestamp older than the store keeps (Prometheus's term)
    "series_limit",  # a new series over the target's series_limit or the store's max_series
    "reserved",  # a series the agent writes itself for the target (up, scrape_*)
    "duplicate",  # the same series twice in one body: the first is kept
)
FUTURE_TOLERANCE = 600.0  # seconds an explicit timestamp may run ahead of the agent's clock
REPORT_NAMES = ("up", "scrape_duration_seconds", "scrape_samples_scraped",
                "scrape_samples_post_metric_relabeling", "scrape_series_added")


@dataclass(frozen=True)
class ScrapeTarget:
    """One target of one job. `labels` are its target labels (job, instance, static labels),
    sorted; `key` is unique within a manager."""

    key: str
    job: str
    instance: str
    url: str
    labels: Labels
    interval_seconds: float
    timeout_seconds: float
    config: ScrapeConfig
    bearer_token_path: str = ""
    password_path: str = ""
    ca_path: str = ""


@dataclass
class ScrapeResult:
    """The outcome of one scrape. `failure` is one of FAILURE_REASONS, None when up."""

    target: ScrapeTarget
    timestamp: float  # the scrape timestamp (clock time at its start), Unix seconds
    up: bool
    failure: str | None = None
    error: str = ""
    duration_seconds: float = 0.0
    samples_scraped: int = 0  # samples in the body (also when over sample_limit)
    samples_stored: int = 0  # samples the store accepted (not refused or out of order)
    series_added: int = 0  # series not in the previous scrape
    stale_marked: int = 0  # series given a stale marker by this scrape


@dataclass
class TargetStats:
    """Per-target counters for the agent's self-metrics."""

    key: str
    job: str
    instance: str
    url: str
    up: bool | None = None  # None until the first scrape finishes
    scrapes_total: int = 0
    failures_total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_REASONS, 0))
    last_duration_seconds: float = 0.0
    last_error: str = ""  # never carries credentials
    last_scrape_timestamp: float = 0.0
    last_samples_scraped: int = 0
    rejected_total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECT_REASONS, 0))
    series: int = 0  # series the target holds (its cache's stored series)


@dataclass(frozen=True)
class TargetMetadata:
    """A target and the metadata of its families, by the name its TYPE/HELP lines give."""

    target: ScrapeTarget
    families: dict[str, exposition.Metadata]


class ScrapeFailure(Exception):
    """A failed scrape with its reason (one of FAILURE_REASONS)."""

    def __init__(self, reason: str, message: str, samples_scraped: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.samples_scraped = samples_scraped


class Body(NamedTuple):
    """A fetched exposition: its text and the Content-Type it came with (None: not sent)."""

    text: str
    content_type: str | None


@dataclass
class _IngestOutcome:
    samples_scraped: int
    samples_stored: int
    series_added: int
    stale_marked: int


_RESERVED = -2  # slot id of a series the agent writes itself for the target


# A target whose body is not plain (see exposition.scan_text) is scanned line by line for this
# many scrapes before the faster path is tried again.
PLAIN_RETRY_SCRAPES = 20


class _TargetState:
    """What one target remembers between scrapes. Guarded by `lock` (one scrape at a time).

    The scrape cache: `slots` maps each exposed series key to a slot; slot i holds the final
    label set `slot_labels[i]` and the store id `slot_ids[i]` (_RESERVED for the agent's own
    series). `previous` are the store ids of the last scrape's series tracked for staleness."""

    def __init__(self, target: ScrapeTarget, client: TargetClient) -> None:
        self.target = target
        self.lock = threading.Lock()
        self.client = client
        self.slots: dict[Hashable, int] = {}
        self.slot_labels: list[Labels] = []
        self.slot_ids = np.zeros(0, dtype=np.int64)
        self.removals = -1  # the store's removal count the ids were checked against
        self.previous = np.zeros(0, dtype=np.int64)
        self.last_slots: np.ndarray | None = None  # the last scrape's slots, to spot an unchanged body
        # The last scrape's keys as the cache's own key objects (`slot_keys[slot]`): a body with
        # the same keys in the same order reuses `last_slots` without a look-up per line.
        self.slot_keys: list[Hashable] = []
        self.last_keys: list[Hashable] | None = None
        # Scrapes to go before that column-at-a-time scan is tried again on a body that did not
        # have its shape (a label value with a space, timestamps): a failed try costs a little.
        self.plain_skip = 0
        self.metadata: dict[str, exposition.Metadata] = {}  # TYPE/HELP/UNIT of the last good scrape
        self.report_labels = {name: make_labels(name, target.labels) for name in REPORT_NAMES}
        self.stats = TargetStats(target.key, target.job, target.instance, target.url)

    def forget_series(self) -> None:
        self.slots, self.slot_labels, self.slot_ids = {}, [], np.zeros(0, dtype=np.int64)
        self.slot_keys, self.last_slots = [], None


def build_targets(config: Config) -> list[ScrapeTarget]:
    """Targets of every job, in config order. The same address listed twice in a job with the
    same labels is one target, as in Prometheus."""
    out: list[ScrapeTarget] = []
    keys: set[str] = set()
    seen: set[tuple[str, Labels]] = set()
    for sc in config.scrape_configs:
        interval, timeout = config.scrape_interval(sc), config.scrape_timeout(sc)
        query = f"?{urlencode(sc.params)}" if sc.params else ""
        for static in sc.static_configs:
            for address in static.targets:
                # Like Prometheus: static labels may set job and instance themselves.
                lab = {"job": sc.job_name, **static.labels}
                lab["instance"] = static.labels.get("instance") or address
                labels = make_labels(None, lab)
                if (sc.job_name, labels) in seen:
                    continue
                seen.add((sc.job_name, labels))
                key = f"{sc.job_name}/{address}"
                n = 2
                while key in keys:
                    key = f"{sc.job_name}/{address}#{n}"
                    n += 1
                keys.add(key)
                out.append(ScrapeTarget(
                    key=key,
                    job=lab["job"],
                    instance=lab["instance"],
                    url=f"{sc.scheme}://{address}{sc.metrics_path}{query}",
                    labels=labels,
                    interval_seconds=interval,
                    timeout_seconds=timeout,
                    config=sc,
                    bearer_token_path=config.resolve_path(sc.bearer_token_file),
                    password_path=config.resolve_path(sc.basic_auth_password_file),
                    ca_path=config.resolve_path(sc.ca_file),
                ))
    return out


class ScrapeManager:
    """Scrapes the targets of `config.scrape_configs` into `store`, stamping with `clock`, and
    exports the scrape counters as metric families (`collect()`; register it in the registry).

    `session_factory` makes one HTTP session per target (connection reuse; tests pass their
    own). Nothing happens at construction beyond building the target list. The manager lives
    as long as the agent: a reload changes its targets and keeps the counters of those it keeps.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        session_factory: Callable[[], requests.Session] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self._session_factory = session_factory
        self._states: dict[str, _TargetState] = {}
        self._lock = threading.Lock()  # guards _states and every TargetStats
        self.reload(config)

    # ---- targets ------------------------------------------------------------------------------

    def targets(self) -> list[ScrapeTarget]:
        with self._lock:
            return [s.target for s in self._states.values()]

    def reload(self, config: Config) -> None:
        """Switch to a new config. Unchanged targets keep their caches and staleness state;
        removed ones get stale markers on all their series, like Prometheus."""
        new_targets = build_targets(config)
        with self._lock:
            old = self._states
            states: dict[str, _TargetState] = {}
            for t in new_targets:
                prev = old.get(t.key)
                if prev is not None and prev.target == t:
                    states[t.key] = prev
                    continue
                state = states[t.key] = _TargetState(t, self._client(t))
                if prev is not None:
                    # Same target, new settings: label sets may change, so the series cache
                    # starts empty, but staleness and counters carry on.
                    # Report series whose labels changed end at its next scrape.
                    old_reports = set(prev.report_labels.values()) - set(state.report_labels.values())
                    state.previous = np.union1d(prev.previous, self._existing_ids(old_reports))
                    state.stats = prev.stats
                    state.stats.job, state.stats.instance, state.stats.url = t.job, t.instance, t.url
                if t.config.insecure_skip_verify and t.config.scheme == "https":
                    log.warning("scrape target %s: TLS certificate verification is disabled", t.key)
            self._states = states
            removed = [s for k, s in old.items() if k not in states]
            replaced = [s for k, s in old.items() if k in states and states[k] is not s]
        for s in removed:
            self._retire(s, stale_markers=True)
        for s in replaced:
            self._retire(s, stale_markers=False)

    def _client(self, target: ScrapeTarget) -> TargetClient:
        # Only agents with scrape targets pay for the HTTP stack (requests, urllib3, ssl: ~150 modules).
        from agent.sources.scrape_http import TargetClient  # noqa: PLC0415 - costly optional import, see above

        return TargetClient(target, self._session_factory() if self._session_factory is not None else None)

    def close(self, stale_markers: bool = False) -> None:
        """Stop: close sessions; with `stale_markers`, end every target's series (as when
        targets are removed). A daemon shutting down leaves them as they are."""
        with self._lock:
            states, self._states = list(self._states.values()), {}
        for s in states:
            self._retire(s, stale_markers)

    def _retire(self, state: _TargetState, stale_markers: bool) -> None:
        with state.lock:
            if stale_markers:
                ts = self.clock.now()
                reports = self._existing_ids(set(state.report_labels.values()))
                self.store.mark_stale(np.union1d(state.previous, reports).tolist(), ts)
                state.previous = np.zeros(0, dtype=np.int64)
            state.client.close()

    def _state(self, target: ScrapeTarget) -> _TargetState:
        with self._lock:
            state = self._states.get(target.key)
        if state is None:
            raise KeyError(f"unknown scrape target {target.key!r} (removed by a reload?)")
        return state

    # ---- one scrape ---------------------------------------------------------------------------

    def scrape(self, target: ScrapeTarget) -> ScrapeResult:
        """Scrape `target` once and write the outcome to the store. Never raises for a target
        problem: the result (and the stats) say what went wrong."""
        state = self._state(target)
        with state.lock:
            ts = float(self.clock.now())
            deadline = time.monotonic() + target.timeout_seconds
            return self._run(state, ts, lambda: state.client.fetch(deadline))

    def ingest(self, target: ScrapeTarget, body: str, content_type: str | None, ts: float) -> ScrapeResult:
        """Write an already fetched body as a scrape of `target` at `ts` (replays, benchmarks)."""
        state = self._state(target)
        with state.lock:
            return self._run(state, ts, lambda: Body(body, content_type))

    def _run(self, state: _TargetState, ts: float, fetch: Callable[[], Body]) -> ScrapeResult:
        start = time.monotonic()
        result = ScrapeResult(state.target, ts, up=False)
        try:
            body = fetch()
            outcome = self._ingest(state, body.text, body.content_type, ts)
        except ScrapeFailure as f:
            result.failure, result.error, result.samples_scraped = f.reason, f.message, f.samples_scraped
            result.stale_marked = self._stale_all(state, ts)
        else:
            result.up = True
            result.samples_scraped, result.samples_stored = outcome.samples_scraped, outcome.samples_stored
            result.series_added, result.stale_marked = outcome.series_added, outcome.stale_marked
        result.duration_seconds = time.monotonic() - start
        self._write_report(state, result)
        self._record(state, result)
        return result

    # ---- samples into the store ---------------------------------------------------------------

    def _ingest(self, state: _TargetState, body: str, content_type: str | None, ts: float) -> _IngestOutcome:
        sc = state.target.config
        if state.removals != self.store.removals:  # series were expired: re-check the cached ids
            self._refresh_ids(state)
        try:
            previous = None
            if state.last_slots is not None and state.last_keys is not None:
                previous = exposition.Previous(state.last_keys, state.last_slots)
            tried = state.plain_skip == 0 and bool(state.slots)
            scanned = exposition.scan(body, content_type, state.slots, previous, plain=tried)
            if scanned.plain is False:
                state.plain_skip = PLAIN_RETRY_SCRAPES
            elif not tried and state.plain_skip:
                state.plain_skip -= 1
        except exposition.ParseError as e:
            raise ScrapeFailure("parse_error", str(e)) from None
        n = len(scanned.keys)
        if sc.sample_limit and n > sc.sample_limit:
            raise ScrapeFailure("sample_limit", f"sample limit exceeded: {n} samples, limit {sc.sample_limit}", n)
        # Bounded like the samples: no more families than the sample limit allows.
        state.metadata = exposition.parse_metadata(body, limit=sc.sample_limit or 10000)
        store = self.store
        slots = np.asarray(scanned.slots, dtype=np.int64)
        if n and slots.min() < 0:
            slots = self._new_series(state, scanned, slots)
        rejected = dict.fromkeys(REJECT_REASONS, 0)
        ids = np.where(slots >= 0, state.slot_ids[np.maximum(slots, 0)], -1)
        rejected["series_limit"] = int(np.count_nonzero(slots == -1))
        rejected["reserved"] = int(np.count_nonzero(ids == _RESERVED))
        ok = ids >= 0
        values = scanned.values
        stamps = scanned.timestamps if sc.honor_timestamps else None
        tracked = ok
        if stamps is not None:
            own = ~np.isnan(stamps)
            future = own & (stamps > ts + FUTURE_TOLERANCE)
            old = own & (stamps <= ts - store.retention)
            rejected["too_far_in_future"] = int(np.count_nonzero(future & ok))
            rejected["out_of_bounds"] = int(np.count_nonzero(old & ok))
            ok = ok & ~future & ~old
            tracked = ok & ~own  # series with their own timestamps are not tracked for staleness
        if not ok.all():
            ids, values, tracked = ids[ok], values[ok], tracked[ok]
            if stamps is not None:
                stamps = stamps[ok]
        # A series twice in one body: the first wins. Cheap check first (no sort on the usual body).
        if ids.size and np.bincount(ids).max() > 1:
            _, first = np.unique(ids, return_index=True)
            rejected["duplicate"] = int(ids.size - first.size)
            ids, values, tracked = ids[first], values[first], tracked[first]
            if stamps is not None:
                stamps = stamps[first]
        ts_arr: np.ndarray | float = ts if stamps is None else np.where(np.isnan(stamps), ts, stamps)
        stored = store.append(ids, ts_arr, values)
        current = ids[tracked] if not tracked.all() else ids
        unchanged = state.last_slots is not None and np.array_equal(state.last_slots, slots)
        if unchanged and current.size == state.previous.size:
            added, stale = 0, np.zeros(0, dtype=np.int64)
        else:
            current = np.sort(current)
            stale = np.setdiff1d(state.previous, current, assume_unique=True)
            added = int(current.size - np.intersect1d(state.previous, current, assume_unique=True).size)
        store.mark_stale(stale.tolist(), ts)
        state.previous = current
        state.last_slots = slots
        state.last_keys = self._last_keys(state, scanned, slots)
        if len(state.slots) > 2 * n + 1024:  # forget series gone for good; keeps the cache bounded
            self._compact_cache(state, slots)
        with self._lock:
            for k, v in rejected.items():
                state.stats.rejected_total[k] += v
            state.stats.series = int(np.count_nonzero(state.slot_ids >= 0))
        return _IngestOutcome(n, stored, added, int(stale.size))

    def _series_limit(self, state: _TargetState) -> int:
        """The target's quota: its job's series_limit, else an equal share of max_series."""
        if state.target.config.series_limit:
            return state.target.config.series_limit
        with self._lock:
            targets = max(1, len(self._states))
        return max(1, self.store.max_series // targets)

    def _new_series(self, state: _TargetState, scanned: exposition.Scanned, slots: np.ndarray) -> np.ndarray:
        """Give slots to the keys not in the cache: parse, merge target labels, check the label
        limits (a failure fails the scrape, as in Prometheus) and the series quota (over it:
        slot -1, not cached, tried again next scrape)."""
        t = state.target
        reserved = set(state.report_labels.values())
        held = int(np.count_nonzero(state.slot_ids >= 0))
        limit = self._series_limit(state)
        n = len(scanned.keys)
        # Every new series' labels first: a label limit fails the scrape before any is created.
        # Parallel lists, the label sets built from shared pairs (`Store.shared_labels`): the
        # parsed copies go at once, so a first scrape of 100,000 series leaves no pile of
        # freed objects behind (pymalloc keeps such pools resident).
        found_keys: list[Hashable] = []
        found_labels: list[Labels] = []
        found_line: list[int] = []
        seen: dict[Hashable, int] = {}
        repeats: dict[int, list[int]] = {}  # the same new series twice in one body: its other lines
        pairs: dict[tuple[str, str], tuple[str, str]] = {}
        shared = self.store.shared_labels
        for i in np.nonzero(slots < 0)[0].tolist():
            key = scanned.keys[i]
            j = seen.get(key)
            if j is not None:
                repeats.setdefault(j, []).append(i)
                continue
            if isinstance(key, tuple):
                name, own = key
            else:
                try:
                    name, own = exposition.parse_series(str(key))
                except exposition.ParseError as e:
                    located = exposition.ParseError(scanned.line_of(i), e.message)
                    raise ScrapeFailure("parse_error", str(located)) from None
            seen[key] = len(found_keys)
            found_keys.append(key)
            found_labels.append(shared(self._target_labels(t, name, own, n), pairs))
            found_line.append(i)
        del seen, pairs
        new_labels: list[Labels] = []
        new_keys: list[Hashable] = []
        positions: list[int] = []
        for j, (key, labels, line) in enumerate(zip(found_keys, found_labels, found_line)):
            if labels in reserved:
                sid = _RESERVED
            elif held >= limit:
                continue  # refused: counted by the caller, not cached
            else:
                sid = self.store.series_id(labels, limited=True)
                if sid < 0:
                    continue
                labels = self.store.labels(sid)  # the store's interned copy: one label set per series
                held += 1
            slot = len(state.slot_labels) + len(new_labels)
            slots[line] = slot
            if repeats:
                slots[repeats.get(j, [])] = slot
            new_keys.append(key)
            new_labels.append(labels)
            positions.append(sid)
        if new_labels:
            for k, slot in zip(new_keys, ints.span(len(state.slot_labels), len(state.slot_labels) + len(new_labels))):
                state.slots[k] = slot
            state.slot_keys.extend(new_keys)
            state.slot_labels.extend(new_labels)
            state.slot_ids = np.concatenate((state.slot_ids, np.asarray(positions, dtype=np.int64)))
        return slots

    @staticmethod
    def _last_keys(state: _TargetState, scanned: exposition.Scanned, slots: np.ndarray) -> list[Hashable] | None:
        """The keys of this scrape for the next one to compare with, as the cache's own key
        objects (a body's fresh strings would double the keys' memory); None when a line has no
        slot (refused by the series limit)."""
        if state.last_keys is not None and scanned.keys is state.last_keys:
            return state.last_keys  # reused as they were
        if not slots.size or slots.min() < 0 or len(state.slot_keys) != len(state.slot_labels):
            return None
        keys = [state.slot_keys[int(slots[0])]] if slots.size == 1 else list(itemgetter(*slots.tolist())(state.slot_keys))
        return keys if len(keys) == len(scanned.keys) else None

    def _refresh_ids(self, state: _TargetState) -> None:
        get = self.store.get_id
        ids = state.slot_ids
        for i in np.nonzero(ids >= 0)[0].tolist():
            sid = get(state.slot_labels[i])
            ids[i] = -3 if sid is None else sid  # -3: expired; the key is parsed again if it returns
        gone = [k for k, slot in state.slots.items() if ids[slot] == -3]
        for k in gone:
            del state.slots[k]
        state.removals = self.store.removals
        state.last_slots = None

    def _compact_cache(self, state: _TargetState, slots: np.ndarray) -> None:
        keep = set(slots[slots >= 0].tolist())
        items = [(k, slot) for k, slot in state.slots.items() if slot in keep]
        state.slots = {k: i for i, (k, _) in zip(ints.span(0, len(items)), items)}
        state.slot_keys = [k for k, _ in items]
        state.slot_labels = [state.slot_labels[slot] for _, slot in items]
        state.slot_ids = state.slot_ids[np.asarray([slot for _, slot in items], dtype=np.int64)] if items else \
            np.zeros(0, dtype=np.int64)
        state.last_slots = None

    def _target_labels(self, t: ScrapeTarget, name: str | None, exposed: exposition.PairLabels | None,
                       n: int) -> Labels:
        """The stored label set of a new series: its own labels merged with the target's."""
        own = dict(exposed or ())
        sc = t.config
        for k, v in own.items():
            if sc.label_name_length_limit and len(k) > sc.label_name_length_limit:
                raise ScrapeFailure("label_limit", f"label name {k[:60]!r}... longer than label_name_length_limit "
                                    f"{sc.label_name_length_limit}", n)
            if sc.label_value_length_limit and len(v) > sc.label_value_length_limit:
                raise ScrapeFailure("label_limit", f"label {k!r} has a value of {len(v)} characters, longer than "
                                    f"label_value_length_limit {sc.label_value_length_limit}", n)
        if sc.honor_labels:
            for k, v in t.labels:
                if not own.get(k):
                    own[k] = v
        else:
            # As Prometheus does: target labels win; each exposed value they displace moves
            # to exported_<name> (or exported_exported_<name>, ... if that is taken).
            conflicts = [(k, own[k]) for k, _ in t.labels if own.get(k)]
            own.update(t.labels)
            for k, v in sorted(conflicts, key=lambda kv: len(kv[0])):
                new = "exported_" + k
                while own.get(new):
                    new = "exported_" + new
                own[new] = v
        labels = make_labels(name, own)
        if sc.label_limit and len(labels) > sc.label_limit:
            raise ScrapeFailure(
                "label_limit",
                f"label limit exceeded: {name[:60] if name else ''} has {len(labels)} labels, limit {sc.label_limit}",
                n,
            )
        return labels

    def _existing_ids(self, series: set[Labels] | Sequence[Labels]) -> list[int]:
        get = self.store.get_id
        return [sid for sid in (get(lab) for lab in series) if sid is not None]

    def _stale_all(self, state: _TargetState, ts: float) -> int:
        ids = state.previous.tolist()
        self.store.mark_stale(ids, ts)
        state.previous = np.zeros(0, dtype=np.int64)
        state.last_slots = None
        return len(ids)

    def _write_report(self, state: _TargetState, r: ScrapeResult) -> None:
        rl = state.report_labels
        self.store.append_samples([  # the agent's own series: the store's reserve, not the target's quota
            (rl["up"], 1.0 if r.up else 0.0),
            (rl["scrape_duration_seconds"], r.duration_seconds),
            (rl["scrape_samples_scraped"], float(r.samples_scraped)),
            (rl["scrape_samples_post_metric_relabeling"], float(r.samples_scraped if r.up else 0)),
            (rl["scrape_series_added"], float(r.series_added)),
        ], r.timestamp)

    # ---- reporting ----------------------------------------------------------------------------

    def _record(self, state: _TargetState, r: ScrapeResult) -> None:
        with self._lock:
            st = state.stats
            was_up = st.up
            st.up = r.up
            st.scrapes_total += 1
            if r.failure:
                st.failures_total[r.failure] = st.failures_total.get(r.failure, 0) + 1
            st.last_duration_seconds = r.duration_seconds
            st.last_error = r.error
            st.last_scrape_timestamp = r.timestamp
            st.last_samples_scraped = r.samples_scraped
        # One line per state change, not per scrape.
        if r.up and was_up is False:
            log.info("scrape target %s is up again (%s)", state.target.key, state.target.url)
        elif not r.up and was_up is not False:
            log.warning("scrape target %s is down (%s): %s: %s",
                        state.target.key, state.target.url, r.failure, r.error)

    def stats(self) -> list[TargetStats]:
        """A copy of every target's counters, in target order."""
        with self._lock:
            out = []
            for s in self._states.values():
                st = s.stats
                out.append(TargetStats(st.key, st.job, st.instance, st.url, st.up, st.scrapes_total,
                                       dict(st.failures_total), st.last_duration_seconds, st.last_error,
                                       st.last_scrape_timestamp, st.last_samples_scraped, dict(st.rejected_total),
                                       st.series))
            return out

    def metadata(self) -> list[TargetMetadata]:
        """What each target said of its families at its last good scrape (for the metadata
        API and for exposing scraped series with their type), in target order."""
        with self._lock:
            states = list(self._states.values())
        return [TargetMetadata(s.target, dict(s.metadata)) for s in states]

    def collect(self) -> Iterable[Metric]:
        """The scrape counters as metric families (every family, also with no targets)."""
        stats = self.stats()
        scrapes = CounterMetricFamily("forewarn_scrapes", "Scrapes attempted, by target.", labels=["job", "instance"])
        failures = CounterMetricFamily("forewarn_scrape_failures", "Failed scrapes, by target and reason.",
                                       labels=["job", "instance", "reason"])
        rejected = CounterMetricFamily("forewarn_scrape_samples_rejected",
                                       "Samples of successful scrapes not stored, by target and reason.",
                                       labels=["job", "instance", "reason"])
        held = GaugeMetricFamily("forewarn_scrape_target_series", "Series each target holds in the store.",
                                 labels=["job", "instance"])
        for st in stats:
            scrapes.add_metric([st.job, st.instance], st.scrapes_total)
            for reason, n in st.failures_total.items():
                failures.add_metric([st.job, st.instance, reason], n)
            for reason, n in st.rejected_total.items():
                rejected.add_metric([st.job, st.instance, reason], n)
            held.add_metric([st.job, st.instance], st.series)
        yield scrapes
        yield failures
        yield rejected
        yield held
        yield GaugeMetricFamily("forewarn_scrape_targets", "Configured scrape targets.", value=len(stats))
