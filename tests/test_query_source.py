"""query_configs against a real Prometheus: raw samples, backfill, and sharding across agents."""

from __future__ import annotations

import subprocess
import textwrap
import time

import numpy as np
import pytest
import requests

from agent.config.schema import QueryConfig
from agent.sources.query import QuerySource, shard_of
from agent.store import Store, make_labels
from tests.helpers import free_port, parse_metrics, wait_for

SELECTOR = '{__name__=~"prometheus_tsdb_head_.*|prometheus_engine_.*|go_memstats_.*"}'


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prom")
    port = free_port()
    (tmp / "prometheus.yml").write_text(textwrap.dedent(f"""\
        global: {{scrape_interval: 1s}}
        scrape_configs:
          - job_name: prometheus
            static_configs: [{{targets: ["127.0.0.1:{port}"]}}]
        """))
    log = open(tmp / "prometheus.log", "wb")
    proc = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def have_history():
        r = requests.get(url + "/api/v1/query", params={"query": "count_over_time(up[1m])"}, timeout=5).json()
        return r["data"]["result"] and float(r["data"]["result"][0]["value"][1]) >= 8

    wait_for(have_history, timeout=60, what="prometheus with 8 s of its own history")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def prom_raw(url: str, selector: str, t: float, window: int) -> dict:
    r = requests.get(url + "/api/v1/query", params={"query": f"{selector}[{window}s]", "time": t}, timeout=10).json()
    return {make_labels(None, s["metric"]): [(float(a), float(b)) for a, b in s["values"]] for s in r["data"]["result"]}


def test_backfill_holds_exactly_the_servers_raw_samples(prometheus):
    store = Store(raw_capacity=1000)
    src = QuerySource(QueryConfig(name="p", url=prometheus, backfill=120.0, queries=['up{job="prometheus"}']), store)
    now = time.time()
    assert src.run(now) > 0
    expected = prom_raw(prometheus, 'up{job="prometheus"}', now, 120)
    assert len(expected) == 1
    (labels, samples), = expected.items()
    sid = store.get_id(labels)
    t, v = store.raw(sid)
    assert list(zip(t.tolist(), v.tolist())) == samples
    # The next run fetches only what is new: no duplicates, still identical to the server.
    time.sleep(2.5)
    later = time.time()
    src.run(later)
    t, v = store.raw(sid)
    assert np.all(np.diff(t) > 0)
    assert list(zip(t.tolist(), v.tolist())) == prom_raw(prometheus, 'up{job="prometheus"}', later, 120)[labels]
    assert src.stats.up and src.stats.failures_total == 0


def test_unreachable_server_is_reported_not_fatal():
    store = Store()
    src = QuerySource(QueryConfig(name="gone", url=f"http://127.0.0.1:{free_port()}", timeout=1.0,
                                  queries=["up"]), store)
    assert src.run(time.time()) == 0
    assert not src.stats.up and src.stats.failures_by_reason == {"connection": 1}


def test_shard_hash_is_stable_and_spread():
    labels = [make_labels("m", {"instance": f"host-{i}"}) for i in range(3000)]
    counts = np.bincount([shard_of(l, 3) for l in labels], minlength=3)
    assert counts.min() > 800  # every shard gets a fair part
    # Stable: a fixed label set always lands on the same shard (changing the hash reshuffles fleets).
    assert shard_of(make_labels("up", {"job": "node", "instance": "db-7:9100"}), 3) == \
        shard_of((("__name__", "up"), ("instance", "db-7:9100"), ("job", "node")), 3)


def test_three_shards_cover_the_fleet_without_overlap(prometheus, agent_factory):
    agents = []
    for i in range(3):
        body = textwrap.dedent(f"""\
            system: {{enabled: false}}
            rule_files: []
            query_configs:
              - name: fleet
                url: {prometheus}
                interval: 1s
                timeout: 1s
                backfill: 30s
                queries: ['{SELECTOR}']
            """)
        a = agent_factory(body, start=False)
        a.start(extra_args=("--shard", f"{i}/3"))
        agents.append(a)

    def series_of(agent) -> set:
        m = parse_metrics(agent.get("/metrics").text)
        out = set()
        for name, samples in m.items():
            if name.startswith(("prometheus_tsdb_head_", "prometheus_engine_", "go_memstats_")):
                out |= {make_labels(name, lab) for lab, _ in samples}
        return out

    def all_fetched():
        sets = [series_of(a) for a in agents]
        return sets if all(sets) else None

    def covered():
        sets = all_fetched()
        if not sets:
            return None
        now = time.time()
        r = requests.get(prometheus + "/api/v1/series", params={"match[]": SELECTOR, "start": now - 3, "end": now},
                         timeout=10).json()
        expected = {make_labels(None, s) for s in r["data"]}
        union = sets[0] | sets[1] | sets[2]
        # Every series the server has is held by exactly one agent.
        return (sets, expected) if union == expected else None

    sets, expected = wait_for(covered, timeout=60, what="the three shards together hold every series once")
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(expected) > 30
    for i, s in enumerate(sets):
        assert s and all(shard_of(l, 3) == i for l in s)


def test_dedup_key_does_not_depend_on_the_shard_that_raised_it():
    """A sharded agent adds no host label of its own, so the same fleet problem has the same
    dedup key whichever agent (or shard layout) sees it."""
    from agent.config.schema import load_config
    from agent.tickets.problems import dedup_key

    alone = load_config("a.yml", text="{}\n")
    shard_a = load_config("a.yml", text="shard: 0/3\n")
    shard_b = load_config("b.yml", text="shard: 2/5\n")
    assert "host" in alone.external_labels()
    assert shard_a.external_labels() == shard_b.external_labels() == {}
    alert_labels = {"alertname": "FilesystemWillFill", "instance": "db-7:9100", "mountpoint": "/var"}
    keys = {dedup_key("FilesystemWillFill", {**c.external_labels(), **alert_labels}) for c in (shard_a, shard_b)}
    assert len(keys) == 1


def test_outage_and_partial_failure_fetch_bounded_chunks():
    """After an outage a query source fetches at most `backfill`, in bounded chunks; a query
    whose first run failed still gets its backfill later."""
    import json
    import re
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs

    asked: list[tuple[str, int]] = []
    failing = {"b": True, "all": False}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            q = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())["query"][0]
            name, seconds = re.match(r"^(\w+)\[(\d+)s\]$", q).groups()
            if failing["all"] or (name == "b" and failing["b"]):
                self.send_response(503)
                body = b'{"status":"error","errorType":"unavailable","error":"down"}'
            else:
                asked.append((name, int(seconds)))
                self.send_response(200)
                body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}}).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        from agent.sources.query import MAX_CHUNK_SECONDS

        cfg = QueryConfig(name="q", url=f"http://127.0.0.1:{srv.server_address[1]}", backfill=4 * 3600.0,
                          queries=["a", "b"])
        src = QuerySource(cfg, Store())
        t0 = 1_700_000_000.0
        src.run(t0)  # a backfills; b fails
        assert sum(s for n, s in asked if n == "a") == 4 * 3600 and not [n for n, _ in asked if n == "b"]
        failing["b"] = False
        asked.clear()
        src.run(t0 + 15)  # b's first success is its backfill; a only fetches what is new
        assert sum(s for n, s in asked if n == "b") == 4 * 3600
        assert sum(s for n, s in asked if n == "a") == 15 + 60
        failing["all"] = True
        for i in range(1, 100):  # a 25-hour outage
            src.run(t0 + 15 + i * 900)
        failing["all"] = False
        asked.clear()
        src.run(t0 + 15 + 100 * 900)
        assert all(s <= MAX_CHUNK_SECONDS for _, s in asked)
        assert sum(s for n, s in asked if n == "a") == 4 * 3600  # capped at backfill, not 25 h
        assert src.stats.up
    finally:
        srv.shutdown()
        srv.server_close()
