"""A target whose family names are the agent's own (issue 14, "Low"): `process_*`,
`forewarn_build_info`, `forewarn_problems` scraped from a target must never make the agent's
/metrics carry a family twice (a Prometheus scraping the agent would fail the whole scrape),
and the agent's own values must stay its own."""

from __future__ import annotations

import re

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from tests.helpers import Exporter, wait_for

COLLIDING = ("process_resident_memory_bytes 1\n"
             "# TYPE forewarn_build_info gauge\nforewarn_build_info{version=\"evil\"} 1\n"
             "forewarn_problems 7\n"
             "hostile_marker 1\n")


def test_a_target_named_like_the_agent_never_duplicates_a_family(agent_factory):
    exporter = Exporter(lambda e: COLLIDING)
    try:
        agent = agent_factory("system:\n  enabled: false\nrule_files: []\nscrape_configs:\n  - job_name: hostile\n"
                              "    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n"
                              f"      - targets: ['{exporter.address}']\n")
        wait_for(lambda: "hostile_marker" in agent.get("/metrics").text, timeout=15, what="the target scraped")
        for text in (agent.get("/metrics").text,
                     agent.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}).text):
            types = re.findall(r"^# TYPE (\S+) ", text, re.M)
            assert len(types) == len(set(types)), sorted(t for t in types if types.count(t) > 1)
        om = agent.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}).text
        families = {f.name: f for f in parse_openmetrics(om)}  # the strict parser refuses duplicates
        rss = [s.value for s in families["process_resident_memory_bytes"].samples if "job" not in s.labels]
        assert rss and rss[0] > 1_000_000  # the agent's own value, not the target's 1
        versions = {s.labels.get("version") for s in families["forewarn_build_info"].samples if "job" not in s.labels}
        assert versions and "evil" not in versions
    finally:
        exporter.close()
