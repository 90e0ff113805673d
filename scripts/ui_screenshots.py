#!/usr/bin/env python3
"""Screenshots of the web UI for docs/ui.md, from a real agent in headless Chromium.

    python scripts/ui_screenshots.py            # writes docs/images/ui-*.png

Starts a scrape target whose queue fills and whose latency jumps, an agent on 127.0.0.1 with
rules over them (a forecast, an anomaly, a threshold) and the admin API, lets the rules fire
and a ticket open, adds a silence through the API, then photographs each page. Run it after
changing the UI; it needs Debian's chromium and takes about a minute.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import textwrap
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.cdp import Browser  # noqa: E402 - after the path is set
from tests.helpers import AgentProcess, Exporter, wait_for  # noqa: E402

OUT = os.path.join(REPO, "docs", "images")
RULES = """\
groups:
  - name: capacity
    interval: 2s
    rules:
      - alert: QueueWillFill
        expr: app_queue_free_slots
        forecast: {model: linear, lookback: 2m, horizon: 6h, threshold: 0, direction: below}
        labels: {severity: warning}
        annotations: {summary: "queue {{ $labels.queue }} full in {{ $forecast.eta | humanizeDuration }}"}
        ticket: {group_by: [alertname, queue]}
      - alert: LatencyAnomaly
        expr: app_latency_seconds
        anomaly: {sensitivity: high, direction: above}
      - alert: ErrorsHigh
        expr: rate(app_errors_total[1m]) > 0.5
        for: 10s
        labels: {severity: critical}
        annotations: {summary: "{{ $labels.service }} fails {{ $value | printf \\"%.1f\\" }} requests/s"}
"""


def render(e: Exporter) -> str:
    t = time.time() - e.values["start"]
    lat = 0.12 + 0.01 * math.sin(t / 5) + (0.4 if t > 50 else 0.0)
    return textwrap.dedent(f"""\
        # HELP app_queue_free_slots Free slots per queue.
        # TYPE app_queue_free_slots gauge
        app_queue_free_slots{{queue="orders"}} {max(0.0, 5000 - 9 * t):.0f}
        app_queue_free_slots{{queue="refunds"}} {4000 + 50 * math.sin(t / 7):.0f}
        # HELP app_latency_seconds Request latency.
        # TYPE app_latency_seconds gauge
        app_latency_seconds{{service="checkout"}} {lat:.4f}
        # HELP app_errors_total Failed requests.
        # TYPE app_errors_total counter
        app_errors_total{{service="checkout"}} {int(t * 0.9)}
        """)


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="forewarn-shots-")
    exporter = Exporter(render, {"start": time.time()})
    with open(os.path.join(tmp, "rules.yml"), "w", encoding="utf-8") as f:
        f.write(RULES)
    agent = AgentProcess(tmp, textwrap.dedent(f"""\
        system:
          collectors: [cpu, memory, load]
        scrape_configs:
          - job_name: shop
            static_configs:
              - targets: ["{exporter.address}"]
                labels: {{env: prod}}
        rule_files: ["{tmp}/rules.yml"]
        """))
    agent.start(extra_args=("--web.enable-admin-api",))
    browser = Browser(width=1280, height=760)
    try:
        req = urllib.request.Request(agent.url + "/api/v1/silences", method="POST", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"matchers": [{"name": "alertname", "value": "LatencyAnomaly",
                                                                    "isRegex": False, "isEqual": True}],
                                                      "endsAt": "2099-01-01T00:00:00Z", "createdBy": "ana",
                                                      "comment": "load test on checkout until Friday"}).encode())
        urllib.request.urlopen(req, timeout=10).read()

        def ready() -> bool:
            alerts = json.loads(urllib.request.urlopen(agent.url + "/api/v1/alerts", timeout=10).read())["data"]["alerts"]
            firing = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
            return {"QueueWillFill", "ErrorsHigh"} <= firing and time.time() - exporter.values["start"] > 70

        wait_for(ready, timeout=180, interval=1.0, what="the rules firing")
        problems = json.loads(urllib.request.urlopen(agent.url + "/api/v1/problems", timeout=10).read())["data"]["problems"]
        key = next(p["dedup_key"] for p in problems if p["group_labels"].get("queue") == "orders")
        for page, query in (("alerts", ""), ("problems", f"?key={key}"), ("forecasts", ""), ("silences", ""),
                            ("targets", ""), ("rules", "")):
            browser.goto(f"{agent.url}/#/{page}{query}")
            browser.wait(f"document.body && document.body.dataset.loaded === {page!r}")
            time.sleep(0.3)
            path = os.path.join(OUT, f"ui-{page}.png")
            browser.screenshot(path)
            print(path)
        if browser.errors:
            print("console errors:", browser.errors, file=sys.stderr)
            return 1
    finally:
        browser.close()
        agent.stop()
        exporter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
