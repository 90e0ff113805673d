"""How big the store may be: the memory budget (configured, or what fits the unit's cgroup
limit with headroom), the tiers' lengths from what readers need (`RetentionNeed`), and the
series limit the budget leaves room for. Pure functions over numbers and the cgroup files;
imports only the store's own modules, never config, rules, PromQL or web.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from agent.store.series import RetentionNeed, bytes_per_series, raw_time_dtype

# The unit's MemoryMax (systemd/forewarn.service); the default budget when no cgroup limit is
# found, so an agent run by hand sizes itself as it would under the unit.
UNIT_MEMORY_MAX = 512 << 20
HEADROOM = 0.8  # the budget is this share of the limit: room for snapshots, queries, refits
BASELINE_BYTES = 64 << 20  # interpreter, numpy, the agent's modules, threads (measured idle: ~55 MB)
STORE_SHARE = 0.5  # of what the baseline leaves to the store
MODEL_SHARE = 0.35  # to the forecast and anomaly models; the rest is for alerts, the outbox, queries and peaks


@dataclass(frozen=True)
class MemoryBudget:
    """The process's memory budget in bytes and where it came from ("config", "cgroup",
    "default")."""

    bytes: int
    source: str


@dataclass(frozen=True)
class StoreSizing:
    """The store's shape: samples per series in the raw tier, history kept (seconds), the
    series limit, and who asked for the longest raw range (for messages)."""

    raw_capacity: int
    retention: float
    max_series: int
    raw_seconds: float
    raw_reader: str
    bytes_per_series: int


def cgroup_memory_limit(proc_self_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> int:
    """The memory limit of this process's cgroup (v2 `memory.max`), 0 when none or unreadable."""
    try:
        with open(proc_self_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith("0::"):
            path = os.path.join(root, line[3:].lstrip("/"), "memory.max")
            try:
                with open(path) as f:
                    text = f.read().strip()
            except OSError:
                return 0
            return int(text) if text.isdigit() else 0
    return 0


def memory_budget(configured: int, cgroup_limit: int) -> MemoryBudget:
    """`configured` bytes when set (> 0), else HEADROOM of the cgroup limit, else of the unit's
    MemoryMax."""
    if configured > 0:
        return MemoryBudget(int(configured), "config")
    if cgroup_limit > 0:
        return MemoryBudget(int(cgroup_limit * HEADROOM), "cgroup")
    return MemoryBudget(int(UNIT_MEMORY_MAX * HEADROOM), "default")


def size_store(budget: MemoryBudget, interval: float, raw_retention: float, history: float, retention: float,
               downsample_interval: float, needs: Sequence[RetentionNeed], max_series: int) -> StoreSizing:
    """The tiers: raw samples for the longest of raw_retention and what any reader reads at
    full resolution, history for the longest of `history` and what readers need, both capped
    at `retention`; `interval` is the fastest sampling interval. max_series: the configured one
    (> 0), else what STORE_SHARE of the budget holds."""
    raw_seconds, reader = float(raw_retention), "raw_retention"
    for n in needs:
        if n.raw_seconds > raw_seconds:
            raw_seconds, reader = n.raw_seconds, n.reader
    raw_seconds = min(raw_seconds, retention)
    hist = min(max([history, raw_seconds] + [n.history_seconds for n in needs]), retention)
    # +2: a window of raw_seconds holds one sample more than raw_seconds / interval when scrapes
    # jitter, and a scrape stamped just after an evaluation's time may already be stored.
    raw_capacity = int(min(1_000_000, math.ceil(raw_seconds / max(1.0, interval)))) + 2
    per = bytes_per_series(raw_capacity, max(2, math.ceil(hist / downsample_interval)), raw_time_dtype(hist).itemsize)
    if max_series <= 0:
        room = max(0, budget.bytes - BASELINE_BYTES) * STORE_SHARE
        max_series = max(1000, int(room // per))
    return StoreSizing(raw_capacity, hist, int(max_series), raw_seconds, reader, per)


def model_memory_bytes(budget: MemoryBudget) -> int:
    """What the forecast and anomaly models of all rules may hold together: `MODEL_SHARE` of
    what the budget leaves beyond the baseline."""
    return max(0, int((budget.bytes - BASELINE_BYTES) * MODEL_SHARE))
