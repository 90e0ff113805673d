"""What /metrics says each component holds (`forewarn_memory_bytes{component}`): the store,
the alerts (`rules`), each forecast and anomaly rule's models (`models:<rule>`) and the outbox,
measured against the arrays they really hold; and the per-series label sets the rules derive
(exported model outputs) sharing the series' own pair objects rather than copying them."""

from __future__ import annotations

import random

import numpy as np

from agent.clock import SimulatedClock
from agent.config.schema import load_config
from agent.daemon import Agent
from agent.models.anomaly import AnomalyBank
from agent.rules.detectors import AnomalyDetector, ForecastDetector
from agent.rules.query import without_name
from agent.store import make_labels, with_pairs

T0 = 1_767_225_600.0

CONFIG = """
global: {{scrape_interval: 60s, evaluation_interval: 60s, state_dir: {state}}}
system: {{enabled: false}}
rule_files: [{rules}]
ticketing: {{default_sink: local, sinks: [{{name: local, type: local}}]}}
"""

RULES = """
groups:
  - name: queues
    interval: 1m
    rules:
      - alert: QueueWillOverflow
        expr: queue_depth
        forecast: {model: linear, lookback: 1h, horizon: 1h, threshold: 1000, direction: above}
      - alert: QueueAnomaly
        expr: queue_depth
        anomaly: {sensitivity: low, direction: above}
"""


def memory_report(agent: Agent) -> dict[str, float]:
    out = {}
    for fam in agent.registry.collect():
        if fam.name == "forewarn_memory_bytes":
            out.update({s.labels["component"]: s.value for s in fam.samples})
    return out


def test_memory_report_covers_models_rules_and_outbox(tmp_path):
    (tmp_path / "rules.yml").write_text(RULES)
    (tmp_path / "forewarn.yml").write_text(CONFIG.format(state=tmp_path / "state", rules=tmp_path / "rules.yml"))
    agent = Agent(load_config(str(tmp_path / "forewarn.yml")), clock=SimulatedClock(T0))
    agent.pipeline.start()  # opens the ticketing side (the outbox)
    n = 300
    labels = [make_labels("queue_depth", {"job": "q", "queue": f"q{i}"}) for i in range(n)]
    for k in range(5):
        t = T0 + 60 * k
        agent.store.append_samples([(lab, float(i + k)) for i, lab in enumerate(labels)], t)
        agent.clock.set(t)
        agent.pipeline.evaluate(t)
    report = memory_report(agent)
    assert {"store", "rules", "outbox", "models:QueueWillOverflow", "models:QueueAnomaly"} <= set(report)
    rules = {r.name: r for r in agent.pipeline.rules.alerting_rules()}
    forecast, anomaly = rules["QueueWillOverflow"].detector, rules["QueueAnomaly"].detector
    assert isinstance(forecast, ForecastDetector) and isinstance(anomaly, AnomalyDetector)
    # at least the model arrays of every allocated row, and not wildly more
    buckets = forecast.bank.buckets
    ring_bytes = sum(a.nbytes for a in (buckets.n, buckets.st, buckets.sv, buckets.stt, buckets.stv, buckets.svv,
                                        buckets.c, buckets.id))
    assert ring_bytes <= report["models:QueueWillOverflow"] <= 3 * ring_bytes
    s = anomaly.bank.state
    profiles = s.daily.nbytes + s.weekly.nbytes
    assert profiles <= report["models:QueueAnomaly"] <= 3 * profiles
    assert anomaly.bank.state.capacity >= n
    assert 0 < report["outbox"] < 64 << 20
    agent.pipeline.stop()


def test_anomaly_profiles_cost_four_bytes_a_phase():
    bank = AnomalyBank(capacity=1000)
    s = bank.state
    per_series = (s.daily.nbytes + s.weekly.nbytes) / s.capacity
    assert per_series == 4 * (s.daily.shape[1] + s.weekly.shape[1])
    assert bank.memory_bytes() / s.capacity < 3 * 1024  # 39 numbers, 624 phases, 10 rarity bins


def test_with_pairs_builds_the_canonical_label_set_and_shares_the_pairs():
    rng = random.Random(7)
    names = ["__name__", "Alpha", "alertname", "code", "handler", "instance", "job", "zone", "_x"]
    for _ in range(300):
        chosen = rng.sample(names, rng.randint(1, len(names)))
        series = make_labels(None, {k: rng.choice(["a", "b", "c1", "z"]) for k in chosen})
        metric = rng.choice(["forewarn_anomaly_score", "forewarn_forecast_breach_seconds"])
        alertname = rng.choice(["QueueAnomaly", ""])
        want = make_labels(metric, dict(without_name(series), alertname=alertname))
        got = with_pairs(series, ("__name__", metric), ("alertname", alertname))
        assert got == want
        kept = [p for p in got if p[0] not in ("__name__", "alertname")]
        assert all(any(p is q for q in series) for p in kept)  # the series' own pair objects


def test_exported_model_outputs_share_the_series_pairs(tmp_path):
    (tmp_path / "rules.yml").write_text(RULES)
    (tmp_path / "forewarn.yml").write_text(CONFIG.format(state=tmp_path / "state", rules=tmp_path / "rules.yml"))
    agent = Agent(load_config(str(tmp_path / "forewarn.yml")), clock=SimulatedClock(T0))
    lab = make_labels("queue_depth", {"job": "q", "queue": "orders"})
    agent.store.append_samples([(lab, 5.0)], T0)
    agent.clock.set(T0)
    agent.pipeline.evaluate(T0)
    stored = agent.store.labels(int(agent.store.get_id(lab)))
    exported = [labs for labs, _ in agent.pipeline.rules.forecast_series()["forewarn_forecast_breach_seconds"]]
    assert exported == [make_labels("forewarn_forecast_breach_seconds",
                                    {"job": "q", "queue": "orders", "alertname": "QueueWillOverflow"})]
    job = next(p for p in exported[0] if p[0] == "job")
    assert any(job is p for p in stored)
    assert np.isfinite(list(memory_report(agent).values())).all()
