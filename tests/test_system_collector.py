"""SystemCollector against a fake /proc and /sys tree (tests/fixtures) and a fake psutil."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.config.schema import SYSTEM_COLLECTORS, SystemConfig
from agent.sources.system import FAMILIES, NODE_EXPORTER_COLLECTORS, SystemCollector, family, meminfo_metric_name
from agent.store import Store, make_labels

FIXTURES = Path(__file__).parent / "fixtures"
USER_HZ = os.sysconf("SC_CLK_TCK")
WALL_TIME = 1_800_000_000.25

snetio = namedtuple("snetio", "bytes_sent bytes_recv packets_sent packets_recv errin errout dropin dropout")


class FakePsutil:
    """The psutil calls the collector makes, answering fixed numbers."""

    def __init__(self) -> None:
        self.nics = {
            "lo": snetio(1000, 1000, 10, 10, 0, 0, 0, 0),
            "eth0": snetio(2_000_000, 5_000_000, 3000, 4000, 1, 2, 3, 4),
            "veth12ab": snetio(7, 8, 1, 1, 0, 0, 0, 0),
        }
        self.net_error: Exception | None = None
        self.net_calls: list[dict] = []

    def net_io_counters(self, pernic: bool = False, nowrap: bool = True):
        self.net_calls.append({"pernic": pernic, "nowrap": nowrap})
        if self.net_error is not None:
            raise self.net_error
        return dict(self.nics)

    def getloadavg(self):
        return (0.5, 0.25, 0.125)


def fake_statvfs(path: str):
    if path == "/mnt/nfs":
        raise OSError(5, "Input/output error", path)
    # f_frsize differs from f_bsize on purpose: node_exporter multiplies by f_bsize.
    return SimpleNamespace(f_bsize=4096, f_frsize=1024, f_blocks=1000, f_bfree=400, f_bavail=300,
                           f_files=5000, f_ffree=4000)


def make_collector(proc: Path = FIXTURES / "proc", psutil_module=None, **cfg_fields) -> SystemCollector:
    return SystemCollector(
        SystemConfig(**cfg_fields),
        psutil_module=psutil_module or FakePsutil(),
        proc_path=str(proc),
        sys_path=str(FIXTURES / "sys"),
        statvfs=fake_statvfs,
        wall_time=lambda: WALL_TIME,
    )


def as_dict(samples) -> dict[tuple, float]:
    return {labels: value for labels, value in samples}


def value(samples, name: str, **labels: str) -> float:
    return as_dict(samples)[make_labels(name, labels)]


def names(samples) -> set[str]:
    return {dict(labels)["__name__"] for labels, _ in samples}


def series_of(samples, name: str) -> list[dict[str, str]]:
    return [{k: v for k, v in labels if k != "__name__"} for labels, _ in samples if dict(labels)["__name__"] == name]


@pytest.fixture
def proc_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "proc"
    shutil.copytree(FIXTURES / "proc", dst)
    return dst


def test_cpu_seconds_per_cpu_and_mode_use_the_kernels_cpu_numbers():
    samples = make_collector(collectors=["cpu"]).collect(0)
    # cpu1 is offline in the fixture: labels follow the kernel's numbering, not the position.
    assert sorted({s["cpu"] for s in series_of(samples, "node_cpu_seconds_total")}) == ["0", "2"]
    assert value(samples, "node_cpu_seconds_total", cpu="0", mode="user") == pytest.approx(1200 / USER_HZ)
    assert value(samples, "node_cpu_seconds_total", cpu="2", mode="idle") == pytest.approx(120000 / USER_HZ)
    assert value(samples, "node_cpu_seconds_total", cpu="2", mode="steal") == pytest.approx(12 / USER_HZ)
    modes = {s["mode"] for s in series_of(samples, "node_cpu_seconds_total")}
    assert modes == {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}
    # guest time is its own family, as node_exporter has it
    assert value(samples, "node_cpu_guest_seconds_total", cpu="0", mode="user") == pytest.approx(6 / USER_HZ)
    assert value(samples, "node_cpu_guest_seconds_total", cpu="0", mode="nice") == pytest.approx(1 / USER_HZ)
    assert len(series_of(samples, "node_cpu_guest_seconds_total")) == 4


def test_cpu_counters_do_not_go_backwards_unless_the_cpu_was_replugged(proc_copy: Path):
    collector = make_collector(proc_copy, collectors=["cpu"])
    collector.collect(0)
    stat = (proc_copy / "stat").read_text()
    # iowait of cpu0 steps back by 50 ticks (a kernel quirk): the last value is held
    (proc_copy / "stat").write_text(stat.replace("cpu0 1200 10 1000 120000 150", "cpu0 1300 10 1000 120100 100"))
    samples = collector.collect(15)
    assert value(samples, "node_cpu_seconds_total", cpu="0", mode="iowait") == pytest.approx(150 / USER_HZ)
    assert value(samples, "node_cpu_seconds_total", cpu="0", mode="user") == pytest.approx(1300 / USER_HZ)
    # idle falls by far more than 3 s: the CPU was hot-plugged, counters start afresh
    (proc_copy / "stat").write_text(stat.replace("cpu0 1200 10 1000 120000 150", "cpu0 5 0 5 100 1"))
    samples = collector.collect(30)
    assert value(samples, "node_cpu_seconds_total", cpu="0", mode="idle") == pytest.approx(100 / USER_HZ)
    assert value(samples, "node_cpu_seconds_total", cpu="0", mode="iowait") == pytest.approx(1 / USER_HZ)


def test_stat_counters_run_with_the_cpu_collector():
    samples = make_collector(collectors=["cpu"]).collect(0)
    assert value(samples, "node_boot_time_seconds") == 1795393384
    assert value(samples, "node_context_switches_total") == 302420
    assert value(samples, "node_intr_total") == 158964
    assert value(samples, "node_forks_total") == 7595
    assert value(samples, "node_procs_running") == 3
    assert value(samples, "node_procs_blocked") == 1
    assert value(samples, "node_scrape_collector_success", collector="stat") == 1


def test_meminfo_names_and_units_follow_node_exporter():
    samples = make_collector(collectors=["memory"]).collect(0)
    assert value(samples, "node_memory_MemTotal_bytes") == 24669192 * 1024
    assert value(samples, "node_memory_MemAvailable_bytes") == 22000000 * 1024
    assert value(samples, "node_memory_Active_anon_bytes") == 300000 * 1024
    assert value(samples, "node_memory_Inactive_file_bytes") == 1190000 * 1024
    assert value(samples, "node_memory_Hugepagesize_bytes") == 2048 * 1024
    # counts without a unit: no _bytes suffix, no scaling
    assert value(samples, "node_memory_HugePages_Total") == 4
    assert value(samples, "node_memory_HugePages_Free") == 3
    meminfo_lines = (FIXTURES / "proc" / "meminfo").read_text().splitlines()
    assert len([n for n in names(samples) if n.startswith("node_memory_")]) == len(meminfo_lines)
    assert family("node_memory_Active_anon_bytes") == ("gauge", "Memory information field Active_anon_bytes.")
    assert meminfo_metric_name("Inactive(file)", True) == "node_memory_Inactive_file_bytes"


def test_filesystems_with_node_exporters_default_exclusions_and_labels():
    samples = make_collector(collectors=["filesystem"]).collect(0)
    mounts = sorted((s["mountpoint"], s["device"], s["fstype"]) for s in series_of(samples, "node_filesystem_device_error"))
    # excluded: /sys /proc /dev /dev/shm (mount point), cgroup2 overlay iso9660 (fs type),
    # /run/credentials/... (mount point); the duplicate / appears once; \040 decodes to a space
    assert mounts == [
        ("/", "/dev/sda1", "ext4"),
        ("/mnt/nfs", "server:/export", "nfs4"),
        ("/run", "tmpfs", "tmpfs"),
        ("/srv/my data", "/dev/sdb1", "ext4"),
        ("/var/lib/docker", "/dev/sdc1", "ext4"),
    ]
    root = {"device": "/dev/sda1", "fstype": "ext4", "mountpoint": "/"}
    assert value(samples, "node_filesystem_size_bytes", **root) == 1000 * 4096
    assert value(samples, "node_filesystem_free_bytes", **root) == 400 * 4096
    assert value(samples, "node_filesystem_avail_bytes", **root) == 300 * 4096
    assert value(samples, "node_filesystem_files", **root) == 5000
    assert value(samples, "node_filesystem_files_free", **root) == 4000
    assert value(samples, "node_filesystem_readonly", **root) == 0
    assert value(samples, "node_filesystem_device_error", **root) == 0
    assert value(samples, "node_filesystem_readonly", device="/dev/sdb1", fstype="ext4", mountpoint="/srv/my data") == 1
    # a mount whose statfs fails: device_error 1 and nothing else for it
    nfs = {"device": "server:/export", "fstype": "nfs4", "mountpoint": "/mnt/nfs"}
    assert value(samples, "node_filesystem_device_error", **nfs) == 1
    assert make_labels("node_filesystem_size_bytes", nfs) not in as_dict(samples)
    assert value(samples, "node_scrape_collector_success", collector="filesystem") == 1


def test_filesystem_exclusions_come_from_config():
    samples = make_collector(collectors=["filesystem"], filesystem_exclude_fstypes="^(ext4|nfs4)$").collect(0)
    # the configured regex replaces the default one: iso9660 is no longer excluded
    assert sorted(s["mountpoint"] for s in series_of(samples, "node_filesystem_device_error")) == ["/media/cd rom", "/run"]


def test_a_hung_mount_does_not_hang_the_collection():
    release = threading.Event()
    calls: list[str] = []

    def statvfs(path: str):
        calls.append(path)
        if path == "/srv/my data":
            release.wait(10)
        return fake_statvfs(path)

    collector = SystemCollector(
        SystemConfig(collectors=["filesystem"]), psutil_module=FakePsutil(), proc_path=str(FIXTURES / "proc"),
        sys_path=str(FIXTURES / "sys"), statvfs=statvfs, statfs_timeout=0.2,
    )
    try:
        hung = {"device": "/dev/sdb1", "fstype": "ext4", "mountpoint": "/srv/my data"}
        collector.collect(0)  # stops waiting at the hung mount; marks it stuck
        samples = collector.collect(15)  # skips it: the others are all reported
        assert value(samples, "node_filesystem_device_error", **hung) == 1
        assert value(samples, "node_filesystem_device_error", device="/dev/sdc1", fstype="ext4",
                     mountpoint="/var/lib/docker") == 0
        assert calls.count("/srv/my data") == 1
        release.set()
        deadline = time.monotonic() + 10
        while collector._statfs.stuck() and time.monotonic() < deadline:
            time.sleep(0.01)
        samples = collector.collect(30)
        assert value(samples, "node_filesystem_device_error", **hung) == 0
        assert value(samples, "node_filesystem_size_bytes", **hung) == 1000 * 4096
    finally:
        release.set()


def test_diskstats_units_and_node_exporters_device_filter():
    samples = make_collector(collectors=["disk"]).collect(0)
    # loop, ram and partitions are dropped; whole disks and device-mapper devices stay
    assert sorted({s["device"] for s in series_of(samples, "node_disk_reads_completed_total")}) == ["dm-0", "nvme0n1", "sda"]
    assert value(samples, "node_disk_reads_completed_total", device="sda") == 1000
    assert value(samples, "node_disk_reads_merged_total", device="sda") == 50
    assert value(samples, "node_disk_read_bytes_total", device="sda") == 20000 * 512
    assert value(samples, "node_disk_read_time_seconds_total", device="sda") == pytest.approx(3.0)
    assert value(samples, "node_disk_writes_completed_total", device="sda") == 400
    assert value(samples, "node_disk_written_bytes_total", device="sda") == 8000 * 512
    assert value(samples, "node_disk_write_time_seconds_total", device="sda") == pytest.approx(1.5)
    assert value(samples, "node_disk_io_now", device="sda") == 2
    assert value(samples, "node_disk_io_time_seconds_total", device="sda") == pytest.approx(4.2)
    assert value(samples, "node_disk_io_time_weighted_seconds_total", device="sda") == pytest.approx(4.6)
    assert value(samples, "node_disk_discarded_sectors_total", device="sda") == 56
    assert value(samples, "node_disk_flush_requests_total", device="sda") == 12
    assert value(samples, "node_disk_flush_requests_time_seconds_total", device="sda") == pytest.approx(0.034)
    # older kernels have fewer columns: only what they have is reported
    dm0 = {name for labels, _ in samples for name in [dict(labels)["__name__"]] if dict(labels).get("device") == "dm-0"}
    assert "node_disk_io_time_weighted_seconds_total" in dm0 and "node_disk_discards_completed_total" not in dm0
    assert "node_disk_discard_time_seconds_total" in names(samples) and "node_disk_flush_requests_total" not in {
        n for labels, _ in samples for n in [dict(labels)["__name__"]] if dict(labels).get("device") == "nvme0n1"}


def test_network_counters_from_psutil_without_wrap_correction():
    fake = FakePsutil()
    samples = make_collector(psutil_module=fake, collectors=["network"]).collect(0)
    assert fake.net_calls == [{"pernic": True, "nowrap": False}]  # raw kernel counters, like node_exporter
    assert sorted({s["device"] for s in series_of(samples, "node_network_receive_bytes_total")}) == ["eth0", "lo", "veth12ab"]
    assert value(samples, "node_network_receive_bytes_total", device="eth0") == 5_000_000
    assert value(samples, "node_network_transmit_bytes_total", device="eth0") == 2_000_000
    assert value(samples, "node_network_receive_packets_total", device="eth0") == 4000
    assert value(samples, "node_network_transmit_packets_total", device="eth0") == 3000
    assert value(samples, "node_network_receive_errs_total", device="eth0") == 1
    assert value(samples, "node_network_transmit_errs_total", device="eth0") == 2
    assert value(samples, "node_network_receive_drop_total", device="eth0") == 3
    assert value(samples, "node_network_transmit_drop_total", device="eth0") == 4
    excluded = make_collector(collectors=["network"], network_exclude_devices="^(lo|veth.*)$").collect(0)
    assert {s["device"] for s in series_of(excluded, "node_network_receive_bytes_total")} == {"eth0"}


def test_load_pressure_and_time():
    samples = make_collector(collectors=["load", "pressure", "time"]).collect(0)
    assert (value(samples, "node_load1"), value(samples, "node_load5"), value(samples, "node_load15")) == (0.5, 0.25, 0.125)
    assert value(samples, "node_pressure_cpu_waiting_seconds_total") == pytest.approx(6.393419)
    assert value(samples, "node_pressure_memory_waiting_seconds_total") == pytest.approx(2.5)
    assert value(samples, "node_pressure_memory_stalled_seconds_total") == pytest.approx(1.25)
    assert value(samples, "node_pressure_io_waiting_seconds_total") == pytest.approx(2.718946)
    assert value(samples, "node_pressure_io_stalled_seconds_total") == pytest.approx(2.382487)
    assert "node_pressure_cpu_stalled_seconds_total" not in names(samples)  # node_exporter 1.5 has none
    assert value(samples, "node_time_seconds") == WALL_TIME
    zone = series_of(samples, "node_time_zone_offset_seconds")
    assert len(zone) == 1 and zone[0]["time_zone"] == time.localtime(WALL_TIME).tm_zone
    assert sorted(s["clocksource"] for s in series_of(samples, "node_time_clocksource_available_info")) == [
        "acpi_pm", "kvm-clock", "tsc"]
    assert series_of(samples, "node_time_clocksource_current_info") == [{"clocksource": "kvm-clock", "device": "0"}]


def test_missing_pressure_files_mean_no_samples_and_success_0(proc_copy: Path):
    shutil.rmtree(proc_copy / "pressure")
    collector = make_collector(proc_copy, collectors=["pressure", "load"])
    samples = collector.collect(0)
    assert not any(n.startswith("node_pressure_") for n in names(samples))
    assert value(samples, "node_scrape_collector_success", collector="pressure") == 0
    assert value(samples, "node_load1") == 0.5
    assert collector.collector_errors() == {"pressure": True, "loadavg": False}
    assert "pressure information is unavailable" in collector.collector_error_messages()["pressure"]


def test_collectors_are_selected_by_config():
    collector = make_collector(collectors=["memory", "load"])
    samples = collector.collect(0)
    families = names(samples) - {"node_scrape_collector_duration_seconds", "node_scrape_collector_success"}
    assert families == {n for n in families if n.startswith("node_memory_")} | {"node_load1", "node_load5", "node_load15"}
    assert {s["collector"] for s in series_of(samples, "node_scrape_collector_success")} == {"meminfo", "loadavg"}
    assert set(collector.collect_durations()) == {"meminfo", "loadavg"}
    assert all(d >= 0 for d in collector.collect_durations().values())
    assert set(NODE_EXPORTER_COLLECTORS) == set(SYSTEM_COLLECTORS)


def test_a_collector_that_raises_reports_success_0_and_the_others_still_run():
    fake = FakePsutil()
    fake.net_error = RuntimeError("netlink exploded")
    collector = make_collector(psutil_module=fake)
    samples = collector.collect(0)
    assert value(samples, "node_scrape_collector_success", collector="netdev") == 0
    assert not any(n.startswith("node_network_") for n in names(samples))
    assert collector.collector_errors()["netdev"] is True
    assert collector.collector_error_messages() == {"netdev": "netlink exploded"}
    ok = {c for c, failed in collector.collector_errors().items() if not failed}
    assert ok == {"cpu", "stat", "meminfo", "filesystem", "diskstats", "loadavg", "pressure", "time"}
    for c in ok:
        assert value(samples, "node_scrape_collector_success", collector=c) == 1
    assert {"node_cpu_seconds_total", "node_memory_MemTotal_bytes", "node_load1"} <= names(samples)
    fake.net_error = None  # recovers on the next run
    samples = collector.collect(15)
    assert value(samples, "node_scrape_collector_success", collector="netdev") == 1
    assert value(samples, "node_network_receive_bytes_total", device="eth0") == 5_000_000
    assert collector.collector_error_messages() == {}


def test_every_emitted_family_is_typed_and_samples_fit_the_store():
    samples = make_collector().collect(0)
    for name in names(samples):
        kind, help_text = FAMILIES[name]
        assert kind == ("counter" if name.endswith("_total") else "gauge"), name
        assert help_text
    assert len(as_dict(samples)) == len(samples)  # no duplicate series
    store = Store()
    store.append_samples(samples, 1000.0)
    assert store.stats().series == len(samples)
