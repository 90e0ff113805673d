"""Exposition parsing speed on a 10,000-series body: our 0.0.4 parser vs prometheus_client's.

    python benchmarks/parse.py [--series N] [--repeat R]

Prints milliseconds per body (best of R) for:
- prometheus_client.parser (text 0.0.4),
- prometheus_client.openmetrics.parser (OpenMetrics, same series),
- agent.sources.exposition.parse_text, cold (every label set parsed),
- agent.sources.exposition.scan_text, warm (series already in the scrape cache, as on a repeated
  scrape: one rpartition and one dict look-up per line, values converted in one call),
- a full warm ScrapeManager pass over the parsed body into the store (labels, ids, append).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prometheus_client import parser as text_parser
from prometheus_client.openmetrics import parser as om_parser

from agent.sources import exposition


def make_body(series: int, openmetrics: bool = False) -> str:
    """A realistic body: histograms with 10 buckets, counters and gauges with 3-4 labels."""
    lines: list[str] = []
    per_hist = 13  # 11 buckets (+Inf included) + sum + count
    n_hist = series // 2 // per_hist
    lines.append("# HELP http_request_duration_seconds Request latency.")
    lines.append("# TYPE http_request_duration_seconds histogram")
    bounds = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"]
    for h in range(n_hist):
        lab = f'handler="/api/v1/item/{h}",method="GET",code="200"'
        for i, le in enumerate(bounds):
            lines.append(f'http_request_duration_seconds_bucket{{{lab},le="{le}"}} {i * 17 + h}')
        lines.append(f"http_request_duration_seconds_sum{{{lab}}} {h * 1.25}")
        lines.append(f"http_request_duration_seconds_count{{{lab}}} {10 * 17 + h}")
    done = n_hist * per_hist
    lines.append("# HELP app_requests Requests handled.")
    lines.append("# TYPE app_requests counter")
    half = (series - done) // 2
    for i in range(half):
        name = "app_requests_total"
        lines.append(f'{name}{{instance_id="{i}",region="eu-west-{i % 3}",tier="web",path="/p/{i}"}} {i * 3.5}')
    lines.append("# TYPE app_queue_depth gauge")
    for i in range(series - done - half):
        lines.append(f'app_queue_depth{{queue="q{i}",shard="{i % 16}",kind="batch"}} {i % 97}')
    if openmetrics:
        lines.append("# EOF")
    return "\n".join(lines) + "\n"


def best_ms(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    body = make_body(args.series)
    om_body = make_body(args.series, openmetrics=True)
    n = len(exposition.parse_text(body))
    print(f"body: {n} samples, {len(body) / 1e6:.2f} MB")

    def pc_text() -> None:
        for fam in text_parser.text_string_to_metric_families(body):
            for _ in fam.samples:
                pass

    def pc_om() -> None:
        for fam in om_parser.text_string_to_metric_families(om_body):
            for _ in fam.samples:
                pass

    known = {s.key: i for i, s in enumerate(exposition.parse_text(body))}
    rows = [
        ("prometheus_client text 0.0.4", best_ms(pc_text, args.repeat)),
        ("prometheus_client OpenMetrics", best_ms(pc_om, args.repeat)),
        ("exposition.parse_openmetrics", best_ms(lambda: exposition.parse_openmetrics(om_body), args.repeat)),
        ("exposition.parse_text (cold)", best_ms(lambda: exposition.parse_text(body), args.repeat)),
        ("exposition.scan_text (warm, the scrape cache)", best_ms(lambda: exposition.scan_text(body, known), args.repeat)),
    ]
    rows.append(("ScrapeManager ingest (warm): parse + ids + append", _ingest_ms(body, args.repeat)))
    base = rows[0][1]
    for label, ms in rows:
        print(f"{label:<52} {ms:8.1f} ms   {base / ms:5.1f}x vs prometheus_client text")


def _ingest_ms(body: str, repeat: int) -> float:
    from agent.clock import SimulatedClock
    from agent.config.schema import Config, ScrapeConfig, StaticConfig
    from agent.sources.scrape import ScrapeManager
    from agent.store import Store

    cfg = Config()
    cfg.scrape_configs = [ScrapeConfig(job_name="bench", sample_limit=0, static_configs=[StaticConfig(targets=["127.0.0.1:1"])])]
    clock = SimulatedClock(1_700_000_000)
    store = Store(raw_capacity=64, max_series=100_000)
    mgr = ScrapeManager(cfg, store, clock)
    target = mgr.targets()[0]
    mgr.ingest(target, body, "text/plain; version=0.0.4", clock.now())

    def once() -> None:
        clock.advance(15)
        mgr.ingest(target, body, "text/plain; version=0.0.4", clock.now())

    return best_ms(once, repeat)


if __name__ == "__main__":
    main()
