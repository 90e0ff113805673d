"""The daemon's scheduled analysis (agent.trends.scheduled) outside the daemon: one run in
process, the run in its bounded child process, its families, its persisted summary, and the
package's import rules. The daemon itself runs it in tests/trends/test_daemon_trends.py."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
import textwrap

import pytest

from agent.clock import SimulatedClock
from agent.config.schema import ConfigErrors, load_config
from agent.metrics import Registry
from agent.tickets.outbox import Outbox
from agent.tickets.sinks.local import LocalSink, list_tickets
from agent.trends.history import Incident
from agent.trends.problems import ProblemRegistry, deliver
from agent.trends.scheduled import STATE_FILE, TrendJob, TrendSchedule, run_analysis
from agent.web.exposition import encode_text
from tests.helpers import parse_metrics
from tests.sinks.fakehttp import make_ticket

T0 = 1_735_689_600.0
DAY = 86400.0


def config(tmp_path, trends: str, extra: str = ""):
    p = tmp_path / "forewarn.yml"
    p.write_text(textwrap.dedent(f"""\
        global: {{state_dir: {tmp_path / 'state'}}}
        trends: {trends}
        """) + textwrap.dedent(extra))
    return load_config(str(p))


def history() -> list[Incident]:
    incs = [Incident(f"A{k}", T0 + k * DAY, f"Disk full on db-{k % 3}", resolved=T0 + k * DAY + 7200, service="db")
            for k in range(0, 30, 2)]
    incs += [Incident(f"B{k}", T0 + k * DAY, "Login failures on shop", resolved=T0 + k * DAY + 3600, service="shop")
             for k in range(0, 30, 5)]
    return incs


def apply(cfg, run, sinks, clock) -> list:
    """What the daemon does with a run's plan, with an outbox delivered here."""
    outbox = Outbox(f"{cfg.state_dir}/outbox.db", sinks, clock)
    try:
        done = ProblemRegistry(cfg.state_dir, "local", clock).apply(run.planned, outbox)
        assert deliver(outbox, max_wait_seconds=5) == 0
    finally:
        outbox.close()
    return done


def test_runs_open_one_record_per_candidate_and_update_it_with_new_occurrences(tmp_path):
    cfg = config(tmp_path, "{enabled: true, since: 30d, open_problems: 1, source: forewarn, include_forewarn: false}")
    clock = SimulatedClock(T0 + 30 * DAY)
    sinks = {"local": LocalSink("local", LocalSink.Config(), state_dir=cfg.state_dir)}
    incs = history()
    run = run_analysis(TrendJob(cfg, clock.now()), incidents=incs)
    s = run.summary
    assert (s.success, s.incidents, s.candidates, s.errors) == (True, len(incs), 2, ())
    assert [(c.service, c.rank) for c in s.clusters] == [("db", 1), ("shop", 2)]
    assert [p.action for p in run.planned] == ["open"]
    assert [p.action for p in apply(cfg, run, sinks, clock)] == ["open"]
    (ticket,) = list_tickets(f"{cfg.state_dir}/tickets.db")
    assert "db" in ticket["title"] and ticket["dedup_key"].startswith("trend-")

    # a week later, one more db incident: the db record gets an update, shop gets its record
    clock.advance(7 * DAY)
    incs.append(Incident("A99", T0 + 35 * DAY, "Disk full on db-9", service="db"))
    run = run_analysis(TrendJob(cfg, clock.now()), incidents=incs)
    assert sorted(p.action for p in run.planned) == ["open", "update"]
    db = next(c for c in run.summary.clusters if c.service == "db")
    assert db.rank == 0 and db.covered_by.startswith("local:")
    apply(cfg, run, sinks, clock)
    assert len(list_tickets(f"{cfg.state_dir}/tickets.db")) == 2
    # nothing new: nothing planned; a plan applied twice (a run whose answer came late) opens nothing twice
    again = run_analysis(TrendJob(cfg, clock.now()), incidents=incs)
    assert again.planned == []
    assert apply(cfg, run, sinks, clock) == [p for p in run.planned if p.action == "update"]
    assert len(list_tickets(f"{cfg.state_dir}/tickets.db")) == 2


def test_a_failing_source_is_reported_and_the_rest_still_analysed(tmp_path):
    (tmp_path / "cred").write_text("x:y\n")
    cfg = config(tmp_path, "{source: snow, max_wait: 1s}", """\
        ticketing: {sinks: [{name: snow, type: servicenow, url: 'http://127.0.0.1:9', credentials_file: cred,
                             timeout: 1s}]}
        """)
    sink = LocalSink("local", LocalSink.Config(), state_dir=cfg.state_dir)
    for k in range(3):
        sink.open(make_ticket("open", f"key{k}", title="Disk full on db-1", labels={"service": "db"},
                              starts_at=T0 + k * DAY))
    run = run_analysis(TrendJob(cfg, T0 + 10 * DAY), sleep=lambda s: None)
    assert not run.summary.success and run.summary.errors[0].startswith("source snow:")
    assert run.summary.incidents == 3  # the agent's own tickets (include_forewarn) were still read


def seeded(tmp_path, trends: str):
    cfg = config(tmp_path, trends)
    sink = LocalSink("local", LocalSink.Config(), state_dir=cfg.state_dir)
    now = T0 + 20 * DAY
    for k in range(8):
        sink.open(make_ticket("open", f"key{k}", title=f"/var on db-{k % 4} will be full in ~{k + 2}h",
                              labels={"service": "orders-db"}, starts_at=now - (k + 1) * 2 * DAY))
    return cfg, SimulatedClock(now)


class Queue:
    def __init__(self) -> None:
        self.tickets: list = []

    def enqueue(self, sink_name: str, ticket) -> bool:
        self.tickets.append((sink_name, ticket))
        return True


def test_schedule_runs_in_its_own_process_and_keeps_its_summary(tmp_path):
    cfg, clock = seeded(tmp_path, "{enabled: true, since: 30d, open_problems: 2}")
    schedule = TrendSchedule(cfg.state_dir, clock)
    schedule.enabled = True
    assert schedule.due_at(3600) == clock.now()  # no run yet: due now
    queue = Queue()
    summary = schedule.run(cfg, queue)
    assert summary.success, summary.errors
    assert (summary.incidents, summary.candidates, summary.opened) == (8, 1, 1)
    ((sink, ticket),) = queue.tickets
    assert sink == "local" and ticket.action == "open" and ticket.rule == "forewarn-trends"
    reg = Registry()
    reg.register(schedule)
    m = parse_metrics(encode_text(reg).decode())
    ((labels, value),) = m["forewarn_recurring_problem_incidents"]
    assert labels["service"] == "orders-db" and value == 8
    assert m["forewarn_recurring_problem_candidates"] == [({}, 1.0)]
    assert m["forewarn_recurring_problem_last_run_success"] == [({}, 1.0)]
    assert ({"outcome": "success"}, 1.0) in m["forewarn_recurring_problem_runs_total"]
    assert ({"action": "open"}, 1.0) in m["forewarn_recurring_problem_records_total"]
    # a restart reads the last summary back: same series, next run one interval after the last
    again = TrendSchedule(cfg.state_dir, clock)
    again.enabled = True
    reg = Registry()
    reg.register(again)
    m2 = parse_metrics(encode_text(reg).decode())
    assert m2["forewarn_recurring_problem_incidents"] == m["forewarn_recurring_problem_incidents"]
    assert again.due_at(3600) == summary.at + 3600
    json.loads((tmp_path / "state" / STATE_FILE).read_text())
    # disabled: no families at all
    again.enabled = False
    assert list(again.collect()) == []


def test_a_run_past_its_timeout_is_stopped_and_keeps_the_last_good_series(tmp_path):
    cfg, clock = seeded(tmp_path, "{enabled: true, since: 30d}")
    schedule = TrendSchedule(cfg.state_dir, clock)
    schedule.enabled = True
    assert schedule.run(cfg, Queue()).success
    cfg.trends.timeout = 0.001  # the analysis process cannot even start in a millisecond
    summary = schedule.run(cfg, Queue())
    assert not summary.success and "trends.timeout" in summary.errors[0]
    m = parse_metrics(encode_text(_registry(schedule)).decode())
    assert m["forewarn_recurring_problem_last_run_success"] == [({}, 0.0)]
    assert ({"outcome": "timeout"}, 1.0) in m["forewarn_recurring_problem_runs_total"]
    assert m["forewarn_recurring_problem_incidents"][0][1] == 8  # the last good analysis is still shown
    assert not [p for p in mp.active_children() if p.name == "forewarn-trends"]  # the child is gone


def _registry(collector) -> Registry:
    reg = Registry()
    reg.register(collector)
    return reg


def test_config_names_unknown_sinks_in_the_trends_section(tmp_path):
    p = tmp_path / "forewarn.yml"
    p.write_text("trends:\n  source: nope\n  readers: {other: {}}\n  interval: 0s\n")
    with pytest.raises(ConfigErrors) as e:
        load_config(str(p))
    text = "\n".join(map(str, e.value.errors))
    assert ":2:" in text and "trends.source: unknown sink 'nope'" in text
    assert "trends.readers: unknown sink 'other'" in text
    assert "trends.interval: must be greater than zero" in text


def test_default_threshold_is_one_number():
    from agent.trends.cluster import DEFAULT_THRESHOLD
    from agent.trends.settings import DEFAULT_THRESHOLD as SETTINGS_DEFAULT

    assert DEFAULT_THRESHOLD == SETTINGS_DEFAULT


def test_trends_imports_nothing_it_must_not():
    """Importing every trends module (what the daemon and the analysis process load) pulls in
    none of the forbidden packages, nor scipy, statsmodels or matplotlib."""
    code = textwrap.dedent("""\
        import sys
        import agent.trends.cluster, agent.trends.history, agent.trends.normalise, agent.trends.own
        import agent.trends.problems, agent.trends.readers, agent.trends.report, agent.trends.scheduled
        import agent.trends.settings, agent.trends.stats, agent.commands.trends
        bad = [m for m in sys.modules if m.split('.')[0] in ('scipy', 'statsmodels', 'matplotlib') or m in (
            'agent.rules', 'agent.promql', 'agent.models', 'agent.web', 'agent.daemon', 'agent.pipeline')
            or m.startswith(('agent.promql.', 'agent.models.', 'agent.rules.'))]
        print(bad)
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
