"""SLOs replayed over synthetic traffic with known error ratios: the budget series match the
exact arithmetic, each burn-rate alert fires and resolves when the workbook's arithmetic says
(to one evaluation interval), and a constant burn's exhaustion ETA falls in its interval."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest

from agent.config.decode import ConfigErrors
from agent.rules.alerting import AlertingRule, AlertState
from agent.rules.file import load_rule_text
from agent.rules.slo import Ledger, SloBudgetRule
from agent.tickets.chart import render_chart
from tests.slo_traffic import Traffic, replay_slo, value

H, M, D = 3600.0, 60.0, 86400.0

AVAILABILITY = textwrap.dedent("""\
    groups:
      - name: checkout-slo
        interval: 1m
        rules:
          - slo: requests-availability
            service: checkout
            objective: {objective}
            window: {window}
            sli:
              bad: sum(rate(http_requests_total{{job="checkout",code=~"5.."}}[$window]))
              total: sum(rate(http_requests_total{{job="checkout"}}[$window]))
            contributors: {{by: [route]}}
            forecast: {{lookback: {lookback}}}
    """)

SEL = '{sloth_id="checkout-requests-availability"}'


def test_budget_remaining_matches_the_exact_arithmetic():
    """Budget left = 1 - (bad/total over the window) / (1 - objective), with the window
    holding the samples of (t - W, t]; checked against the exact integral of the traffic."""
    traffic = Traffic([(0, 0.0), (2 * H, 0.02), (5 * H, 0.001), (20 * H, 0.0), (26 * H, 0.05), (27 * H, 0.0)])
    rules = AVAILABILITY.format(objective=99, window="1d", lookback="1h")
    checks = {3 * H, 10 * H, 24 * H + 30 * M, 26 * H + 30 * M, 30 * H}
    seen = {}

    def on_tick(tick, engine):
        if tick.time in checks:
            seen[tick.time] = {
                "remaining": value(engine, f"slo:period_error_budget_remaining:ratio{SEL}", tick.time),
                "consumed": value(engine, f"slo:period_error_budget_consumed:ratio{SEL}", tick.time),
                "ratio1h": value(engine, f"slo:sli_error:ratio_rate1h{SEL}", tick.time),
                "burn1h": value(engine, f"slo:burn_rate:ratio_rate1h{SEL}", tick.time),
                "current": value(engine, f"slo:current_burn_rate:ratio{SEL}", tick.time),
            }

    replay_slo(rules, traffic, 30 * H, on_tick=on_tick)
    budget = 0.01
    for t in sorted(checks):
        # The first rate() is at 1m: the window's data start there.
        frac_w = traffic.error_fraction(max(t - D, 0.0), t)
        got = seen[t]
        assert got["remaining"] == pytest.approx(1 - frac_w / budget, rel=1e-9, abs=1e-9), t
        assert got["consumed"] == pytest.approx(frac_w / budget, rel=1e-9, abs=1e-9), t
        frac_1h = traffic.error_fraction(t - H, t)
        assert got["ratio1h"] == pytest.approx(frac_1h, rel=1e-9, abs=1e-12), t
        assert got["burn1h"] == pytest.approx(frac_1h / budget, rel=1e-9, abs=1e-9), t
        assert got["current"] == pytest.approx(traffic.error_fraction(t - 5 * M, t) / budget, rel=1e-9, abs=1e-9)
    # At 24h30m the window (30m, 24h30m] holds 3 h at 2% and 15 h at 0.1% against a 1% budget.
    assert seen[24 * H + 30 * M]["consumed"] == pytest.approx((3 * 0.02 + 15 * 0.001) / 24 / budget, rel=1e-9)


def _first(times, states, want):
    return next((t for t, s in zip(times, states) if s == want), None)


def test_burn_rate_alerts_fire_and_resolve_when_the_arithmetic_says():
    """99.9% over 30d (workbook table: 14.4x 1h/5m and 6x 6h/30m page; 3x 1d/2h and 1x 3d/6h
    ticket). Each alert fires at the first time both of one pair's windows exceed their
    threshold and resolves when no pair does, computed from the exact traffic integral."""
    traffic = Traffic([(0, 0.0), (6 * H, 0.02), (7 * H + 30 * M, 0.0), (10 * H, 0.004), (20 * H, 0.0)])
    rules = AVAILABILITY.format(objective=99.9, window="30d", lookback="1h")
    end = 26 * H
    times, states = [], {"page": [], "ticket": []}

    def on_tick(tick, engine):
        times.append(tick.time)
        for r in tick.rules.alerting_rules():
            if r.name == "ErrorBudgetBurn":
                states[r.labels["sloth_severity"]].append(r.state)

    replay_slo(rules, traffic, end, on_tick=on_tick)
    budget = 1 - 0.999
    pairs = {"page": [(H, 5 * M, 14.4), (6 * H, 30 * M, 6.0)], "ticket": [(D, 2 * H, 3.0), (3 * D, 6 * H, 1.0)]}

    def predicted(t, severity):
        # Windows reach back to the first data (1m) at most, as a window over the data there is.
        return any(traffic.error_fraction(max(t - lw, 0.0), t) > f * budget
                   and traffic.error_fraction(max(t - sw, 0.0), t) > f * budget for lw, sw, f in pairs[severity])

    fine = [i * 10.0 for i in range(int(end / 10) + 1)]
    for severity in ("page", "ticket"):
        want = [predicted(t, severity) for t in fine]
        fired = [t for t, prev, now in zip(fine[1:], want, want[1:]) if now and not prev]
        resolved = [t for t, prev, now in zip(fine[1:], want, want[1:]) if prev and not now]
        got = states[severity]
        got_fired = [t for t, prev, now in zip(times[1:], got, got[1:])
                     if now == AlertState.FIRING and prev != AlertState.FIRING]
        got_resolved = [t for t, prev, now in zip(times[1:], got, got[1:])
                        if prev == AlertState.FIRING and now != AlertState.FIRING]
        assert fired and len(got_fired) == len(fired), (severity, fired, got_fired)
        assert len(got_resolved) == len(resolved), (severity, resolved, got_resolved)
        for want_t, got_t in zip(fired + resolved, got_fired + got_resolved):
            assert 0 <= got_t - want_t <= 60.0, (severity, want_t, got_t)
    # The fast burn pages (2% = 20x > 14.4x) after 43.2 minutes of the 1h window; the 0.4%
    # burn (4x) only makes a ticket.
    assert _first(times, states["page"], AlertState.FIRING) == 6 * H + 44 * M


def test_constant_burn_exhaustion_eta_is_within_its_interval_and_opens_the_problem():
    """A clean 1d window, then a constant 4x burn: the budget runs out 6 h after the burn
    starts. The forecast's interval holds the true time, and the budget problem opens."""
    traffic = Traffic([(0, 0.0), (D, 0.04)])
    rules = AVAILABILITY.format(objective=99, window="1d", lookback="1h")
    exhausted_at = D + 6 * H
    checks = [D + 2 * H, D + 3 * H, D + 4 * H]
    found = {}
    tickets = []
    charts = []

    def on_tick(tick, engine):
        tickets.extend(t for _, t in tick.tickets)
        if tick.time in checks:
            rule = next(r for r in tick.rules.alerting_rules() if isinstance(r, SloBudgetRule))
            (info,) = list(rule.detector.latest.infos)
            found[tick.time] = (info, rule.active_alerts())
            if tick.time == checks[-1]:
                a = rule.active_alerts()[0]
                charts.append(rule.budget_chart(a.labels, tick.time, a.value, a.forecast))

    replay_slo(rules, traffic, D + 4 * H, on_tick=on_tick, tickets=True)
    for t in checks:
        info, alerts = found[t]
        true_eta = exhausted_at - t
        # A perfectly linear burn collapses the interval onto the mean: allow float rounding.
        assert info.eta_low - 1e-6 <= true_eta <= info.eta_high + 1e-6, (t, info)
        assert info.eta == pytest.approx(true_eta, rel=0.05), (t, info)
        assert alerts and alerts[0].state == AlertState.FIRING
    opened = [t for t in tickets if t.rule == "ErrorBudgetExhaustion" and t.action == "open"]
    assert len(opened) == 1
    body = opened[0].body
    assert "SLO requests-availability of checkout: 99% of events good over a rolling 1d." in body
    assert "Error budget left:" in body and "Burn rate (1x spends the budget exactly over the window): 5m 4.00x" in body
    assert "Top contributors to bad events over the last 1h: route=/pay 75%; route=/cart 25%." in body
    assert "before the window ends" in body
    # The ticket's chart: the remaining budget over the whole 1d window (untouched, then
    # falling) and the forecast from now down to 0 at the predicted exhaustion.
    (chart,) = charts
    now = checks[-1]
    assert chart.times[0] <= now - D + 30 * M and chart.times[-1] == now
    assert chart.values[0] == pytest.approx(1.0) and chart.values[-1] == pytest.approx(1 - 4 * 4 / 24, abs=1e-6)
    assert chart.forecast_t[0] == now and chart.forecast_mean[0] == pytest.approx(chart.values[-1])
    at_eta = np.interp(now + found[now][0].eta, chart.forecast_t, chart.forecast_mean)
    assert at_eta == pytest.approx(0.0, abs=1e-6)
    assert np.all(chart.forecast_low <= chart.forecast_mean + 1e-12)
    assert np.all(chart.forecast_mean <= chart.forecast_high + 1e-12)
    png = render_chart(chart.times, chart.values, forecast_t=chart.forecast_t, forecast_mean=chart.forecast_mean,
                       forecast_low=chart.forecast_low, forecast_high=chart.forecast_high, threshold=0.0,
                       title=chart.title)
    assert png is not None and png.startswith(b"\x89PNG")


def test_ledger_window_sums_and_trimming():
    led = Ledger(span=300.0, capacity=4)
    for i in range(1, 21):
        led.add(i * 60.0, float(i), 10.0)
    bad, total, n = led.sums(1200.0, __import__("numpy").array([270.0, 30.0]))
    assert bad.tolist() == [20 + 19 + 18 + 17 + 16, 20.0] and total.tolist() == [50.0, 10.0] and n.tolist() == [5, 1]
    assert led.n <= 16  # trimmed to the span, not grown without bound
    led.add(1200.0, math.nan, 1.0)  # not newer: ignored
    assert led.sums(1200.0, __import__("numpy").array([60.0]))[0].tolist() == [20.0]


@pytest.mark.parametrize("body, message", [
    ("objective: 100\n    sli: {bad: 'x[$window]', total: 'y[$window]'}", "objective: must be a percentage"),
    ("objective: 99\n    sli: {bad: 'sum(rate(x[5m]))', total: 'sum(rate(y[$window]))'}",
     "bad: must use the $window placeholder"),
    ("objective: 99\n    sli: {bad: 'sum(rate(x[$window])', total: 'sum(rate(y[$window]))'}", "sli.bad:"),
    ("objective: 99\n    window: 2h\n    sli: {bad: 'sum(rate(x[$window]))', total: 'sum(rate(y[$window]))'}",
     "window: must be at least 1d"),
    ("objective: 99\n    sli: {latency: {metric: h_bucket, threshold: 0.3}}", "without _bucket"),
    ("objective: 99\n    sli: {bad: 'rate(x[$window])', total: 'sum(rate(y[$window]))'}\n    contributors: {by: [route]}",
     "give contributors.expr"),
    ("objective: 99\n    sli: {bad: 'sum(rate(x[$window]))', total: 'sum(rate(y[$window]))'}\n"
     "    alerting: {windows: [{long: 1h, short: 2h, severity: page, burn_rate: 2}]}", "short: must be shorter"),
    ("objective: 99\n    sli: {bad: 'sum(rate(x[$window]))', total: 'sum(rate(y[$window]))'}\n    forcast: {}",
     "unknown field 'forcast'"),
])
def test_check_reports_slo_mistakes_at_their_line(body, message):
    text = "groups:\n- name: g\n  rules:\n  - slo: s\n    " + body + "\n"
    with pytest.raises(ConfigErrors) as e:
        load_rule_text(text, "slo.yml")
    errors = [str(x) for x in e.value.errors]
    assert any(message in x and x.startswith("slo.yml:") and ':0:' not in x for x in errors), errors


def test_latency_sli_expands_to_histogram_buckets():
    text = textwrap.dedent("""\
        groups:
        - name: g
          rules:
          - slo: latency
            objective: 99
            sli: {latency: {metric: http_request_duration_seconds, selector: '{job="checkout"}', threshold: 0.3}}
        """)
    from agent.rules.group import RuleGroup
    (g,) = load_rule_text(text, "l.yml")
    bad = RuleGroup(g, 60).rules[0]
    assert bad.query_text == (
        '(sum(rate(http_request_duration_seconds_count{job="checkout"}[1m])) - '
        'sum(rate(http_request_duration_seconds_bucket{job="checkout", le="0.3"}[1m]))) or '
        '((sum(rate(http_request_duration_seconds_count{job="checkout"}[1m]))) * 0)')
    alerts = [r for r in RuleGroup(g, 60).rules if isinstance(r, AlertingRule)]
    assert [r.name for r in alerts] == ["ErrorBudgetBurn", "ErrorBudgetBurn", "ErrorBudgetExhaustion"]


def _run(rm, feeder, engine, times, out, wanted):
    for t in times:
        feeder.feed_until(t)
        rm.clock.set(t)
        for g in rm.due_groups(t):
            rm.evaluate_group(g, t)
        if t in wanted:
            out[t] = value(engine, f"slo:period_error_budget_remaining:ratio{SEL}", t)


def test_a_restart_mid_window_keeps_the_budget_series(tmp_path):
    """The SLO's window history is saved with the rules state: a daemon restarted mid-window
    (store snapshot and rules state written at stop, 3 minutes down) gives the budget series
    of one that never stopped, to the few samples the downtime missed. Without the saved
    history the restarted one would start its window empty."""
    import numpy as np

    from agent.clock import SimulatedClock
    from agent.promql import Engine
    from agent.rules.manager import RuleOptions, build_rule_manager, slo_state_path
    from agent.sources.recording import Feeder, store_for

    traffic = Traffic([(0, 0.0), (2 * H, 0.02), (5 * H, 0.001), (10 * H, 0.004)])
    rules = AVAILABILITY.format(objective=99, window="1d", lookback="1h")
    end, stop, down, window = 30 * H + 30 * M, 6 * H, 3 * M, D
    rec = traffic.recording(end)
    grid = np.arange(0.0, end + 1, 60.0)
    options = RuleOptions(default_interval=60.0, interval=60.0)

    def agent():
        store = store_for(rec, 3600.0)
        rm = build_rule_manager(load_rule_text(rules, "slo.yml"), store, SimulatedClock(0.0), options)
        return rm, Feeder(rec, store), Engine(store), store

    later = stop + down + window + 5 * M  # the downtime has left the window
    wanted = {stop + H, 12 * H, 20 * H, 28 * H, later}
    steady: dict[float, float | None] = {}
    rm, feeder, engine, store = agent()
    _run(rm, feeder, engine, grid[grid < stop], steady, wanted)
    state = str(tmp_path / "rules.state.json")
    rm.save_state(state)  # as the daemon does at stop; this one goes on as if it never stopped
    store.save(str(tmp_path / "store.snapshot"))
    assert (tmp_path / "slo.state.npz").exists() and slo_state_path(state) == str(tmp_path / "slo.state.npz")
    _run(rm, feeder, engine, grid[grid >= stop], steady, wanted)

    def restarted(restore: bool, until: float) -> dict[float, float | None]:
        rm2, feeder2, engine2, store2 = agent()
        assert store2.load(str(tmp_path / "store.snapshot"))
        if restore:
            rm2.load_state(state)
        feeder2.pos = int(np.searchsorted(rec.t, stop + down, side="right"))  # nothing scraped while down
        after: dict[float, float | None] = {}
        _run(rm2, feeder2, engine2, grid[(grid >= stop + down) & (grid <= until)], after, wanted)
        return after

    after = restarted(True, end)
    for t in (stop + H, 12 * H, 20 * H, 28 * H):
        # three of the window's 1440 samples are missing while the downtime is in the window
        assert after[t] == pytest.approx(steady[t], abs=1e-2), t
    assert after[later] == pytest.approx(steady[later], abs=1e-9)
    fresh = restarted(False, stop + H)
    assert abs(fresh[stop + H] - steady[stop + H]) > 0.3  # what the saved history prevents
