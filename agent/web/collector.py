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
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol

from agent.metrics import Collector, Metric, Sample
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
        out: dict[str, Metric] = {}
        families = self.families
        if self.metadata is not None:
            families = {**self.metadata(), **self.families}
        hidden = self.hidden_names
        exposed: dict[str, ExposedFamily] = {}
        with self.store.lock:
            ids = self.store.all_ids()
            if ids.size:
                t, v = self.store.latest(ids)
                live = (t > now - LOOKBACK_DELTA) & ~is_stale(v)
                for sid, value in zip(ids[live].tolist(), v[live].tolist()):
                    labels = self.store.labels(sid)
                    name = metric_name(labels)
                    if name in hidden:
                        continue
                    self._add(out, name, labels, value, families, exposed)
        out.update((m.name, m) for m in self.provided())
        return list(out.values())

    def provided(self) -> list[Metric]:
        """The providers' families alone (the series computed at scrape time)."""
        out: dict[str, Metric] = {}
        for provider in self.providers:
            exposed: dict[str, ExposedFamily] = {}
            try:
                for s in provider.samples():
                    self._add(out, s.name, s.labels, s.value, provider.families, exposed, s)
            except Exception:
                log.exception("metrics provider %r failed", provider)
        return list(out.values())

    @staticmethod
    def _add(out: dict[str, Metric], name: str, labels: Labels | dict[str, str], value: float, families: FamilyInfo,
             exposed: dict[str, ExposedFamily], sample: Sample | None = None) -> None:
        """Add a sample named `name` to its family in `out`; `exposed` caches the family of
        each sample name over one collection. The label set goes as it is (sorted pairs; a
        `__name__` among them is not written): no dict per sample at 100,000 series. `sample`:
        a provider's `Sample` of these, kept as it is (not a second object per sample: at
        100,000 series with rules, 300,000 of them a scrape)."""
        if not name:
            return
        fam = exposed.get(name)
        if fam is None:
            fam = exposed[name] = exposed_family(name, families)
        m = out.get(fam.name)
        if m is None:
            m = out[fam.name] = Metric(fam.name, fam.help or fam.name, fam.type)
        if sample is None:
            m.add_sample(name, labels, value)
        else:
            m.samples.append(sample)


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
                    out.extend((make_labels(s.name, s.labels), float(s.value)) for s in m.samples)
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
