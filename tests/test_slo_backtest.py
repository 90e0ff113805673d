"""`forewarn backtest` over a month of synthetic traffic with an `slo:` rule: when the budget
problem would have opened and how long before the budget ran out, checked against the exact
arithmetic of the traffic.

The traffic (`tests/slo_traffic.py`, written as the CSV of counters a user would export): 10
requests a second, a steady 0.05% errors (half the budget of a 99.9% SLO) for 14 days, then
0.35% (3.5x) from day 14 on. The SLO window (30d) holds all of it, so the budget left at an
evaluation t after the rise is exactly

    1 - (r0 * D1 + r1 * (t - D1)) / (t * budget)

which reaches 0 at t* = D1 * (r1 - r0) / (r1 - budget) = 16.8 days, before the window ends.
The backtest evaluates every hour (`--step 1h`, coarse to be fast; the base rate then spans
an hour of 20-minute samples and, the traffic changing only on the hour, is exact).
"""

from __future__ import annotations

import json
import math
import re
import textwrap

import pytest

from agent.cli import main
from agent.tickets.content import approx_duration
from tests.slo_traffic import Traffic, write_csv

H, D = 3600.0, 86400.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the first sample
R0, R1, D1 = 0.0005, 0.0035, 14 * D
BUDGET = 0.001  # 99.9%
MONTH = 30 * D
LOOKBACK = D  # the budget forecast's default lookback

RULES = textwrap.dedent("""\
    groups:
      - name: checkout-slo
        rules:
          - slo: requests-availability
            service: checkout
            objective: 99.9
            window: 30d
            sli:
              bad: sum(rate(http_requests_total{job="checkout",code=~"5.."}[$window]))
              total: sum(rate(http_requests_total{job="checkout"}[$window]))
    """)


def remaining(t: float) -> float:
    """The budget left at `t` seconds after the first sample (exact)."""
    bad = R0 * min(t, D1) + R1 * max(t - D1, 0.0)
    return 1.0 - bad / t / BUDGET


EXHAUSTED = D1 * (R1 - R0) / (R1 - BUDGET)  # 16.8 days
BREACH = math.ceil(EXHAUSTED / H) * H  # the first hourly evaluation with no budget left


@pytest.fixture(scope="module")
def month(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slo_month")
    csv, rules = tmp / "traffic.csv", tmp / "slo.yml"
    write_csv(Traffic([(0.0, R0), (D1, R1)]), str(csv), MONTH, scrape=20 * 60.0, t0=T0)
    rules.write_text(RULES)
    return [f"--rules={rules}", f"--input={csv}", "--step=1h"]


def test_the_budget_problem_opens_days_before_the_budget_runs_out(month, capsys):
    assert remaining(BREACH - H) > 0 >= remaining(BREACH)
    assert main(["backtest", *month, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["evaluations"] == MONTH / H + 1
    opens = [e for e in doc["events"] if e["rule"] == "ErrorBudgetExhaustion" and e["action"] == "open"]
    assert len(opens) == 1, opens  # none during the steady half-budget burn
    (o,) = opens
    opened = o["time"] - T0
    # after the rise, once the forecast's lookback sees the budget falling, well before it runs out
    assert D1 < opened <= D1 + LOOKBACK, opened / H
    assert o["value"] == pytest.approx(remaining(opened), rel=1e-9)
    assert o["verdict"] == "true"
    assert o["lead_seconds"] == BREACH - opened  # judged against the remaining budget the replay recorded
    # "runs out before the window ends": within the SLO window (the forecast's horizon) from now. The
    # first forecast is late: its straight line is fitted over a lookback that is mostly the flat half.
    assert 0 < o["eta_low"] <= o["eta"] <= o["eta_high"] and o["eta"] < 30 * D
    (s,) = [s for s in doc["summary"] if s["rule"] == "ErrorBudgetExhaustion"]
    assert (s["tickets"], s["true_tickets"], s["false_tickets"], s["breaches"], s["missed_breaches"]) == (1, 1, 0, 1, 0)
    assert s["median_lead_time_seconds"] == BREACH - opened
    # The forecast tightens as the burn goes on: a day into it the predicted exhaustion is within
    # a few hours of the true one (a straight line through a curve that bends towards it comes early).
    later = [e for e in doc["events"] if e["rule"] == "ErrorBudgetExhaustion" and e["time"] - T0 >= D1 + LOOKBACK]
    first = later[0]
    assert first["eta_low"] <= first["eta_high"] and abs(first["time"] - T0 + first["eta"] - EXHAUSTED) < 6 * H

    # The burn-rate ticket alert (3x over 1d and 2h, or 1x over 3d and 6h) opens one problem after
    # the rise that stays open; both severities' rules share it (the page alert never fires).
    burn = [(e["action"], e["time"] - T0, e["verdict"]) for e in doc["events"] if e["rule"] == "ErrorBudgetBurn"]
    assert [a for a, _, _ in burn] == ["open"] and D1 < burn[0][1] < BREACH and burn[0][2] == "true", burn
    assert not [w for w in doc["warnings"] if "ErrorBudgetBurn" in w], doc["warnings"]

    # The report a person reads states the same.
    assert main(["backtest", *month]) == 0
    text = capsys.readouterr().out
    line = re.search(r"open +ErrorBudgetExhaustion .*\n +(.*)", text)
    assert line and f"true (lead time {approx_duration(BREACH - opened)})" in line.group(1), text[:2000]
    summary = re.search(r"^ErrorBudgetExhaustion +forecast +1 +1 +0 +1 +0 +(\S+ \S+)", text, re.M)
    assert summary and summary.group(1) == approx_duration(BREACH - opened)
