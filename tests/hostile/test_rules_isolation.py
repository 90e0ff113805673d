"""Hostile input against rule evaluation, in the running daemon: one rule's failure marks
that rule `err` with its message and never stops the other rules or ticketing.

The finding reproduced: a scraped expiry in milliseconds (1.7e12, read as seconds, is year
55 000) in a rule whose annotation uses `humanizeTimestamp` stopped every rule evaluation
and every ticket, with rule health `unknown`.
"""

from __future__ import annotations

import textwrap

import pytest

from tests.helpers import Exporter, scraping_config, wait_for


@pytest.fixture
def exporter():
    e = Exporter(lambda e: ('cert_expiry_timestamp{name="api"} 1.7e12\n'
                            f'app_queue_depth{{queue="orders"}} {e.values["depth"]}\n'), {"depth": 42.0})
    yield e
    e.close()


def test_a_template_error_marks_its_rule_err_and_other_rules_still_ticket(agent_factory, exporter, tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(textwrap.dedent("""\
        groups:
          - name: certs
            interval: 1s
            rules:
              - alert: CertExpiresSoon
                expr: cert_expiry_timestamp > 0
                annotations:
                  summary: "expires at {{ $value | humanizeTimestamp }}"
              - alert: QueueBacklog
                expr: app_queue_depth > 10
                annotations:
                  summary: "queue {{ $labels.queue }} holds {{ $value }} items"
          - name: later
            interval: 1s
            rules:
              - alert: QueueBacklogToo
                expr: app_queue_depth > 20
        """))
    agent = agent_factory(scraping_config(rules, exporter.address))

    def rules_by_name():
        groups = agent.get("/api/v1/rules").json()["data"]["groups"]
        return {r["name"]: r for g in groups for r in g["rules"]}

    def evaluated():
        by_name = rules_by_name()
        return by_name if by_name and all(r["health"] != "unknown" for r in by_name.values()) else None

    by_name = wait_for(evaluated, timeout=30, what="every rule evaluated")
    bad = by_name["CertExpiresSoon"]
    assert bad["health"] == "err", bad
    assert "humanizeTimestamp" in bad["lastError"] and "overflows int64" in bad["lastError"], bad
    assert by_name["QueueBacklog"]["health"] == "ok" and by_name["QueueBacklogToo"]["health"] == "ok"

    def firing():
        alerts = agent.get("/api/v1/alerts").json()["data"]["alerts"]
        names = {a["labels"]["alertname"]: a for a in alerts if a["state"] == "firing"}
        return names if len(names) == 3 else None

    names = wait_for(firing, timeout=30, what="all three alerts firing")
    # As Prometheus does, the alert still fires; its annotation says what went wrong.
    assert names["CertExpiresSoon"]["annotations"]["summary"].startswith(
        "<error expanding template: error calling humanizeTimestamp: 1.7e+12 cannot be represented")
    assert names["QueueBacklog"]["annotations"]["summary"] == "queue orders holds 42 items"

    def tickets():
        t = agent.get("/api/v1/tickets").json()["data"]["tickets"]
        return t if len(t) == 3 else None

    wait_for(tickets, timeout=30, what="a ticket for each rule")
