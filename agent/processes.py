"""Worker processes beside the daemon (the refit worker, the trend analysis): where they run.

Owns how a helper process steps aside so scraping, rule evaluation and the watchdog keep
their CPU. A foundation: it imports nothing of the agent (and nothing heavy: the refit
worker is spawned, and everything it imports is its own memory)."""

from __future__ import annotations

import os


def step_aside() -> None:
    """Run the calling process on the last CPU only, at nice 10 (where the platform allows:
    each part is skipped if it is refused)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
    except (AttributeError, OSError):
        pass
    try:
        os.nice(10)
    except OSError:
        pass
