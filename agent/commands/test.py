"""`forewarn test`: rule unit tests in promtool's format (`promtool test rules`), unchanged.

A test file names rule files, an evaluation interval and test groups; each group loads
input series (promtool's expanding notation: `1+2x3`, `5-1x4`, `7x2`, `_`, `_x3`, `stale`)
into a `Store`, evaluates the rules with a `SimulatedClock` through the same `RuleManager`,
`Engine` and templates as the daemon (the replay loop of `agent.replay`, which `forewarn
backtest` also runs), and compares alerts and PromQL results at the given times. Failures
are printed like promtool's (expected and got side by side) and the command exits 1.
Semantics follow promtool: every group is evaluated at 0, evaluation_interval, ...
up to the last eval_time with the samples up to that time; an alert check at time t uses
the evaluation at the last step <= t; only firing alerts are compared.

Extension: `exp_tickets` in an `alert_rule_test` item lists the ticket actions
(`open`/`update`/`clear`) the rule's problems should have produced up to `eval_time`, in
order, each with `labels` that must be a subset of the ticket's labels. Tickets come from
the real `agent.tickets.manager.ProblemManager` with an in-memory outbox. promtool rejects this
key, so files using it are forewarn-only.

Extension: `exp_remediations` lists the remediation runs the rule's problems should have
started up to `eval_time`, in order (`remediation` and a subset of the problem's `labels`).
Remediations are never executed by a test: each step is recorded with the outcome the
file's top-level `remediations:` gives it (`outcome`, default succeeded), and the problem
goes on as the daemon's would (verification, ticket or none) with the input series deciding
whether the rule recovered. `remediations:` also takes each remediation's `when`, `verify`
and `on_recovery` (the main config's settings; defaults otherwise).

A command: it may import any stage; nothing but the CLI imports it.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from agent.config.decode import ConfigError, ConfigErrors, Duration, decode_file, doc, format_duration, mark_of
from agent.config.schema import TicketingConfig
from agent.promql import Engine
from agent.promql.notation import OMITTED, expand_values, parse_metric, to_float
from agent.promql.regex import Regex, RegexError, compile_anchored
from agent.promql.values import almost_equal
from agent.replay import Tick, replay
from agent.rules.alerting import AlertState
from agent.rules.file import RuleGroupDef, load_rule_files
from agent.rules.manager import RuleManager, RuleOptions
from agent.rules.query import to_samples
from agent.rules.rule import Health, TemplateExpansionError
from agent.rules.rule import log as evaluation_log
from agent.rules.templates import go_format_e
from agent.sources.recording import Recording
from agent.store import Labels, Store
from agent.tickets.remediation.base import CommonSettings, Status
from agent.tickets.sinks.base import Ticket

# ---- test file schema -------------------------------------------------------------------------


@dataclass
class SeriesSpec:
    series: str = doc("Series in PromQL notation, e.g. 'up{job=\"a\"}'.")
    values: str = doc("Values in the expanding notation, one per input interval.", default="")


@dataclass
class ExpAlert:
    exp_labels: dict[str, str] = doc("Labels of the firing alert (alertname is added).", default_factory=dict)
    exp_annotations: dict[str, str] = doc("Annotations of the firing alert.", default_factory=dict)


@dataclass
class ExpTicket:
    action: Literal["open", "update", "clear"] = doc("Ticket action.")
    labels: dict[str, str] = doc("Labels the ticket must carry (a subset).", default_factory=dict)


@dataclass
class ExpRemediation:
    remediation: str = doc("The remediation a run started.")
    labels: dict[str, str] = doc("Labels the problem must have (a subset of its grouped labels).",
                                 default_factory=dict)


@dataclass
class SimulatedRemediation(CommonSettings):
    """A remediation as a test sees it: its settings, and the outcome its steps get."""

    outcome: Literal["succeeded", "failed", "timed_out", "error"] = doc(
        "What each run of it reports (nothing is executed in a test).", default="succeeded")


@dataclass
class AlertRuleTest:
    alertname: str = doc("Alert to check.")
    eval_time: Duration = doc("Time of the check.", default=Duration(0))
    exp_alerts: list[ExpAlert] = doc("Alerts expected firing.", default_factory=list)
    exp_tickets: list[ExpTicket] | None = doc("forewarn extension: ticket actions up to eval_time.", default=None)
    exp_remediations: list[ExpRemediation] | None = doc(
        "forewarn extension: remediation runs started up to eval_time.", default=None)


@dataclass
class ExpSample:
    labels: str = doc("Labels in PromQL notation ('' for a scalar result).", default="")
    value: Any = doc("Expected value.", default=0.0)
    histogram: str = doc("Native histograms are not supported.", default="")

    def validate(self, err: Any) -> None:
        if self.histogram:
            err("histogram", "native histograms are not supported")
        try:
            to_float(self.value)
        except ValueError:
            err("value", f"not a number: {self.value!r}")


@dataclass
class PromqlExprTest:
    expr: str = doc("PromQL expression.")
    eval_time: Duration = doc("Evaluation time.", default=Duration(0))
    exp_samples: list[ExpSample] = doc("Expected samples.", default_factory=list)


@dataclass
class TestGroup:
    interval: Duration | None = doc("Input series interval (default: evaluation_interval).", default=None)
    input_series: list[SeriesSpec] = doc("Series loaded before evaluation.", default_factory=list)
    name: str = doc("Name shown in failures.", default="")
    alert_rule_test: list[AlertRuleTest] = doc("Alert checks.", default_factory=list)
    promql_expr_test: list[PromqlExprTest] = doc("PromQL checks.", default_factory=list)
    external_labels: dict[str, str] = doc("$externalLabels in templates.", default_factory=dict)
    external_url: str = doc("$externalURL in templates.", default="")


@dataclass
class TestFile:
    rule_files: list[str] = doc("Rule files (globs), relative to the test file.", default_factory=list)
    evaluation_interval: Duration = doc("Rule evaluation interval.", default=Duration(60))
    group_eval_order: list[str] = doc("Order of group evaluation.", default_factory=list)
    tests: list[TestGroup] = doc("Test groups.", default_factory=list)
    remediations: dict[str, SimulatedRemediation] = doc(
        "forewarn extension: settings and simulated outcome of the remediations the rules name.",
        default_factory=dict)

    def validate(self, err: Any) -> None:
        if self.evaluation_interval <= 0:
            err("evaluation_interval", "must be greater than zero")


# ---- Go-compatible printing -------------------------------------------------------------------


def go_duration(seconds: float) -> str:
    """A time as promtool prints it (Prometheus's model.Duration): 0s, 30s, 5m, 1h30m, 1d."""
    return format_duration(seconds)


def _go_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def labels_string(labels: dict[str, str] | Labels) -> str:
    items = sorted(dict(labels).items())
    return "{" + ", ".join(f"{k}={_go_quote(v)}" for k, v in items) + "}"


def _alerts_string(items: list[tuple[dict[str, str], dict[str, str]]]) -> str:
    if not items:
        return "[]"
    parts = []
    for i, (lab, ann) in enumerate(items):
        body = f"Labels:{labels_string(lab)}\nAnnotations:{labels_string(ann)}"
        parts.append(f"{i}:" + _indent("\n" + body, "  "))
    return "[\n" + ",\n".join(parts) + "\n]"


def _indent(text: str, prefix: str) -> str:
    return text.replace("\n", "\n" + prefix)


def _samples_string(samples: list[tuple[Labels, float]]) -> str:
    if not samples:
        return "nil"
    return ", ".join(f"{labels_string(lab)} {go_format_e(v, upper=True)}" for lab, v in samples)


# ---- running ----------------------------------------------------------------------------------


def _load_series(tg: TestGroup, interval: float) -> Recording:
    """A test group's input samples, sorted by time (file order within one time)."""
    labels: list[Labels] = []
    ts: list[float] = []
    idx: list[int] = []
    vals: list[float] = []
    for s in tg.input_series:
        lab = parse_metric(s.series)
        labels.append(lab)
        for i, v in enumerate(expand_values(s.values)):
            if v is OMITTED:
                continue
            ts.append(i * interval)
            idx.append(len(labels) - 1)
            vals.append(v)
    return Recording.from_arrays(labels, np.asarray(ts, dtype=np.float64), np.asarray(idx, dtype=np.int64),
                                 np.asarray(vals, dtype=np.float64))


class _Loader:
    """Appends the input samples to the store, one append per time, up to a given time."""

    def __init__(self, inputs: Recording, store: Store) -> None:
        self.inputs = inputs
        self.store = store
        self.ids = store.series_ids(inputs.labels) if inputs.labels else np.empty(0, dtype=np.int64)
        self.loaded = 0

    def load_until(self, t: float) -> None:
        times = self.inputs.t
        hi = int(np.searchsorted(times, t, side="right"))
        while self.loaded < hi:
            j = self.loaded
            k = min(int(np.searchsorted(times, times[j], side="right")), hi)
            self.store.append(self.ids[self.inputs.series[j:k]], times[j], self.inputs.v[j:k])
            self.loaded = k


class _Checks:
    """The alert checks of one test group, run as the replay reaches their times; evaluation
    errors end the replay (promtool reports them instead of the checks)."""

    def __init__(self, tg: TestGroup, eval_interval: float) -> None:
        self.alert_tests = sorted(tg.alert_rule_test, key=lambda a: float(a.eval_time))
        self.eval_interval = eval_interval
        self.name_line = f"    name: {tg.name},\n" if tg.name else ""
        self.errors: list[str] = []
        self.failed_evaluation = False
        self.tickets: list[tuple[float, str, Ticket]] = []  # (time, rule, ticket) enqueued so far
        self.runs: list[tuple[float, str, str, dict[str, str]]] = []  # (time, rule, remediation, labels)
        self.next = 0

    def wants_tickets(self) -> bool:
        return any(a.exp_tickets is not None or a.exp_remediations is not None for a in self.alert_tests)

    def tick(self, tick: Tick) -> bool:
        ts = tick.time
        self.tickets.extend((ts, t.rule, t) for _, t in tick.tickets)
        self.runs.extend((ts, d.rule, n, d.labels) for d in tick.decisions for n in d.remediated)
        # A template error is no evaluation error for promtool: the alert carries the error
        # text in its annotation and the test compares that.
        eval_errs = [f"    rule: {r.name}, time: {go_duration(ts)}, err: {r.last_error}"
                     for g in tick.rules.groups for r in g.rules if r.health is Health.ERR and r.last_evaluation == ts
                     and not isinstance(r.last_error, TemplateExpansionError)]
        self.errors.extend(eval_errs)
        if eval_errs:
            self.failed_evaluation = True
            return False
        tests = self.alert_tests
        while self.next < len(tests) and ts <= float(tests[self.next].eval_time) < ts + self.eval_interval:
            self.errors.extend(_check_alerts(tests[self.next], tick.rules, self.tickets, self.name_line))
            self.errors.extend(_check_remediations(tests[self.next], self.runs, self.name_line))
            self.next += 1
        return True


def run_test_group(tg: TestGroup, groups: list[RuleGroupDef], eval_interval: float,
                   group_order: list[str], remediations: Mapping[str, SimulatedRemediation] | None = None) -> list[str]:
    """Run one test group; returns failure messages (empty: passed)."""
    interval = float(tg.interval or eval_interval)
    try:
        inputs = _load_series(tg, interval)
    except ValueError as e:
        return [f"    input series: {e}"]
    max_t = max([float(a.eval_time) for a in tg.alert_rule_test] + [float(p.eval_time) for p in tg.promql_expr_test],
                default=0.0)
    steps = int(math.floor(max_t / eval_interval + 1e-9))
    # Room for every input sample and every recorded sample, so nothing is overwritten.
    per_series = np.bincount(inputs.series, minlength=len(inputs.labels)) if len(inputs.series) else np.zeros(0)
    capacity = max(int(per_series.max(initial=0)), steps + 1) + 16
    store = Store(raw_capacity=capacity, retention=max(float(inputs.t.max(initial=0)), max_t) * 2 + 86400.0,
                  downsample_interval=300.0, max_series=1_000_000, stale_after=math.inf)
    order = {n: i for i, n in enumerate(group_order)}
    ordered = sorted(groups, key=lambda g: order.get(g.name, len(order)))
    # promtool evaluates every group at every evaluation_interval, whatever the group's own.
    options = RuleOptions(default_interval=interval, external_labels=tg.external_labels, external_url=tg.external_url,
                          write_alerts=True, interval=eval_interval)
    checks = _Checks(tg, eval_interval)
    replay(ordered, store, _Loader(inputs, store).load_until, start=0.0, end=max_t, step=eval_interval, options=options,
           ticketing=TicketingConfig() if checks.wants_tickets() else None, on_tick=checks.tick,
           remediations=remediations, outcomes={n: Status(r.outcome) for n, r in (remediations or {}).items()})
    if checks.failed_evaluation:
        return checks.errors
    engine = Engine(store, subquery_step=eval_interval)
    for pt in tg.promql_expr_test:
        checks.errors.extend(_check_promql(pt, engine))
    return checks.errors


def _check_alerts(at: AlertRuleTest, manager: RuleManager, tickets: list[tuple[float, str, Ticket]],
                  name_line: str) -> list[str]:
    got: list[tuple[dict[str, str], dict[str, str]]] = []
    for r in manager.alerting_rules():
        if r.name != at.alertname:
            continue
        for a in r.active_alerts():
            if a.state == AlertState.FIRING:
                got.append((dict(a.labels), dict(a.annotations)))
    exp = [(dict(e.exp_labels, alertname=at.alertname), dict(e.exp_annotations)) for e in at.exp_alerts]

    def key(x: tuple[dict[str, str], dict[str, str]]) -> tuple[Any, ...]:
        return (sorted(x[0].items()), sorted(x[1].items()))

    got.sort(key=key)
    exp.sort(key=key)
    out = []
    if got != exp:
        out.append(f"{name_line}    alertname: {at.alertname}, time: {go_duration(float(at.eval_time))}, \n"
                   f"        exp:{_indent(_alerts_string(exp), '            ')}, \n"
                   f"        got:{_indent(_alerts_string(got), '            ')}")
    if at.exp_tickets is not None:
        actual = [(t.action, dict(t.labels)) for when, rule, t in tickets
                  if rule == at.alertname and when <= float(at.eval_time)]
        ok = len(actual) == len(at.exp_tickets) and all(
            a[0] == e.action and all(a[1].get(k) == v for k, v in e.labels.items())
            for a, e in zip(actual, at.exp_tickets))
        if not ok:
            exp_t = "\n".join(f"            {e.action} {labels_string(e.labels)}" for e in at.exp_tickets) or "            (none)"
            got_t = "\n".join(f"            {a} {labels_string(lab)}" for a, lab in actual) or "            (none)"
            out.append(f"{name_line}    alertname: {at.alertname}, time: {go_duration(float(at.eval_time))}, tickets:\n"
                       f"        exp:\n{exp_t}\n        got:\n{got_t}")
    return out


def _check_remediations(at: AlertRuleTest, runs: list[tuple[float, str, str, dict[str, str]]],
                        name_line: str) -> list[str]:
    if at.exp_remediations is None:
        return []
    actual = [(n, labels) for when, rule, n, labels in runs if rule == at.alertname and when <= float(at.eval_time)]
    exp = at.exp_remediations
    if len(actual) == len(exp) and all(a[0] == e.remediation and all(a[1].get(k) == v for k, v in e.labels.items())
                                       for a, e in zip(actual, exp)):
        return []
    exp_t = "\n".join(f"            {e.remediation} {labels_string(e.labels)}" for e in exp) or "            (none)"
    got_t = "\n".join(f"            {n} {labels_string(lab)}" for n, lab in actual) or "            (none)"
    return [f"{name_line}    alertname: {at.alertname}, time: {go_duration(float(at.eval_time))}, remediations:\n"
            f"        exp:\n{exp_t}\n        got:\n{got_t}"]


def _check_promql(pt: PromqlExprTest, engine: Engine) -> list[str]:
    t = float(pt.eval_time)
    head = f"    expr: {_go_quote(pt.expr)}, time: {go_duration(t)}"
    try:
        got = to_samples(engine.instant(pt.expr, t))
    except Exception as e:
        return [f"{head}, err: {e}"]
    exp: list[tuple[Labels, float]] = []
    for s in pt.exp_samples:
        try:
            exp.append((parse_metric(s.labels), to_float(s.value)))
        except ValueError as e:
            return [f"{head}, err: labels {e}"]
    exp.sort(key=lambda x: x[0])
    got.sort(key=lambda x: x[0])

    def same(a: list[tuple[Labels, float]], b: list[tuple[Labels, float]]) -> bool:
        return len(a) == len(b) and all(
            la == lb and almost_equal(va, vb) for (la, va), (lb, vb) in zip(a, b))

    if same(exp, got):
        return []
    return [f"{head},\n        exp: {_samples_string(exp)}\n        got: {_samples_string(got)}"]


def run_test_file(path: str, run: Sequence[Regex] = ()) -> tuple[list[str], list[ConfigError]]:
    """Run the test groups of one file (only those whose name one of `run` matches, when given,
    as promtool's `--run`): (failures, file errors)."""
    try:
        tf: TestFile = decode_file(TestFile, path)
    except ConfigErrors as e:
        return [], e.errors
    base = os.path.dirname(os.path.abspath(path))
    rule_paths: list[str] = []
    file_errors: list[ConfigError] = []
    for pattern in tf.rule_files:
        full = pattern if os.path.isabs(pattern) else os.path.join(base, pattern)
        matches = sorted(glob.glob(full))
        if not matches:
            line, col = mark_of(tf, "rule_files")
            file_errors.append(ConfigError(path, line, col, f"rule_files: no file matches {pattern!r}"))
        rule_paths.extend(m for m in matches if m not in rule_paths)
    seen_groups: set[str] = set()
    for name in tf.group_eval_order:
        if name in seen_groups:
            line, col = mark_of(tf, "group_eval_order")
            file_errors.append(ConfigError(path, line, col, f"group name repeated in evaluation order: {name}"))
        seen_groups.add(name)
    for i, tg in enumerate(tf.tests):
        for s in tg.input_series:
            try:
                parse_metric(s.series)
                expand_values(s.values)
            except ValueError as e:
                line, col = mark_of(s, "series")
                file_errors.append(ConfigError(path, line, col, f"tests[{i}].input_series: {e}"))
    if file_errors:
        return [], file_errors
    try:
        groups = load_rule_files(rule_paths, None)
    except ConfigErrors as e:
        return [], e.errors
    failures: list[str] = []
    for tg in tf.tests:
        if run and not any(r.matches(tg.name) for r in run):
            continue
        failures.extend(run_test_group(tg, groups, float(tf.evaluation_interval), tf.group_eval_order,
                                       tf.remediations))
    return failures, []


def command(args: Any) -> int:
    # Evaluation errors are reported as test failures; the rule module's own warnings about
    # them would only repeat that on stderr.
    evaluation_log.setLevel(logging.ERROR)
    try:
        run = [compile_anchored(f".*(?:{r}).*") for r in args.run or ()]  # Go's unanchored MatchString
    except RegexError as bad:
        print(f"forewarn: error: --run: {bad}", file=sys.stderr)
        return 2
    failed = False
    for path in args.test_files:
        print("Unit Testing: ", path)
        failures, errors = run_test_file(path, run)
        if errors:
            print("  FAILED:", file=sys.stderr)
            for e in errors:
                print(e, file=sys.stderr)
            failed = True
            continue
        if failures:
            print("  FAILED:", file=sys.stderr)
            for f in failures:
                print(f, file=sys.stderr)
                print(file=sys.stderr)
            failed = True
            continue
        print("  SUCCESS")
        print()
    return 1 if failed else 0
