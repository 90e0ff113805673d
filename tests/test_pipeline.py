"""Pipeline duties between evaluations (re-sending to tools that forget), the stages' own metric
families across a reload, and what a plain agent loads."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from agent.clock import SimulatedClock
from agent.config.schema import load_config
from agent.metrics import Histogram, Registry
from agent.pipeline import Pipeline
from agent.store import Store
from agent.tickets.sinks.base import Ticket
from tests.helpers import REPO, free_port


def test_resend_runs_each_sink_on_its_own_interval(tmp_path):
    cfg_path = tmp_path / "f.yml"
    cfg_path.write_text(f"global: {{state_dir: {tmp_path}}}\nsystem: {{enabled: false}}\n")
    clock = SimulatedClock(1000.0)
    p = Pipeline(load_config(str(cfg_path)), Store(), clock)
    p.start()
    calls: list[tuple[str, float]] = []
    try:
        p.ticketing.sinks["am"] = Forgetful("am", 10.0, calls)
        p.ticketing.sinks["am2"] = Forgetful("am2", 25.0, calls)
        for _ in range(60):
            p.resend()
            clock.advance(1.0)
        assert [t for n, t in calls if n == "am"] == [1000.0, 1010.0, 1020.0, 1030.0, 1040.0, 1050.0]
        assert [t for n, t in calls if n == "am2"] == [1000.0, 1025.0, 1050.0]
    finally:
        p.stop()


def test_due_jobs_say_when_they_are_next_due_and_are_woken_by_new_work(tmp_path):
    """The daemon's rules, outbox and resend jobs sleep until these say they are due: the
    next rule group, the earliest pending ticket action, the next re-send. An action put in
    the outbox and a reload wake them."""
    rules = tmp_path / "r.yml"
    rules.write_text("groups:\n  - name: g\n    interval: 30s\n    rules:\n"
                     "      - {record: one, expr: vector(1)}\n")
    cfg_path = tmp_path / "f.yml"
    cfg_path.write_text(f"global: {{state_dir: {tmp_path}}}\nsystem: {{enabled: false}}\nrule_files: [{rules}]\n")
    clock = SimulatedClock(1000.0)
    p = Pipeline(load_config(str(cfg_path)), Store(), clock)
    woken: list[str] = []
    p.wake = woken.append
    p.start()
    try:
        assert {j.name for j in p.periodic_jobs() if j.due_in is not None} == {"rules", "outbox", "resend"}
        assert p.evaluation_due_in() == 0.0  # never evaluated: due at once
        p.evaluate(clock.now())
        assert p.evaluation_due_in() == 30.0
        clock.advance(12.0)
        assert p.evaluation_due_in() == 18.0

        assert p.delivery_due_in() is None  # nothing pending
        ticket = Ticket(dedup_key="k1", action="open", sequence=1, title="t", body="b", rule="R")
        assert p.enqueue("local", ticket)
        assert woken == ["outbox"]
        assert p.delivery_due_in() == 0.0
        p.deliver()
        assert p.delivery_due_in() is None

        assert p.resend_due_in() is None  # no sink re-sends
        p.ticketing.sinks["am"] = Forgetful("am", 10.0)
        assert p.resend_due_in() < 0  # never sent: due
        p.resend()
        assert p.resend_due_in() == 10.0

        woken.clear()
        p.apply(load_config(str(cfg_path)))
        assert sorted(woken) == ["outbox", "resend", "rules"]
        assert p.evaluation_due_in() == 0.0  # the reloaded group is due at once
    finally:
        p.stop()


class Forgetful:
    """A sink that forgets alerts not re-sent every `resend_interval` (as Alertmanager does)."""

    def __init__(self, name: str, interval: float, calls: list[tuple[str, float]] | None = None) -> None:
        self.name, self.resend_interval = name, interval
        self.calls = calls if calls is not None else []

    def resend_active(self, now: float) -> int:
        self.calls.append((self.name, now))
        return 1


def families(collectors) -> dict[str, dict[tuple, float]]:
    """Family name -> {sorted label pairs: value} of what the collectors yield."""
    out: dict[str, dict[tuple, float]] = {}
    for c in collectors:
        for m in c.collect():
            fam = out.setdefault(m.name, {})
            for s in m.samples:
                fam[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_reload_keeps_the_scrape_and_query_counters(tmp_path):
    """Each stage exports its own families; a reload changes the stages' settings but not
    their counters (a changed query source starts afresh in time, not in its counts)."""
    closed = free_port()  # nothing listens: every scrape and query fails at once
    body = textwrap.dedent(f"""\
        global: {{state_dir: {tmp_path}}}
        system: {{enabled: false}}
        rule_files: []
        scrape_configs:
          - job_name: app
            scrape_timeout: 1s
            static_configs: [{{targets: ["127.0.0.1:{closed}"]}}]
        query_configs:
          - {{name: fleet, url: "http://127.0.0.1:{closed}", timeout: 1s, queries: [up]}}
        """)
    cfg_path = tmp_path / "f.yml"
    cfg_path.write_text(body)
    clock = SimulatedClock(1000.0)
    p = Pipeline(load_config(str(cfg_path)), Store(), clock)
    try:
        for job in p.source_jobs(Histogram("d", "d", ["source"], registry=Registry())):
            job.run()
        before = families(p.collectors())
        assert before["forewarn_scrapes"] == {(("instance", f"127.0.0.1:{closed}"), ("job", "app")): 1.0}
        assert before["forewarn_query_runs"] == {(("source", "fleet"),): 1.0}
        assert before["forewarn_query_failures"] == {(("reason", "connection"), ("source", "fleet")): 1.0}
        cfg_path.write_text(body.replace("scrape_timeout: 1s", "scrape_timeout: 2s")
                            .replace("queries: [up]", "queries: [up, node_load1]"))
        p.apply(load_config(str(cfg_path)))
        after = families(p.collectors())
        for name in ("forewarn_scrapes", "forewarn_scrape_failures", "forewarn_scrape_targets",
                     "forewarn_query_runs", "forewarn_query_failures", "forewarn_query_samples"):
            assert after[name] == before[name], name
        assert [q.cfg.queries for q in p.queries] == [["up", "node_load1"]]
    finally:
        p.stop()


def test_no_scrape_targets_and_no_query_sources():
    """Without targets the scrape families are still there (empty, 0 targets); without query
    sources there are no query families at all."""
    p = Pipeline(load_config("f.yml", text="system: {enabled: false}\nrule_files: []\n"), Store(), SimulatedClock(0.0))
    fams = families(p.collectors())
    assert fams["forewarn_scrapes"] == {} and fams["forewarn_scrape_failures"] == {}
    assert fams["forewarn_scrape_targets"] == {(): 0.0}
    assert not [name for name in fams if name.startswith("forewarn_query_")]
    assert not [name for name in fams if name.startswith("forewarn_refit_")]  # no worker until a first refit
    assert not [name for name in fams if name.startswith("forewarn_chart_")]  # nor chart families until a chart
    assert [type(c).__name__ for c in p.collectors()] == [
        "OutboxFamilies", "ScrapeManager", "QuerySources", "RefitFamilies", "ModelBudget", "RemediationFamilies",
        "ChartRenderer"]


def test_a_plain_agent_loads_no_optional_dependency(tmp_path):
    """An agent without scrape targets, query sources or HTTP sinks never imports requests;
    the daemon never imports statsmodels, prometheus_client or matplotlib."""
    cfg_path = tmp_path / "f.yml"
    cfg_path.write_text(f"global: {{state_dir: {tmp_path}}}\nrule_files: []\n")
    script = textwrap.dedent(f"""\
        import sys
        from agent.config.schema import load_config
        from agent.daemon import Agent
        agent = Agent(load_config({str(cfg_path)!r}), "127.0.0.1:0")
        agent.pipeline.start()
        agent.pipeline.collect_once(agent.collection_seconds)
        list(agent.registry.collect())
        agent.pipeline.stop()
        print(sorted(m for m in ("requests", "urllib3", "statsmodels", "prometheus_client", "matplotlib")
                     if m in sys.modules))
        """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_shipped_rules_load_nothing_the_small_host_does_not_need(tmp_path):
    """Two ticks of the shipped rules (forecasts, PromQL vector matching) import neither
    numpy.ma (which plain np.unique pulls in: 1.3 MB resident for good, the small-host budget
    is 60 MB), nor html (0.5 MB, for trend reports only), nor anything the plain agent avoids."""
    cfg_path = tmp_path / "f.yml"
    cfg_path.write_text(f"global: {{state_dir: {tmp_path}}}\nrule_files: [{REPO}/rules/*.yml]\n")
    script = textwrap.dedent(f"""\
        import sys
        from agent.config.schema import load_config
        from agent.daemon import Agent
        agent = Agent(load_config({str(cfg_path)!r}), "127.0.0.1:0")
        agent.pipeline.start()
        now = agent.clock.now()
        for k in range(3):
            agent.pipeline.collect_once(agent.collection_seconds)
            agent.pipeline.evaluate(now + 15 * k)
        assert agent.pipeline.rules.groups, "no shipped rule loaded"
        list(agent.registry.collect())
        agent.pipeline.stop()
        print(sorted(m for m in ("numpy.ma", "html", "requests", "statsmodels", "prometheus_client")
                     if m in sys.modules))
        """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_alerting_rules_sharing_a_name_share_their_problem_without_churn():
    """Prometheus allows several alerting rules of one name in a group (warning and critical
    thresholds; an SLO's page and ticket burn alerts): their problem stays open while any of
    them fires and clears once, when none does. (Handed to the problem stage one rule at a
    time, the rule without alerts cleared it and the other reopened it at every evaluation.)"""
    import numpy as np

    from agent.config.schema import TicketingConfig
    from agent.replay import replay
    from agent.rules.file import load_rule_text
    from agent.rules.manager import RuleOptions
    from agent.sources.recording import Feeder, Recording, store_for
    from agent.store import make_labels

    groups = load_rule_text(textwrap.dedent("""\
        groups:
          - name: g
            interval: 1m
            rules:
              - alert: Errors
                expr: errors > 10
                labels: {severity: critical}
              - alert: Errors
                expr: errors > 1
                labels: {severity: warning}
        """), "r.yml")
    t = np.arange(0.0, 40 * 60 + 1, 60.0)
    # none, then warning only from minute 5, both from 15, warning only from 20, none from 30
    v = np.select([t < 300, t < 900, t < 1200, t < 1800], [0.0, 5.0, 20.0, 5.0], 0.0)
    rec = Recording.from_arrays([make_labels("errors", {})], t, np.zeros(t.size, dtype=np.int64), v)
    store = store_for(rec, 3600.0)
    actions: list[tuple[float, str]] = []
    replay(groups, store, Feeder(rec, store).feed_until, start=0.0, end=float(t[-1]), step=60.0,
           options=RuleOptions(default_interval=60.0), ticketing=TicketingConfig(),
           on_tick=lambda tick: actions.extend((tick.time, tk.action) for _, tk in tick.tickets))
    assert actions == [(300.0, "open"), (1800.0, "clear")]
