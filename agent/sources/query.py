"""Series from a Prometheus-compatible server (Prometheus, Thanos, Mimir, VictoriaMetrics).

Raw samples, not resampled ones: an instant query of a range selector (`sel[5m]`) returns
the stored samples, so the agent's store holds what the server holds. At start, `backfill`
of history is fetched in chunks; afterwards each run fetches the window since the last
sample seen (plus a margin for late samples) and appends only newer ones.

Sharding: with `shard (i, n)`, this agent keeps the series whose label hash mod n == i.
The hash is of the canonical label set only (not of which agent or server fetched it), so
n agents cover a fleet with no overlap and no gaps.

`QuerySources` holds an agent's sources across reloads and exports their counters as metric
families (`forewarn_query_*`). requests is imported only when a source is built, so an agent
without query sources never loads it. This module must never import rules, tickets or web.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.config.schema import Config, QueryConfig, read_secret_file
from agent.metrics import CounterMetricFamily, GaugeMetricFamily, Metric
from agent.store import Labels, Store, make_labels

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

MAX_CHUNK_SECONDS = 3600.0  # one backfill request covers at most this much history
LATE_MARGIN_SECONDS = 60.0  # re-read this much before the newest sample seen


def shard_of(labels: Labels, n: int) -> int:
    """Stable shard number of a series: the same on every agent, every run, every Python."""
    h = hashlib.blake2b(digest_size=8)
    for k, v in labels:
        h.update(k.encode())
        h.update(b"\xff")
        h.update(v.encode())
        h.update(b"\xfe")
    return int.from_bytes(h.digest(), "big") % n


@dataclass
class QueryStats:
    """One source's counters since start (carried across reloads by `QuerySources`)."""

    name: str
    runs_total: int = 0
    failures_total: int = 0
    samples_total: int = 0
    series_skipped_by_shard: int = 0
    last_error: str = ""
    up: bool = False
    last_duration_seconds: float = 0.0
    failures_by_reason: dict[str, int] = field(default_factory=dict)


class QueryError(Exception):
    """A failed query run; the message starts with the reason (`timeout`, `connection`, ...)."""


class QuerySource:
    """One `query_configs` entry: backfill once, then incremental fetches."""

    def __init__(self, cfg: QueryConfig, store: Store, shard: tuple[int, int] | None = None,
                 session: requests.Session | None = None, resolve_path: Callable[[str], str] | None = None,
                 stats: QueryStats | None = None) -> None:
        """`stats`: the counters to carry on (a reloaded source of the same name)."""
        import requests  # noqa: PLC0415 - costly optional import: only agents with query sources pay for it

        self.cfg = cfg
        self.store = store
        self.shard = shard
        self.session = session or requests.Session()
        # requests' exceptions, kept here so that the module imports requests in one place only.
        self._timeout_error: type[Exception] = requests.Timeout
        self._request_error: type[Exception] = requests.RequestException
        resolve = resolve_path or (lambda p: p)
        if cfg.bearer_token_file:
            token = read_secret_file(resolve(cfg.bearer_token_file))
            self.session.headers["Authorization"] = f"Bearer {token}"
        elif cfg.basic_auth_username:
            password = read_secret_file(resolve(cfg.basic_auth_password_file)) if cfg.basic_auth_password_file else ""
            self.session.auth = (cfg.basic_auth_username, password)
        self.verify: bool | str = resolve(cfg.ca_file) if cfg.ca_file else (not cfg.insecure_skip_verify)
        self.stats = stats if stats is not None else QueryStats(cfg.name)
        self._newest: dict[int, float] = {}  # query index -> newest sample time fetched
        self._lock = threading.Lock()
        self._was_up: bool | None = None

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def interval_seconds(self) -> float:
        return float(self.cfg.interval)

    def _get(self, params: dict[str, str]) -> list[dict[str, Any]]:
        url = self.cfg.url.rstrip("/") + "/api/v1/query"
        try:
            r = self.session.post(url, data=params, timeout=float(self.cfg.timeout), verify=self.verify)
        except self._timeout_error:
            raise QueryError("timeout") from None
        except self._request_error as e:
            raise QueryError(f"connection: {type(e).__name__}") from None
        try:
            body = r.json()
        except ValueError:
            raise QueryError(f"http_status: HTTP {r.status_code}, not JSON") from None
        if r.status_code != 200 or body.get("status") != "success":
            raise QueryError(f"http_status: HTTP {r.status_code}: {body.get('errorType', '')}: {body.get('error', '')}")
        data = body["data"]
        if data["resultType"] != "matrix":
            raise QueryError(f"unexpected result type {data['resultType']!r}")
        return data["result"]

    def _fetch_window(self, selector: str, end: float, seconds: float) -> int:
        """Fetch raw samples in (end - seconds, end] and append the new ones. Returns samples stored."""
        rng = max(1, int(math.ceil(seconds)))
        # A range selector in an instant query returns the stored samples, not resampled ones.
        result = self._get({"query": f"{selector}[{rng}s]", "time": f"{end:.3f}"})
        stored = 0
        for series in result:
            labels = make_labels(None, series["metric"])
            if self.shard is not None and shard_of(labels, self.shard[1]) != self.shard[0]:
                self.stats.series_skipped_by_shard += 1
                continue
            values = series.get("values") or []
            if not values:
                continue
            sid = self.store.series_id(labels, limited=True)
            if sid < 0:
                continue
            t = np.fromiter((float(p[0]) for p in values), dtype=np.float64, count=len(values))
            v = np.fromiter((float(p[1]) for p in values), dtype=np.float64, count=len(values))
            keep = t > self.store.last_t[sid]
            stored += self.store.extend(sid, t[keep], v[keep])
        return stored

    def _fetch_range(self, selector: str, start: float, end: float) -> int:
        """Raw samples in (start, end], oldest chunk first, so no single request asks the
        server for more than MAX_CHUNK_SECONDS of history."""
        total = 0
        t = start
        while t < end:
            chunk_end = min(end, t + MAX_CHUNK_SECONDS)
            total += self._fetch_window(selector, chunk_end, chunk_end - t)
            t = chunk_end
        return total

    def run(self, now: float) -> int:
        """One scheduled run. Each query fetches what is new since its last success (a little
        before, for late samples); the first run of a query, and a run after a long outage,
        fetch `backfill` of history at most."""
        started = time.monotonic()
        with self._lock:
            self.stats.runs_total += 1
            n = 0
            try:
                for qi, selector in enumerate(self.cfg.queries):
                    since = self._newest.get(qi, now - float(self.cfg.backfill))
                    since = max(since - LATE_MARGIN_SECONDS, now - float(self.cfg.backfill))
                    n += self._fetch_range(selector, since, now)
                    self._newest[qi] = now
                self._set_up(True, "")
            except QueryError as e:
                self.stats.failures_total += 1
                reason = str(e).split(":")[0]
                self.stats.failures_by_reason[reason] = self.stats.failures_by_reason.get(reason, 0) + 1
                self._set_up(False, str(e))
            finally:
                self.stats.samples_total += n
                self.stats.last_duration_seconds = time.monotonic() - started
            return n

    def _set_up(self, up: bool, error: str) -> None:
        self.stats.up, self.stats.last_error = up, error
        if self._was_up is not up:
            if up:
                log.info("query source %s is up", self.name)
            else:
                log.warning("query source %s is down: %s", self.name, error)
            self._was_up = up


class QuerySources:
    """An agent's query sources (`query_configs`), kept across reloads, and their counters as
    metric families (`collect()`; register it in the registry)."""

    def __init__(self, store: Store, shard: tuple[int, int] | None = None) -> None:
        self.store = store
        self.shard = shard
        self._sources: list[QuerySource] = []
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[QuerySource]:
        with self._lock:
            return iter(list(self._sources))

    def __len__(self) -> int:
        return len(self._sources)

    def prepare(self, cfg: Config) -> list[QuerySource]:
        """The sources for `cfg`, built but not yet installed (building may raise, e.g. on an
        unreadable token). An unchanged source is kept as it is, with its place in time, so a
        reload does not re-backfill; a changed one starts afresh but keeps its counters."""
        with self._lock:
            old = {q.name: q for q in self._sources}
        out = []
        for qc in cfg.query_configs:
            prev = old.get(qc.name)
            if prev is not None and prev.cfg == qc:
                out.append(prev)
            else:
                out.append(QuerySource(qc, self.store, self.shard, resolve_path=cfg.resolve_path,
                                       stats=prev.stats if prev is not None else None))
        return out

    def install(self, sources: list[QuerySource]) -> None:
        """Run `sources` (from `prepare`) from now on."""
        with self._lock:
            self._sources = list(sources)

    def collect(self) -> Iterable[Metric]:
        """`forewarn_query_*` per source; nothing at all when there are no sources."""
        sources = list(self)
        if not sources:
            return
        up = GaugeMetricFamily("forewarn_query_source_up", "1 if the last query run succeeded.", labels=["source"])
        runs = CounterMetricFamily("forewarn_query_runs", "Query source runs.", labels=["source"])
        fails = CounterMetricFamily("forewarn_query_failures", "Failed query runs by reason.",
                                    labels=["source", "reason"])
        samples = CounterMetricFamily("forewarn_query_samples", "Samples fetched.", labels=["source"])
        skipped = CounterMetricFamily("forewarn_query_series_skipped_by_shard",
                                      "Series left to other shards.", labels=["source"])
        for q in sources:
            st = q.stats
            up.add_metric([st.name], 1 if st.up else 0)
            runs.add_metric([st.name], st.runs_total)
            samples.add_metric([st.name], st.samples_total)
            skipped.add_metric([st.name], st.series_skipped_by_shard)
            for reason, n in st.failures_by_reason.items():
                fails.add_metric([st.name, reason], n)
        yield from (up, runs, fails, samples, skipped)
