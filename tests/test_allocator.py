"""glibc's allocator settings and the trim the daemon runs (`agent.allocator`), in a child
process so the suite's own allocator is left as it is."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import json
    import numpy as np
    from agent import allocator
    from agent.store.series import read_rss_bytes

    allocator.tune()
    # 2 MiB blocks sit below the fixed 8 MiB mmap threshold: they come from the heap
    blocks = [np.ones(2 << 17) for _ in range(96)]
    del blocks[::2]  # every other one freed: free space between live blocks, not at the heap's top
    before = read_rss_bytes()
    released = allocator.trim()
    after = read_rss_bytes()
    print(json.dumps({"released": released, "before": before, "after": after, "kept": len(blocks)}))
""")


def test_trim_gives_the_free_space_inside_the_heap_back():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout)
    assert got["kept"] == 48
    assert got["released"] is True
    # 48 freed blocks of 2 MiB (96 MiB) between live ones: most of it leaves the resident set
    assert got["before"] - got["after"] >= 64 << 20, got


def test_a_long_rules_tick_trims_right_after_and_a_short_one_does_not():
    """The daemon wraps its rules tick so that one long enough to have allocated big
    temporaries gives them back at once; the clock here is a fake one the tick advances."""
    from agent.daemon import trim_after_long

    now = [100.0]
    trims: list[float] = []

    def tick(seconds: float):
        def run() -> None:
            now[0] += seconds
        return run

    def failing() -> None:
        now[0] += 1.0
        raise RuntimeError("evaluation failed")

    for seconds in (0.01, 0.04, 0.5, 1.75):
        trim_after_long(tick(seconds), lambda: trims.append(now[0]), 0.05, clock=lambda: now[0])()
    assert trims == [now[0] - 1.75, now[0]]
    with pytest.raises(RuntimeError, match="evaluation failed"):  # the tick's error goes on to the scheduler
        trim_after_long(failing, lambda: trims.append(now[0]), 0.05, clock=lambda: now[0])()
    assert len(trims) == 3  # a tick that raised still trims what it left behind


def test_the_daemon_trims_after_a_long_collection_as_after_a_long_rules_tick(tmp_path, monkeypatch):
    """A scrape of a large target frees its body and parse temporaries (about 19 MB at 100,000
    series) when it ends; its job trims then, so they do not stay resident until the next
    scheduled trim. Each source job is wrapped; whether it trims depends on how long it ran."""
    from agent import allocator, daemon
    from agent.config.schema import load_config

    cfg = tmp_path / "forewarn.yml"
    cfg.write_text(f"global: {{state_dir: {tmp_path / 'state'}}}\nweb: {{listen_address: '127.0.0.1:0'}}\n"
                   "rule_files: []\n")
    agent = daemon.Agent(load_config(str(cfg)))
    jobs: dict[str, object] = {}
    monkeypatch.setattr(agent.scheduler, "add", lambda job_id, seconds, fn, **kw: jobs.__setitem__(job_id, fn))
    trims: list[str] = []
    monkeypatch.setattr(allocator, "trim", lambda: trims.append("trim"))
    for threshold, want in ((1e9, []), (0.0, ["trim"])):  # every run is "long" at 0 s
        jobs.clear()
        trims.clear()
        monkeypatch.setattr(daemon, "TRIM_AFTER_TICK_SECONDS", threshold)
        agent._schedule_sources()
        sources = [fn for job_id, fn in jobs.items() if job_id.startswith("source:")]
        assert sources, jobs
        for run in sources:
            run()
        assert trims == want * len(sources)
