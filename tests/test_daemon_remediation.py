"""End to end in the daemon: a scraped queue backs up, the rule's remediation (a real
command) drains it, no ticket opens; with the kill switch thrown through the API, the next
backlog opens a ticket that says why nothing was tried. The API and /metrics show it all."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import requests

from tests.helpers import Exporter, scraping_config, wait_for


def forewarn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60)


def test_a_remediation_drains_the_queue_and_no_ticket_opens(agent_factory, tmp_path):
    depth = tmp_path / "depth"
    depth.write_text("1")
    exporter = Exporter(lambda e: f'app_queue_depth{{queue="orders"}} {depth.read_text()}\n')
    drain = tmp_path / "drain"
    drain.write_text(f"#!{sys.executable}\nimport sys\nopen({str(depth)!r}, 'w').write('0')\n"
                     "print('drained', sys.argv[1])\n")
    drain.chmod(0o755)
    rules = tmp_path / "rules.yml"
    rules.write_text(textwrap.dedent("""\
        groups:
          - name: queues
            interval: 1s
            rules:
              - alert: QueueBacklog
                expr: app_queue_depth > 10
                for: 1s
                labels: {severity: warning}
                annotations: {summary: "queue {{ $labels.queue }} holds {{ $value }} items"}
                remediate: [drain-queue]
        """))
    try:
        agent = agent_factory(scraping_config(rules, exporter.address) + textwrap.dedent(f"""\
            remediation:
              definitions:
                - name: drain-queue
                  type: command
                  command: ["{drain}", "{{{{ $labels.queue }}}}"]
                  verify: 5s
                  cooldown: 0s
            """))
        wait_for(lambda: agent.get("/api/v1/rules").json()["data"]["groups"], what="rules loaded")
        depth.write_text("42")

        def attempts():
            return agent.get("/api/v1/remediation").json()["data"]["attempts"] or None

        (a,) = wait_for(attempts, timeout=30, what="a remediation attempt")
        a = wait_for(lambda: next((x for x in attempts() if x["status"] != "running"), None), timeout=30,
                     what="the attempt's end")
        assert a["status"] == "succeeded" and "drained orders" in a["output"], a
        assert a["remediation"] == "drain-queue" and a["rule"] == "QueueBacklog"

        def remediated():
            problems = agent.get("/api/v1/problems").json()["data"]["problems"]
            return problems if problems and problems[0]["state"] == "cleared" else None

        (p,) = wait_for(remediated, timeout=30, what="the problem cleared without a ticket")
        assert "remediated" in p["detail"], p
        assert [(x["remediation"], x["status"]) for x in p["remediation"]] == [("drain-queue", "succeeded")]
        assert agent.get("/api/v1/tickets").json()["data"]["tickets"] == []
        m = agent.metrics()
        assert ({"remediation": "drain-queue", "status": "succeeded"}, 1.0) in m["forewarn_remediation_attempts_total"]
        assert m["forewarn_remediation_enabled"] == [({}, 1.0)]

        status = forewarn("remediation", "status", "--url", agent.url)
        assert status.returncode == 0 and "remediation enabled" in status.stdout
        assert "drain-queue  succeeded" in status.stdout, status.stdout
        # the kill switch: throwing it needs no admin API (here through the command); undoing it does
        r = forewarn("remediation", "disable", "--reason", "incident 42", "--url", agent.url)
        assert r.returncode == 0 and "remediation DISABLED since" in r.stdout and "incident 42" in r.stdout, r
        assert requests.post(agent.url + "/api/v1/remediation/enable", timeout=10).status_code == 403
        r = forewarn("remediation", "enable", "--url", agent.url)
        assert r.returncode == 1 and "HTTP 403" in r.stderr and "enable-admin-api" in r.stderr
        assert agent.metrics()["forewarn_remediation_enabled"] == [({}, 0.0)]
        depth.write_text("50")

        def tickets():
            return agent.get("/api/v1/tickets").json()["data"]["tickets"] or None

        (t,) = wait_for(tickets, timeout=30, what="a ticket once remediation is off")
        (full,) = agent.get("/api/v1/tickets", params={"id": t["id"]}).json()["data"]["tickets"]
        body = full["body"]
        assert "not attempted: remediation is switched off (incident 42)" in body, body
        assert len(attempts()) == 1
        skipped = agent.metrics()["forewarn_remediation_skipped_total"]
        assert ({"remediation": "drain-queue", "reason": "disabled"}, 1.0) in skipped
    finally:
        exporter.close()
