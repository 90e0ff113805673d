"""Host metrics under node_exporter's names, labels and units.

`SystemCollector.collect(now)` returns `(labels, value)` samples for the collectors chosen in
`system.collectors`. Each config collector runs one or more *node_exporter collectors* (the
`collector` label of `node_scrape_collector_{duration_seconds,success}`), so panels and rules
written for node_exporter keep working:

    config name   node_exporter collectors   source
    cpu           cpu, stat                  /proc/stat
    memory        meminfo                    /proc/meminfo
    filesystem    filesystem                 /proc/1/mounts + statfs(2)
    disk          diskstats                  /proc/diskstats
    network       netdev                     psutil.net_io_counters
    load          loadavg                    psutil.getloadavg
    pressure      pressure                   /proc/pressure/{cpu,memory,io}
    time          time                       the wall clock + /sys clocksources

psutil is used where it returns a whole family; files are read where psutil has no call (most
meminfo fields, pressure, the diskstats fields beyond psutil's, mount options) or where it would
label differently from node_exporter (psutil numbers CPUs by position, node_exporter by the
kernel's number, which differ once a CPU is offline). The operating system is passed in
(`psutil_module`, `proc_path`, `sys_path`, `statvfs`, `wall_time`) so tests run on a fake tree.

One collection costs about a millisecond: a handful of small file reads, no subprocess.
The collector only returns samples (the pipeline stores them): it imports the store's label
type and its config section, and never the store itself, rules or web.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import psutil

from agent.config.schema import SystemConfig
from agent.store import Labels, make_labels

log = logging.getLogger(__name__)

Sample = tuple[Labels, float]

# node_exporter's default --collector.diskstats.device-exclude: RAM disks, loop devices, floppies
# and partitions (whole disks are kept; their counters already include their partitions').
DISK_DEVICE_EXCLUDE = re.compile(r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$")

# Like node_exporter's --collector.filesystem.mount-timeout: a statfs that has not returned by
# then marks the mount stuck; it is reported as device_error until the call returns.
STATFS_TIMEOUT_SECONDS = 5.0

# Linux reports diskstats in 512-byte sectors whatever the device's block size.
_SECTOR_BYTES = 512.0
# node_exporter keeps each CPU counter monotonic, except that idle dropping by this much means
# the CPU was hot-plugged and its counters restarted.
_CPU_JUMP_BACK_SECONDS = 3.0
_CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_CPU_GUEST_MODES = ("user", "nice")  # /proc/stat's guest and guest_nice columns
_USER_HZ = float(os.sysconf("SC_CLK_TCK"))
_LABEL_CACHE_MAX = 20000

# Which node_exporter collectors each config collector runs (the `collector` label values).
NODE_EXPORTER_COLLECTORS: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu", "stat"),
    "memory": ("meminfo",),
    "filesystem": ("filesystem",),
    "disk": ("diskstats",),
    "network": ("netdev",),
    "load": ("loadavg",),
    "pressure": ("pressure",),
    "time": ("time",),
}

# Metric name -> (type, help), with node_exporter's help texts. node_memory_* names depend on
# the kernel: they are added here when first seen (see `family`).
FAMILIES: dict[str, tuple[str, str]] = {
    "node_scrape_collector_duration_seconds": ("gauge", "node_exporter: Duration of a collector scrape."),
    "node_scrape_collector_success": ("gauge", "node_exporter: Whether a collector succeeded."),
    "node_cpu_seconds_total": ("counter", "Seconds the CPUs spent in each mode."),
    "node_cpu_guest_seconds_total": ("counter", "Seconds the CPUs spent in guests (VMs) for each mode."),
    "node_boot_time_seconds": ("gauge", "Node boot time, in unixtime."),
    "node_context_switches_total": ("counter", "Total number of context switches."),
    "node_forks_total": ("counter", "Total number of forks."),
    "node_intr_total": ("counter", "Total number of interrupts serviced."),
    "node_procs_running": ("gauge", "Number of processes in runnable state."),
    "node_procs_blocked": ("gauge", "Number of processes blocked waiting for I/O to complete."),
    "node_filesystem_size_bytes": ("gauge", "Filesystem size in bytes."),
    "node_filesystem_free_bytes": ("gauge", "Filesystem free space in bytes."),
    "node_filesystem_avail_bytes": ("gauge", "Filesystem space available to non-root users in bytes."),
    "node_filesystem_files": ("gauge", "Filesystem total file nodes."),
    "node_filesystem_files_free": ("gauge", "Filesystem total free file nodes."),
    "node_filesystem_readonly": ("gauge", "Filesystem read-only status."),
    "node_filesystem_device_error": ("gauge", "Whether an error occurred while getting statistics for the given device."),
    "node_network_receive_bytes_total": ("counter", "Network device statistic receive_bytes."),
    "node_network_receive_packets_total": ("counter", "Network device statistic receive_packets."),
    "node_network_receive_errs_total": ("counter", "Network device statistic receive_errs."),
    "node_network_receive_drop_total": ("counter", "Network device statistic receive_drop."),
    "node_network_transmit_bytes_total": ("counter", "Network device statistic transmit_bytes."),
    "node_network_transmit_packets_total": ("counter", "Network device statistic transmit_packets."),
    "node_network_transmit_errs_total": ("counter", "Network device statistic transmit_errs."),
    "node_network_transmit_drop_total": ("counter", "Network device statistic transmit_drop."),
    "node_load1": ("gauge", "1m load average."),
    "node_load5": ("gauge", "5m load average."),
    "node_load15": ("gauge", "15m load average."),
    "node_pressure_cpu_waiting_seconds_total": ("counter", "Total time in seconds that processes have waited for CPU time"),
    "node_pressure_memory_waiting_seconds_total": ("counter", "Total time in seconds that processes have waited for memory"),
    "node_pressure_memory_stalled_seconds_total": (
        "counter", "Total time in seconds no process could make progress due to memory congestion"),
    "node_pressure_io_waiting_seconds_total": (
        "counter", "Total time in seconds that processes have waited due to IO congestion"),
    "node_pressure_io_stalled_seconds_total": (
        "counter", "Total time in seconds no process could make progress due to IO congestion"),
    "node_time_seconds": ("gauge", "System time in seconds since epoch (1970)."),
    "node_time_zone_offset_seconds": ("gauge", "System time zone offset in seconds."),
    "node_time_clocksource_available_info": ("gauge", "Available clocksources read from '/sys/devices/system/clocksource'."),
    "node_time_clocksource_current_info": ("gauge", "Current clocksource read from '/sys/devices/system/clocksource'."),
}

# /proc/diskstats columns after "major minor device", in order: (metric, type, scale, help).
# Kernels before 4.18 have 11 columns, before 5.5 15; missing ones are not reported.
_DISKSTATS_COLUMNS: tuple[tuple[str, str, float, str], ...] = (
    ("node_disk_reads_completed_total", "counter", 1.0, "The total number of reads completed successfully."),
    ("node_disk_reads_merged_total", "counter", 1.0, "The total number of reads merged."),
    ("node_disk_read_bytes_total", "counter", _SECTOR_BYTES, "The total number of bytes read successfully."),
    ("node_disk_read_time_seconds_total", "counter", 1e-3, "The total number of seconds spent by all reads."),
    ("node_disk_writes_completed_total", "counter", 1.0, "The total number of writes completed successfully."),
    ("node_disk_writes_merged_total", "counter", 1.0, "The number of writes merged."),
    ("node_disk_written_bytes_total", "counter", _SECTOR_BYTES, "The total number of bytes written successfully."),
    ("node_disk_write_time_seconds_total", "counter", 1e-3, "This is the total number of seconds spent by all writes."),
    ("node_disk_io_now", "gauge", 1.0, "The number of I/Os currently in progress."),
    ("node_disk_io_time_seconds_total", "counter", 1e-3, "Total seconds spent doing I/Os."),
    ("node_disk_io_time_weighted_seconds_total", "counter", 1e-3, "The weighted # of seconds spent doing I/Os."),
    ("node_disk_discards_completed_total", "counter", 1.0, "The total number of discards completed successfully."),
    ("node_disk_discards_merged_total", "counter", 1.0, "The total number of discards merged."),
    # node_exporter reports discarded sectors, not bytes.
    ("node_disk_discarded_sectors_total", "counter", 1.0, "The total number of sectors discarded successfully."),
    ("node_disk_discard_time_seconds_total", "counter", 1e-3, "This is the total number of seconds spent by all discards."),
    ("node_disk_flush_requests_total", "counter", 1.0, "The total number of flush requests completed successfully"),
    ("node_disk_flush_requests_time_seconds_total", "counter", 1e-3,
     "This is the total number of seconds spent by all flush requests."),
)
FAMILIES.update({name: (kind, help_) for name, kind, _, help_ in _DISKSTATS_COLUMNS})

# psutil snetio field -> node_exporter netdev metric.
_NETDEV_FIELDS = (
    ("bytes_recv", "node_network_receive_bytes_total"),
    ("packets_recv", "node_network_receive_packets_total"),
    ("errin", "node_network_receive_errs_total"),
    ("dropin", "node_network_receive_drop_total"),
    ("bytes_sent", "node_network_transmit_bytes_total"),
    ("packets_sent", "node_network_transmit_packets_total"),
    ("errout", "node_network_transmit_errs_total"),
    ("dropout", "node_network_transmit_drop_total"),
)

_PRESSURE_FAMILIES = (  # (resource, line kind, metric)
    ("cpu", "some", "node_pressure_cpu_waiting_seconds_total"),
    ("memory", "some", "node_pressure_memory_waiting_seconds_total"),
    ("memory", "full", "node_pressure_memory_stalled_seconds_total"),
    ("io", "some", "node_pressure_io_waiting_seconds_total"),
    ("io", "full", "node_pressure_io_stalled_seconds_total"),
)

_MEMINFO_PAREN = re.compile(r"\((.*)\)")
_MOUNT_ESCAPE = re.compile(r"\\([0-7]{3})")


def family(name: str) -> tuple[str, str] | None:
    """(type, help) of a metric this module emits, or None for a name it does not know."""
    return FAMILIES.get(name)


def meminfo_metric_name(field: str, has_unit: bool) -> str:
    """node_exporter's name for a /proc/meminfo field: `Active(anon)` + kB -> node_memory_Active_anon_bytes."""
    key = _MEMINFO_PAREN.sub(r"_\1", field)
    return f"node_memory_{key}_bytes" if has_unit else f"node_memory_{key}"


class HostStats(Protocol):
    """The psutil calls the collector makes (psutil itself, or a fake in tests)."""

    def net_io_counters(self, pernic: Literal[True], nowrap: bool) -> Mapping[str, object]: ...

    def getloadavg(self) -> tuple[float, float, float]: ...


StatfsResult = os.statvfs_result | OSError  # what statfs(2) gave for a mount point


class NoDataError(Exception):
    """The kernel does not provide what a collector reads (node_exporter's ErrNoData)."""


@dataclass(frozen=True)
class Mount:
    """One line of /proc/PID/mounts, with the escapes (\\040 for space ...) decoded."""

    device: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...]

    @property
    def readonly(self) -> bool:
        return "ro" in self.options


def _unescape_mount_field(text: str) -> str:
    """The kernel writes space, tab, newline and backslash in mount fields as octal escapes."""
    return _MOUNT_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def parse_mounts(text: str) -> list[Mount]:
    """The lines of /proc/PID/mounts; malformed lines are skipped."""
    mounts = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        device, mountpoint = _unescape_mount_field(parts[0]), _unescape_mount_field(parts[1])
        mounts.append(Mount(device, mountpoint, parts[2], tuple(parts[3].split(","))))
    return mounts


class _StatfsRunner:
    """statfs(2) for a batch of mount points in a worker thread, with a deadline.

    A hung network mount blocks its statfs call forever; the collection thread must not hang
    with it. A mount whose call outlives the deadline is remembered as stuck (and skipped) until
    the call finally returns, as node_exporter does.
    """

    def __init__(self, statvfs: Callable[[str], os.statvfs_result], timeout: float) -> None:
        self._statvfs = statvfs
        self._timeout = timeout
        self._lock = threading.Lock()
        self._stuck: set[str] = set()

    def stuck(self) -> set[str]:
        with self._lock:
            return set(self._stuck)

    def run(self, paths: list[str]) -> dict[str, StatfsResult]:
        """path -> statvfs result or the OSError raised; paths not reached by the deadline are absent."""
        results: dict[str, StatfsResult] = {}
        if not paths:
            return results
        current: list[str] = []

        def work() -> None:
            for path in paths:
                with self._lock:
                    current[:] = [path]
                try:
                    res: StatfsResult = self._statvfs(path)
                except OSError as e:
                    res = e
                with self._lock:
                    if path in self._stuck:  # came back after all: usable again next time
                        self._stuck.discard(path)
                        return  # this batch was abandoned by the collector long ago
                    results[path] = res

        worker = threading.Thread(target=work, name="forewarn-statfs", daemon=True)
        worker.start()
        worker.join(self._timeout)
        with self._lock:
            if worker.is_alive() and current:
                self._stuck.add(current[0])
                log.warning("statfs on %s did not return within %.0fs; reporting it as a device error until it does",
                            current[0], self._timeout)
            return dict(results)


class SystemCollector:
    """Host metrics as node_exporter names them. Not thread-safe: one caller at a time."""

    def __init__(
        self,
        cfg: SystemConfig,
        psutil_module: HostStats = psutil,
        proc_path: str | None = None,
        sys_path: str | None = None,
        *,
        statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
        wall_time: Callable[[], float] = time.time,
        statfs_timeout: float = STATFS_TIMEOUT_SECONDS,
    ) -> None:
        self.cfg = cfg
        self._psutil = psutil_module
        self._proc = proc_path or cfg.proc_path
        self._sys = sys_path or cfg.sys_path
        if psutil_module is psutil and self._proc != "/proc":
            # psutil reads /proc through this module-level setting (e.g. a host's /proc in a container).
            psutil.PROCFS_PATH = self._proc
        self._wall_time = wall_time
        self._statfs = _StatfsRunner(statvfs, statfs_timeout)
        self._fs_types_exclude = re.compile(cfg.filesystem_exclude_fstypes)
        self._mountpoints_exclude = re.compile(cfg.filesystem_exclude_mountpoints)
        self._netdev_exclude = re.compile(cfg.network_exclude_devices)
        runners: dict[str, Callable[[], list[Sample]]] = {
            "cpu": self._collect_cpu,
            "stat": self._collect_stat,
            "meminfo": self._collect_meminfo,
            "filesystem": self._collect_filesystem,
            "diskstats": self._collect_diskstats,
            "netdev": self._collect_netdev,
            "loadavg": self._collect_loadavg,
            "pressure": self._collect_pressure,
            "time": self._collect_time,
        }
        self._runners = [
            (name, runners[name]) for group in cfg.collectors for name in NODE_EXPORTER_COLLECTORS[group]
        ]
        self._durations: dict[str, float] = {}
        self._errors: dict[str, str] = {}  # collector -> message of its last failure; absent when it succeeded
        self._labels: dict[tuple[str, tuple[str, ...]], Labels] = {}
        self._cpu_seconds: dict[int, np.ndarray] = {}  # cpu -> last reported counters, kept monotonic
        self._proc_stat: str | None = None  # /proc/stat of the current collection, shared by cpu and stat

    # -- public -------------------------------------------------------------------------------

    def collect(self, now: float) -> list[Sample]:
        """Every sample of one collection, including node_scrape_collector_{duration_seconds,success}.

        `now` is the collection's timestamp (the caller stamps the samples with it); values such as
        node_time_seconds still read the host's clock, which is what they report. A collector that
        fails contributes no samples and success 0; the others are unaffected.
        """
        out: list[Sample] = []
        self._proc_stat = None
        for name, run in self._runners:
            start = time.perf_counter()
            try:
                samples = run()
            except Exception as e:
                samples = []
                message = str(e) or type(e).__name__
                if self._errors.get(name) is None:
                    log.warning("system collector %s failed: %s", name, message)
                self._errors[name] = message
            else:
                if name in self._errors:
                    log.info("system collector %s works again", name)
                    del self._errors[name]
            self._durations[name] = time.perf_counter() - start
            out.extend(samples)
        self._proc_stat = None
        for name, _ in self._runners:
            out.append((self._label("node_scrape_collector_duration_seconds", collector=name), self._durations[name]))
            out.append((self._label("node_scrape_collector_success", collector=name), 0.0 if name in self._errors else 1.0))
        return out

    def collect_durations(self) -> dict[str, float]:
        """node_exporter collector name -> seconds its last run took."""
        return dict(self._durations)

    def collector_errors(self) -> dict[str, bool]:
        """node_exporter collector name -> True if its last run failed (success 0)."""
        return {name: name in self._errors for name, _ in self._runners}

    def collector_error_messages(self) -> dict[str, str]:
        """node_exporter collector name -> why its last run failed, for collectors that failed."""
        return dict(self._errors)

    # -- helpers ------------------------------------------------------------------------------

    def _label(self, name: str, **labels: str) -> Labels:
        # Label tuples are built once per series and reused: sorting per sample would dominate.
        key = (name, tuple(labels.values()) + tuple(labels))
        cached = self._labels.get(key)
        if cached is None:
            if len(self._labels) >= _LABEL_CACHE_MAX:  # devices and mounts come and go
                self._labels.clear()
            cached = self._labels[key] = make_labels(name, labels)
        return cached

    def _read(self, relative: str) -> str:
        with open(os.path.join(self._proc, relative), encoding="ascii", errors="replace") as f:
            return f.read()

    def _read_proc_stat(self) -> str:
        if self._proc_stat is None:
            self._proc_stat = self._read("stat")
        return self._proc_stat

    # -- collectors ---------------------------------------------------------------------------

    def _collect_cpu(self) -> list[Sample]:
        ids: list[int] = []
        rows: list[list[float]] = []
        for line in self._read_proc_stat().splitlines():
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            parts = line.split()
            values = [float(x) for x in parts[1:11]]
            values += [0.0] * (10 - len(values))  # old kernels lack steal/guest columns
            ids.append(int(parts[0][3:]))
            rows.append(values)
        if not rows:
            raise ValueError(f"no per-CPU lines in {self._proc}/stat")
        new = np.asarray(rows, dtype=np.float64) / _USER_HZ
        out: list[Sample] = []
        idle = _CPU_MODES.index("idle")
        for cpu, row in zip(ids, new):
            prev = self._cpu_seconds.get(cpu)
            # Some kernels let idle/iowait step backwards; node_exporter holds the last value so
            # rate() sees no counter reset, and starts afresh when idle falls far (hot-plug).
            if prev is not None and prev[idle] - row[idle] < _CPU_JUMP_BACK_SECONDS:
                row = np.maximum(prev, row)
            self._cpu_seconds[cpu] = row
            label_cpu = str(cpu)
            for mode, value in zip(_CPU_MODES, row[:8]):
                out.append((self._label("node_cpu_seconds_total", cpu=label_cpu, mode=mode), float(value)))
            for mode, value in zip(_CPU_GUEST_MODES, row[8:10]):
                out.append((self._label("node_cpu_guest_seconds_total", cpu=label_cpu, mode=mode), float(value)))
        return out

    def _collect_stat(self) -> list[Sample]:
        fields: dict[str, str] = {}
        for line in self._read_proc_stat().splitlines():
            key, _, rest = line.partition(" ")
            if key in ("ctxt", "btime", "processes", "procs_running", "procs_blocked", "intr"):
                fields[key] = rest.split(None, 1)[0]
        names = (
            ("btime", "node_boot_time_seconds"),
            ("ctxt", "node_context_switches_total"),
            ("processes", "node_forks_total"),
            ("intr", "node_intr_total"),
            ("procs_running", "node_procs_running"),
            ("procs_blocked", "node_procs_blocked"),
        )
        missing = [key for key, _ in names if key not in fields]
        if missing:
            raise ValueError(f"{self._proc}/stat has no {', '.join(missing)} line")
        return [(self._label(metric), float(fields[key])) for key, metric in names]

    def _collect_meminfo(self) -> list[Sample]:
        out: list[Sample] = []
        for line in self._read("meminfo").splitlines():
            parts = line.split()
            if len(parts) < 2 or not parts[0].endswith(":"):
                continue
            value = float(parts[1])
            has_unit = len(parts) == 3  # the unit is always kB
            name = meminfo_metric_name(parts[0][:-1], has_unit)
            if name not in FAMILIES:
                FAMILIES[name] = ("gauge", f"Memory information field {name[len('node_memory_'):]}.")
            out.append((self._label(name), value * 1024.0 if has_unit else value))
        if not out:
            raise ValueError(f"{self._proc}/meminfo is empty")
        return out

    def _read_mounts(self) -> list[Mount]:
        # PID 1's view, as node_exporter: the host's mounts, not a private namespace of ours.
        try:
            return parse_mounts(self._read("1/mounts"))
        except OSError:
            return parse_mounts(self._read("self/mounts"))

    def _collect_filesystem(self) -> list[Sample]:
        seen: set[tuple[str, str, str]] = set()
        mounts: list[Mount] = []
        for m in self._read_mounts():
            key = (m.device, m.mountpoint, m.fstype)
            if key in seen or self._mountpoints_exclude.search(m.mountpoint) or self._fs_types_exclude.search(m.fstype):
                continue
            seen.add(key)
            mounts.append(m)
        stuck = self._statfs.stuck()
        results = self._statfs.run(sorted({m.mountpoint for m in mounts if m.mountpoint not in stuck}))
        stuck = self._statfs.stuck()
        out: list[Sample] = []
        for m in mounts:
            labels = {"device": m.device, "fstype": m.fstype, "mountpoint": m.mountpoint}
            res = results.get(m.mountpoint)
            if m.mountpoint in stuck or isinstance(res, OSError):
                out.append((self._label("node_filesystem_device_error", **labels), 1.0))
                continue
            if res is None:  # not reached before the deadline: next collection
                continue
            # node_exporter multiplies by f_bsize (not f_frsize); equal on common filesystems.
            bsize = float(res.f_bsize)
            out.extend((
                (self._label("node_filesystem_size_bytes", **labels), res.f_blocks * bsize),
                (self._label("node_filesystem_free_bytes", **labels), res.f_bfree * bsize),
                (self._label("node_filesystem_avail_bytes", **labels), res.f_bavail * bsize),
                (self._label("node_filesystem_files", **labels), float(res.f_files)),
                (self._label("node_filesystem_files_free", **labels), float(res.f_ffree)),
                (self._label("node_filesystem_readonly", **labels), 1.0 if m.readonly else 0.0),
                (self._label("node_filesystem_device_error", **labels), 0.0),
            ))
        return out

    def _collect_diskstats(self) -> list[Sample]:
        out: list[Sample] = []
        for line in self._read("diskstats").splitlines():
            parts = line.split()
            if len(parts) < 14 or DISK_DEVICE_EXCLUDE.search(parts[2]):
                continue
            device = parts[2]
            for (metric, _, scale, _), raw in zip(_DISKSTATS_COLUMNS, parts[3:]):
                out.append((self._label(metric, device=device), float(raw) * scale))
        return out

    def _collect_netdev(self) -> list[Sample]:
        out: list[Sample] = []
        counters = self._psutil.net_io_counters(pernic=True, nowrap=False)
        for device, stats in counters.items():
            if self._netdev_exclude.search(device):
                continue
            for field, metric in _NETDEV_FIELDS:
                out.append((self._label(metric, device=device), float(getattr(stats, field))))
        return out

    def _collect_loadavg(self) -> list[Sample]:
        load1, load5, load15 = self._psutil.getloadavg()
        return [
            (self._label("node_load1"), float(load1)),
            (self._label("node_load5"), float(load5)),
            (self._label("node_load15"), float(load15)),
        ]

    def _collect_pressure(self) -> list[Sample]:
        totals: dict[tuple[str, str], float] = {}
        for resource in ("cpu", "memory", "io"):
            try:
                text = self._read(f"pressure/{resource}")
            except FileNotFoundError:
                raise NoDataError(
                    "pressure information is unavailable, you need a Linux kernel >= 4.20 and/or CONFIG_PSI"
                ) from None
            for line in text.splitlines():
                kind, _, rest = line.partition(" ")
                for item in rest.split():
                    if item.startswith("total="):
                        totals[(resource, kind)] = float(item[6:]) / 1e6  # microseconds
        out = []
        for resource, kind, metric in _PRESSURE_FAMILIES:
            if (resource, kind) not in totals:
                raise ValueError(f"{self._proc}/pressure/{resource} has no {kind} total")
            out.append((self._label(metric), totals[(resource, kind)]))
        return out

    def _collect_time(self) -> list[Sample]:
        now = self._wall_time()
        local = time.localtime(now)
        out: list[Sample] = [
            (self._label("node_time_seconds"), now),
            (self._label("node_time_zone_offset_seconds", time_zone=local.tm_zone), float(local.tm_gmtoff)),
        ]
        out.extend(self._clocksources())
        return out

    def _clocksources(self) -> Iterable[Sample]:
        base = os.path.join(self._sys, "devices/system/clocksource")
        try:
            entries = sorted(os.listdir(base))
        except OSError:  # no sysfs (some containers): node_time_seconds is what matters
            return []
        out: list[Sample] = []
        for entry in entries:
            if not entry.startswith("clocksource") or not entry[len("clocksource"):].isdigit():
                continue
            device = entry[len("clocksource"):]
            try:
                with open(os.path.join(base, entry, "available_clocksource"), encoding="ascii") as f:
                    available = f.read().split()
                with open(os.path.join(base, entry, "current_clocksource"), encoding="ascii") as f:
                    current = f.read().strip()
            except OSError:
                continue
            for source in available:
                out.append((self._label("node_time_clocksource_available_info", clocksource=source, device=device), 1.0))
            out.append((self._label("node_time_clocksource_current_info", clocksource=current, device=device), 1.0))
        return out
