"""Hostile timestamps in a scraped body, against the real daemon (issue 14, "Low"): a 400-digit
timestamp once raised on every scrape with no `up` and no count; one far-future timestamp
froze its series for ever, across restarts. Prometheus fails such a scrape (`up` 0) or rejects
the sample as out of bounds and counts it.

The scrape manager's own tests cover both (tests/test_scrape.py:
`test_a_400_digit_timestamp_fails_the_scrape_with_its_line`,
`test_own_timestamps_far_ahead_or_too_old_are_rejected_and_counted`); these run the same
attacks through a daemon."""

from __future__ import annotations

import time

from tests.helpers import Exporter, wait_for


def scrape_config(exporter: Exporter) -> str:
    return (f"system:\n  enabled: false\nrule_files: []\nscrape_configs:\n  - job_name: hostile\n"
            f"    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n"
            f"      - targets: ['{exporter.address}']\n")


def samples(agent, name: str, **labels: str) -> list[float]:
    return [v for ls, v in agent.metrics().get(name, []) if all(ls.get(k) == x for k, x in labels.items())]


def test_a_400_digit_timestamp_fails_the_scrape_and_says_so(agent_factory):
    exporter = Exporter(lambda e: "ok 1\nbad 1 " + "9" * 400 + "\n")
    try:
        agent = agent_factory(scrape_config(exporter))
        wait_for(lambda: samples(agent, "up", job="hostile") == [0.0], timeout=10, what="up 0 for the target")
        assert agent.get("/-/healthy").status_code == 200
        assert "Traceback" not in agent.log()
    finally:
        exporter.close()


def test_a_far_future_timestamp_is_rejected_and_counted_and_never_freezes_the_series(agent_factory):
    future_ms = int((time.time() + 365 * 86400) * 1000)
    exporter = Exporter(lambda e: f"hostile_value {e.values['v']} {future_ms if e.values['future'] else ''}\n",
                        {"v": 1, "future": True})
    try:
        agent = agent_factory(scrape_config(exporter))
        wait_for(lambda: sum(samples(agent, "forewarn_scrape_samples_rejected_total", reason="too_far_in_future")) > 0,
                 timeout=10, what="the far-future sample counted")
        exporter.values.update(v=2, future=False)
        r = wait_for(lambda: agent.get("/api/v1/query", params={"query": "hostile_value"}).json()["data"]["result"],
                     timeout=10, what="the series takes new samples")
        assert r[0]["value"][1] == "2"
    finally:
        exporter.close()
