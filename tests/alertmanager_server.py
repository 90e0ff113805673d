"""The real Prometheus Alertmanager (Debian `prometheus-alertmanager`) for the tests.

`AlertmanagerServer(workdir, webhook_url=...).start()` writes a minimal configuration (every
alert its own group, notifications with send_resolved to `webhook_url`, or to nobody),
starts `/usr/bin/prometheus-alertmanager` on 127.0.0.1 on a free port with its storage in
`workdir`, and waits for `/-/ready`. Clustering is disabled unless `cluster_port` is given
(with `peers`, the other instances' cluster addresses: an HA cluster as Alertmanager's
docs/high_availability.md runs it). `stop()` ends the process it started.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import requests

from tests.helpers import file_tail, free_port, wait_until_serving

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
READY_TIMEOUT_SECONDS = 30.0

_CONFIG = """\
global:
  resolve_timeout: {resolve_timeout}
route:
  receiver: {receiver}
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: nobody
  - name: hook
    webhook_configs:
      - url: '{webhook_url}'
        send_resolved: true
"""


class AlertmanagerServer:
    def __init__(self, workdir: str, resolve_timeout: str = "5m", webhook_url: str = "",
                 cluster_port: int | None = None, peers: tuple[str, ...] = ()) -> None:
        self.workdir = os.path.abspath(workdir)
        self.cluster_port = cluster_port
        self.peers = peers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.resolve_timeout = resolve_timeout
        self.webhook_url = webhook_url  # notifications (firing and resolved) go here when set
        self.log_path = os.path.join(self.workdir, "alertmanager.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> AlertmanagerServer:
        if not os.access(ALERTMANAGER, os.X_OK):
            raise RuntimeError(f"{ALERTMANAGER} missing: apt-get install prometheus-alertmanager")
        os.makedirs(os.path.join(self.workdir, "data"), exist_ok=True)
        config = os.path.join(self.workdir, "alertmanager.yml")
        with open(config, "w") as f:
            f.write(_CONFIG.format(resolve_timeout=self.resolve_timeout, receiver="hook" if self.webhook_url else "nobody",
                                   webhook_url=self.webhook_url or "http://127.0.0.1:1/unused"))
        log = open(self.log_path, "ab")
        cluster = ([f"--cluster.listen-address=127.0.0.1:{self.cluster_port}", *(f"--cluster.peer={p}" for p in self.peers)]
                   if self.cluster_port else ["--cluster.listen-address="])
        self.proc = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={config}", f"--storage.path={os.path.join(self.workdir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}", *cluster],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
        log.close()
        try:
            wait_until_serving(self.proc, lambda: requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200,
                               "alertmanager", READY_TIMEOUT_SECONDS, self.log_path)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def log_tail(self) -> str:
        return file_tail(self.log_path)

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts with `label="value"` matchers (active, silenced, inhibited, unprocessed)."""
        params: list[tuple[str, str]] = [("filter", f'{k}="{v}"') for k, v in filters.items()]
        r = requests.get(f"{self.url}/api/v2/alerts", params=params, timeout=10)
        r.raise_for_status()
        return r.json()
