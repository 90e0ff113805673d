"""The SLO rules the agent generates, exported with `forewarn slo export` and evaluated by
Prometheus itself (Debian's `promtool test rules`: Prometheus's rule manager and engine over
the same input series), give the same series, labels and values as the agent's own
evaluation, and the same burn-rate alerts with the same annotations.

Every recorded series the agent wrote at the check times becomes a promtool check
`abs(series - agent_value) <= 1e-9 * |agent_value|` that must return 1 with exactly the
agent's labels; a control run with one value nudged by 0.1% must fail.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import textwrap

import numpy as np
import pytest

from agent.commands.slo import export
from agent.rules.alerting import AlertState
from tests.slo_traffic import Traffic, replay_slo

H, M = 3600.0, 60.0

RULES = textwrap.dedent("""\
    groups:
      - name: checkout-slo
        interval: 1m
        rules:
          - slo: requests-availability
            service: checkout
            objective: 99
            window: 1d
            labels: {team: payments}
            sli:
              bad: sum(rate(http_requests_total{job="checkout",code=~"5.."}[$window]))
              total: sum(rate(http_requests_total{job="checkout"}[$window]))
    """)
CHECKS = [20 * M, 65 * M, 2 * H, 3 * H]
END = 3 * H


def _labels(d: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(d.items())) + "}"


def _promtool_files(tmp_path, traffic, agent_series, firing, nudge: float = 1.0):
    rule_path = tmp_path / "slo.yml"
    rule_path.write_text(RULES)
    (tmp_path / "export.yml").write_text(export([str(rule_path)]))
    rec = traffic.recording(END)
    series = []
    for i, lab in enumerate(rec.labels):
        t, v = rec.series_values(i)
        name = dict(lab)["__name__"]
        rest = {k: x for k, x in lab if k != "__name__"}
        series.append({"series": name + _labels(rest), "values": " ".join(repr(float(x)) for x in v)})
    checks = []
    for n, (t, name, labels, v) in enumerate(agent_series):
        if n == 0:
            v *= nudge
        sel = name + _labels(labels)
        tol = 1e-9 * abs(v) + 1e-15
        checks.append({"expr": f"abs({sel} - {v!r}) <= bool {tol!r}", "eval_time": f"{int(t)}s",
                       "exp_samples": [{"labels": _labels(labels), "value": 1}]})
    alert_tests = [{"alertname": "ErrorBudgetBurn", "eval_time": f"{int(t)}s",
                    "exp_alerts": [{"exp_labels": lab, "exp_annotations": ann} for lab, ann in alerts]}
                   for t, alerts in firing]
    import yaml
    test = {"rule_files": ["export.yml"], "evaluation_interval": "1m",
            "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": checks,
                       "alert_rule_test": alert_tests}]}
    path = tmp_path / "test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False, width=10000))
    return path


def _promtool(path) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool") or "/usr/bin/promtool"
    return subprocess.run([exe, "test", "rules", path.name], cwd=path.parent, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def agent_run():
    traffic = Traffic([(0, 0.0), (10 * M, 0.05), (40 * M, 0.002), (100 * M, 0.3), (110 * M, 0.0)], rps=7.0)
    agent_series = []
    firing = []

    def on_tick(tick, engine):
        if tick.time in CHECKS:
            r = engine.instant('{sloth_id="checkout-requests-availability"}', tick.time)
            for lab, v in zip(r.labels, np.asarray(r.values).tolist()):
                d = dict(lab)
                name = d.pop("__name__")
                if math.isfinite(v):
                    agent_series.append((tick.time, name, d, float(v)))
            alerts = [(dict(a.labels), dict(a.annotations)) for rule in tick.rules.alerting_rules()
                      if rule.name == "ErrorBudgetBurn" for a in rule.active_alerts() if a.state == AlertState.FIRING]
            firing.append((tick.time, [(dict(lab), ann) for lab, ann in alerts]))

    replay_slo(RULES, traffic, END, on_tick=on_tick)
    return traffic, agent_series, firing


def test_prometheus_computes_the_same_slo_series_and_alerts(tmp_path, agent_run):
    traffic, agent_series, firing = agent_run
    names = {name for _, name, _, _ in agent_series}
    assert {"slo:sli_error:ratio_rate5m", "slo:sli_error:ratio_rate1d", "slo:period_error_budget_remaining:ratio",
            "slo:current_burn_rate:ratio", "slo:burn_rate:ratio_rate6h", "sloth_slo_info"} <= names
    assert any(alerts for _, alerts in firing), "the traffic must make the page alert fire at a check time"
    p = _promtool(_promtool_files(tmp_path, traffic, agent_series, firing))
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert "SUCCESS" in p.stdout


def test_a_different_value_fails_in_prometheus(tmp_path, agent_run):
    traffic, agent_series, firing = agent_run
    p = _promtool(_promtool_files(tmp_path, traffic, agent_series, firing, nudge=1.001))
    assert p.returncode != 0 and "FAILED" in p.stdout + p.stderr
