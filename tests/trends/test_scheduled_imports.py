"""The daemon's scheduled run (not wired into the daemon yet) and the package's import rules."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from agent.clock import SimulatedClock
from agent.config import load_config
from agent.metrics import Registry, encode_text
from agent.sinks.local import LocalSink, list_tickets
from agent.trends.history import Incident
from agent.trends.scheduled import run_scheduled

T0 = 1_735_689_600.0
DAY = 86400.0


def test_scheduled_run_exposes_metrics_and_opens_records_once(tmp_path):
    p = tmp_path / "forewarn.yml"
    p.write_text(textwrap.dedent(f"""\
        global: {{state_dir: {tmp_path / 'state'}}}
        trends: {{enabled: true, since: 30d, open_problems: 1, source: forewarn, include_forewarn: false}}
        """))
    cfg = load_config(str(p))
    clock = SimulatedClock(T0 + 30 * DAY)
    incs = [Incident(f"A{k}", T0 + k * DAY, f"Disk full on db-{k % 3}", resolved=T0 + k * DAY + 7200, service="db")
            for k in range(0, 30, 2)]
    incs += [Incident(f"B{k}", T0 + k * DAY, "Login failures on shop", resolved=T0 + k * DAY + 3600, service="shop")
             for k in range(0, 30, 5)]
    sinks = {"local": LocalSink("local", LocalSink.Config(), state_dir=cfg.state_dir)}
    r = run_scheduled(cfg, sinks, clock, incidents=incs)
    assert (r.opened, r.updated, r.pending, r.errors) == (1, 0, 0, [])
    assert [c.cluster.service for c in r.candidates] == ["db", "shop"]
    reg = Registry()
    reg.register(r)
    text = encode_text(reg).decode()
    assert 'forewarn_recurring_problem_incidents{cluster="' in text and 'service="db",trend="' in text
    assert "forewarn_recurring_problem_candidates 2" in text
    assert "forewarn_recurring_problem_last_run_success 1" in text
    assert "forewarn_recurring_problem_last_run_opened 1" in text
    tickets = list_tickets(f"{cfg.state_dir}/tickets.db")
    assert len(tickets) == 1 and "db" in tickets[0]["title"]
    # a week later with one more incident: the db record gets an update, shop is opened now
    clock.advance(7 * DAY)
    incs.append(Incident("A99", T0 + 35 * DAY, "Disk full on db-9", service="db"))
    r = run_scheduled(cfg, sinks, clock, incidents=incs)
    assert (r.opened, r.updated) == (1, 1) and len(list_tickets(f"{cfg.state_dir}/tickets.db")) == 2
    r = run_scheduled(cfg, sinks, clock, incidents=incs)
    assert (r.opened, r.updated) == (0, 0)


def test_a_failing_source_is_reported_not_raised(tmp_path):
    p = tmp_path / "forewarn.yml"
    (tmp_path / "cred").write_text("x:y\n")
    p.write_text(textwrap.dedent(f"""\
        global: {{state_dir: {tmp_path / 'state'}}}
        ticketing: {{sinks: [{{name: snow, type: servicenow, url: 'http://127.0.0.1:9', credentials_file: cred,
                               timeout: 1s}}]}}
        trends: {{source: snow, max_wait: 1s}}
        """))
    cfg = load_config(str(p))
    r = run_scheduled(cfg, {}, SimulatedClock(T0))
    assert r.errors and r.errors[0].startswith("source snow:")
    reg = Registry()
    reg.register(r)
    assert "forewarn_recurring_problem_last_run_success 0" in encode_text(reg).decode()


def test_config_names_unknown_sinks_in_the_trends_section(tmp_path):
    from agent.config import ConfigErrors

    p = tmp_path / "forewarn.yml"
    p.write_text("trends:\n  source: nope\n  readers: {other: {}}\n")
    try:
        load_config(str(p))
    except ConfigErrors as e:
        text = "\n".join(map(str, e.errors))
        assert ":2:" in text and "trends.source: unknown sink 'nope'" in text
        assert "trends.readers: unknown sink 'other'" in text
    else:
        raise AssertionError("expected ConfigErrors")


def test_default_threshold_is_one_number():
    from agent.trends.cluster import DEFAULT_THRESHOLD
    from agent.trends.settings import DEFAULT_THRESHOLD as SETTINGS_DEFAULT

    assert DEFAULT_THRESHOLD == SETTINGS_DEFAULT


def test_trends_imports_nothing_it_must_not():
    """Importing every trends module (what the daemon would load) pulls in none of the
    forbidden packages, nor scipy or statsmodels."""
    code = textwrap.dedent("""\
        import sys
        import agent.trends.cluster, agent.trends.history, agent.trends.normalise, agent.trends.own
        import agent.trends.problems, agent.trends.readers, agent.trends.report, agent.trends.scheduled
        import agent.trends.settings, agent.trends.stats, agent.commands.trends
        bad = [m for m in sys.modules if m.split('.')[0] in ('scipy', 'statsmodels') or m in (
            'agent.rules', 'agent.promql', 'agent.models', 'agent.web', 'agent.daemon', 'agent.pipeline')
            or m.startswith(('agent.promql.', 'agent.models.'))]
        print(bad)
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
