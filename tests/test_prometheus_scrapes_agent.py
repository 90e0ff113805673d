"""A real Prometheus (Debian's) scrapes the agent: the target is up and forewarn_ metrics are queryable."""

from __future__ import annotations

import subprocess
import textwrap

import requests

from tests.helpers import free_port, wait_for


def query(port: int, expr: str) -> list:
    r = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}, timeout=5)
    r.raise_for_status()
    return r.json()["data"]["result"]


def test_prometheus_scrapes_agent(agent_factory, tmp_path):
    agent = agent_factory("system:\n  collectors: [cpu, memory, filesystem, load, time]\nrule_files: []\n")
    prom_port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(textwrap.dedent(f"""\
        global:
          scrape_interval: 1s
          evaluation_interval: 1s
        scrape_configs:
          - job_name: forewarn
            static_configs:
              - targets: ["127.0.0.1:{agent.port}"]
        """))
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        up = wait_for(lambda: query(prom_port, 'up{job="forewarn"} == 1'), timeout=60, what="up{job=forewarn} == 1")
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{agent.port}"
        info = wait_for(lambda: query(prom_port, "forewarn_build_info"), timeout=30, what="forewarn_build_info")
        assert info[0]["value"][1] == "1"
        # node_exporter-compatible host series arrive under their usual names.
        mem = query(prom_port, "node_memory_MemTotal_bytes")
        assert mem and float(mem[0]["value"][1]) > 0
        # Prometheus parsed the whole exposition without complaint.
        bad = query(prom_port, 'scrape_samples_post_metric_relabeling{job="forewarn"}')
        assert float(bad[0]["value"][1]) > 50
    finally:
        prom.terminate()
        prom.wait(timeout=30)
        log.close()
