"""The system collector against the real node_exporter on this host.

node_exporter runs with the collectors SystemCollector implements and with the same exclusion
rules as our `system` config; it is scraped just before and just after one collection of ours, so
a counter of ours must lie between its two readings and a gauge close to them. Every family
either side emits must be emitted by the other (a short, explained list excepted).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from agent.config.schema import SystemConfig
from agent.sources.system import DISK_DEVICE_EXCLUDE, FAMILIES, NODE_EXPORTER_COLLECTORS, SystemCollector

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"

# What node_exporter emits that we do not, and why. Any other family missing on our side fails.
NOT_COVERED = {
    "node_disk_info": "udev device properties (model, serial, wwn); not a time series to forecast",
    "node_network_receive_compressed_total": "psutil reports the 8 common netdev counters only",
    "node_network_receive_fifo_total": "psutil reports the 8 common netdev counters only",
    "node_network_receive_frame_total": "psutil reports the 8 common netdev counters only",
    "node_network_receive_multicast_total": "psutil reports the 8 common netdev counters only",
    "node_network_receive_nohandler_total": "netlink-only counter",
    "node_network_transmit_carrier_total": "psutil reports the 8 common netdev counters only",
    "node_network_transmit_colls_total": "psutil reports the 8 common netdev counters only",
    "node_network_transmit_compressed_total": "psutil reports the 8 common netdev counters only",
    "node_network_transmit_fifo_total": "psutil reports the 8 common netdev counters only",
    "node_cpu_core_throttles_total": "thermal throttling counters from sysfs (bare metal only)",
    "node_cpu_package_throttles_total": "thermal throttling counters from sysfs (bare metal only)",
}

EXACT = {
    "node_memory_MemTotal_bytes", "node_memory_SwapTotal_bytes", "node_memory_Hugepagesize_bytes",
    "node_memory_HugePages_Total", "node_memory_VmallocTotal_bytes", "node_memory_CommitLimit_bytes",
    "node_filesystem_size_bytes", "node_filesystem_files", "node_filesystem_readonly",
    "node_filesystem_device_error", "node_boot_time_seconds", "node_time_zone_offset_seconds",
    "node_time_clocksource_available_info", "node_time_clocksource_current_info",
    "node_scrape_collector_success",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cfg() -> SystemConfig:
    return SystemConfig()


@pytest.fixture(scope="module")
def node_exporter(cfg: SystemConfig):
    port = free_port()
    collectors = sorted({name for names in NODE_EXPORTER_COLLECTORS.values() for name in names})
    args = [
        NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
        *[f"--collector.{name}" for name in collectors],
        # Debian patches some defaults (it excludes lo, /run, /mnt, /media); use ours, which are upstream's.
        f"--collector.filesystem.mount-points-exclude={cfg.filesystem_exclude_mountpoints}",
        f"--collector.filesystem.fs-types-exclude={cfg.filesystem_exclude_fstypes}",
        f"--collector.netdev.device-exclude={cfg.network_exclude_devices}",
        f"--collector.diskstats.device-exclude={DISK_DEVICE_EXCLUDE.pattern}",
        f"--path.procfs={cfg.proc_path}", f"--path.sysfs={cfg.sys_path}",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 15
    try:
        while True:
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"node_exporter did not start: {proc.stderr.read() if proc.poll() is not None else 'timeout'}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


Series = tuple[str, frozenset]


def scrape(url: str) -> tuple[dict[Series, float], dict[str, tuple[str, str]]]:
    """node_exporter's node_* samples, and (type, help) per sample name."""
    text = requests.get(url, timeout=5).text
    samples: dict[Series, float] = {}
    types: dict[str, tuple[str, str]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("node_") and not s.name.startswith("node_exporter_"):
                samples[(s.name, frozenset(s.labels.items()))] = s.value
                types[s.name] = (fam.type, fam.documentation)
    return samples, types


@pytest.fixture(scope="module")
def readings(node_exporter: str, cfg: SystemConfig):
    collector = SystemCollector(cfg)
    collector.collect(time.time())  # warm up (first statfs thread, label cache) so the window is short
    before, types = scrape(node_exporter)
    ours_list = collector.collect(time.time())
    after, _ = scrape(node_exporter)
    ours = {(dict(labels)["__name__"], frozenset((k, v) for k, v in labels if k != "__name__")): v for labels, v in ours_list}
    assert len(ours) == len(ours_list), "duplicate series"
    return before, ours, after, types, collector


def by_family(samples: dict[Series, float]) -> dict[str, set[frozenset]]:
    out: dict[str, set[frozenset]] = {}
    for name, labels in samples:
        out.setdefault(name, set()).add(labels)
    return out


def test_same_families_on_both_sides(readings):
    before, ours, after, _, _ = readings
    theirs = set(by_family(before)) | set(by_family(after))
    mine = set(by_family(ours))
    assert sorted(mine - theirs) == [], "families we emit that node_exporter does not"
    assert sorted(theirs - mine - set(NOT_COVERED)) == [], "node_exporter families we lack"
    required = {
        "node_cpu_seconds_total", "node_memory_MemTotal_bytes", "node_memory_MemAvailable_bytes",
        "node_filesystem_size_bytes", "node_filesystem_avail_bytes", "node_filesystem_free_bytes",
        "node_filesystem_files", "node_filesystem_files_free", "node_disk_read_bytes_total",
        "node_disk_written_bytes_total", "node_disk_io_time_seconds_total", "node_network_receive_bytes_total",
        "node_network_transmit_drop_total", "node_load1", "node_load5", "node_load15", "node_boot_time_seconds",
        "node_time_seconds", "node_context_switches_total", "node_scrape_collector_success",
    }
    if os.path.exists("/proc/pressure/cpu"):
        required |= {"node_pressure_cpu_waiting_seconds_total", "node_pressure_io_stalled_seconds_total"}
    assert required <= mine


def test_same_series_in_every_family(readings):
    before, ours, after, _, _ = readings
    mine, theirs_before, theirs_after = by_family(ours), by_family(before), by_family(after)
    for name, label_sets in sorted(mine.items()):
        # a device or mount appearing between the two scrapes must show on one side of it
        assert label_sets in (theirs_before.get(name), theirs_after.get(name)), (
            name, sorted(map(sorted, label_sets ^ theirs_before.get(name, set()))))


def test_scrape_collector_series_match(readings):
    before, ours, _, _, collector = readings

    def success(samples: dict[Series, float]) -> dict[str, float]:
        return {dict(labels)["collector"]: v for (n, labels), v in samples.items() if n == "node_scrape_collector_success"}

    assert set(success(ours)) == set(success(before)) == {
        "cpu", "stat", "meminfo", "filesystem", "diskstats", "netdev", "loadavg", "pressure", "time"}
    assert success(ours) == success(before)  # the same collectors fail (none, on a Linux >= 4.20 host)
    assert {c for c, failed in collector.collector_errors().items() if failed} == {
        c for c, v in success(before).items() if v == 0}


def test_types_and_help_match(readings):
    _, ours, _, types, _ = readings
    for name in sorted({n for n, _ in ours}):
        assert FAMILIES[name] == types[name], name


def tolerance(name: str, labels: frozenset, before: dict[Series, float]) -> float:
    """How far outside [before, after] our reading may lie for this series."""
    if name in EXACT:
        return 0.0
    if name.startswith("node_cpu_"):
        return 0.05  # tick granularity, and iowait held against a backward step
    if name.startswith("node_memory_"):
        # gauges move while the other tests run; a few % of RAM
        return 0.0 if not name.endswith("_bytes") else 0.02 * before[("node_memory_MemTotal_bytes", frozenset())]
    if name in ("node_filesystem_avail_bytes", "node_filesystem_free_bytes"):
        return 0.005 * before[("node_filesystem_size_bytes", labels)]
    if name == "node_filesystem_files_free":
        return 0.005 * before[("node_filesystem_files", labels)]
    if name in ("node_procs_running", "node_procs_blocked", "node_disk_io_now"):
        return 2.0 * (os.cpu_count() or 1) + 4
    if name.startswith("node_load"):
        return 0.01  # psutil keeps more decimals than /proc/loadavg's two
    if name == "node_time_seconds":
        return 0.01
    return 1e-9 * abs(before.get((name, labels), 0.0))  # counters: between the two scrapes


def test_values_within_tolerance(readings):
    before, ours, after, _, _ = readings
    failures = []
    for (name, labels), mine in sorted(ours.items(), key=lambda kv: (kv[0][0], sorted(kv[0][1]))):
        if name == "node_scrape_collector_duration_seconds":
            assert mine >= 0
            continue
        seen = [s[(name, labels)] for s in (before, after) if (name, labels) in s]
        assert seen, (name, labels)
        low, high = min(seen), max(seen)
        tol = tolerance(name, labels, before)
        if not (low - tol <= mine <= high + tol):
            failures.append(f"{name}{dict(labels)}: ours {mine!r}, node_exporter {low!r}..{high!r} (tolerance {tol:g})")
    assert failures == []
