"""The web UI in a real headless Chromium (Debian's `chromium`, driven over the DevTools
protocol by tests/cdp.py): every page loads from the agent alone (no request leaves it) without
a console error, a failed load or an uncaught exception; a silence created in the UI's form
silences the problem that fires afterwards while an unsilenced twin opens a ticket; the
problem page shows its chart, ticket history and remediation attempts; without the admin API the UI is read-only
and the API refuses writes."""

from __future__ import annotations

import textwrap
import time

import pytest
import requests

from tests.cdp import Browser
from tests.helpers import AgentProcess, Exporter, wait_for

RULES = """\
groups:
  - name: ui
    interval: 1s
    rules:
      - alert: QueueStuck
        expr: app_trigger{queue="orders"} > 0
        labels: {severity: critical}
        annotations: {summary: "queue {{ $labels.queue }} is stuck"}
      - alert: QueueStuckTwin
        expr: app_trigger{queue="orders"} > 0
        annotations: {summary: "the twin of QueueStuck, never silenced"}
      - alert: QueueDrainFails
        expr: app_trigger{queue="orders"} > 0
        annotations: {summary: "queue {{ $labels.queue }} is stuck; draining it did not help"}
        remediate: [drain-queue]
      - alert: SlotsWillRunOut
        expr: app_free_slots
        forecast: {model: linear, lookback: 1m, horizon: 1h, threshold: 0, direction: below}
      - alert: LatencyOdd
        expr: app_latency_seconds
        anomaly: {sensitivity: medium}
"""

PAGES = ("alerts", "problems", "forecasts", "silences", "targets", "rules")


def render(e: Exporter) -> str:
    t = time.time() - e.values["start"]
    return textwrap.dedent(f"""\
        # TYPE app_trigger gauge
        app_trigger{{queue="orders"}} {e.values['trigger']}
        # TYPE app_free_slots gauge
        app_free_slots {max(0.0, 1e6 - 5e3 * t)}
        # TYPE app_latency_seconds gauge
        app_latency_seconds {0.1 + 0.001 * (int(t) % 7)}
        """)


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    exporter = Exporter(render, {"trigger": 0, "start": time.time()})
    tmp = tmp_path_factory.mktemp("ui")
    (tmp / "rules.yml").write_text(RULES)
    drain = tmp / "drain"
    drain.write_text("#!/bin/sh\necho nothing to drain in $1\nexit 3\n")
    drain.chmod(0o755)
    agent = AgentProcess(str(tmp), textwrap.dedent(f"""\
        system:
          collectors: [load]
        scrape_configs:
          - job_name: app
            static_configs:
              - targets: ["{exporter.address}"]
        rule_files: ["{tmp / 'rules.yml'}"]
        remediation:
          definitions:
            - {{name: drain-queue, type: command, command: ["{drain}", "{{{{ $labels.queue }}}}"]}}
        """))
    agent.start(extra_args=("--web.enable-admin-api",))
    browser = Browser()
    try:
        yield agent, exporter, browser
    finally:
        browser.close()
        agent.stop()
        exporter.close()


def open_page(browser: Browser, agent: AgentProcess, page: str, query: str = "") -> None:
    browser.evaluate("document.body && delete document.body.dataset.loaded")
    browser.goto(f"{agent.url}/#/{page}{query}")
    browser.wait(f"document.body && document.body.dataset.loaded === {page!r}")


def test_every_page_loads_without_errors(ui):
    agent, _, browser = ui
    # wait for the detectors to have something to show
    wait_for(lambda: len(agent.get("/api/v1/forecasts").json()["data"]["rules"]) == 2, timeout=60,
             what="forecast and anomaly outputs")
    for page in PAGES:
        open_page(browser, agent, page)
        text = browser.evaluate("document.getElementById('main').innerText")
        assert "Could not load" not in text, (page, text[:500])
    assert browser.evaluate("document.getElementById('mode').textContent") == "admin"
    open_page(browser, agent, "forecasts")
    assert "SlotsWillRunOut" in browser.evaluate("document.getElementById('main').innerText")
    assert "LatencyOdd" in browser.evaluate("document.getElementById('main').innerText")
    open_page(browser, agent, "targets")
    assert "up" in browser.evaluate("[...document.querySelectorAll('.badge')].map(b => b.textContent).join(' ')")
    open_page(browser, agent, "rules")
    assert "forecast linear: below 0 within 1h" in browser.evaluate("document.getElementById('main').innerText")
    assert browser.errors == [], browser.errors


def test_a_silence_created_in_the_ui_silences_the_problem(ui):
    agent, exporter, browser = ui
    open_page(browser, agent, "silences")
    browser.evaluate("""(() => {
        document.getElementById('silence-matchers').value = 'alertname="QueueStuck", queue=~"ord.*"';
        document.getElementById('silence-author').value = 'ana';
        document.getElementById('silence-comment').value = 'queue migration';
        document.getElementById('silence-create').click();
        return true; })()""")
    sid = browser.wait("location.hash.includes('created=') && location.hash.split('created=')[1]")
    browser.wait(f"document.body.dataset.loaded === 'silences' && !!document.querySelector('[data-silence=\"{sid}\"]')")
    (sil,) = [s for s in agent.get("/api/v1/silences").json() if s["id"] == sid]
    assert sil["status"]["state"] == "active" and sil["createdBy"] == "ana" and sil["comment"] == "queue migration"
    assert {"name": "queue", "value": "ord.*", "isRegex": True, "isEqual": True} in sil["matchers"]
    # now the queue gets stuck: the silenced problem opens no ticket, its twin does
    exporter.values["trigger"] = 1

    def problems():
        ps = {p["rule"]: p for p in agent.get("/api/v1/problems").json()["data"]["problems"]}
        return ps if {"QueueStuck", "QueueStuckTwin"} <= set(ps) and ps["QueueStuckTwin"]["has_ticket"] else None

    ps = wait_for(problems, timeout=60, what="both problems")
    assert ps["QueueStuck"]["state"] == "silenced" and sid in ps["QueueStuck"]["detail"]
    assert not ps["QueueStuck"]["has_ticket"]
    assert ps["QueueStuckTwin"]["state"] == "open"
    def twin_ticket():
        tickets = agent.get("/api/v1/tickets").json()["data"]["tickets"]
        return [t for t in tickets if t["rule"] == "QueueStuckTwin"]

    (ticket,) = wait_for(twin_ticket, timeout=30, what="the twin's ticket delivered to the local store")
    assert not [t for t in agent.get("/api/v1/tickets").json()["data"]["tickets"] if t["rule"] == "QueueStuck"]
    # the problems page: both listed; the twin's detail has a chart and the ticket's history
    open_page(browser, agent, "problems", f"?key={ps['QueueStuckTwin']['dedup_key']}")
    browser.wait("!!document.querySelector('#problem-detail svg path.line')")
    detail = browser.evaluate("document.getElementById('problem-detail').innerText")
    assert f"Ticket {ticket['id']}" in detail and "queue orders is stuck" not in detail  # the twin's own
    assert "the twin of QueueStuck" in detail
    states = browser.evaluate("[...document.querySelectorAll('tbody .badge')].map(b => b.textContent)")
    assert "silenced" in states and "open" in states
    # expire it from the UI
    open_page(browser, agent, "silences")
    browser.evaluate(f"document.querySelector('[data-silence=\"{sid}\"] button').click()")
    wait_for(lambda: [s for s in agent.get("/api/v1/silences").json() if s["id"] == sid][0]["status"]["state"]
             == "expired", timeout=10, what="the silence expired")
    assert browser.errors == [], browser.errors


def test_the_problem_page_shows_the_remediation_attempts(ui):
    agent, exporter, browser = ui
    exporter.values["trigger"] = 1

    def failed_and_ticketed():
        ps = [p for p in agent.get("/api/v1/problems").json()["data"]["problems"] if p["rule"] == "QueueDrainFails"]
        return ps[0] if ps and ps[0]["has_ticket"] else None

    p = wait_for(failed_and_ticketed, timeout=60, what="the failed remediation's ticket")
    open_page(browser, agent, "problems", f"?key={p['dedup_key']}")
    browser.wait("!!document.querySelector('#problem-detail .remediation-output')")
    detail = browser.evaluate("document.getElementById('problem-detail').innerText")
    assert "Remediation" in detail and "drain-queue" in detail and "failed" in detail and "exit status 3" in detail
    assert "nothing to drain in orders" in detail
    assert browser.errors == [], browser.errors


def test_read_only_without_the_admin_api(agent_factory):
    agent = agent_factory("system:\n  collectors: [load]\n")
    r = requests.post(agent.url + "/api/v1/silences", json={"matchers": [{"name": "a", "value": "b"}],
                                                            "endsAt": "2999-01-01T00:00:00Z"}, timeout=10)
    assert r.status_code == 403 and "admin" in r.json()["error"]
    assert requests.delete(agent.url + "/api/v1/silence/x", timeout=10).status_code == 403
    assert requests.get(agent.url + "/api/v1/silences", timeout=10).json() == []
    browser = Browser()
    try:
        open_page(browser, agent, "silences")
        assert browser.evaluate("document.getElementById('mode').textContent") == "read-only"
        assert browser.evaluate("document.getElementById('silence-form') === null")
        assert "Read-only" in browser.evaluate("document.getElementById('main').innerText")
        assert browser.errors == [], browser.errors
    finally:
        browser.close()
