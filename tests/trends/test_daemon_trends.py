"""The scheduled trend analysis in a real `forewarn run`: every `trends.interval` it reads a
configured incident source (a ServiceNow fake that pages as documented) and the agent's own
local tickets, exposes the forewarn_recurring_problem_* families on /metrics, and opens one
problem record per candidate through the outbox, never twice across runs, adding new
occurrences to the record as updates."""

from __future__ import annotations

import time

from agent.tickets.sinks.local import LocalSink, get_ticket, list_tickets
from tests.helpers import wait_for
from tests.sinks.fakehttp import make_ticket
from tests.trends.fake_readers import FakeServiceNowIncidents, iso

DAY = 86400.0


def incident(k: int, opened: float, title: str, service: str) -> dict:
    stamp = iso(opened, "%Y-%m-%d %H:%M:%S")
    return {"sys_id": (f"s{k:04d}", f"s{k:04d}"), "number": (f"INC{k:07d}", f"INC{k:07d}"),
            "short_description": (title, title), "opened_at": (stamp, stamp),
            "resolved_at": (iso(opened + 5400, "%Y-%m-%d %H:%M:%S"),) * 2, "closed_at": ("", ""),
            "cmdb_ci": ("ci", service), "business_service": ("", ""), "category": ("", ""),
            "assignment_group": ("g", "Ops"), "priority": ("3", "3 - Moderate"), "problem_id": ("", ""),
            "correlation_id": ("", "")}


def counter(metrics: dict, name: str, **labels: str) -> float:
    return sum(v for lab, v in metrics.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def test_daemon_runs_the_analysis_on_schedule_and_opens_each_record_once(agent_factory, tmp_path):
    now = time.time()
    records = [incident(k, now - (60 - 4 * k) * DAY, f"Disk full on db-{k % 3} /var", "orders-db") for k in range(14)]
    records += [incident(100 + k, now - (50 - 9 * k) * DAY, "Checkout p99 latency high", "checkout") for k in range(5)]
    records.append(incident(200, now - 3 * DAY, "Printer jammed on floor 2", "office"))  # a one-off
    (tmp_path / "cred").write_text("u:p\n")
    with FakeServiceNowIncidents(records) as fake:
        agent = agent_factory(f"""\
            ticketing:
              sinks:
                - {{name: snow, type: servicenow, url: '{fake.url}', credentials_file: {tmp_path / 'cred'}}}
            trends:
              enabled: true
              interval: 3s
              since: 90d
              source: snow
              open_problems: 2
              problem_sink: local
              readers: {{snow: {{page_size: 5}}}}
            """, start=False)
        own = LocalSink("local", LocalSink.Config(), state_dir=agent.state_dir)  # the agent's own history
        for k in range(4):
            own.open(make_ticket("open", f"cert{k}", title=f"TLS certificate of web-{k} expires in {k + 3}d",
                                 labels={"service": "web"}, starts_at=now - (k + 1) * 7 * DAY))
        agent.start()
        tickets = f"{agent.state_dir}/tickets.db"

        def records_opened() -> list[dict]:
            return list_tickets(tickets, rule="forewarn-trends")

        # first run: three candidates (orders-db, checkout from ServiceNow; web from the agent's
        # own tickets), two records opened (open_problems: 2)
        wait_for(lambda: counter(agent.metrics(), "forewarn_recurring_problem_runs_total", outcome="success") >= 1,
                 timeout=90, what=f"a first trend run (log: {agent.log()[-3000:]})")
        m = agent.metrics()
        services = {lab["service"]: v for lab, v in m["forewarn_recurring_problem_incidents"]}
        assert services == {"orders-db": 14, "checkout": 5, "web": 4}
        assert m["forewarn_recurring_problem_analysed_incidents"] == [({}, 24.0)]
        assert m["forewarn_recurring_problem_last_run_success"] == [({}, 1.0)]
        assert len(fake.calls("GET")) >= 5  # paged through (page_size 5), from the analysis process

        # later runs open the third record, then nothing more: one record per candidate
        wait_for(lambda: len(records_opened()) == 3, timeout=90, what="the third record")
        first_runs = counter(agent.metrics(), "forewarn_recurring_problem_runs_total", outcome="success")
        wait_for(lambda: counter(agent.metrics(), "forewarn_recurring_problem_runs_total", outcome="success")
                 >= first_runs + 2, timeout=90, what="two more runs")
        opened = records_opened()
        assert len(opened) == 3 and len({t["dedup_key"] for t in opened}) == 3
        assert {t["labels"]["service"] for t in opened} == {"orders-db", "checkout", "web"}
        m = agent.metrics()
        assert counter(m, "forewarn_recurring_problem_records_total", action="open") == 3
        assert m["forewarn_recurring_problem_candidates"] == [({}, 0.0)]  # all covered now
        assert {lab["covered_by"].split(":")[0] for lab, _ in m["forewarn_recurring_problem_info"]} == {"local"}

        # a new occurrence in the source: the orders-db record gets it as an update, no new record
        fake.records.append(incident(300, time.time() - 60, "Disk full on db-7 /var", "orders-db"))
        db = next(t for t in opened if t["labels"]["service"] == "orders-db")
        wait_for(lambda: any("INC0000300" in c["body"] for c in get_ticket(tickets, db["id"])["comments"]),
                 timeout=90, what="the update with the new incident")
        assert len(records_opened()) == 3
    assert agent.stop() == 0
