"""Anomaly rules as the daemon runs them: their models survive a restart (from the saved
state, or rebuilt from the stored history), the same signal at 15 s and at 60 s gives the
same alerts, a problem lasts as long as the series stays outside the band it left (until it
returns, or the change is accepted as the new normal) and the ticket says which, a warming
model says so (API health, /metrics), and the rule's seasonality configures the detector.

Detection quality is the models' business (tests/test_anomaly.py, benchmarks/nab.py); these
tests drive the real rule manager over a real store and PromQL engine, or the daemon's
`Agent` on a simulated clock with a state directory."""

from __future__ import annotations

import copy
import gc
import os
import tracemalloc
from dataclasses import dataclass

import numpy as np
import pytest

from agent.clock import SimulatedClock
from agent.config.schema import load_config
from agent.daemon import Agent
from agent.promql import Engine
from agent.rules.alerting import Alert, AlertState
from agent.rules.detectors import AnomalyInfo
from agent.rules.file import load_rule_text
from agent.rules.manager import RuleManager
from agent.rules.model_state import MODEL_STATE_FILE
from agent.store import Store, make_labels
from agent.tickets.content import render_body
from agent.web.rules_api import rules_response

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
MIN = 60.0
F = AlertState.FIRING
LAT = make_labels("app_latency_seconds", {"job": "app", "endpoint": "/checkout"})


def latency(t: np.ndarray, seed: int = 1) -> np.ndarray:
    """A latency around 0.2 s with a slow wiggle and noise (the same function of time at any
    sampling interval, but for the noise)."""
    rng = np.random.default_rng(seed)
    return 0.2 + 0.01 * np.sin(2 * np.pi * (t - T0) / 5400.0) + rng.normal(0, 0.004, len(t))


# ==== the daemon: restarts ======================================================================


CONFIG = """
global:
  scrape_interval: 60s
  evaluation_interval: 60s
  retention: 2d
  raw_retention: 1d
  state_dir: {state}
system: {{enabled: false}}
rule_files: [{rules}]
ticketing:
  default_sink: local
  sinks: [{{name: local, type: local}}]
"""

RULES = """
groups:
  - name: latency
    interval: 1m
    rules:
      - alert: LatencyAnomaly
        expr: app_latency_seconds
        anomaly: {sensitivity: medium, direction: above, seasonality: none}
"""


def make_agent(tmp_path, name: str) -> Agent:
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    (d / "rules.yml").write_text(RULES)
    (d / "forewarn.yml").write_text(CONFIG.format(state=d / "state", rules=d / "rules.yml"))
    return Agent(load_config(str(d / "forewarn.yml")), clock=SimulatedClock(T0))


def start(agent: Agent) -> None:
    """What `Agent.start` does with the state directory, without the scheduler."""
    os.makedirs(agent.cfg.state_dir, exist_ok=True)
    agent.store.load(agent.snapshot_path)
    agent.pipeline.start()


def stop(agent: Agent) -> None:
    """What `Agent.stop` does with the state directory."""
    agent.save_snapshot()
    agent.pipeline.stop()


def run_minutes(agent: Agent, minutes: range, values: np.ndarray) -> dict[int, tuple[float, bool, bool]]:
    """Sample, evaluate; per minute the score, whether the model warms up, whether the alert fires."""
    out = {}
    for i in minutes:
        t = T0 + i * MIN
        agent.store.append_samples([(LAT, float(values[i]))], t)
        agent.clock.set(t)
        agent.pipeline.evaluate(t)
        series = {name: v for name, ((_, v),) in agent.pipeline.rules.anomaly_series().items()}
        (rule,) = agent.pipeline.rules.alerting_rules()
        out[i] = (series["forewarn_anomaly_score"], series["forewarn_model_warming"] == 1.0,
                  any(a.state == F for a in rule.active_alerts()))
    return out


@pytest.fixture(scope="module")
def restart_signal() -> np.ndarray:
    t = T0 + MIN * np.arange(600)
    v = latency(t)
    v[450:470] += 0.5  # a step well after the restart
    return v


@pytest.fixture(scope="module")
def never_stopped(tmp_path_factory, restart_signal):
    agent = make_agent(tmp_path_factory.mktemp("never"), "a")
    start(agent)
    try:
        return run_minutes(agent, range(600), restart_signal)
    finally:
        stop(agent)


@pytest.mark.parametrize("from_state", [True, False], ids=["saved-models", "rebuilt-from-history"])
def test_a_restarted_daemon_scores_as_one_that_never_stopped(tmp_path, restart_signal, never_stopped, from_state):
    first = make_agent(tmp_path, "a")
    start(first)
    before = run_minutes(first, range(300), restart_signal)
    stop(first)
    models = os.path.join(first.cfg.state_dir, MODEL_STATE_FILE)
    assert os.path.exists(models)
    if not from_state:  # a lost file (or an agent before this version): the stored history rebuilds them
        os.remove(models)
    second = make_agent(tmp_path, "a")
    start(second)
    after = run_minutes(second, range(300, 600), restart_signal)
    stop(second)

    assert before == {i: never_stopped[i] for i in range(300)}
    assert not any(warming for _, warming, _ in after.values())  # no second warm-up
    got = np.array([after[i][0] for i in range(300, 600)])
    want = np.array([never_stopped[i][0] for i in range(300, 600)])
    if from_state:
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    else:  # the store's samples are what the rule saw; only the sample at each restart is seen twice
        assert np.max(np.abs(got - want)) < 0.05
    firing = [i for i in range(300, 600) if after[i][2]]
    assert firing and firing == [i for i in range(300, 600) if never_stopped[i][2]]
    assert min(firing) == 450


# ==== rules over a store: sampling interval, problems that last, warming, settings ==============


def manager(text: str) -> tuple[Store, RuleManager]:
    store = Store(raw_capacity=20000)
    return store, RuleManager(load_rule_text(text, "r.yml"), Engine(store), SimulatedClock(T0), store=store)


def rule_text(interval: str, anomaly: str, keep_firing_for: str = "0s") -> str:
    return f"""
groups:
- name: g
  interval: {interval}
  rules:
  - alert: LatencyAnomaly
    expr: app_latency_seconds
    anomaly: {anomaly}
    keep_firing_for: {keep_firing_for}
"""


def drive(text: str, t: np.ndarray, v: np.ndarray, keys=(LAT,)) -> tuple[RuleManager, list[dict]]:
    """Evaluate the rule at every sample time (values: one column per key); per step, the
    firing alerts by endpoint."""
    store, rm = manager(text)
    v = v.reshape(len(t), -1)
    (rule,) = rm.alerting_rules()
    steps = []
    for i, ti in enumerate(t.tolist()):
        store.append_samples([(k, float(v[i, j])) for j, k in enumerate(keys)], ti)
        rm.evaluate_group(rm.groups[0], ti)
        steps.append({a.labels["endpoint"]: Seen(a, copy.copy(a.anomaly), a.value)
                      for a in rule.active_alerts() if a.state == F})
    return rm, steps


@dataclass
class Seen:
    """A firing alert at one step: the alert (it lives on), its verdict and value then."""

    alert: Alert
    info: AnomalyInfo
    value: float


def episodes(t: np.ndarray, steps: list[dict], endpoint: str = "/checkout") -> list[tuple[float, float]]:
    """(start, end) of each stretch the alert of `endpoint` fires."""
    on = np.array([endpoint in s for s in steps])
    starts = t[on & ~np.r_[False, on[:-1]]]
    ends = t[~on & np.r_[False, on[:-1]]]
    return list(zip(starts.tolist(), ends.tolist()))


def test_the_same_signal_at_15s_and_60s_gives_the_same_alerts_within_a_step():
    """Time constants are in seconds: sampled and evaluated every 15 s or every minute, a
    20-minute burst and a two-hour drop open and close their problems within a minute."""
    def signal(step: float) -> tuple[np.ndarray, np.ndarray]:
        t = T0 + np.arange(0, 10 * 3600, step)
        v = 0.2 + 0.01 * np.sin(2 * np.pi * (t - T0) / 5400.0) + 0.003 * np.sin(2 * np.pi * (t - T0) / 1390.0)
        v[(t >= T0 + 4 * 3600) & (t < T0 + 6 * 3600)] -= 0.12
        v[(t >= T0 + 8 * 3600) & (t < T0 + 8 * 3600 + 1200)] += 0.3
        return t, v

    got = {}
    for step, interval in ((15.0, "15s"), (60.0, "1m")):
        t, v = signal(step)
        _, steps = drive(rule_text(interval, "{direction: both, seasonality: none}"), t, v)
        got[step] = episodes(t, steps)
    assert len(got[60.0]) == 2  # the drop and the burst, each one problem
    assert len(got[15.0]) == len(got[60.0])
    for (s15, e15), (s60, e60) in zip(got[15.0], got[60.0]):
        assert abs(s15 - s60) <= 60 and abs(e15 - e60) <= 60


def shifted_signal(minutes: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Two endpoints at 0.2 s; at minute 300 both jump to 0.6 s: /checkout stays there (one
    value is NaN), /search comes back at minute 400."""
    t = T0 + MIN * np.arange(minutes)
    a = latency(t, 3)
    b = latency(t, 4)
    a[300:] += 0.4
    a[350] = np.nan  # a 0/0 rate in the middle: it ends nothing
    b[300:400] += 0.4
    return t, np.stack([a, b], axis=1)


KEYS = (LAT, make_labels("app_latency_seconds", {"job": "app", "endpoint": "/search"}))


def test_a_persisting_level_shift_keeps_its_problem_open_until_it_returns_or_is_accepted():
    t, v = shifted_signal()
    _, steps = drive(rule_text("1m", "{direction: above, seasonality: none, accept_after: 4h}"), t, v, KEYS)
    checkout, search = episodes(t, steps, "/checkout"), episodes(t, steps, "/search")
    # one problem each, from the jump: the score is news for a few minutes only, the problem
    # lasts while the level is outside its former band
    assert [s for s, _ in checkout] == [s for s, _ in search] == [T0 + 300 * MIN]
    (_, search_end), = search
    assert T0 + 400 * MIN < search_end <= T0 + 410 * MIN  # back in its band: over within minutes
    (_, checkout_end), = checkout
    assert checkout_end == pytest.approx(T0 + 540 * MIN, abs=2 * MIN)  # accept_after: 4h
    # the tickets say why each lasted and how each ended
    ended = {"/search": steps[int((search_end - T0) / MIN) - 1]["/search"].alert,
             "/checkout": steps[int((checkout_end - T0) / MIN) - 1]["/checkout"].alert}
    assert all(a.state == AlertState.INACTIVE for a in ended.values())
    assert ended["/search"].anomaly.note_text().startswith("Back in its usual band (")
    assert ended["/checkout"].anomaly.note_text().startswith("Accepted as the new normal: outside its former band (")
    body = render_body(action="clear", rule_name="LatencyAnomaly", rule_group="g", alerts=[ended["/checkout"]],
                       group_labels={"alertname": "LatencyAnomaly"}, started_at=T0 + 300 * MIN, now=checkout_end,
                       dedup_key="k")
    assert "Accepted as the new normal" in body
    while_open = steps[360]["/checkout"]
    assert while_open.info.shifted and while_open.info.shifted_since == T0 + 300 * MIN
    assert while_open.info.shift_high < 0.3 and while_open.value > 0.5
    assert "Outside its usual band (" in while_open.info.note_text() and "for 4h" in while_open.info.note_text()
    assert while_open.info.score >= 0.456  # the open problem keeps the score it opened with
    # accepted: the new level is the normal one, no new problem
    assert not any("/checkout" in s for s in steps[545:])


def test_until_score_ends_the_problem_with_the_score_and_accept_after_0_never_accepts():
    t, v = shifted_signal()
    _, by_score = drive(rule_text("1m", "{direction: above, seasonality: none, until: score}"), t, v, KEYS)
    ((start, end),) = episodes(t, by_score, "/checkout")
    assert start == T0 + 300 * MIN and end < T0 + 330 * MIN
    _, never = drive(rule_text("1m", "{direction: above, seasonality: none, accept_after: 0s}"), t, v, KEYS)
    assert not any("/checkout" in s for s in never[:300])
    assert all("/checkout" in s for s in never[300:])  # five hours on, still open


def test_a_warming_model_says_so_in_the_api_and_in_metrics():
    store, rm = manager(rule_text("1m", "{}"))
    t = T0 + MIN * np.arange(130)
    v = latency(t)
    health = {}
    for i, ti in enumerate(t.tolist()):
        store.append_samples([(LAT, float(v[i]))], ti)
        rm.evaluate_group(rm.groups[0], ti)
        if i in (0, 30, 129):
            (group,) = rules_response(rm)[1]["data"]["groups"]
            (r,) = group["rules"]
            ((_, warming),) = rm.anomaly_series()["forewarn_model_warming"]
            health[i] = (r["health"], r.get("lastError", ""), warming)
    assert health[0][0] == health[30][0] == "unknown"
    assert health[30][1] == ("anomaly model warming up: 1 series score 0 until each has 2h of data "
                             "(the first in about 1h30m)")
    assert health[0][2] == health[30][2] == 1.0
    assert health[129] == ("ok", "", 0.0)


def test_the_rule_settings_configure_the_detector_and_a_reload_keeps_its_state():
    store, rm = manager(rule_text("1m", "{seasonality: 1w, sensitivity: high}"))
    (rule,) = rm.alerting_rules()
    params = rule.detector.bank.params
    assert params.seasonality == "weekly" and params.shift_score == pytest.approx(0.365)
    for i in range(10):
        store.append_samples([(LAT, 0.2)], T0 + i * MIN)
        rm.evaluate_group(rm.groups[0], T0 + i * MIN)
    bank = rule.detector.bank
    new = RuleManager(load_rule_text(rule_text("1m", "{seasonality: none}"), "r.yml"), rm.engine,
                      SimulatedClock(T0), store=store)
    new.adopt_state(rm)
    (new_rule,) = new.alerting_rules()
    assert new_rule.detector.bank is bank and len(bank) == 1
    assert bank.params.seasonality == "none" and bank.params.shift_score == pytest.approx(0.456)


def test_a_new_rule_over_stored_series_starts_from_their_history():
    store, rm = manager(rule_text("1m", "{seasonality: none}"))
    t = T0 + MIN * np.arange(300)
    v = latency(t)
    for ti, vi in zip(t.tolist(), v.tolist()):
        store.append_samples([(LAT, vi)], ti)
    rm.evaluate_group(rm.groups[0], float(t[-1]))
    ((_, warming),) = rm.anomaly_series()["forewarn_model_warming"]
    assert warming == 0.0  # five hours of stored history: no warm-up


def test_the_saved_models_go_to_the_same_rule_only_and_a_damaged_file_is_skipped(tmp_path, caplog):
    store, rm = manager(rule_text("1m", "{seasonality: none}"))
    for i in range(30):
        store.append_samples([(LAT, 0.2 + 0.001 * i)], T0 + i * MIN)
        rm.evaluate_group(rm.groups[0], T0 + i * MIN)
    path = str(tmp_path / MODEL_STATE_FILE)
    rm.save_models(path)
    _, same = manager(rule_text("1m", "{seasonality: 1d, sensitivity: low}"))  # settings may change
    assert same.load_models(path) == 1
    (rule,) = same.alerting_rules()
    assert rule.detector.bank.state_dict()["n"][0] == 30
    _, other = manager(rule_text("1m", "{}").replace("expr: app_latency_seconds", "expr: app_latency_seconds * 2"))
    assert other.load_models(path) == 0  # another expression: another model
    with open(path, "r+b") as f:
        f.seek(40)
        f.write(b"\xff" * 64)
    _, damaged = manager(rule_text("1m", "{}"))
    with caplog.at_level("ERROR"):
        assert damaged.load_models(path) == 0
    assert "unreadable" in caplog.text


def test_the_verdicts_of_quiet_series_stay_columns_and_an_alert_holds_its_row():
    """Per series the latest verdicts read the same by index and by iteration (/metrics);
    only the rows an alert holds are objects, the very ones the alerts carry (a note set on
    one at the clear reaches the alert)."""
    t, v = shifted_signal()
    t, v = t[:320], v[:320]  # both shifted, both open
    quiet = [make_labels("app_latency_seconds", {"job": "app", "endpoint": f"/q{i}"}) for i in range(30)]
    keys = KEYS + tuple(quiet)
    values = np.concatenate([v, np.stack([latency(t, 10 + i) for i in range(30)], axis=1)], axis=1)
    store, rm = manager(rule_text("1m", "{direction: above, seasonality: none}"))
    (rule,) = rm.alerting_rules()
    for i, ti in enumerate(t.tolist()):
        store.append_samples([(k, float(values[i, j])) for j, k in enumerate(keys)], ti)
        rm.evaluate_group(rm.groups[0], ti)
    latest = rule.detector.latest
    infos = list(latest.infos)
    assert len(infos) == len(latest.keys) == len(keys)
    for i, info in enumerate(infos):
        again = latest.infos[i]
        assert np.array_equal(list(again.as_template().values()), list(info.as_template().values()), equal_nan=True)
    firing = {a.labels["endpoint"]: a for a in rule.active_alerts() if a.state == F}
    assert {"/checkout", "/search"} <= set(firing)
    objects = latest.infos._held
    assert len(objects) == sum(bool(x) for x in latest.active) < len(keys)
    for endpoint, alert in firing.items():
        row = latest.keys.index(next(k for k in keys if dict(k)["endpoint"] == endpoint))
        assert latest.infos[row] is alert.anomaly and latest.infos[row] is infos[row]


def test_a_series_gone_for_an_hour_loses_its_model_and_a_restored_one_counts_from_its_last_sample(tmp_path):
    """A rule frees the model of a series no evaluation has had for `MODEL_FORGET_AFTER`
    (looked for every quarter of that), and keeps the others; models loaded at a restart
    count as seen when their series last had a sample."""
    cart = make_labels("app_latency_seconds", {"job": "app", "endpoint": "/cart"})

    def run(store: Store, rm: RuleManager, minutes: range, keys: tuple) -> None:
        for i in minutes:
            store.append_samples([(k, 0.2 + 0.001 * (i % 7)) for k in keys], T0 + i * MIN)
            rm.evaluate_group(rm.groups[0], T0 + i * MIN)

    store, rm = manager(rule_text("1m", "{seasonality: none}"))
    (rule,) = rm.alerting_rules()
    det = rule.detector
    run(store, rm, range(0, 10), (LAT, cart))  # /cart's last sample: minute 9
    path = str(tmp_path / MODEL_STATE_FILE)
    rm.save_models(path)
    run(store, rm, range(10, 60), (LAT,))
    assert cart in det.table and det.series_held() == 2  # in its 5-minute lookback until minute 13
    run(store, rm, range(60, 95), (LAT,))
    assert cart not in det.table and LAT in det.table and det.series_held() == 1
    assert det.held_bytes() == det.row_bytes()

    # a restart at minute 10 that loads the saved models: /cart counts from minute 9
    store2, rm2 = manager(rule_text("1m", "{seasonality: none}"))
    assert rm2.load_models(path) == 2
    (rule2,) = rm2.alerting_rules()
    run(store2, rm2, range(10, 60), (LAT,))
    assert cart in rule2.detector.table
    # the pass at minute 70 (passes at 10, 25, ...) frees it: seen at 9, not at the restart
    run(store2, rm2, range(60, 71), (LAT,))
    assert cart not in rule2.detector.table and rule2.detector.series_held() == 1
    assert rule2.detector.bank.state_dict()["n"][rule2.detector.table.slot(LAT)] == 71  # the same model went on


def test_the_forecasts_api_shows_each_series_anomaly_score_not_its_warming_flag():
    """/api/v1/forecasts reads the rules' outputs: a warming model's series shows score 0 (what
    the model says), not its `forewarn_model_warming` flag of 1."""
    from agent.web.api import rule_outputs

    store, rm = manager(rule_text("1m", "{seasonality: none}"))
    for i in range(5):
        store.append_samples([(LAT, 0.2 + 0.001 * i)], T0 + i * MIN)
        rm.evaluate_group(rm.groups[0], T0 + i * MIN)
    series = rm.anomaly_series()
    assert series["forewarn_model_warming"][0][1] == 1.0
    (out,) = rule_outputs(rm)
    assert (out.rule, out.kind) == ("LatencyAnomaly", "anomaly")
    ((labels, fields),) = out.series
    assert dict(labels) == {"alertname": "LatencyAnomaly", "job": "app", "endpoint": "/checkout"}
    assert fields == {"score": series["forewarn_anomaly_score"][0][1]} and fields["score"] < 1.0


def test_saving_the_models_streams_the_banks_arrays_to_the_file(tmp_path):
    """The models' file is written from the banks' arrays as they are (the pipeline's lock
    held), not built in memory first: saving holds about one array beyond the bank (before:
    a copy of every array and the file's bytes twice, 180 MB over the RSS at 100,000 series);
    a bank whose held slots are not its first rows (a series forgotten) is copied, and both
    read back the same."""
    n = 3000
    store, rm = manager(rule_text("1m", "{seasonality: none}"))
    keys = [make_labels("app_latency_seconds", {"job": "app", "endpoint": f"/e{i}"}) for i in range(n)]
    for i in range(3):
        store.append_samples([(k, 0.2 + 0.001 * ((i + j) % 5)) for j, k in enumerate(keys)], T0 + i * MIN)
        rm.evaluate_group(rm.groups[0], T0 + i * MIN)
    (rule,) = rm.alerting_rules()
    bank = rule.detector.bank
    assert np.shares_memory(bank.state_dict(copy=False)["weekly"], bank.state.weekly)
    assert not np.shares_memory(bank.state_dict()["weekly"], bank.state.weekly)
    path = str(tmp_path / MODEL_STATE_FILE)
    gc.collect()
    tracemalloc.start()
    try:
        rm.save_models(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # numpy writes a zip member through a buffer of at most 16 MB: here, the largest array once
    largest = bank.state_dict(copy=False)["weekly"].nbytes
    assert peak < largest + (1 << 20), f"saving held {peak / largest:.2f} times the largest array"
    assert bank.memory_bytes() > 2 * largest
    _, back = manager(rule_text("1m", "{seasonality: none}"))
    assert back.load_models(path) == n
    (again,) = back.alerting_rules()
    for name in ("n", "ls", "daily", "weekly", "hist", "weekly_exp"):
        np.testing.assert_array_equal(again.detector.bank.state_dict()[name], bank.state_dict()[name], err_msg=name)
    bank.forget(keys[:10])  # the held slots no longer start at row 0: copies, the same file contents
    assert not np.shares_memory(bank.state_dict(copy=False)["weekly"], bank.state.weekly)
    rm.save_models(path)
    _, back = manager(rule_text("1m", "{seasonality: none}"))
    assert back.load_models(path) == n - 10
