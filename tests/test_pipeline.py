"""Pipeline duties between evaluations: re-sending to tools that forget (Alertmanager)."""

from __future__ import annotations

from agent.clock import SimulatedClock
from agent.config.schema import load_config
from agent.pipeline import Pipeline
from agent.store import Store


def test_resend_runs_each_sink_on_its_own_interval(tmp_path):
    cfg_path = tmp_path / "f.yml"
    cfg_path.write_text(f"global: {{state_dir: {tmp_path}}}\nsystem: {{enabled: false}}\n")
    clock = SimulatedClock(1000.0)
    p = Pipeline(load_config(str(cfg_path)), Store(), clock)
    p.start()
    calls: list[tuple[str, float]] = []

    class Forgetful:
        def __init__(self, name, interval):
            self.name, self.resend_interval = name, interval

        def resend_active(self, now):
            calls.append((self.name, now))
            return 1

    try:
        p.ticketing.sinks["am"] = Forgetful("am", 10.0)
        p.ticketing.sinks["am2"] = Forgetful("am2", 25.0)
        for _ in range(60):
            p.resend()
            clock.advance(1.0)
        assert [t for n, t in calls if n == "am"] == [1000.0, 1010.0, 1020.0, 1030.0, 1040.0, 1050.0]
        assert [t for n, t in calls if n == "am2"] == [1000.0, 1025.0, 1050.0]
    finally:
        p.stop()
