"""The agent's own metric families, the collector protocol and the registry; the histogram the
agent observes its own work into; the process collector.

The shapes follow client_python (collectors yield metric families at scrape time; a
registry holds collectors; exposition is separate, in `agent.web.exposition`), but nothing
here imports prometheus_client: that package's import pulls in its push and TLS-server code
(ssl and friends, about 8 MB), which is most of an agent's memory budget. A foundation: it
imports nothing of the agent.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeAlias

if TYPE_CHECKING:
    import numpy as np

# Label pairs sorted by name, as a store label set is (`__name__`, when present, is not a label
# here: the sample's name says it). Lets a collector hand over a stored series' labels as they
# are, without a dict per sample.
LabelPairs = tuple[tuple[str, str], ...]
# A column of sample values: a float64 array or a list (numpy is only imported by who has one).
Values: TypeAlias = "Sequence[float] | np.ndarray"


class Sample(NamedTuple):
    name: str
    labels: dict[str, str] | LabelPairs
    value: float


class SampleColumns(NamedTuple):
    """Samples as columns, in one order: their names (one for all, or one each), label sets
    (sorted pairs) and values. The large families (every stored series, a rule's outputs for
    each of its series) travel this way from the store and the rules to the encoder, which
    writes them a slice at a time: no object per sample at 100,000 series."""

    names: str | Sequence[str]
    labels: Sequence[LabelPairs]
    values: Values


class Metric:
    """One metric family: name, help, type and samples (sample name, labels, value): the
    objects in `samples` first, then `columns`."""

    def __init__(self, name: str, documentation: str, typ: str) -> None:
        self.name = name
        self.documentation = documentation
        self.type = typ  # counter | gauge | histogram | info | untyped
        self.samples: list[Sample] = []
        self.columns: list[SampleColumns] = []

    def add_sample(self, name: str, labels: dict[str, str] | LabelPairs, value: float) -> None:
        self.samples.append(Sample(name, labels, value))

    def add_columns(self, names: str | Sequence[str], labels: Sequence[LabelPairs], values: Values) -> None:
        self.columns.append(SampleColumns(names, labels, values))

    def all_samples(self) -> Iterator[Sample]:
        """Every sample as a `Sample`, columns included (for the few readers that want
        objects; the encoder does not)."""
        yield from self.samples
        yield from column_samples(self.columns)


def column_samples(columns: Iterable[tuple[str | Sequence[str], Sequence[LabelPairs], Values]]) -> Iterator[Sample]:
    """The samples of (names, label sets, values) columns, one `Sample` each."""
    for names, labels, values in columns:
        vals = values.tolist() if hasattr(values, "tolist") else values
        each = itertools.repeat(names) if isinstance(names, str) else names
        yield from map(Sample, each, labels, vals)


class _Family(Metric):
    suffix = ""

    def __init__(self, name: str, documentation: str, value: float | None = None,
                 labels: Sequence[str] | None = None, typ: str = "gauge") -> None:
        if typ == "counter" and name.endswith("_total"):
            name = name[:-6]
        super().__init__(name, documentation, typ)
        self._labelnames = tuple(labels or ())
        if value is not None:
            self.add_metric([], value)

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        self.add_sample(self.name + self.suffix, dict(zip(self._labelnames, labels)), float(value))


class GaugeMetricFamily(_Family):
    def __init__(self, name: str, documentation: str, value: float | None = None,
                 labels: Sequence[str] | None = None) -> None:
        super().__init__(name, documentation, value, labels, "gauge")


class CounterMetricFamily(_Family):
    suffix = "_total"

    def __init__(self, name: str, documentation: str, value: float | None = None,
                 labels: Sequence[str] | None = None) -> None:
        super().__init__(name, documentation, value, labels, "counter")


class HistogramMetricFamily(Metric):
    def __init__(self, name: str, documentation: str, labels: Sequence[str] | None = None) -> None:
        super().__init__(name, documentation, "histogram")
        self._labelnames = tuple(labels or ())

    def add_metric(self, labels: Sequence[str], buckets: Sequence[tuple[str | float, float]],
                   sum_value: float) -> None:
        """`buckets`: (upper bound, cumulative count) pairs, the last one +Inf."""
        base = dict(zip(self._labelnames, labels))
        for le, count in buckets:
            le_text = le if isinstance(le, str) else format_value(float(le))
            self.add_sample(self.name + "_bucket", {**base, "le": le_text}, float(count))
        self.add_sample(self.name + "_count", base, float(buckets[-1][1]) if buckets else 0.0)
        self.add_sample(self.name + "_sum", base, float(sum_value))


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class Registry:
    """Collectors, asked for their families at every scrape."""

    def __init__(self) -> None:
        self._collectors: list[Collector] = []
        self._lock = threading.Lock()

    def register(self, collector: Collector) -> None:
        with self._lock:
            self._collectors.append(collector)

    def collectors(self) -> list[Collector]:
        """The registered collectors, in registration order."""
        with self._lock:
            return list(self._collectors)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            collectors = list(self._collectors)
        for c in collectors:
            yield from c.collect()


class Histogram:
    """A labelled histogram the agent observes into (durations of its own work)."""

    DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: Registry,
                 buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.name, self.documentation = name, documentation
        self.labelnames = tuple(labelnames)
        self.buckets = tuple(float(b) for b in buckets)
        self._series: dict[tuple[str, ...], list[float]] = {}  # bucket counts..., sum
        self._lock = threading.Lock()
        registry.register(self)

    def labels(self, *values: str) -> _Child:
        return _Child(self, tuple(str(v) for v in values))

    def _observe(self, key: tuple[str, ...], amount: float) -> None:
        with self._lock:
            s = self._series.get(key)
            if s is None:
                s = self._series[key] = [0.0] * (len(self.buckets) + 2)
            for i, b in enumerate(self.buckets):
                if amount <= b:
                    s[i] += 1
            s[-2] += 1  # +Inf
            s[-1] += amount

    def collect(self) -> Iterable[Metric]:
        fam = HistogramMetricFamily(self.name, self.documentation, self.labelnames)
        with self._lock:
            series = {k: list(v) for k, v in self._series.items()}
        for key, s in sorted(series.items()):
            fam.add_metric(key, [*zip(self.buckets, s[:-2]), ("+Inf", s[-2])], s[-1])
        yield fam


class _Child:
    def __init__(self, parent: Histogram, key: tuple[str, ...]) -> None:
        self.parent, self.key = parent, key

    def observe(self, amount: float) -> None:
        self.parent._observe(self.key, amount)


class ProcessCollector:
    """process_* metrics of this process from /proc, as client_python exposes them."""

    def __init__(self, proc: str = "/proc", pid: str = "self") -> None:
        self.proc, self.pid = proc, pid
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.pagesize = os.sysconf("SC_PAGE_SIZE")

    def collect(self) -> Iterable[Metric]:
        try:
            with open(f"{self.proc}/{self.pid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            with open(f"{self.proc}/stat") as f:
                btime = next(float(line.split()[1]) for line in f if line.startswith("btime"))
        except (OSError, StopIteration, IndexError):
            return
        yield GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                                value=float(parts[20]))
        yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size in bytes.",
                                value=float(parts[21]) * self.pagesize)
        yield GaugeMetricFamily("process_start_time_seconds",
                                "Start time of the process since unix epoch in seconds.",
                                value=float(parts[19]) / self.ticks + btime)
        yield CounterMetricFamily("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                                  value=(float(parts[11]) + float(parts[12])) / self.ticks)
        try:
            fds = len(os.listdir(f"{self.proc}/{self.pid}/fd"))
            yield GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", value=fds)
            with open(f"{self.proc}/{self.pid}/limits") as f:
                for line in f:
                    if line.startswith("Max open files"):
                        yield GaugeMetricFamily("process_max_fds", "Maximum number of open file descriptors.",
                                                value=float(line.split()[3]))
        except OSError:
            pass


def format_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v)}.0"
    return repr(float(v))
