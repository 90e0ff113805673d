"""Adapters between a rule's expression output and the model banks of `agent.models`.

A forecast or anomaly rule feeds each output series of its `expr` (keyed by its labels) into
the bank at every evaluation and is active where the model says so: the forecast predicts a
breach of the threshold within the horizon with enough confidence, or the anomaly score
passes the sensitivity's threshold on the chosen side. The adapter also keeps what the rule
layer needs around the bank: when each series was last seen (models of series gone for a
while are freed) and the latest verdict per series (for `/metrics`, whose label sets are built
at each scrape).

Only the banks' public methods are used. Imports `agent.models`, `agent.store`,
`agent.rules.file` and `agent.rules.query`; never tickets, web, sources, the pipeline or the
daemon.
"""

from __future__ import annotations

import abc
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast, overload

import numpy as np

from agent.clock import human_time
from agent.config.decode import format_duration
from agent.metrics import CounterMetricFamily, GaugeMetricFamily, Metric
from agent.models.anomaly import (
    DEFAULT_PARAMS,
    AnomalyBank,
    AnomalyParams,
    AnomalyResult,
    Warmup,
    seasonality_from_spec,
    sensitivity_threshold,
    warmup_seconds,
)
from agent.models.breach import BreachEstimates, default_recovery, latch
from agent.models.forecast import ForecastBank, window_buckets
from agent.models.slots import SlotTable
from agent.rules.file import AnomalySpec, ForecastSpec, RuleGroupDef
from agent.rules.query import HistoryFn, LabeledValue
from agent.store import Labels, with_pairs

log = logging.getLogger(__name__)

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
    the band of usual values around it (same unit as the series). While the series is
    outside the band it was in before a change, `shifted` is true, with that band
    (`shift_low`, `shift_high`) and when it left it (`shifted_since`, Unix seconds; NaN
    otherwise). `warming`: the model is still learning the series (its score is 0 for that
    reason). `note_text()`: one sentence for tickets on how long the problem lasts, or how
    it ended."""

    score: float
    expected: float
    band_low: float
    band_high: float
    shifted: bool = False
    shift_low: float = math.nan
    shift_high: float = math.nan
    shifted_since: float = math.nan
    warming: bool = False

    def __post_init__(self) -> None:
        # For tickets, not templates: set when the verdict is made, and again when the alert
        # that holds it ends. The sentence is written when a ticket is, in the series' unit.
        self.note: Callable[[Callable[[float], str]], str] | None = None

    def note_text(self, fmt: Callable[[float], str] = "{:.4g}".format) -> str:
        """The note as one sentence, values formatted by `fmt` ("" when there is nothing to say)."""
        return self.note(fmt) if self.note is not None else ""

    def as_template(self) -> dict[str, float]:
        """`$anomaly` in templates: the numbers (`shifted` and `warming` as 1 or 0)."""
        return {"score": self.score, "expected": self.expected, "band_low": self.band_low,
                "band_high": self.band_high, "shifted": float(self.shifted), "shift_low": self.shift_low,
                "shift_high": self.shift_high, "shifted_since": self.shifted_since, "warming": float(self.warming)}


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

    def __iter__(self) -> Iterator[BreachInfo]:
        return (BreachInfo(*row) for row in zip(*(c.tolist() for c in self._columns)))

    def outputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The columns /metrics shows: seconds to the breach, its low and high ends, and the
        probability (in `FORECAST_SERIES` order)."""
        eta, low, high, probability, _ = self._columns
        return eta, low, high, probability


class AnomalyInfos(Sequence[AnomalyInfo]):
    """An anomaly model's verdicts for every series of an evaluation, kept as the bank's
    arrays, as `BreachInfos` keeps a forecast's; `held` maps the rows of active series to the
    `AnomalyInfo` their alerts hold: those objects are returned as they are, so a note set on
    one when its alert ends reaches the alert."""

    def __init__(self, r: AnomalyResult, held: dict[int, AnomalyInfo]) -> None:
        self._columns = tuple(np.asarray(a, dtype=np.float64) for a in (
            r.score, r.expected, r.band_low, r.band_high, r.shifted, r.shift_low, r.shift_high, r.shifted_since,
            r.warming))
        self._held = held

    def __len__(self) -> int:
        return len(self._columns[0])

    @staticmethod
    def _info(score: float, expected: float, low: float, high: float, shifted: float, shift_low: float,
              shift_high: float, since: float, warming: float) -> AnomalyInfo:
        return AnomalyInfo(score, expected, low, high, bool(shifted), shift_low, shift_high, since, bool(warming))

    @overload
    def __getitem__(self, i: int) -> AnomalyInfo: ...

    @overload
    def __getitem__(self, i: slice) -> list[AnomalyInfo]: ...

    def __getitem__(self, i: int | slice) -> AnomalyInfo | list[AnomalyInfo]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        held = self._held.get(i)
        return held if held is not None else self._info(*(float(c[i]) for c in self._columns))

    def outputs(self) -> tuple[np.ndarray, np.ndarray]:
        """The columns /metrics shows: the score (an alert's held score where it holds one,
        as its `AnomalyInfo` says) and the warming flag as 1 or 0."""
        score = self._columns[0]
        if self._held:
            score = score.copy()
            for i, info in self._held.items():
                score[i] = info.score
        return score, self._columns[8]

    def __iter__(self) -> Iterator[AnomalyInfo]:
        held = self._held
        for i, row in enumerate(zip(*(c.tolist() for c in self._columns))):
            info = held.get(i)
            yield info if info is not None else self._info(*row)


@dataclass
class Verdicts:
    """A detector's output for one evaluation: per series, whether the rule is active and the
    model's details (`infos`, in the order of `keys`); `slots`: each series' slot in the bank."""

    keys: list[Labels] = field(default_factory=list)
    active: Sequence[bool] = field(default_factory=list)
    infos: Sequence[BreachInfo | AnomalyInfo] = field(default_factory=list)
    slots: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class Condition:
    """One output series for which the rule is active now, with the detector's verdict."""

    labels: Labels
    value: float
    info: BreachInfo | AnomalyInfo | None = None


# What a modelled series costs beside its bank row: its slot table entry (a dict entry and a
# list slot, ~100 bytes), when it was last seen (8) and its latest verdict's columns (up to 9
# float64), with room for the objects of the few an alert holds.
BOOKKEEPING_BYTES_PER_SERIES = 250
REFUSAL_LOG_INTERVAL = 60.0  # seconds between two log lines about series refused a model


class ModelBudget:
    """The memory the forecast and anomaly models of every rule may hold together (`limit`
    bytes; 0: no limit), split equally between the rules that have models: a series new to a
    rule gets a model only while the rule's models leave room for its row in the rule's share.
    The others are refused at this evaluation (looked at again at the next one), counted per
    rule and logged, as the store refuses series beyond its budget. Equal shares keep one
    rule from starving the others whatever order they run in (a first evaluation offers every
    series at once). The daemon's pipeline owns one across reloads; `test` and `backtest` run
    without a limit."""

    def __init__(self, limit: int = 0) -> None:
        self.limit = max(0, int(limit))
        self.detectors: Callable[[], Iterable[Detector]] = tuple  # the running rules' detectors
        self.refused: dict[str, int] = {}  # rule -> series refused a model, summed over evaluations
        self._logged = -math.inf
        self._since_log = 0

    def used(self) -> int:
        """Bytes the models hold: the series they hold times what one costs."""
        return sum(d.held_bytes() for d in self.detectors())

    def share(self) -> int:
        """Bytes each rule's models may hold."""
        return self.limit // max(1, sum(1 for _ in self.detectors()))

    def admit(self, detector: Detector, rule: str, wanted: int) -> int:
        """How many of `wanted` new series `detector` may model now."""
        if self.limit <= 0 or wanted <= 0:
            return wanted
        room = self.share() - detector.held_bytes()
        allowed = max(0, min(wanted, room // max(1, detector.row_bytes())))
        if allowed < wanted:
            self.refused[rule] = self.refused.get(rule, 0) + wanted - allowed
            self._since_log += wanted - allowed
            now = time.monotonic()
            if now - self._logged >= REFUSAL_LOG_INTERVAL:
                log.warning("rules: %d series got no forecast or anomaly model since the last message (latest: rule "
                            "%s): the models' memory budget (%d MiB) is full; forewarn_model_series_refused_total "
                            "counts them", self._since_log, rule, self.limit >> 20)
                self._logged, self._since_log = now, 0
        return allowed

    def collect(self) -> Iterable[Metric]:
        refused = CounterMetricFamily("forewarn_model_series_refused",
                                      "Series a forecast or anomaly rule gave no model because the models' memory "
                                      "budget was full, summed over evaluations.", labels=["alertname"])
        for rule, n in sorted(self.refused.items()):
            refused.add_metric([rule], float(n))
        yield refused
        yield GaugeMetricFamily("forewarn_model_memory_budget_bytes",
                                "What the forecast and anomaly models of all rules may hold together (0: no limit).",
                                value=float(self.limit))


class Detector(abc.ABC):
    """The bookkeeping every detector shares; subclasses implement `_observe` and `_forget`."""

    def __init__(self, forget_after: float, history: HistoryFn | None) -> None:
        self.forget_after = forget_after
        self.history = history
        self.budget: ModelBudget | None = None  # what new series' models must fit in
        self.rule = ""  # the rule's name, for the budget's counts
        # per slot of the bank's table: the last evaluation that had its series (NaN: none
        # yet). A vector, not a dict by series: 50 bytes a series less at 50,000 series.
        self._last_seen = np.zeros(0)
        self.latest = Verdicts()
        self._next_forget = -np.inf  # idle series are looked for a few times per forget_after, not every evaluation

    def conditions(self, now: float, samples: list[LabeledValue]) -> list[Condition]:
        """Feed this evaluation's samples to the model; the samples for which the rule is active."""
        keys = [lab for lab, _ in samples]
        new = self.table.missing(keys)
        if new and self.budget is not None:
            allowed = self.budget.admit(self, self.rule, len(new))
            if allowed < len(new):
                samples, new = self._refuse(samples, keys, new, allowed)
                keys = [lab for lab, _ in samples]
        values = np.fromiter((v for _, v in samples), dtype=np.float64, count=len(samples))
        self.latest = self._observe(keys, now, values, new)
        self._mark_seen(self.latest.slots, now)
        if now >= self._next_forget:
            self._next_forget = now + self.forget_after / 4
            self._forget_idle(now)
        latest = self.latest
        return [Condition(samples[i][0], samples[i][1], latest.infos[i])
                for i in np.flatnonzero(np.asarray(latest.active, dtype=bool)).tolist()]

    def attach(self, budget: ModelBudget, rule: str) -> None:
        """Fit the models of new series into `budget` (the rule's name counts its refusals)."""
        self.budget, self.rule = budget, rule

    @staticmethod
    def _refuse(samples: list[LabeledValue], keys: list[Labels], new: set[Labels],
                allowed: int) -> tuple[list[LabeledValue], set[Labels]]:
        """The samples without the new series past the first `allowed` (in the order given)."""
        admitted: set[Labels] = set()
        for k in keys:
            if len(admitted) >= allowed:
                break
            if k in new:
                admitted.add(k)
        refused = new - admitted
        return [s for s in samples if s[0] not in refused], admitted

    @property
    @abc.abstractmethod
    def table(self) -> SlotTable:
        """The bank's slot table: which series the detector models."""

    def series_held(self) -> int:
        """How many series the detector models."""
        return len(self.table)

    def _seen_times(self) -> np.ndarray:
        """`_last_seen`, grown (NaN) to the table's capacity."""
        capacity = self.table.capacity
        if len(self._last_seen) < capacity:
            grown = np.full(capacity, np.nan)
            grown[: len(self._last_seen)] = self._last_seen
            self._last_seen = grown
        return self._last_seen

    def _mark_seen(self, slots: np.ndarray, when: np.ndarray | float) -> None:
        self._seen_times()[slots] = when

    def held_bytes(self) -> int:
        """What the series this detector models cost (for the budget): O(1), no walk over them."""
        return self.series_held() * self.row_bytes()

    def row_bytes(self) -> int:
        """What one more series costs: a row of the bank's arrays and its bookkeeping (slot,
        seen time, exported label sets)."""
        return self.bank_row_bytes() + BOOKKEEPING_BYTES_PER_SERIES

    @abc.abstractmethod
    def bank_bytes(self) -> int:
        """Bytes of the model bank (every allocated row, and its slot table)."""

    @abc.abstractmethod
    def bank_row_bytes(self) -> int:
        """Bytes of one row of the model bank's arrays."""

    def exported_labels(self, alertname: str) -> list[Labels]:
        """For /metrics: per series of the latest evaluation, in the order of its verdicts, the
        labels its outputs carry (with `alertname`, without the series' own name: every output
        names itself). Built at each call and not kept: one label set a series, sharing the
        series' pairs, for all its outputs (kept, four a forecast's series and two an
        anomaly's, they held 59 MB at 100,000 series with rules)."""
        renames = (("__name__", ""), ("alertname", alertname))
        return [with_pairs(k, *renames) for k in self.latest.keys]

    def memory_bytes(self) -> int:
        """The model bank's arrays and `bookkeeping_bytes`."""
        return self.bank_bytes() + self.bookkeeping_bytes()

    def bookkeeping_bytes(self) -> int:
        """The Python side kept per series: when each was last seen."""
        return self._last_seen.nbytes

    @abc.abstractmethod
    def adopt(self, old: Detector, same_spec: bool) -> bool:
        """Continue from `old`'s models (the same rule before a reload) if they model the same
        thing; its latest verdicts still hold only when nothing else changed either."""

    def _continue(self, old: Detector, same_spec: bool) -> None:
        self._last_seen = old._last_seen
        if same_spec:
            self.latest = old.latest

    def _forget_idle(self, now: float) -> None:
        table = self.table
        used = table.used()
        idle = used[~(self._seen_times()[used] >= now - self.forget_after)]  # (never seen, NaN, counts as idle)
        if idle.size:
            old = cast(list[Labels], [table.key(s) for s in idle.tolist()])  # (held slots: none is None)
            self._forget(old)
            self._last_seen[idle] = np.nan

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

    def __init__(self, spec: ForecastSpec, history: HistoryFn | None = None, interval: float | None = None) -> None:
        super().__init__(max(MODEL_FORGET_AFTER, float(spec.lookback)), history)
        self.spec = spec
        self.bank = ForecastBank(spec.model, float(spec.lookback), _season(spec), horizon=float(spec.horizon),
                                 linear_buckets=window_buckets(spec.model, float(spec.lookback), interval))
        self.recovery = (spec.recovery_confidence if spec.recovery_confidence is not None
                         else default_recovery(spec.confidence))
        self._on = np.zeros(self.bank.table.capacity, dtype=bool)  # per slot: active at the last evaluation

    @property
    def table(self) -> SlotTable:
        return self.bank.table

    def bank_bytes(self) -> int:
        return self.bank.memory_bytes() + self._on.nbytes

    def bank_row_bytes(self) -> int:
        return self.bank.row_bytes() + 1  # and its flag in `_on`

    def adopt(self, old: Detector, same_spec: bool) -> bool:
        """The bank carries over when it models the same thing: the threshold, direction and
        confidence only change how its forecasts are read."""
        if not isinstance(old, ForecastDetector):
            return False
        a, b = self.spec, old.spec
        if (a.model, a.lookback, a.season, a.horizon) != (b.model, b.lookback, b.season, b.horizon):
            return False
        if old.bank.linear_buckets != self.bank.linear_buckets:  # the group's interval changed
            return False
        self.bank = old.bank
        self._on = old._on
        self._continue(old, same_spec)
        return True

    def _observe(self, keys: list[Labels], now: float, values: np.ndarray, new: set[Labels]) -> Verdicts:
        # every new series' slot at once, before warming them one by one: a bank grown one
        # key at a time ends up larger than its series need
        slots = self.bank.slots_for(keys)
        if self.history is not None and new:
            span = max(float(self.spec.lookback), self.bank.history)
            for k in new:
                t, v = self.history(k, now - span, now - 1e-9)
                if len(t):
                    # the store's history is 5-minute means beyond its raw tier: a mean hides
                    # the spikes whose reach would bound the noise
                    self.bank.warm(k, t, v, exact=False)
        if len(self._on) < self.bank.table.capacity:
            self._on = np.concatenate((self._on, np.zeros(self.bank.table.capacity - len(self._on), dtype=bool)))
        if new:  # a new series (perhaps in a slot a forgotten one had) starts inactive
            self._on[slots[np.fromiter((k in new for k in keys), dtype=bool, count=len(keys))]] = False
        self.bank.update(slots, now, values)
        s = self.spec
        est = self.bank.breach(slots, now, s.threshold, s.direction, float(s.horizon), s.confidence)
        active = latch(est.probability, self._on[slots], s.confidence, self.recovery) & np.isfinite(values)
        self._on[slots] = active
        return Verdicts(keys, active, BreachInfos(est), slots)

    def _forget(self, keys: list[Labels]) -> None:
        self.bank.forget(keys)


class AnomalyDetector(Detector):
    """Feeds an anomaly rule's series into an `AnomalyBank` and reads scores.

    Active where the score reaches the sensitivity's threshold, on the side `direction`
    names; with `until: recovered` (the default) also while the series stays outside the
    band it left when that happened (the bank's `shifted`, on the same side), until it is
    back in that band or `accept_after` has passed, when the bank takes the new level as
    normal. The bank is configured from the rule: its seasonality, and its shifts start at
    the rule's threshold. A series the bank does not know yet is rebuilt from its stored
    history when there is one (`history`), within `REPLAY_BUDGET` samples per evaluation,
    so a new rule over existing series does not start cold."""

    def __init__(self, spec: AnomalySpec, history: HistoryFn | None = None) -> None:
        super().__init__(MODEL_FORGET_AFTER, history)
        self.spec = spec
        self.threshold = sensitivity_threshold(spec.sensitivity)
        self.bank = AnomalyBank(anomaly_params(spec))
        self.shown: dict[Labels, AnomalyInfo] = {}  # the verdict each active series' alert holds
        self.warming: Warmup | None = None  # the warm-up of the series still warming up, at the last evaluation

    @property
    def table(self) -> SlotTable:
        return self.bank.table

    def bank_bytes(self) -> int:
        return self.bank.memory_bytes()

    def bank_row_bytes(self) -> int:
        return self.bank.row_bytes()

    def adopt(self, old: Detector, same_spec: bool) -> bool:
        """The bank carries over, with the rule's new settings (seasonality, threshold):
        they change how it reads its state, not the state."""
        if not isinstance(old, AnomalyDetector) or not old.bank.reconfigure(self.bank.params):
            return False
        self.bank = old.bank
        self.shown = old.shown
        self._continue(old, same_spec)
        return True

    def _side(self, values: np.ndarray, centre: np.ndarray) -> np.ndarray:
        if self.spec.direction == "above":
            return values > centre
        if self.spec.direction == "below":
            return values < centre
        return np.ones(len(values), dtype=bool)

    def _side_of_shift(self, direction: np.ndarray) -> np.ndarray:
        if self.spec.direction == "above":
            return direction > 0
        if self.spec.direction == "below":
            return direction < 0
        return direction != 0

    def _replay_cold(self, cold: list[Labels], now: float) -> None:
        """Rebuild series the bank had never seen from their stored history (bounded)."""
        if self.history is None:
            return
        budget = REPLAY_BUDGET
        for k in cold:
            if budget <= 0:
                break
            t, v = self.history(k, now - REPLAY_SPAN, now - 1e-9)
            if len(t):
                t, v = t[-budget:], v[-budget:]
                self.bank.replay(k, t, v)
                budget -= len(t)

    def _observe(self, keys: list[Labels], now: float, values: np.ndarray, new: set[Labels]) -> Verdicts:
        cold = [k for k in keys if k in new] if new else []  # (new: not in the bank)
        # every new series' slot at once, before replaying them one by one: a bank grown one
        # key at a time ends up larger than its series need
        slots = self.bank.slots_for(keys)
        self._replay_cold(cold, now)
        r = self.bank.update(slots, now, values)
        ok = np.isfinite(values)
        by_score = (r.score >= self.threshold) & ok & self._side(values, r.expected)
        held = np.zeros(len(keys), dtype=bool)
        accepted = np.zeros(len(keys), dtype=bool)
        after = float(self.spec.accept_after)
        recovered = self.spec.until == "recovered"
        if recovered:
            # (a NaN value, such as a 0/0 rate, says nothing about a recovery: the problem holds)
            held = r.shifted & self._side_of_shift(r.shift_direction)
            if after > 0:
                accepted = held & (now - r.shifted_since >= after)
                if accepted.any():
                    self.bank.accept(slots[accepted])
                    held &= ~accepted
        active = by_score | held
        # Only the rows an alert holds, now or until this evaluation, need an AnomalyInfo
        # object (scores held, notes); the others stay columns (`AnomalyInfos`).
        rows = active.copy()
        if self.shown:
            slot_of = self.bank.table.slot
            before_slots = [s for s in map(slot_of, self.shown) if s is not None]
            rows |= np.isin(slots, np.asarray(before_slots, dtype=np.int64))
        objects: dict[int, AnomalyInfo] = {}
        verdicts = AnomalyInfos(r, objects)
        shown: dict[Labels, AnomalyInfo] = {}
        for i in np.flatnonzero(rows).tolist():
            k = keys[i]
            info = verdicts[i]
            before = self.shown.get(k)
            if active[i]:
                if held[i] and before is not None:
                    # the problem is open for what the score said when it opened
                    info.score = max(info.score, before.score)
                if recovered and info.shifted:
                    info.note = _outside_note(info, after)
                shown[k] = info
                objects[i] = info
            elif before is not None:
                # the alert that holds `before` ends now: say why in its clear
                if accepted[i]:
                    before.note = _accepted_note(before, after)
                elif recovered and before.shifted and not info.shifted:
                    before.note = _back_note(before, now)
        self.shown = shown
        self.warming = self.bank.warmup(slots[r.warming])
        return Verdicts(keys, active.tolist(), verdicts, slots)

    def warming_note(self) -> str | None:
        """While every series of the rule's last evaluation is still warming up (the rule
        cannot fire yet): why, and for how long. None otherwise."""
        w = self.warming
        n = 0 if w is None else len(w.left)
        if w is None or not n or n < len(self.latest.keys):
            return None
        need, left = float(np.max(w.needed)), float(np.min(w.left))
        return (f"anomaly model warming up: {n} series score 0 until each has {format_duration(need)} of data "
                f"(the first in about {format_duration(max(60.0, 60.0 * math.ceil(left / 60.0)))})")

    def _forget(self, keys: list[Labels]) -> None:
        self.bank.forget(keys)
        for k in keys:
            self.shown.pop(k, None)

    def restore(self, state: dict[str, Any]) -> int:
        """Take a saved bank state (`agent.rules.model_state`); returns the series restored.
        Each counts as seen when it last had a sample, so series gone meanwhile are freed
        as usual."""
        self.bank.load_state_dict(state)
        self._last_seen = np.zeros(0)  # (the slots are the state's now)
        keys = self.bank.keys()
        slots = self.bank.slots_for(keys)
        last = self.bank.last_sample(slots)
        labelled = np.fromiter((isinstance(k, tuple) for k in keys), dtype=bool, count=len(keys))
        self._mark_seen(slots, np.where(labelled & np.isfinite(last), last, np.nan))
        return len(keys)


# A series the anomaly bank has not seen is rebuilt from this much stored history, and an
# evaluation replays at most this many samples (about a second; the rest start cold).
REPLAY_SPAN = 8 * 86400.0
REPLAY_BUDGET = 100_000


@dataclass(frozen=True)
class WarmupNote:
    """How long an anomaly rule's model warms up at its group's interval (`forewarn check`
    and `forewarn backtest` say it)."""

    file: str
    group: str
    rule: str
    interval: float
    seconds: float

    def __str__(self) -> str:
        return (f'{self.file}: group "{self.group}", rule "{self.rule}": its anomaly model warms up for '
                f"{format_duration(self.seconds)} at the {format_duration(self.interval)} interval: a new series "
                f"scores 0 until then, and says so (forewarn_model_warming 1, rule health unknown)")


def warmup_notes(groups: Iterable[RuleGroupDef], default_interval: float,
                 interval: float | None = None) -> list[WarmupNote]:
    """A `WarmupNote` per anomaly rule of `groups` (groups without an interval run every
    `default_interval` seconds; with `interval`, every group runs at it)."""
    out = []
    for g in groups:
        if interval is None:
            every = float(g.interval) if g.interval is not None else float(default_interval)
        else:
            every = float(interval)
        for r in g.rule_defs():
            if r.is_alert and r.spec.anomaly is not None:
                seconds = warmup_seconds(anomaly_params(r.spec.anomaly), every)
                out.append(WarmupNote(r.file, g.name, r.name, every, seconds))
    return out


def anomaly_params(spec: AnomalySpec) -> AnomalyParams:
    """The detector's configuration for a rule: its seasonality, and shifts that start at its
    threshold (so a shift holds exactly the alerts the score opened)."""
    return replace(DEFAULT_PARAMS, seasonality=seasonality_from_spec(spec.seasonality),
                   shift_score=sensitivity_threshold(spec.sensitivity))


def _outside_note(info: AnomalyInfo, accept_after: float) -> Callable[[Callable[[float], str]], str]:
    def text(fmt: Callable[[float], str]) -> str:
        out = (f"Outside its usual band ({fmt(info.shift_low)} to {fmt(info.shift_high)}) since "
               f"{human_time(info.shifted_since)}: the problem stays open until the value is back in that band")
        if accept_after > 0:
            out += f", or for {format_duration(accept_after)}, after which the new level is taken as normal"
        return out + "."
    return text


def _accepted_note(before: AnomalyInfo, accept_after: float) -> Callable[[Callable[[float], str]], str]:
    return lambda fmt: (f"Accepted as the new normal: outside its former band ({fmt(before.shift_low)} to "
                        f"{fmt(before.shift_high)}) since {human_time(before.shifted_since)}, "
                        f"for {format_duration(accept_after)}.")


def _back_note(before: AnomalyInfo, now: float) -> Callable[[Callable[[float], str]], str]:
    return lambda fmt: (f"Back in its usual band ({fmt(before.shift_low)} to {fmt(before.shift_high)}) "
                        f"at {human_time(now)}.")


def _season(spec: ForecastSpec) -> float | None:
    return float(spec.season) if spec.season is not None else None


def make_detector(forecast: ForecastSpec | None, anomaly: AnomalySpec | None,
                  history: HistoryFn | None, interval: float | None = None) -> ForecastDetector | AnomalyDetector | None:
    """The detector a rule's `forecast:` or `anomaly:` block asks for (None: a threshold rule).
    `interval`: how often the rule is evaluated (it sizes a forecast's window buckets)."""
    if forecast is not None:
        return ForecastDetector(forecast, history, interval)
    if anomaly is not None:
        return AnomalyDetector(anomaly, history)
    return None
