"""The rule state machine, step by step with a fake query and a simulated clock, then the
same rules over a real Store and PromQL Engine (recording rules, forecast, anomaly)."""

from __future__ import annotations

import json
import math
import os
from statistics import NormalDist

import numpy as np
import pytest

from agent.clock import SimulatedClock
from agent.models.linear import RATE_UNCERTAINTY
from agent.promql import Engine
from agent.rules.alerting import RESOLVED_RETENTION, AlertState
from agent.rules.detectors import BreachInfo
from agent.rules.file import load_rule_files, load_rule_text
from agent.rules.manager import RuleManager, RuleOptions
from agent.rules.query import to_samples
from agent.rules.rule import DuplicateLabelsetError, Health, LimitExceededError, QueryFailedError
from agent.store import STALE_NAN, Store, is_stale, make_labels

P, F, I = AlertState.PENDING, AlertState.FIRING, AlertState.INACTIVE


def one_rule(body: str, group_extra: str = "") -> RuleManager:
    text = f"groups:\n- name: g\n{group_extra}  rules:\n" + "\n".join("  " + ln for ln in body.strip().splitlines())
    return RuleManager(load_rule_text(text, "r.yml"), FakeQuery(), SimulatedClock(0))


class FakeQuery:
    """Answers with the table of the current step: {labels dict as tuple: value}."""

    def __init__(self) -> None:
        self.samples: list[tuple[dict[str, str], float]] = []
        self.error: Exception | None = None

    def __call__(self, expr, t):
        if self.error:
            raise self.error
        return [(make_labels("x", lab), v) for lab, v in self.samples]


def run(rm: RuleManager, steps: list[tuple[float, list[tuple[dict[str, str], float]]]]) -> list[list[tuple]]:
    """Evaluate at each (t, samples); record (state, active_at, resolved_at) of every alert."""
    q = rm.engine
    out = []
    (rule,) = rm.alerting_rules()
    for t, samples in steps:
        q.samples = samples
        rm.evaluate_group(rm.groups[0], t)
        out.append([(a.state, a.active_at, a.resolved_at) for a in rule.all_alerts()])
    return out


A = {"host": "a"}


def test_for_pending_then_firing_then_resolved():
    rm = one_rule("- alert: X\n  expr: x > 1\n  for: 2m")
    got = run(rm, [(0, []), (60, [(A, 5)]), (120, [(A, 5)]), (180, [(A, 5)]), (240, []), (300, [])])
    assert got == [[], [(P, 60, None)], [(P, 60, None)], [(F, 60, None)], [(I, 60, 240)], [(I, 60, 240)]]
    (rule,) = rm.alerting_rules()
    a = rule.all_alerts()[0]
    assert a.fired_at == 180 and rule.active_alerts() == []


def test_for_zero_fires_at_once_and_pending_that_clears_is_forgotten():
    rm = one_rule("- alert: X\n  expr: x > 1")
    assert run(rm, [(0, [(A, 5)])]) == [[(F, 0, None)]]
    rm = one_rule("- alert: X\n  expr: x > 1\n  for: 5m")
    assert run(rm, [(0, [(A, 5)]), (60, []), (120, [(A, 5)])]) == [[(P, 0, None)], [], [(P, 120, None)]]


def test_keep_firing_for():
    rm = one_rule("- alert: X\n  expr: x > 1\n  keep_firing_for: 2m")
    got = run(rm, [(0, [(A, 5)]), (60, []), (120, []), (180, []), (240, [])])
    assert [g[0][0] for g in got] == [F, F, F, I, I]
    (rule,) = rm.alerting_rules()
    assert rule.all_alerts()[0].resolved_at == 180
    # the condition returning during keep_firing_for resets it
    rm = one_rule("- alert: X\n  expr: x > 1\n  keep_firing_for: 2m")
    got = run(rm, [(0, [(A, 5)]), (60, []), (120, [(A, 5)]), (180, []), (240, []), (300, [])])
    assert [g[0][0] for g in got] == [F, F, F, F, F, I]


def test_resolved_alert_kept_15_minutes_then_dropped_and_refire_is_new():
    rm = one_rule("- alert: X\n  expr: x > 1")
    steps = [(0, [(A, 5)]), (60, [])] + [(60 + k * 60, []) for k in range(1, 17)]
    got = run(rm, steps)
    assert got[1] == [(I, 0, 60)]
    kept = [bool(g) for g in got]
    # kept while now - resolved_at <= 15m, removed on the first evaluation after that
    last_kept = max(t for (t, _), k in zip(steps, kept) if k)
    assert last_kept == 60 + RESOLVED_RETENTION
    assert got[-1] == []
    rm2 = one_rule("- alert: X\n  expr: x > 1\n  for: 1m")
    got = run(rm2, [(0, [(A, 5)]), (60, [(A, 5)]), (120, []), (180, [(A, 5)])])
    assert got[-1] == [(P, 180, None)]  # a resolved alert is replaced, active_at starts again


def test_one_alert_per_label_set_and_templated_labels():
    rm = one_rule("""
- alert: X
  expr: x > 1
  labels: {severity: '{{ if gt $value 10.0 }}critical{{ else }}warning{{ end }}', team: ops}
  annotations: {summary: '{{ $labels.host }} at {{ $value }}'}
""")
    q = rm.engine
    q.samples = [({"host": "a"}, 5), ({"host": "b"}, 50)]
    rm.evaluate_group(rm.groups[0], 0)
    (rule,) = rm.alerting_rules()
    alerts = sorted(rule.active_alerts(), key=lambda a: a.labels["host"])
    assert [a.labels for a in alerts] == [
        {"host": "a", "severity": "warning", "team": "ops", "alertname": "X"},
        {"host": "b", "severity": "critical", "team": "ops", "alertname": "X"},
    ]
    assert [a.annotations["summary"] for a in alerts] == ["a at 5", "b at 50"]
    # value and annotations follow the latest evaluation; a label change is another alert
    q.samples = [({"host": "a"}, 7), ({"host": "b"}, 50)]
    rm.evaluate_group(rm.groups[0], 60)
    a = [x for x in rule.active_alerts() if x.labels["host"] == "a"][0]
    assert (a.value, a.annotations["summary"], a.active_at) == (7, "a at 7", 0)
    q.samples = [({"host": "a"}, 20)]
    rm.evaluate_group(rm.groups[0], 120)
    states = sorted((x.labels["host"], x.labels["severity"], x.state) for x in rule.all_alerts())
    assert states == [("a", "critical", F), ("a", "warning", I), ("b", "critical", I)]
    assert rule.state == F


def test_duplicate_labelset_is_an_error_and_keeps_state():
    rm = one_rule("- alert: X\n  expr: x > 1\n  labels: {host: same}")
    q = rm.engine
    q.samples = [({"host": "a"}, 5)]
    rm.evaluate_group(rm.groups[0], 0)
    q.samples = [({"host": "a"}, 5), ({"host": "b"}, 5)]
    rm.evaluate_group(rm.groups[0], 60)
    (rule,) = rm.alerting_rules()
    assert rule.health is Health.ERR and isinstance(rule.last_error, DuplicateLabelsetError)
    assert str(rule.last_error) == "vector contains metrics with the same labelset after applying alert labels"
    assert len(rule.active_alerts()) == 1


def test_query_error_sets_health_and_keeps_alerts():
    rm = one_rule("- alert: X\n  expr: x > 1")
    q = rm.engine
    q.samples = [(A, 5)]
    rm.evaluate_group(rm.groups[0], 0)
    q.error = RuntimeError("boom")
    rm.evaluate_group(rm.groups[0], 60)
    (rule,) = rm.alerting_rules()
    assert (rule.health, str(rule.last_error)) == (Health.ERR, "boom")
    assert isinstance(rule.last_error, QueryFailedError) and rule.last_error.cause is q.error
    assert [a.state for a in rule.active_alerts()] == [F]
    q.error = None
    rm.evaluate_group(rm.groups[0], 120)
    assert rule.health is Health.OK and rule.last_error is None


def test_group_limit():
    rm = one_rule("- alert: X\n  expr: x > 1", group_extra="  limit: 1\n")
    q = rm.engine
    q.samples = [({"host": "a"}, 5), ({"host": "b"}, 5)]
    rm.evaluate_group(rm.groups[0], 0)
    (rule,) = rm.alerting_rules()
    assert rule.health is Health.ERR and str(rule.last_error) == "exceeded limit of 1 with 2 alerts"
    assert isinstance(rule.last_error, LimitExceededError) and (rule.last_error.limit, rule.last_error.count) == (1, 2)
    assert rule.all_alerts() == []


def test_alerts_series_and_notifications():
    rm = one_rule("- alert: X\n  expr: x > 1\n  for: 1m\n  labels: {severity: page}")
    q = rm.engine
    q.samples = [(A, 5)]
    rm.evaluate_group(rm.groups[0], 0)
    assert sorted(rm.alerts_series()) == sorted([
        (make_labels("ALERTS", {"alertname": "X", "alertstate": "pending", "host": "a", "severity": "page"}), 1.0),
        (make_labels("ALERTS_FOR_STATE", {"alertname": "X", "host": "a", "severity": "page"}), 0.0),
    ])
    (rule,) = rm.alerting_rules()
    assert rule.pending_notifications(0) == []  # pending alerts are never sent
    rm.evaluate_group(rm.groups[0], 60)
    assert [a.state for a in rule.pending_notifications(60, resend_delay=60)] == [F]
    assert rule.pending_notifications(90, resend_delay=60) == []  # resend delay
    assert len(rule.pending_notifications(121, resend_delay=60)) == 1
    q.samples = []
    rm.evaluate_group(rm.groups[0], 130)
    assert rm.alerts_series() == []
    sent = rule.pending_notifications(130, resend_delay=60)
    assert [(a.state, a.resolved_at) for a in sent] == [(I, 130)]  # the resolve goes out at once


def test_ticket_policy_defaults():
    rm = one_rule("- alert: X\n  expr: x > 1\n"
                  "- alert: Y\n  expr: x\n  ticket: {sink: itsm, group_by: [service], on_clear: resolve}")
    x, y = rm.alerting_rules()
    assert (x.ticket.sink, x.ticket.group_by, x.ticket.on_clear) == (None, ["alertname", "host"], "comment")
    assert (y.ticket.sink, y.ticket.group_by, y.ticket.on_clear) == ("itsm", ["service"], "resolve")
    assert (x.kind, x.for_, x.keep_firing_for, x.group) == ("threshold", 0.0, 0.0, "g")


def evaluate_due(rm: RuleManager, now: float) -> list:
    """What the daemon's tick does with the rules (agent.pipeline.evaluate_tick, without problems)."""
    due = rm.due_groups(now)
    for g in due:
        rm.evaluate_group(g, now)
    return due


def test_due_groups_follow_each_interval():
    text = ("groups:\n- name: fast\n  interval: 30s\n  rules: []\n- name: slow\n  interval: 2m\n  rules: []\n"
            "- name: default\n  rules: []\n")
    rm = RuleManager(load_rule_text(text, "r.yml"), FakeQuery(), SimulatedClock(0), options=RuleOptions(default_interval=60))
    seen = []
    for t in range(0, 241, 15):
        for g in evaluate_due(rm, float(t)):
            seen.append((t, g.name))
    assert [t for t, n in seen if n == "fast"] == list(range(0, 241, 30))
    assert [t for t, n in seen if n == "slow"] == [0, 120, 240]
    assert [t for t, n in seen if n == "default"] == [0, 60, 120, 180, 240]
    # a late tick does not cause catch-up evaluations
    assert [g.name for g in evaluate_due(rm, 1000.0)] == ["fast", "slow", "default"]
    assert rm.due_groups(1001.0) == []


def test_to_samples_shapes():
    from agent.promql import Scalar, Vector

    lab = make_labels("a", {"x": "1"})
    assert to_samples(Vector([lab], np.array([2.0]))) == [(lab, 2.0)]
    assert to_samples(Scalar(3.0)) == [((), 3.0)]
    with pytest.raises(ValueError):
        to_samples(object())


# ---- over a real store and engine ------------------------------------------------------------


def store_manager(text: str, **kw) -> tuple[Store, RuleManager]:
    store = Store(raw_capacity=4000)
    rm = RuleManager(load_rule_text(text, "r.yml"), Engine(store), SimulatedClock(0), store=store, **kw)
    return store, rm


def test_recording_rules_write_to_the_store_in_order_and_mark_stale():
    store, rm = store_manager("""
groups:
- name: g
  interval: 1m
  rules:
  - record: job:up:sum
    expr: sum by (job) (up)
  - record: job:up:double
    expr: job:up:sum * 2
    labels: {source: rule}
""")
    ups = [make_labels("up", {"job": "a", "i": "1"}), make_labels("up", {"job": "a", "i": "2"}),
           make_labels("up", {"job": "b", "i": "3"})]
    ids = store.series_ids(ups)
    store.append(ids, 0.0, np.array([1.0, 1.0, 0.0]))
    rm.evaluate_group(rm.groups[0], 0.0)
    dbl = make_labels("job:up:double", {"job": "a", "source": "rule"})
    assert store.latest([store.get_id(dbl)])[1].tolist() == [4.0]
    assert store.latest([store.get_id(make_labels("job:up:sum", {"job": "b"}))])[1].tolist() == [0.0]
    # job b disappears: its recorded series get a stale marker
    store.mark_stale([int(ids[2])], 30.0)
    store.append(ids[:2], 60.0, np.array([1.0, 0.0]))
    rm.evaluate_group(rm.groups[0], 60.0)
    t, v = store.raw(store.get_id(make_labels("job:up:sum", {"job": "b"})))
    assert t.tolist() == [0.0, 60.0] and is_stale(v).tolist() == [False, True]


def _feed(store: Store, labels, t: float, v: float) -> None:
    store.append(store.series_ids([labels]), t, np.array([v]))


def test_forecast_rule_fires_before_the_disk_fills():
    store, rm = store_manager("""
groups:
- name: capacity
  interval: 5m
  rules:
  - alert: FilesystemWillFill
    expr: node_filesystem_avail_bytes
    forecast: {model: linear, lookback: 6h, horizon: 24h, threshold: 0, direction: below, confidence: 0.9}
    for: 15m
    annotations:
      summary: 'fills in {{ $forecast.eta | humanizeDuration }} ({{ $forecast.probability | humanizePercentage }})'
""")
    disk = make_labels("node_filesystem_avail_bytes", {"mountpoint": "/var"})
    flat = make_labels("node_filesystem_avail_bytes", {"mountpoint": "/srv"})
    rng = np.random.default_rng(1)
    fired_at = None
    (rule,) = rm.alerting_rules()
    for k in range(0, 12 * 30):  # 30 hours, every 5 minutes
        t = k * 300.0
        # /var loses 1 GB/h from 40 GB (empty at 40h); /srv is flat with noise
        _feed(store, disk, t, 40e9 - t / 3600 * 1e9 + rng.normal(0, 5e7))
        _feed(store, flat, t, 20e9 + rng.normal(0, 5e7))
        rm.evaluate_group(rm.groups[0], t)
        firing = [a for a in rule.active_alerts() if a.state == F]
        if firing and fired_at is None:
            fired_at = t
            alert = firing[0]
            eta_then, prob_then = alert.forecast.eta, alert.forecast.probability
    assert fired_at is not None
    assert {a.labels["mountpoint"] for a in rule.active_alerts()} == {"/var"}
    # fires once a breach within 24 h is 90 % likely: with the fill rate known to within
    # RATE_UNCERTAINTY (1 sd), when the breach is 24 h * (1 - z_0.9 * RATE_UNCERTAINTY) away,
    # plus `for`; and not absurdly early
    expected = 40 * 3600 - 24 * 3600 * (1 - NormalDist().inv_cdf(0.9) * RATE_UNCERTAINTY) + 15 * 60
    assert abs(fired_at - expected) <= 3600
    assert isinstance(alert.forecast, BreachInfo) and prob_then >= 0.9
    assert abs((fired_at + eta_then) - 40 * 3600) < 3 * 3600
    # the alert's forecast follows later evaluations (the last one at 29h55m)
    assert abs((29 * 3600 + 55 * 60 + alert.forecast.eta) - 40 * 3600) < 3600
    assert alert.annotations["summary"].startswith("fills in ")
    series = rm.forecast_series()
    eta = {dict(lab)["mountpoint"]: v for lab, v in series["forewarn_forecast_breach_seconds"]}
    assert set(eta) == {"/var", "/srv"} and eta["/var"] < 24 * 3600 and not eta["/srv"] < 24 * 3600
    assert all(dict(lab)["alertname"] == "FilesystemWillFill" for lab, _ in series["forewarn_forecast_breach_probability"])
    # a series' four outputs share one label set, without `__name__` (each output names itself)
    assert all("__name__" not in dict(lab) for samples in series.values() for lab, _ in samples)
    assert [lab for lab, _ in series["forewarn_forecast_breach_seconds"]] == \
        [lab for lab, _ in series["forewarn_forecast_breach_probability"]]
    assert len(series["forewarn_forecast_breach_seconds_low"]) == len(series["forewarn_forecast_breach_seconds_high"]) == 2


def test_anomaly_rule_fires_on_a_spike_and_exposes_scores():
    """Wiring, not detection quality (the models' own tests and benchmarks cover that): a
    large upward shift makes the rule fire with the model's score and band; the same shift
    downwards never fires a `direction: above` rule."""
    rule_text = """
groups:
- name: anomalies
  interval: 1m
  rules:
  - alert: LatencyAnomaly
    expr: latency_seconds
    anomaly: {sensitivity: high, direction: above}
    annotations:
      summary: 'score {{ printf "%.2f" $anomaly.score }}, expected {{ printf "%.2f" $anomaly.expected }}'
"""
    lat = make_labels("latency_seconds", {"service": "api"})
    for shift, want_fire in ((+2.0, True), (-0.19, False)):
        store, rm = store_manager(rule_text)
        rng = np.random.default_rng(2)
        (rule,) = rm.alerting_rules()
        fired = []
        for k in range(330):
            t = k * 60.0
            _feed(store, lat, t, 0.2 + (shift if k >= 300 else 0.0) + rng.normal(0, 0.01))
            rm.evaluate_group(rm.groups[0], t)
            if k >= 300:
                fired += [a for a in rule.active_alerts() if a.state == F]
        assert bool(fired) == want_fire
        series = rm.anomaly_series()
        ((lab, score),), ((wlab, warming),) = series["forewarn_anomaly_score"], series["forewarn_model_warming"]
        assert dict(lab) == {"alertname": "LatencyAnomaly", "service": "api"} and wlab is lab
        assert 0 <= score <= 1
        assert warming == 0.0  # 330 minutes of data: past the 2 h warm-up
    a = fired_up = None
    store, rm = store_manager(rule_text)
    rng = np.random.default_rng(2)
    (rule,) = rm.alerting_rules()
    for k in range(330):
        _feed(store, lat, k * 60.0, 0.2 + (2.0 if k >= 300 else 0.0) + rng.normal(0, 0.01))
        rm.evaluate_group(rm.groups[0], k * 60.0)
        firing = [x for x in rule.active_alerts() if x.state == F and k >= 300]
        if firing and fired_up is None:
            fired_up, a = k, firing[0]
            info = a.anomaly
            summary = a.annotations["summary"]
    assert fired_up is not None and info is not None
    assert info.score >= rule.detector.threshold and a.value > info.expected
    assert summary == f"score {info.score:.2f}, expected {info.expected:.2f}"


def test_adopt_state_keeps_alerts_across_reload():
    text = "groups:\n- name: g\n  rules:\n  - alert: X\n    expr: x > 1\n    for: 1m\n"
    old = RuleManager(load_rule_text(text, "r.yml"), FakeQuery(), SimulatedClock(0))
    old.engine.samples = [(A, 5)]
    old.evaluate_group(old.groups[0], 0)
    new = RuleManager(load_rule_text(text, "r.yml"), old.engine, SimulatedClock(0))
    new.adopt_state(old)
    new.evaluate_group(new.groups[0], 60)
    assert [a.state for a in new.alerting_rules()[0].active_alerts()] == [F]


# ---- reload: what a rule keeps (Prometheus's CopyState) ---------------------------------------


def reloaded(old: RuleManager, text: str, now: float = 0.0) -> RuleManager:
    """The manager a reload at `now` builds from `text`, over the same store and query, after adopt_state."""
    new = RuleManager(load_rule_text(text, "r.yml"), old.engine, SimulatedClock(now), store=old.store)
    new.adopt_state(old)
    return new


def test_reload_keeps_alert_timers_and_keep_firing():
    text = "groups:\n- name: g\n  rules:\n  - alert: X\n    expr: x > 1\n    for: 3m\n    keep_firing_for: 5m\n" \
           "    labels: {team: a}\n  - alert: Y\n    expr: x > 1\n    keep_firing_for: 5m\n"
    old = RuleManager(load_rule_text(text, "r.yml"), FakeQuery(), SimulatedClock(0))
    old.engine.samples = [(A, 5)]
    old.evaluate_group(old.groups[0], 0)
    old.engine.samples = []
    old.evaluate_group(old.groups[0], 60)  # X pending is forgotten; Y keeps firing since 60
    old.engine.samples = [(A, 5)]
    old.evaluate_group(old.groups[0], 120)  # X pending again from 120
    old.engine.samples = []
    old.evaluate_group(old.groups[0], 180)
    # an annotation added and the group order changed: the same rules, the same alerts
    new = reloaded(old, "groups:\n- name: g\n  rules:\n  - alert: Y\n    expr: x > 1\n    keep_firing_for: 5m\n"
                        "    annotations: {summary: s}\n  - alert: X\n    expr: x > 1\n    for: 3m\n"
                        "    keep_firing_for: 5m\n    labels: {team: a}\n")
    y, x = new.alerting_rules()
    assert [(a.state, a.active_at, a.keep_firing_since) for a in y.all_alerts()] == [(F, 0, 180)]
    assert x.all_alerts() == []  # pending alerts that cleared are gone, as before the reload
    new.engine.samples = [(A, 5)]
    new.evaluate_group(new.groups[0], 240)
    assert [(a.state, a.active_at) for a in x.all_alerts()] == [(P, 240)]
    assert [(a.state, a.keep_firing_since) for a in y.all_alerts()] == [(F, None)]
    new.engine.samples = []
    for t in (300, 360, 420, 480, 540, 600):
        new.evaluate_group(new.groups[0], t)
    assert [(a.state, a.resolved_at) for a in y.all_alerts()] == [(I, 600)]  # kept firing for 5m from 300


def test_reload_pairs_rules_of_one_name_by_expression():
    text = "groups:\n- name: g\n  rules:\n  - alert: Load\n    expr: x > 1\n    labels: {{severity: {a}}}\n" \
           "  - alert: Load\n    expr: x > 2\n    labels: {{severity: {b}}}\n"
    old = RuleManager(load_rule_text(text.format(a="warning", b="critical"), "r.yml"), FakeQuery(), SimulatedClock(0))
    old.engine.samples = [(A, 5)]
    old.evaluate_group(old.groups[0], 0)
    swapped = text.replace("x > 1", "x > 0").replace("x > 2", "x > 1").replace("x > 0", "x > 2")
    new = reloaded(old, swapped.format(a="critical", b="warning"))
    got = [[a.labels["severity"] for a in r.all_alerts()] for r in new.alerting_rules()]
    assert got == [["critical"], ["warning"]]  # each kept its own alerts, whatever the order


def test_reload_with_a_changed_expression_starts_the_rule_fresh():
    text = "groups:\n- name: g\n  rules:\n  - alert: X\n    expr: x > 1\n"
    old = RuleManager(load_rule_text(text, "r.yml"), FakeQuery(), SimulatedClock(0))
    old.engine.samples = [(A, 5)]
    old.evaluate_group(old.groups[0], 0)
    new = reloaded(old, "groups:\n- name: g\n  rules:\n  - alert: X\n    expr: x > 2\n")
    assert new.alerting_rules()[0].all_alerts() == []
    new = reloaded(old, "groups:\n- name: other\n  rules:\n  - alert: X\n    expr: x > 1\n")
    assert new.alerting_rules()[0].all_alerts() == []  # another group's rule of that name


FORECAST_RULE = """
groups:
- name: capacity
  interval: 5m
  rules:
  - alert: Fill
    expr: free * 1
    forecast: {{model: {model}, lookback: 2h, horizon: 24h, threshold: {threshold}, direction: below}}
"""


def forecast_manager(model: str = "linear", threshold: float = 0) -> tuple[Store, RuleManager]:
    store, rm = store_manager(FORECAST_RULE.format(model=model, threshold=threshold))
    free = make_labels("free", {"mount": "/var"})
    for k in range(30):  # falling 1 per 5 minutes from 100: empty at 500 minutes
        _feed(store, free, k * 300.0, 100.0 - k)
        rm.evaluate_group(rm.groups[0], k * 300.0)
    return store, rm


def test_reload_keeps_the_detector_models():
    """`free * 1` is no stored series, so a fresh model could not warm up from history: only
    the carried-over model knows the trend right after the reload."""
    store, old = forecast_manager()
    (old_rule,) = old.alerting_rules()
    eta = old.forecast_series()["forewarn_forecast_breach_seconds"]
    assert len(eta) == 1 and eta[0][1] < 24 * 3600
    # unchanged: the models and their latest verdicts (what /metrics shows) carry over
    new = reloaded(old, FORECAST_RULE.format(model="linear", threshold=0))
    (rule,) = new.alerting_rules()
    assert rule.detector.bank is old_rule.detector.bank and new.forecast_series() == old.forecast_series()
    # another threshold reads the same models differently: they carry over, the old verdicts do not
    new = reloaded(old, FORECAST_RULE.format(model="linear", threshold=10))
    (rule,) = new.alerting_rules()
    assert rule.detector.bank is old_rule.detector.bank and new.forecast_series()["forewarn_forecast_breach_seconds"] == []
    _feed(store, make_labels("free", {"mount": "/var"}), 30 * 300.0, 70.0)
    new.evaluate_group(new.groups[0], 30 * 300.0)
    ((_, eta_10),) = new.forecast_series()["forewarn_forecast_breach_seconds"]
    assert abs(eta_10 - 60 * 300.0) < 600  # 70 -> 10 at 1 per 5 minutes
    # another model is another model: it starts cold (too little data for any forecast)
    new = reloaded(old, FORECAST_RULE.format(model="holt", threshold=0))
    (rule,) = new.alerting_rules()
    assert rule.detector.bank is not old_rule.detector.bank
    new.evaluate_group(new.groups[0], 30 * 300.0)
    ((_, eta_cold),) = new.forecast_series()["forewarn_forecast_breach_seconds"]
    assert eta_cold == math.inf


def test_reload_keeps_anomaly_models_when_only_the_sensitivity_changes():
    text = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: lat * 1\n    anomaly: {{sensitivity: {s}}}\n"
    store, old = store_manager(text.format(s="high"))
    lat = make_labels("lat", {"service": "api"})
    for k in range(50):
        _feed(store, lat, k * 60.0, 0.2)
        old.evaluate_group(old.groups[0], k * 60.0)
    new = reloaded(old, text.format(s="low"))
    assert new.alerting_rules()[0].detector.bank is old.alerting_rules()[0].detector.bank
    assert new.alerting_rules()[0].detector.threshold > old.alerting_rules()[0].detector.threshold


RECORDING = """
groups:
- name: g
  interval: 1m
  rules:
  - record: job:up:sum
    expr: sum by (job) (up{{job=~"{jobs}"}})
  - record: job:up:max
    expr: max by (job) (up)
"""


def recorded_at(store: Store, name: str, job: str) -> list[tuple[float, bool]]:
    t, v = store.raw(store.get_id(make_labels(name, {"job": job})))
    return list(zip(t.tolist(), is_stale(v).tolist()))


def recording_manager() -> tuple[Store, RuleManager]:
    store, rm = store_manager(RECORDING.format(jobs="a|b"))
    ids = store.series_ids([make_labels("up", {"job": "a"}), make_labels("up", {"job": "b"})])
    for t in (0.0, 60.0):
        store.append(ids, t, np.array([1.0, 1.0]))
    rm.evaluate_group(rm.groups[0], 0.0)
    return store, rm


def test_reload_marks_the_series_a_recording_rule_stops_writing_stale():
    store, old = recording_manager()
    new = reloaded(old, RECORDING.format(jobs="a"))  # job b is no longer recorded
    new.evaluate_group(new.groups[0], 60.0)
    assert recorded_at(store, "job:up:sum", "a") == [(0.0, False), (60.0, False)]
    assert recorded_at(store, "job:up:sum", "b") == [(0.0, False), (60.0, True)]
    assert recorded_at(store, "job:up:max", "b") == [(0.0, False), (60.0, False)]


def test_reload_marks_the_series_of_removed_rules_and_groups_stale():
    store, old = recording_manager()
    new = reloaded(old, "groups:\n- name: g\n  rules:\n  - record: job:up:max\n    expr: max by (job) (up)\n")
    new.evaluate_group(new.groups[0], 60.0)
    for job in ("a", "b"):
        assert recorded_at(store, "job:up:sum", job) == [(0.0, False), (60.0, True)]
        assert recorded_at(store, "job:up:max", job) == [(0.0, False), (60.0, False)]
    store, old = recording_manager()
    # the group is gone, one of its rules moved to another group: only the other one goes stale
    new = reloaded(old, "groups:\n- name: h\n  rules:\n  - record: job:up:max\n    expr: max by (job) (up)\n"
                        "- name: i\n  rules: []\n")
    new.evaluate_group(new.groups[0], 60.0)
    assert recorded_at(store, "job:up:sum", "a") == [(0.0, False)]  # not every group has run yet
    new.evaluate_group(new.groups[1], 60.0)
    assert recorded_at(store, "job:up:sum", "a") == [(0.0, False), (60.0, True)]
    assert recorded_at(store, "job:up:max", "a") == [(0.0, False), (60.0, False)]
    store, old = recording_manager()
    reloaded(old, "groups: []\n", now=30.0)  # nothing left to evaluate: stale at the reload
    assert recorded_at(store, "job:up:sum", "b") == [(0.0, False), (30.0, True)]


def test_stale_input_resolves_threshold_alert():
    store, rm = store_manager("groups:\n- name: g\n  interval: 1m\n  rules:\n  - alert: Down\n    expr: up == 0\n")
    up = make_labels("up", {"job": "a"})
    _feed(store, up, 0.0, 0.0)
    rm.evaluate_group(rm.groups[0], 0.0)
    (rule,) = rm.alerting_rules()
    assert [a.state for a in rule.active_alerts()] == [F]
    _feed(store, up, 30.0, STALE_NAN)
    rm.evaluate_group(rm.groups[0], 60.0)
    assert rule.active_alerts() == [] and math.isclose(rule.all_alerts()[0].resolved_at, 60.0)


# ---- /api/v1/rules and /api/v1/alerts -----------------------------------------------------------

API_RULES = """\
groups:
  - name: api
    interval: 1s
    rules:
      - alert: AlwaysFiring
        expr: vector(1) > 0
        labels:
          severity: page
        annotations:
          summary: value is {{ $value }}
      - alert: LongPending
        expr: vector(3)
        for: 1h
        keep_firing_for: 5m
      - record: api:two
        expr: vector(2)
        labels:
          source: rule
"""


def api_manager(now: float = 1700000000.0) -> RuleManager:
    store = Store()
    rm = RuleManager(load_rule_text(API_RULES, "/etc/rules.yml"), Engine(store), SimulatedClock(now), store=store)
    rm.evaluate_group(rm.groups[0], now)
    return rm


def test_rules_api_shape():
    from agent.web.rules_api import alerts_response, rules_response

    rm = api_manager()
    status, body = rules_response(rm, {})
    assert status == 200 and body["status"] == "success"
    (g,) = body["data"]["groups"]
    assert (g["name"], g["file"], g["interval"], g["limit"], g["lastEvaluation"]) == (
        "api", "/etc/rules.yml", 1.0, 0, "2023-11-14T22:13:20Z")
    firing, pending, rec = g["rules"]
    assert firing["state"] == "firing" and firing["type"] == "alerting" and firing["health"] == "ok"
    assert firing["alerts"] == [{
        "labels": {"alertname": "AlwaysFiring", "severity": "page"},
        "annotations": {"summary": "value is 1"},
        "state": "firing", "activeAt": "2023-11-14T22:13:20Z", "value": "1e+00",
    }]
    assert (pending["state"], pending["duration"], pending["keepFiringFor"]) == ("pending", 3600.0, 300.0)
    assert rec == {"name": "api:two", "query": "vector(2)", "labels": {"source": "rule"}, "health": "ok",
                   "evaluationTime": rec["evaluationTime"], "lastEvaluation": "2023-11-14T22:13:20Z",
                   "type": "recording"}
    assert [r["name"] for r in rules_response(rm, {"type": "record"})[1]["data"]["groups"][0]["rules"]] == ["api:two"]
    assert [r["name"] for r in rules_response(rm, {"type": "alert"})[1]["data"]["groups"][0]["rules"]] == [
        "AlwaysFiring", "LongPending"]
    assert rules_response(rm, {"type": "bogus"})[0] == 400
    assert "alerts" not in rules_response(rm, {"exclude_alerts": "true"})[1]["data"]["groups"][0]["rules"][0]
    _, alerts = alerts_response(rm)
    assert [(a["labels"]["alertname"], a["state"]) for a in alerts["data"]["alerts"]] == [
        ("AlwaysFiring", "firing"), ("LongPending", "pending")]


def _shape(v):
    """The JSON structure without values: dict keys (recursively) and value types."""
    if isinstance(v, dict):
        return {k: _shape(x) for k, x in v.items() if k not in ("labels", "annotations")} | \
            {k: "map" for k in v if k in ("labels", "annotations")}
    if isinstance(v, list):
        return [_shape(v[0])] if v else []
    return "number" if isinstance(v, (int, float)) and not isinstance(v, bool) else type(v).__name__


def test_api_matches_a_real_prometheus(tmp_path):
    """Same rules in Prometheus 2.42 and in forewarn: the same JSON keys and types, and the
    same values where they do not depend on time."""
    import subprocess

    import requests

    from agent.web.rules_api import alerts_response, rules_response
    from tests.helpers import free_port, wait_for

    (tmp_path / "rules.yml").write_text(API_RULES)
    (tmp_path / "prometheus.yml").write_text("global:\n  evaluation_interval: 1s\nrule_files: [rules.yml]\n")
    port = free_port()
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"

        def evaluated():
            r = requests.get(f"{base}/api/v1/rules", timeout=2).json()
            rules = r["data"]["groups"][0]["rules"] if r["data"]["groups"] else []
            return r if rules and all(x["health"] == "ok" for x in rules) and rules[0].get("alerts") else None

        prom_rules = wait_for(evaluated, timeout=60, what="Prometheus evaluating the rules")
        prom_alerts = requests.get(f"{base}/api/v1/alerts", timeout=2).json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    rm = api_manager()
    ours_rules = rules_response(rm, {})[1]
    ours_alerts = alerts_response(rm, {})[1]
    assert _shape(ours_rules) == _shape(prom_rules)
    assert _shape(ours_alerts) == _shape(prom_alerts)
    stable = ("name", "query", "labels", "annotations", "state", "health", "type", "duration", "keepFiringFor")
    pg, og = prom_rules["data"]["groups"][0], ours_rules["data"]["groups"][0]
    assert (pg["name"], pg["interval"], pg["limit"]) == (og["name"], og["interval"], og["limit"])
    for p, o in zip(pg["rules"], og["rules"]):
        assert {k: p.get(k) for k in stable} == {k: o.get(k) for k in stable}
        for pa, oa in zip(p.get("alerts", []), o.get("alerts", [])):
            assert (pa["labels"], pa["annotations"], pa["state"], pa["value"]) == (
                oa["labels"], oa["annotations"], oa["state"], oa["value"])
    key = lambda a: a["labels"]["alertname"]
    assert [(a["labels"], a["state"], a["value"]) for a in sorted(prom_alerts["data"]["alerts"], key=key)] == \
        [(a["labels"], a["state"], a["value"]) for a in sorted(ours_alerts["data"]["alerts"], key=key)]


def test_recording_rule_without_labels_omits_them_like_prometheus():
    from agent.web.rules_api import rules_response

    store = Store()
    text = "groups:\n- name: g\n  rules:\n  - record: a:b\n    expr: vector(1)\n"
    rm = RuleManager(load_rule_text(text, "r.yml"), Engine(store), SimulatedClock(0), store=store)
    (rule,) = rules_response(rm)[1]["data"]["groups"][0]["rules"]
    assert "labels" not in rule and rule["health"] == "unknown" and rule["lastEvaluation"] == "0001-01-01T00:00:00Z"


def test_alert_state_survives_a_restart(tmp_path):
    text = "groups:\n- name: g\n  rules:\n  - alert: X\n    expr: x > 1\n    for: 5m\n  - alert: Y\n    expr: x > 1\n"
    old = RuleManager(load_rule_text(text, "r.yml"), FakeQuery(), SimulatedClock(0))
    old.engine.samples = [(A, 5)]
    old.evaluate_group(old.groups[0], 0)
    old.engine.samples = [(A, 5)]
    old.evaluate_group(old.groups[0], 60)
    path = str(tmp_path / "rules.json")
    old.save_state(path)
    new = RuleManager(load_rule_text(text, "r.yml"), old.engine, SimulatedClock(0))
    assert new.load_state(path) == 2
    x, y = new.alerting_rules()
    assert [(a.state, a.active_at) for a in x.active_alerts()] == [(P, 0)]
    assert x.active_alerts()[0].value == 5 and y.active_alerts()[0].state == F
    new.evaluate_group(new.groups[0], 300)
    assert [a.state for a in x.active_alerts()] == [F]  # `for` counted from before the restart
    assert new.load_state(str(tmp_path / "missing.json")) == 0
    (tmp_path / "bad.json").write_text("{not json")
    assert new.load_state(str(tmp_path / "bad.json")) == 0


def test_refits_route_back_to_their_rule():
    store, rm = store_manager("""
groups:
- name: g
  interval: 5m
  rules:
  - alert: A
    expr: load
    forecast: {model: holt, lookback: 2h, horizon: 6h, threshold: 100, direction: above}
  - alert: B
    expr: load
    forecast: {model: linear, lookback: 2h, horizon: 6h, threshold: 100, direction: above}
""")
    lab = make_labels("load", {"host": "a"})
    rng = np.random.default_rng(3)
    for k in range(80):
        t = k * 300.0
        _feed(store, lab, t, 10 + 0.01 * k + rng.normal(0, 0.5))
        rm.evaluate_group(rm.groups[0], t)
    jobs = rm.refit_jobs(80 * 300.0)
    assert [j.key[:2] for j in jobs] == [("g", "A")]  # linear models need no refits
    assert len(jobs[0].t) >= 48
    from agent.models.refit import fit_job

    results = [fit_job(j) for j in jobs]
    assert rm.apply_refits(results) == 1
    assert rm.refit_jobs(80 * 300.0) == []  # not due again right away


def test_state_file_format_is_kept(tmp_path):
    """A state file written by an earlier version (tests/golden/statedir_v1) is read back and
    written again byte for byte; a non-finite value is written as Python's repr."""
    golden = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "statedir_v1", "rules.state.json")
    with open(golden, encoding="utf-8") as f:
        saved = f.read()
    rules = os.path.join(os.path.dirname(golden), "..", "inputs", "scenario", "golden_rules.yml")
    rm = RuleManager(load_rule_files([rules]), FakeQuery(), SimulatedClock(0))
    assert rm.load_state(golden) == 3
    rm.save_state(str(tmp_path / "again.json"))
    assert (tmp_path / "again.json").read_text(encoding="utf-8") == saved
    rm = one_rule("- alert: X\n  expr: x")
    rm.engine.samples = [(A, math.nan)]
    rm.evaluate_group(rm.groups[0], 0)
    assert json.dumps(rm.state_dict(), separators=(",", ":")) == (
        '{"version":1,"rules":[{"group":"g","name":"X","query":"x","alerts":[{"labels":{"host":"a","alertname":"X"},'
        '"annotations":{},"state":"firing","active_at":0,"value":"nan","fired_at":0,"resolved_at":null,'
        '"last_sent_at":null,"keep_firing_since":null}]}]}')
