"""The one path from the agent's data to `/metrics`: a collector that, at every scrape, turns
the latest value of each live series in the store, and the series the pipeline computes on
demand (alerts, forecasts, anomaly scores, problem counts), into metric families. Nothing is
kept between scrapes, so no stale label set lingers in a long-lived Gauge.

Scraped series are exposed with the type and help their target gave (`metadata`), where the
samples fit that type, else untyped. Series the agent writes of itself (`SelfScrape`: its own
families, kept in the store so the query API can read them) are left to their own collectors.

It reads the store and `agent.metrics`; it must never import the pipeline or the daemon (what
they compute arrives as `SampleProvider`s).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from agent.metrics import Collector, Metric, Sample, Values
from agent.store import Labels, Store, is_stale, make_labels, metric_name

log = logging.getLogger(__name__)

LOOKBACK_DELTA = 300.0  # like Prometheus: a series not written for 5 minutes is not exposed

# The computed series beside ALERTS (a forecast's breach estimates, an anomaly score and its
# warming flag: several per watched series) are kept in the store only while there are at most
# this many, as a scrape's sample_limit bounds a target: at scale they would outnumber the
# series the agent watches. /metrics shows them all regardless.
COMPUTED_SERIES_LIMIT = 10_000
ALERT_NAMES = frozenset({"ALERTS", "ALERTS_FOR_STATE"})

# Sample name -> (type, help) of the families a source or provider writes (system: node_exporter's).
FamilyInfo = dict[str, tuple[str, str]]

_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created", "_info")
# The sample names each type allows beside its family name, as OpenMetrics checks them.
_TYPE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "untyped": ("",),
}


class SampleProvider(Protocol):
    """Series computed at scrape time rather than stored, with the families they belong to:
    `Sample`s whose labels may leave `__name__` out (the sample's name says it, and the
    outputs of one series can share one label set). `alert_samples` gives the ALERTS and ALERTS_FOR_STATE of `samples` alone, and
    `computed_count` how many of the others there are, without building them (the store keeps
    those only up to `COMPUTED_SERIES_LIMIT`)."""

    @property
    def families(self) -> FamilyInfo: ...

    def samples(self) -> Iterable[Sample]: ...

    def columns(self) -> Iterable[tuple[str, Sequence[Labels], Values]]:
        """The same samples as `samples`, as (name, label sets, values) columns (what
        /metrics writes)."""
        ...

    def alert_samples(self) -> Iterable[Sample]: ...

    def computed_count(self) -> int: ...


class ExposedFamily(NamedTuple):
    name: str  # the family's name in the exposition (a counter's without `_total`)
    type: str  # counter | gauge | histogram | untyped
    help: str  # "" when unknown


def exposed_family(sample_name: str, families: FamilyInfo) -> ExposedFamily:
    """The family a stored sample is exposed under: its own entry in `families`, else the entry
    of its name without a sample suffix (`_bucket`, `_total`, ...), else untyped. A sample that
    its family's type does not allow (a counter named without `_total`, a gauge `_count`, an
    OpenMetrics-only type) is exposed untyped, so the exposition stays valid OpenMetrics."""
    if sample_name in families:
        typ, help_ = families[sample_name]
        if typ == "counter" and sample_name.endswith("_total"):
            return ExposedFamily(sample_name[:-6], typ, help_)
        fam = ExposedFamily(sample_name, typ, help_)
    else:
        for suf in _SUFFIXES:
            if sample_name.endswith(suf) and sample_name[: -len(suf)] in families:
                base = sample_name[: -len(suf)]
                typ, help_ = families[base]
                fam = ExposedFamily(base, typ, help_)
                break
        else:
            return ExposedFamily(sample_name, "untyped", "")
    if sample_name[len(fam.name):] not in _TYPE_SUFFIXES.get(fam.type, ()):
        return ExposedFamily(sample_name, "untyped", fam.help if fam.name == sample_name else "")
    return fam


class TargetMetadataLike(Protocol):
    """A scrape target's metadata (agent.sources.scrape.TargetMetadata)."""

    @property
    def families(self) -> Mapping[str, Any]: ...


def scraped_families(targets: Iterable[TargetMetadataLike]) -> FamilyInfo:
    """(type, help) by the names scrape targets gave in TYPE/HELP lines (the first target that
    names a family wins)."""
    out: FamilyInfo = {}
    for t in targets:
        for name, m in t.families.items():
            if name not in out:
                out[name] = (m.type, m.help)
    return out


class StoreCollector:
    """Exposes the latest value of every live series in the store, plus provider samples."""

    def __init__(self, store: Store, families: FamilyInfo, clock: Callable[[], float],
                 providers: Iterable[SampleProvider] = (), metadata: Callable[[], FamilyInfo] | None = None) -> None:
        """`families`: what the agent's own sources write; `metadata`: what scrape targets said
        of theirs (read at each scrape; the agent's own entries win)."""
        self.store = store
        self.families = families
        self.clock = clock
        self.providers = list(providers)
        self.metadata = metadata
        # Sample names the agent's own collectors expose (set by SelfScrape): their stored
        # copies are for queries; /metrics shows each family once, from its collector.
        self.hidden_names: frozenset[str] = frozenset()

    def collect(self) -> Iterable[Metric]:
        now = self.clock()
        families = self.families
        if self.metadata is not None:
            families = {**self.metadata(), **self.families}
        labels: list[Labels] = []
        values = np.zeros(0)
        with self.store.lock:
            ids = self.store.all_ids()
            if ids.size:
                t, v = self.store.latest(ids)
                live = (t > now - LOOKBACK_DELTA) & ~is_stale(v)
                label_of = self.store.labels
                labels = [label_of(sid) for sid in ids[live].tolist()]
                values = v[live]
        out = self._stored(labels, values, families)
        out.update((m.name, m) for m in self.provided())
        return list(out.values())

    def _stored(self, labels: list[Labels], values: np.ndarray, families: FamilyInfo) -> dict[str, Metric]:
        """The stored series (`labels`, their latest `values`) as families of columns, in the
        order each family is first met, and its samples in their store order (so a histogram's
        buckets, count and sum stay together by label set, as OpenMetrics wants them)."""
        hidden = self.hidden_names
        exposed: dict[str, int] = {}  # sample name -> family index; -1: hidden
        fams: list[ExposedFamily] = []
        fam_index: dict[str, int] = {}
        one_name: list[str | None] = []  # the family's one sample name; None once it has several
        codes: list[int] = []
        names: list[str] = []
        for lab in labels:
            name = metric_name(lab)
            code = exposed.get(name)
            if code is None:
                code = -1
                if name and name not in hidden:
                    fam = exposed_family(name, families)
                    code = fam_index.get(fam.name, -1)
                    if code < 0:
                        code = fam_index[fam.name] = len(fams)
                        fams.append(fam)
                        one_name.append(name)
                    elif one_name[code] != name:
                        one_name[code] = None
                exposed[name] = code
            codes.append(code)
            names.append(name)
        code_of = np.asarray(codes, dtype=np.int64)
        order = np.argsort(code_of, kind="stable")
        bounds = np.searchsorted(code_of[order], np.arange(len(fams) + 1))
        out: dict[str, Metric] = {}
        for k, fam in enumerate(fams):
            rows = order[bounds[k]:bounds[k + 1]]
            picked = rows.tolist()
            m = out[fam.name] = Metric(fam.name, fam.help or fam.name, fam.type)
            sample_names = one_name[k]
            m.add_columns(sample_names if sample_names is not None else [names[i] for i in picked],
                          [labels[i] for i in picked], values[rows])
        return out

    def provided(self) -> list[Metric]:
        """The providers' families alone (the series computed at scrape time)."""
        out: dict[str, Metric] = {}
        for provider in self.providers:
            exposed: dict[str, ExposedFamily] = {}
            try:
                for name, labels, values in provider.columns():
                    if not name:
                        continue
                    fam = exposed.get(name)
                    if fam is None:
                        fam = exposed[name] = exposed_family(name, provider.families)
                    m = out.get(fam.name)
                    if m is None:
                        m = out[fam.name] = Metric(fam.name, fam.help or fam.name, fam.type)
                    m.add_columns(name, labels, values)
            except Exception:
                log.exception("metrics provider %r failed", provider)
        return list(out.values())


class SelfScrape:
    """The agent's own families written into its store, as a Prometheus scrapes itself, so
    `/api/v1/query` answers for `ALERTS`, `forewarn_*` and `process_*` with history (rates,
    ranges) like for any collected series. Run on the global scrape interval; series that
    vanish get a stale marker. Labels are exactly those on /metrics (no job or instance).

    `collectors()` returns every collector of the registry but the store's; the store's own
    computed series come from `exposed.provided()`. The names written are hidden from the
    store's side of /metrics (`StoreCollector.hidden_names`), so no family is exposed twice,
    also not a stale copy restored from a snapshot or one a scrape target exposes. The computed
    series beside ALERTS are written only up to `COMPUTED_SERIES_LIMIT` (`_bounded`: over it,
    they are not even computed)."""

    def __init__(self, store: Store, collectors: Callable[[], Iterable[Collector]], exposed: StoreCollector,
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.collectors = collectors
        self.exposed = exposed
        self.clock = clock
        self.names: set[str] = set()
        self.previous: set[Labels] | None = None  # None until the first run
        self.computed_limit = COMPUTED_SERIES_LIMIT
        self.left_out: set[str] = set()  # names of computed families left out (over the limit)
        self.over_limit = False

    def samples(self) -> list[tuple[Labels, float]]:
        out: list[tuple[Labels, float]] = []
        for c in self.collectors():
            try:
                for m in c.collect():
                    out.extend((make_labels(s.name, s.labels), float(s.value)) for s in m.all_samples())
            except Exception:
                log.exception("collector %r failed", c)
        for provider in self.exposed.providers:
            try:
                out.extend((make_labels(s.name, s.labels), s.value) for s in self._bounded(provider))
            except Exception:
                log.exception("metrics provider %r failed", provider)
        return out

    def _bounded(self, provider: SampleProvider) -> Iterable[Sample]:
        """A provider's samples, without its computed series when these are over the limit
        (ALERTS and ALERTS_FOR_STATE are always kept, as Prometheus keeps them); the series
        left out then go stale in the store like those of a target over its sample_limit.
        Over the limit they are not built at all: at 100,000 watched series that is some
        300,000 samples every scrape interval, for nothing."""
        computed = provider.computed_count()
        over = computed > self.computed_limit
        if over:
            self.left_out |= set(provider.families) - ALERT_NAMES
            if not self.over_limit:
                log.warning("the agent's computed series (forecast breach estimates, anomaly scores) number %d, "
                            "more than the %d it keeps in its store: /metrics shows them, queries do not while "
                            "they are this many", computed, self.computed_limit)
        elif self.over_limit:
            log.info("the agent's computed series number %d again, within the %d kept in its store",
                     computed, self.computed_limit)
        self.over_limit = over
        return provider.alert_samples() if over else provider.samples()

    def run(self) -> int:
        """Write one round; returns the samples written."""
        now = self.clock()
        samples = self.samples()
        names = {metric_name(lab) for lab, _ in samples}
        self.names |= names | self.left_out  # hidden from the store's side of /metrics all the same
        self.exposed.hidden_names = frozenset(self.names)
        current = {lab for lab, _ in samples}
        previous = self.previous
        if previous is None:  # series of an earlier run, restored from the snapshot
            previous = {self.store.labels(int(sid)) for n in self.names
                        for sid in self.store.postings("__name__", n)}
        written = self.store.append_samples(samples, now)
        vanished = [sid for sid in (self.store.get_id(lab) for lab in previous - current) if sid is not None]
        if vanished:
            self.store.mark_stale(vanished, now)
        self.previous = current
        return written
