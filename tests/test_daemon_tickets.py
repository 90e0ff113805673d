"""End to end in the daemon: a scraped series crosses a rule's threshold, a local ticket opens
once, the clear is noted, and the API and /metrics show it all."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import pytest

from tests.helpers import Exporter, scraping_config, wait_for


@pytest.fixture
def exporter():
    e = Exporter(lambda e: f'app_queue_depth{{queue="orders"}} {e.values["depth"]}\n', {"depth": 1.0})
    yield e
    e.close()


def test_threshold_rule_opens_one_local_ticket_and_clears_it(agent_factory, exporter, tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(textwrap.dedent("""\
        groups:
          - name: queues
            interval: 1s
            rules:
              - alert: QueueBacklog
                expr: app_queue_depth > 10
                for: 2s
                labels: {severity: warning}
                annotations:
                  summary: "queue {{ $labels.queue }} holds {{ $value }} items"
                ticket:
                  on_clear: resolve
        """))
    agent = agent_factory(scraping_config(rules, exporter.address))
    wait_for(lambda: agent.get("/api/v1/rules").json()["data"]["groups"], what="rules loaded")
    assert agent.get("/api/v1/alerts").json()["data"]["alerts"] == []
    exporter.values["depth"] = 42.0

    def firing():
        alerts = agent.get("/api/v1/alerts").json()["data"]["alerts"]
        return alerts if alerts and alerts[0]["state"] == "firing" else None

    alerts = wait_for(firing, timeout=30, what="alert firing")
    assert alerts[0]["labels"]["alertname"] == "QueueBacklog"
    assert alerts[0]["annotations"]["summary"] == "queue orders holds 42 items"
    m = agent.metrics()
    assert any(l["alertname"] == "QueueBacklog" and l["alertstate"] == "firing" for l, _ in m["ALERTS"])

    def tickets():
        return agent.get("/api/v1/tickets").json()["data"]["tickets"] or None

    t = wait_for(tickets, timeout=30, what="a local ticket")
    assert len(t) == 1 and "queue orders holds 42 items" in t[0]["title"]
    exporter.values["depth"] = 3.0

    def resolved():
        t = tickets()
        return t if t and t[0]["status"] == "resolved" else None

    t = wait_for(resolved, timeout=30, what="the ticket resolved")
    assert len(t) == 1  # the clear did not open a second ticket
    out = subprocess.run([sys.executable, "-m", "agent", "tickets", "list", "--json", "--config", agent.config_path],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)["tickets"]
    assert len(listed) == 1 and listed[0]["status"] == "resolved"
    m = agent.metrics()
    actions = {(l["sink"], l["action"], l["outcome"]): v for l, v in m["forewarn_ticket_actions_total"]}
    opened = {o: v for (sink, a, o), v in actions.items() if sink == "local" and a == "open"}
    assert list(opened.values()) == [1.0] and set(opened) <= {"success", "delivered"}, actions


def test_forecast_rule_in_the_daemon(agent_factory, exporter, tmp_path):
    """A declining series: the forecast rule fires with an ETA, /metrics carries the breach
    estimate, the ticket quotes it, and statsmodels stays out of the main process."""
    rules = tmp_path / "rules.yml"
    rules.write_text(textwrap.dedent("""\
        groups:
          - name: capacity
            interval: 1s
            rules:
              - alert: QueueWillOverflow
                expr: app_queue_depth
                forecast: {model: auto, lookback: 1m, horizon: 1h, threshold: 1000, direction: above, confidence: 0.5}
                annotations:
                  summary: "queue {{ $labels.queue }} overflows in {{ $forecast.eta | humanizeDuration }}"
        """))
    agent = agent_factory(scraping_config(rules, exporter.address))
    stop = threading.Event()

    def grow():  # +10 items a second: 1000 is about 100 s away
        while not stop.wait(0.25):
            exporter.values["depth"] += 2.5

    threading.Thread(target=grow, daemon=True).start()
    try:
        def breach():
            m = agent.metrics()
            return [s for s in m.get("forewarn_forecast_breach_seconds", []) if s[1] < float("inf")]

        eta = wait_for(breach, timeout=60, what="a breach estimate on /metrics")
        labels, seconds = eta[0]
        assert labels["alertname"] == "QueueWillOverflow" and labels["queue"] == "orders"
        assert 0 < seconds < 3600
        tickets = wait_for(lambda: agent.get("/api/v1/tickets").json()["data"]["tickets"], timeout=60,
                           what="a ticket from the forecast rule")
        assert "overflows in" in tickets[0]["title"]
    finally:
        stop.set()
    maps = open(f"/proc/{agent.proc.pid}/maps").read()
    assert "statsmodels" not in maps
