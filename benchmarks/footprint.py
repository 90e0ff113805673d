"""What an install of forewarn costs: disk per distribution (grouped by the runtime dependency
that pulls it in), the share of that in test suites and compiled bytecode, and the resident
memory each runtime dependency adds when imported in a fresh interpreter.

Run it with the Python of the venv to measure, e.g. a fresh one:

    python3 -m venv /tmp/fw && /tmp/fw/bin/pip install . && /tmp/fw/bin/python benchmarks/footprint.py

Figures are printed, not asserted; docs/operations.md quotes them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from importlib import metadata

RUNTIME = ["prometheus-client", "psutil", "APScheduler", "requests", "PyYAML", "numpy", "statsmodels",
           "promql-parser", "google-re2"]
# module imported for each dependency, as the agent imports it (statsmodels only in the refit process)
IMPORTS = {"prometheus-client": "prometheus_client", "psutil": "psutil",
           "APScheduler": "apscheduler.schedulers.background", "requests": "requests", "PyYAML": "yaml",
           "numpy": "numpy", "statsmodels": "statsmodels.tsa.holtwinters", "promql-parser": "promql_parser",
           "google-re2": "re2"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dist_size(dist: metadata.Distribution) -> tuple[int, int, int]:
    """Bytes on disk of a distribution's files: total, in test directories, in __pycache__."""
    total = tests = cache = 0
    for f in dist.files or ():
        path = f.locate()
        try:
            size = os.path.getsize(path)
        except OSError:
            continue
        total += size
        parts = str(f).split("/")
        if "tests" in parts or "testing" in parts:
            tests += size
        if "__pycache__" in parts:
            cache += size
    return total, tests, cache


def requirements(dist: metadata.Distribution) -> list[str]:
    out = []
    for req in dist.requires or ():
        if "extra ==" in req:
            continue
        name = re.split(r"[\s;<>=!~\[(]", req.strip(), maxsplit=1)[0]
        out.append(norm(name))
    return out


def closure(root: str, dists: dict[str, metadata.Distribution], seen: set[str]) -> list[str]:
    """root and what it pulls in that no earlier root pulled in."""
    out, todo = [], [norm(root)]
    while todo:
        name = todo.pop()
        if name in seen or name not in dists:
            continue
        seen.add(name)
        out.append(name)
        todo.extend(requirements(dists[name]))
    return out


def rss_after_import(module: str) -> float:
    """MB of resident memory `import module` adds to a fresh interpreter."""
    code = ("import re, sys\n"
            "def rss():\n"
            "    return int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
            "before = rss()\n"
            f"import {module}\n"
            "print(rss() - before)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def main() -> None:
    dists = {norm(d.metadata["Name"]): d for d in metadata.distributions()}
    site = sysconfig.get_paths()["purelib"]
    print(f"site-packages: {site}; load average {os.getloadavg()[0]:.2f}")
    seen: set[str] = set()
    grand = 0
    rows = []
    for root in RUNTIME:
        names = closure(root, dists, seen)
        sizes = [dist_size(dists[n]) for n in names]
        total = sum(s[0] for s in sizes)
        grand += total
        rows.append((root, names, total, sum(s[1] for s in sizes), sum(s[2] for s in sizes)))
    own = dists.get("forewarn")
    own_size = dist_size(own)[0] if own is not None else 0
    rest = [n for n in dists if n not in seen and n != "forewarn"]
    rest_size = sum(dist_size(dists[n])[0] for n in rest)
    print(f"\n{'dependency (and what it pulls in)':<70} {'MB':>7} {'tests':>7} {'.pyc':>7}")
    for root, names, total, tests, cache in sorted(rows, key=lambda r: -r[2]):
        label = root + (f" (+ {', '.join(n for n in names[1:])})" if len(names) > 1 else "")
        print(f"{label[:70]:<70} {total / 1e6:7.1f} {tests / 1e6:7.1f} {cache / 1e6:7.1f}")
    print(f"{'forewarn itself':<70} {own_size / 1e6:7.1f}")
    print(f"{'the venv tools (' + ', '.join(sorted(rest)) + ')':<70.70} {rest_size / 1e6:7.1f}")
    everything = grand + own_size + rest_size
    tests_all = sum(r[3] for r in rows)
    cache_all = sum(r[4] for r in rows)
    print(f"{'total':<70} {everything / 1e6:7.1f} {tests_all / 1e6:7.1f} {cache_all / 1e6:7.1f}")
    print("\nresident memory added by importing each runtime dependency in a fresh interpreter (MB):")
    base = rss_after_import("os")
    for root in RUNTIME:
        print(f"  {IMPORTS[root]:<36} {rss_after_import(IMPORTS[root]):6.1f}")
    print(f"  {'agent.daemon (the whole agent)':<36} {rss_after_import('agent.daemon'):6.1f}")
    print(f"  (baseline `import os`: {base:.1f})")


if __name__ == "__main__":
    main()
