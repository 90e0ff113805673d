"""What /metrics says each component holds (`forewarn_memory_bytes{component}`): the store,
the alerts (`rules`), each forecast and anomaly rule's models (`models:<rule>`) and the outbox,
measured against the arrays they really hold; and the per-series label sets the rules derive
(exported model outputs) sharing the series' own pair objects rather than copying them."""

from __future__ import annotations

import gc
import random
import tracemalloc

import numpy as np

from agent.clock import SimulatedClock
from agent.config.schema import load_config
from agent.daemon import Agent
from agent.models.anomaly import AnomalyBank
from agent.pipeline import load_groups
from agent.rules.detectors import AnomalyDetector, ForecastDetector
from agent.rules.manager import RuleOptions, build_rule_manager
from agent.rules.query import without_name
from agent.store import make_labels, with_pairs
from agent.store.sizing import MODEL_SHARE, MemoryBudget, model_memory_bytes
from agent.web.exposition import encode_text

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
                                        buckets.c, buckets.top))
    assert ring_bytes <= report["models:QueueWillOverflow"] <= 3 * ring_bytes
    s = anomaly.bank.state
    profiles = s.daily.nbytes + s.weekly.nbytes
    assert profiles <= report["models:QueueAnomaly"] <= 3 * profiles
    assert anomaly.bank.state.capacity >= n
    assert 0 < report["outbox"] < 64 << 20
    agent.pipeline.stop()


def test_a_rule_over_series_with_history_gives_its_models_one_row_each(tmp_path):
    """Series that arrive with stored history are warmed (forecast) and replayed (anomaly)
    one by one; their rows are still taken in one batch, so the banks hold a row per series
    and not the up to a quarter more that growing one key at a time leaves."""
    (tmp_path / "rules.yml").write_text(RULES)
    (tmp_path / "forewarn.yml").write_text(CONFIG.format(state=tmp_path / "state", rules=tmp_path / "rules.yml"))
    agent = Agent(load_config(str(tmp_path / "forewarn.yml")), clock=SimulatedClock(T0))
    n = 1000
    labels = [make_labels("queue_depth", {"job": "q", "queue": f"q{i}"}) for i in range(n)]
    for k in range(-5, 1):
        agent.store.append_samples([(lab, float(i + k)) for i, lab in enumerate(labels)], T0 + 60 * k)
    agent.clock.set(T0)
    agent.pipeline.evaluate(T0)
    rules = {r.name: r for r in agent.pipeline.rules.alerting_rules()}
    forecast, anomaly = rules["QueueWillOverflow"].detector, rules["QueueAnomaly"].detector
    assert isinstance(forecast, ForecastDetector) and isinstance(anomaly, AnomalyDetector)
    assert len(forecast.bank) == len(anomaly.bank.keys()) == n
    assert (forecast.bank.sampling.nseen[forecast.bank.slots_for(labels)] > 1).all()  # warmed from the store
    assert forecast.bank.table.capacity == anomaly.bank.state.capacity == n


def test_anomaly_profiles_cost_two_bytes_a_phase():
    bank = AnomalyBank(capacity=1000)
    s = bank.state
    per_series = (s.daily.nbytes + s.weekly.nbytes + s.daily_exp.nbytes + s.weekly_exp.nbytes) / s.capacity
    assert per_series == 2 * (s.daily.shape[1] + s.weekly.shape[1]) + 4  # and a power of two per profile
    assert bank.memory_bytes() / s.capacity < 2 * 1024  # 39 numbers, 624 phases, 10 rarity bins


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
    assert exported == [make_labels(None, {"job": "q", "queue": "orders", "alertname": "QueueWillOverflow"})]
    job = next(p for p in exported[0] if p[0] == "job")
    assert any(job is p for p in stored)
    assert np.isfinite(list(memory_report(agent).values())).all()



def test_exposing_the_models_outputs_keeps_nothing_per_series(tmp_path):
    """/metrics shows four forecast outputs and two anomaly outputs per modelled series; their
    label sets are built for each scrape and dropped with it (one per series, shared by its
    outputs), so a scraped agent holds no more than one nobody scrapes (kept, they were 59 MB
    at 100,000 series with rules)."""
    (tmp_path / "rules.yml").write_text(RULES)
    (tmp_path / "forewarn.yml").write_text(CONFIG.format(state=tmp_path / "state", rules=tmp_path / "rules.yml"))
    agent = Agent(load_config(str(tmp_path / "forewarn.yml")), clock=SimulatedClock(T0))
    n = 2000
    labels = [make_labels("queue_depth", {"job": "q", "queue": f"q{i}"}) for i in range(n)]
    feed(agent, labels, range(2))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        body = encode_text(agent.registry).decode()
        assert body.count("\nforewarn_forecast_breach_seconds_low{") == n
        assert body.count("\nforewarn_model_warming{") == n
        assert 'forewarn_anomaly_score{alertname="QueueAnomaly",job="q",queue="q7"} ' in body
        del body
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept / n < 20, f"{kept / n:.0f} bytes a series kept by a /metrics scrape"


# ==== the models' memory budget =================================================================


def feed(agent: Agent, labels: list, minutes: range) -> None:
    for k in minutes:
        t = T0 + 60 * k
        agent.store.append_samples([(lab, float(i % 7 + k)) for i, lab in enumerate(labels)], t)
        agent.clock.set(t)
        agent.pipeline.evaluate(t)


def test_the_models_share_is_part_of_the_memory_budget():
    assert model_memory_bytes(MemoryBudget(410 << 20, "default")) == int((410 - 64) * 2**20 * MODEL_SHARE)
    assert model_memory_bytes(MemoryBudget(32 << 20, "config")) == 0  # below the baseline: no room at all


def test_models_stop_at_their_budget_and_count_what_they_refuse(tmp_path, caplog):
    """With room for a few hundred models, 2,000 new series: the forecast rule's 65-bucket
    rings and daily profiles (about 5 KB a series) and the anomaly models (about 3.6 KB) each fill their half
    of the budget, whichever runs first; the rest are refused at every evaluation, counted per
    rule and logged; more room (a reload with a larger budget) lets them in."""
    (tmp_path / "rules.yml").write_text(RULES)
    (tmp_path / "forewarn.yml").write_text(CONFIG.format(state=tmp_path / "state", rules=tmp_path / "rules.yml"))
    agent = Agent(load_config(str(tmp_path / "forewarn.yml")), clock=SimulatedClock(T0))
    budget = agent.pipeline.model_budget
    assert budget.limit == model_memory_bytes(agent.pipeline.store_budget)
    budget.limit = 3 << 20
    labels = [make_labels("queue_depth", {"job": "q", "queue": f"q{i}"}) for i in range(2000)]
    rules = {r.name: r for r in agent.pipeline.rules.alerting_rules()}
    forecast, anomaly = rules["QueueWillOverflow"].detector, rules["QueueAnomaly"].detector
    assert forecast is not None and anomaly is not None
    want_refused = 0
    with caplog.at_level("WARNING"):
        for minute in range(3):
            before = forecast.series_held() + anomaly.series_held()
            feed(agent, labels, range(minute, minute + 1))
            held = forecast.series_held() + anomaly.series_held()
            want_refused += 4000 - held  # every series offered to either rule and not modelled
            assert held >= before
    assert 0 < forecast.series_held() < 2000 and 0 < anomaly.series_held() < 2000
    for detector in (forecast, anomaly):  # each fills its half, and no more
        assert budget.share() - detector.row_bytes() < detector.held_bytes() <= budget.share() == budget.limit // 2
    assert budget.used() <= budget.limit
    assert sum(budget.refused.values()) == want_refused
    assert "models' memory budget (3 MiB) is full" in caplog.text
    families = {fam.name: fam for fam in agent.registry.collect()}
    refused = {s.labels["alertname"]: s.value for s in families["forewarn_model_series_refused"].samples
               if s.name.endswith("_total")}
    assert refused == {k: float(v) for k, v in budget.refused.items()}
    assert set(refused) == {"QueueWillOverflow", "QueueAnomaly"}
    # the outputs cover the modelled series only
    assert sum(map(len, agent.pipeline.rules.anomaly_series().values())) == 2 * anomaly.series_held()
    budget.limit = 1 << 30
    feed(agent, labels, range(3, 4))
    assert forecast.series_held() == anomaly.series_held() == 2000


def test_a_linear_rule_sizes_its_window_ring_to_its_evaluations(tmp_path):
    """A least-squares rule evaluated every 15 s over 1 h keeps 32 window buckets (33 ring
    positions, half the default's memory); a 6 h lookback, a window of at most 64 evaluations
    (one sample a bucket: exact) and the robust models keep 64."""
    (tmp_path / "rules.yml").write_text("""
groups:
  - name: queues
    interval: 15s
    rules:
      - {alert: Short, expr: queue_depth, forecast: {model: linear, lookback: 1h, horizon: 1h, threshold: 1000}}
      - {alert: Long, expr: queue_depth, forecast: {model: linear, lookback: 6h, horizon: 1h, threshold: 1000}}
      - {alert: Auto, expr: queue_depth, forecast: {model: auto, lookback: 1h, horizon: 1h, threshold: 1000}}
      - {alert: Exact, expr: queue_depth, forecast: {model: linear, lookback: 15m, horizon: 1h, threshold: 1000}}
""")
    (tmp_path / "forewarn.yml").write_text(CONFIG.format(state=tmp_path / "state", rules=tmp_path / "rules.yml"))
    agent = Agent(load_config(str(tmp_path / "forewarn.yml")), clock=SimulatedClock(T0))
    labels = [make_labels("queue_depth", {"queue": f"q{i}"}) for i in range(50)]
    agent.store.append_samples([(lab, float(i)) for i, lab in enumerate(labels)], T0)
    agent.clock.set(T0)
    agent.pipeline.evaluate(T0)
    rules = {r.name: r.detector for r in agent.pipeline.rules.alerting_rules()}
    assert all(isinstance(d, ForecastDetector) for d in rules.values())
    assert {name: d.bank.buckets.ring for name, d in rules.items()} == {"Short": 33, "Long": 65, "Auto": 65, "Exact": 65}
    assert rules["Short"].bank_row_bytes() < 0.7 * rules["Long"].bank_row_bytes()


def test_a_reload_that_changes_the_window_ring_starts_the_forecasts_afresh():
    """A new group interval that changes the ring's size cannot take the old bank over (its
    buckets are another width); one that keeps the size does."""
    from agent.config.decode import Duration
    from agent.rules.file import ForecastSpec

    spec = ForecastSpec(threshold=1000.0, model="linear", lookback=Duration(3600))
    old = ForecastDetector(spec, interval=15.0)
    old.conditions(T0, [(make_labels("queue_depth", {"queue": "a"}), 1.0)])
    assert not ForecastDetector(spec, interval=60.0).adopt(old, same_spec=True)  # 60 evaluations: 64 buckets
    finer = ForecastDetector(spec, interval=10.0)  # 360 evaluations: 45 buckets, not 32
    assert not finer.adopt(old, same_spec=True)
    same = ForecastDetector(spec, interval=20.0)  # 180 evaluations: 32 buckets, as at 15 s
    assert same.adopt(old, same_spec=True) and same.bank is old.bank and len(same.bank) == 1


def test_the_daemon_keeps_no_copy_of_a_rules_last_output(tmp_path):
    """`Rule.last_samples` (what a backtest charts) is a tuple and a float per series of
    every rule: the daemon's rules leave it empty, a rule manager built for a backtest or
    `forewarn test` (default options) keeps it."""
    (tmp_path / "rules.yml").write_text(RULES)
    (tmp_path / "forewarn.yml").write_text(CONFIG.format(state=tmp_path / "state", rules=tmp_path / "rules.yml"))
    cfg = load_config(str(tmp_path / "forewarn.yml"))
    agent = Agent(cfg, clock=SimulatedClock(T0))
    labels = [make_labels("queue_depth", {"job": "q", "queue": f"q{i}"}) for i in range(20)]
    agent.store.append_samples([(lab, float(i)) for i, lab in enumerate(labels)], T0)
    agent.clock.set(T0)
    agent.pipeline.evaluate(T0)
    rules = agent.pipeline.rules.alerting_rules()
    assert rules and all(len(r.detector.latest.keys) == 20 for r in rules)
    assert all(r.last_samples == [] for r in rules)
    kept = build_rule_manager(load_groups(cfg), agent.store, SimulatedClock(T0), RuleOptions())
    kept.evaluate_group(kept.groups[0], T0)
    assert all(len(r.last_samples) == 20 for r in kept.alerting_rules())
