"""The one path from the agent's data to `/metrics`: a collector that, at every scrape, turns
the latest value of each live series in the store, and the series the pipeline computes on
demand (alerts, forecasts, anomaly scores, problem counts), into metric families. Nothing is
kept between scrapes, so no stale label set lingers in a long-lived Gauge.

It reads the store and `agent.metrics`; it must never import the pipeline or the daemon (what
they compute arrives as `SampleProvider`s).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from agent.metrics import Metric
from agent.store import Labels, Store, is_stale, metric_name

log = logging.getLogger(__name__)

LOOKBACK_DELTA = 300.0  # like Prometheus: a series not written for 5 minutes is not exposed

# Sample name -> (type, help) of the families a source or provider writes (system: node_exporter's).
FamilyInfo = dict[str, tuple[str, str]]

_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created", "_info")


class SampleProvider(Protocol):
    """Series computed at scrape time rather than stored, with the families they belong to."""

    @property
    def families(self) -> FamilyInfo: ...

    def samples(self) -> Iterable[tuple[Labels, float]]: ...


class ExposedFamily(NamedTuple):
    name: str  # the family's name in the exposition (a counter's without `_total`)
    type: str  # counter | gauge | histogram | untyped
    help: str  # "" when unknown


def exposed_family(sample_name: str, families: FamilyInfo) -> ExposedFamily:
    """The family a stored sample is exposed under: its own entry in `families`, else the entry
    of its name without a sample suffix (`_bucket`, `_total`, ...), else untyped."""
    if sample_name in families:
        typ, help_ = families[sample_name]
        if typ == "counter" and sample_name.endswith("_total"):
            return ExposedFamily(sample_name[:-6], typ, help_)
        return ExposedFamily(sample_name, typ, help_)
    for suf in _SUFFIXES:
        if sample_name.endswith(suf):
            base = sample_name[: -len(suf)]
            if base in families:
                typ, help_ = families[base]
                return ExposedFamily(base, typ, help_)
    return ExposedFamily(sample_name, "untyped", "")


class StoreCollector:
    """Exposes the latest value of every live series in the store, plus provider samples."""

    def __init__(self, store: Store, families: FamilyInfo, clock: Callable[[], float],
                 providers: Iterable[SampleProvider] = ()) -> None:
        self.store = store
        self.families = families
        self.clock = clock
        self.providers = list(providers)

    def collect(self) -> Iterable[Metric]:
        now = self.clock()
        out: dict[str, Metric] = {}
        with self.store.lock:
            ids = self.store.all_ids()
            if ids.size:
                t, v = self.store.latest(ids)
                live = (t > now - LOOKBACK_DELTA) & ~is_stale(v)
                for sid, value in zip(ids[live].tolist(), v[live].tolist()):
                    self._add(out, self.store.labels(sid), value, self.families)
        for provider in self.providers:
            try:
                for labels, value in provider.samples():
                    self._add(out, labels, value, provider.families)
            except Exception:
                log.exception("metrics provider %r failed", provider)
        return list(out.values())

    @staticmethod
    def _add(out: dict[str, Metric], labels: Labels, value: float, families: FamilyInfo) -> None:
        name = metric_name(labels)
        if not name:
            return
        fam = exposed_family(name, families)
        m = out.get(fam.name)
        if m is None:
            m = out[fam.name] = Metric(fam.name, fam.help or fam.name, fam.type)
        m.add_sample(name, {k: v for k, v in labels if k != "__name__"}, value)
