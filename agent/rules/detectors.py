"""Adapters between a rule's expression output and the model banks of `agent.models`.

A forecast or anomaly rule feeds each output series of its `expr` (keyed by its labels) into
the bank at every evaluation and is active where the model says so: the forecast predicts a
breach of the threshold within the horizon with enough confidence, or the anomaly score
passes the sensitivity's threshold on the chosen side. The adapter also keeps what the rule
layer needs around the bank: when each series was last seen (models of series gone for a
while are freed), the latest verdict per series (for `/metrics`), and the exposition labels.

Only the banks' public methods are used. Imports `agent.models`, `agent.store`,
`agent.rules.file` and `agent.rules.query`; never tickets, web, sources, the pipeline or the
daemon.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import NamedTuple, overload

import numpy as np

from agent.models.anomaly import AnomalyBank, sensitivity_threshold
from agent.models.breach import BreachEstimates, default_recovery, latch
from agent.models.forecast import ForecastBank
from agent.rules.file import AnomalySpec, ForecastSpec
from agent.rules.query import HistoryFn, LabeledValue, without_name
from agent.store import Labels, make_labels

# A model slot whose key has not been seen for this long (and at least the lookback) is freed.
MODEL_FORGET_AFTER = 3600.0


@dataclass
class BreachInfo:
    """A forecast's verdict for one series. Times are seconds from the evaluation
    (`inf`: no breach predicted); `predicted` is the forecast value at the horizon."""

    eta: float
    eta_low: float
    eta_high: float
    probability: float
    predicted: float

    def as_template(self) -> dict[str, float]:
        return dict(vars(self))


@dataclass
class AnomalyInfo:
    """An anomaly model's verdict for one series: `score` in [0, 1], the expected value and
    the band of usual values around it (same unit as the series)."""

    score: float
    expected: float
    band_low: float
    band_high: float

    def as_template(self) -> dict[str, float]:
        return dict(vars(self))


class BreachInfos(Sequence[BreachInfo]):
    """A forecast's verdicts for every series of an evaluation, kept as the bank's arrays: a
    `BreachInfo` is built only for a series someone reads (an active alert, a /metrics scrape),
    not for each of tens of thousands of series at every evaluation."""

    def __init__(self, est: BreachEstimates) -> None:
        self._columns = tuple(np.asarray(a, dtype=np.float64) for a in (
            est.eta_seconds, est.eta_low_seconds, est.eta_high_seconds, est.probability, est.value_at_horizon))

    def __len__(self) -> int:
        return len(self._columns[0])

    @overload
    def __getitem__(self, i: int) -> BreachInfo: ...

    @overload
    def __getitem__(self, i: slice) -> list[BreachInfo]: ...

    def __getitem__(self, i: int | slice) -> BreachInfo | list[BreachInfo]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return BreachInfo(*(float(c[i]) for c in self._columns))


@dataclass
class Verdicts:
    """A detector's output for one evaluation: per series, whether the rule is active and the
    model's details (`infos`, in the order of `keys`)."""

    keys: list[Labels] = field(default_factory=list)
    active: Sequence[bool] = field(default_factory=list)
    infos: Sequence[BreachInfo | AnomalyInfo] = field(default_factory=list)


class ExportedSeries(NamedTuple):
    """One series of a detector's latest evaluation for /metrics: its labels under each
    metric name asked for, and the model's verdict."""

    labels: tuple[Labels, ...]
    info: BreachInfo | AnomalyInfo


@dataclass
class Condition:
    """One output series for which the rule is active now, with the detector's verdict."""

    labels: Labels
    value: float
    info: BreachInfo | AnomalyInfo | None = None


class Detector(abc.ABC):
    """The bookkeeping every detector shares; subclasses implement `_observe` and `_forget`."""

    def __init__(self, forget_after: float, history: HistoryFn | None) -> None:
        self.forget_after = forget_after
        self.history = history
        self.seen: dict[Labels, float] = {}  # series -> last evaluation that had it
        self.latest = Verdicts()
        self._export: dict[tuple[Labels, tuple[str, ...]], tuple[Labels, ...]] = {}
        self._next_forget = -np.inf  # idle series are looked for a few times per forget_after, not every evaluation

    def conditions(self, now: float, samples: list[LabeledValue]) -> list[Condition]:
        """Feed this evaluation's samples to the model; the samples for which the rule is active."""
        keys = [lab for lab, _ in samples]
        values = np.fromiter((v for _, v in samples), dtype=np.float64, count=len(samples))
        new = set(keys).difference(self.seen)
        self.latest = self._observe(keys, now, values, new)
        self.seen.update(zip(keys, repeat(now)))
        if now >= self._next_forget:
            self._next_forget = now + self.forget_after / 4
            self._forget_idle(now)
        latest = self.latest
        return [Condition(samples[i][0], samples[i][1], latest.infos[i])
                for i in np.flatnonzero(np.asarray(latest.active, dtype=bool)).tolist()]

    def export_labels(self, names: tuple[str, ...], alertname: str) -> list[ExportedSeries]:
        """For /metrics: per series of the latest evaluation, its labels under each of `names`
        (with `alertname`, without the series' own name) and the model's verdict. Label
        tuples are built once per series."""
        out = []
        for k, info in zip(self.latest.keys, self.latest.infos):
            labs = self._export.get((k, names))
            if labs is None:
                base = dict(without_name(k), alertname=alertname)
                labs = self._export[(k, names)] = tuple(make_labels(n, base) for n in names)
            out.append(ExportedSeries(labs, info))
        return out

    @abc.abstractmethod
    def adopt(self, old: Detector, same_spec: bool) -> bool:
        """Continue from `old`'s models (the same rule before a reload) if they model the same
        thing; its latest verdicts still hold only when nothing else changed either."""

    def _continue(self, old: Detector, same_spec: bool) -> None:
        self.seen = old.seen
        if same_spec:
            self.latest, self._export = old.latest, old._export

    def _forget_idle(self, now: float) -> None:
        old = [k for k, t in self.seen.items() if t < now - self.forget_after]
        if old:
            self._forget(old)
            for k in old:
                del self.seen[k]
            gone = set(old)
            self._export = {ck: v for ck, v in self._export.items() if ck[0] not in gone}

    @abc.abstractmethod
    def _observe(self, keys: list[Labels], now: float, values: np.ndarray, new: set[Labels]) -> Verdicts:
        """The verdicts for this evaluation's values; `new` are keys not seen before."""

    @abc.abstractmethod
    def _forget(self, keys: list[Labels]) -> None:
        """Free the models of `keys`."""


class ForecastDetector(Detector):
    """Feeds a forecast rule's series into a `ForecastBank` and reads breach predictions.

    Active where the probability of crossing `threshold` within `horizon` reaches
    `confidence` (the bank's `breach`), and stays active until it falls below
    `recovery_confidence` (hysteresis: `breach.latch`, one flag per bank slot). New keys that
    are stored series (a plain selector as expr) are warmed from the store's history, so a
    restart does not start cold."""

    def __init__(self, spec: ForecastSpec, history: HistoryFn | None = None) -> None:
        super().__init__(max(MODEL_FORGET_AFTER, float(spec.lookback)), history)
        self.spec = spec
        self.bank = ForecastBank(spec.model, float(spec.lookback), _season(spec), horizon=float(spec.horizon))
        self.recovery = (spec.recovery_confidence if spec.recovery_confidence is not None
                         else default_recovery(spec.confidence))
        self._on = np.zeros(self.bank.table.capacity, dtype=bool)  # per slot: active at the last evaluation

    def adopt(self, old: Detector, same_spec: bool) -> bool:
        """The bank carries over when it models the same thing: the threshold, direction and
        confidence only change how its forecasts are read."""
        if not isinstance(old, ForecastDetector):
            return False
        a, b = self.spec, old.spec
        if (a.model, a.lookback, a.season, a.horizon) != (b.model, b.lookback, b.season, b.horizon):
            return False
        self.bank = old.bank
        self._on = old._on
        self._continue(old, same_spec)
        return True

    def _observe(self, keys: list[Labels], now: float, values: np.ndarray, new: set[Labels]) -> Verdicts:
        if self.history is not None and new:
            span = max(float(self.spec.lookback), self.bank.history)
            for k in new:
                t, v = self.history(k, now - span, now - 1e-9)
                if len(t):
                    self.bank.warm(k, t, v)
        slots = self.bank.slots_for(keys)
        if len(self._on) < self.bank.table.capacity:
            self._on = np.concatenate((self._on, np.zeros(self.bank.table.capacity - len(self._on), dtype=bool)))
        if new:  # a new series (perhaps in a slot a forgotten one had) starts inactive
            self._on[slots[np.fromiter((k in new for k in keys), dtype=bool, count=len(keys))]] = False
        self.bank.update(slots, now, values)
        s = self.spec
        est = self.bank.breach(slots, now, s.threshold, s.direction, float(s.horizon), s.confidence)
        active = latch(est.probability, self._on[slots], s.confidence, self.recovery) & np.isfinite(values)
        self._on[slots] = active
        return Verdicts(keys, active, BreachInfos(est))

    def _forget(self, keys: list[Labels]) -> None:
        self.bank.forget(keys)


class AnomalyDetector(Detector):
    """Feeds an anomaly rule's series into an `AnomalyBank` and reads scores. Active where the
    score reaches the sensitivity's threshold, on the side `direction` names."""

    def __init__(self, spec: AnomalySpec, history: HistoryFn | None = None) -> None:
        super().__init__(MODEL_FORGET_AFTER, history)
        self.spec = spec
        self.bank = AnomalyBank()
        self.threshold = sensitivity_threshold(spec.sensitivity)

    def adopt(self, old: Detector, same_spec: bool) -> bool:
        """The bank always carries over: it has no settings of the rule's (sensitivity and
        direction only read its scores)."""
        if not isinstance(old, AnomalyDetector):
            return False
        self.bank = old.bank
        self._continue(old, same_spec)
        return True

    def _observe(self, keys: list[Labels], now: float, values: np.ndarray, new: set[Labels]) -> Verdicts:
        slots = self.bank.slots_for(keys)
        r = self.bank.update(slots, now, values)
        score, exp = np.asarray(r.score), np.asarray(r.expected)
        active = (score >= self.threshold) & np.isfinite(values)
        if self.spec.direction == "above":
            active &= values > exp
        elif self.spec.direction == "below":
            active &= values < exp
        infos: list[BreachInfo | AnomalyInfo] = [AnomalyInfo(*row) for row in zip(
            score.tolist(), exp.tolist(), np.asarray(r.band_low).tolist(), np.asarray(r.band_high).tolist())]
        return Verdicts(keys, active.tolist(), infos)

    def _forget(self, keys: list[Labels]) -> None:
        self.bank.forget(keys)


def _season(spec: ForecastSpec) -> float | None:
    return float(spec.season) if spec.season is not None else None


def make_detector(forecast: ForecastSpec | None, anomaly: AnomalySpec | None,
                  history: HistoryFn | None) -> ForecastDetector | AnomalyDetector | None:
    """The detector a rule's `forecast:` or `anomaly:` block asks for (None: a threshold rule)."""
    if forecast is not None:
        return ForecastDetector(forecast, history)
    if anomaly is not None:
        return AnomalyDetector(anomaly, history)
    return None
