"""Worker processes beside the daemon (the refit worker, the trend analysis, the chart
renderer): where they run.

Owns how a helper process steps aside so scraping, rule evaluation and the watchdog keep
their CPU. A foundation: it imports nothing of the agent (and nothing heavy: the refit
worker is spawned, and everything it imports is its own memory)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

# What numpy's BLAS, OpenMP and numexpr read at import for their thread pools.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


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


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Within the block, the environment asks numerical libraries for one thread: a process
    started there inherits it (a spawned child reads it at its first numpy import; one core
    is all a helper may use). The daemon's own environment is restored on leaving."""
    saved = {name: os.environ.get(name) for name in THREAD_ENV}
    os.environ.update(dict.fromkeys(THREAD_ENV, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
