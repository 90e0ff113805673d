"""The daemon as operators run it: readiness, systemd notifications, reload, snapshots, shutdown."""

from __future__ import annotations

import os
import signal
import socket

from agent.config.schema import load_config
from agent.daemon import Agent
from agent.store import Store, make_labels
from tests.helpers import wait_for

SYSTEM_ONLY = """\
system:
  collectors: [cpu, memory, load, time]
rule_files: []
"""


def test_serves_metrics_health_and_self_metrics(agent_factory):
    agent = agent_factory(SYSTEM_ONLY)
    assert agent.get("/-/healthy").status_code == 200
    assert agent.get("/-/ready").status_code == 200
    m = agent.metrics()
    for name in ("forewarn_build_info", "forewarn_store_series", "forewarn_config_last_reload_successful",
                 "forewarn_config_last_reload_success_timestamp_seconds", "forewarn_snapshot_age_seconds",
                 "forewarn_store_samples_dropped_total", "forewarn_collection_duration_seconds_count",
                 "node_cpu_seconds_total", "node_memory_MemTotal_bytes", "node_load1", "node_time_seconds",
                 "process_resident_memory_bytes"):
        assert name in m, f"{name} missing from /metrics"
    assert m["forewarn_store_series"][0][1] > 10
    assert m["forewarn_config_last_reload_successful"][0][1] == 1
    assert agent.get("/nope").status_code == 404
    assert agent.get("/-/reload").status_code == 405  # reload wants POST, like Prometheus


def test_openmetrics_negotiation(agent_factory):
    agent = agent_factory(SYSTEM_ONLY)
    r = agent.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")


def test_sd_notify_ready_and_watchdog(agent_factory, tmp_path):
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(30)
    try:
        agent = agent_factory(SYSTEM_ONLY, env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "1000000"},
                              start=False)
        agent.start(wait_ready=False)
        seen: list[str] = []
        while not any(m.startswith("WATCHDOG=1") for m in seen):
            seen.append(sock.recv(4096).decode())
        assert any(m.startswith("READY=1") for m in seen), seen
        # READY=1 comes after the first collection: the agent already has host series then.
        assert agent.metrics()["forewarn_store_series"][0][1] > 0
        agent.signal(signal.SIGHUP)
        while not any(m.startswith("RELOADING=1") for m in seen):
            seen.append(sock.recv(4096).decode())
        agent.signal(signal.SIGTERM)
        while not any(m.startswith("STOPPING=1") for m in seen):
            seen.append(sock.recv(4096).decode())
        assert agent.proc.wait(timeout=10) == 0
    finally:
        sock.close()


def test_reload_endpoint_is_off_unless_enabled(agent_factory):
    agent = agent_factory(SYSTEM_ONLY)
    r = __import__("requests").post(agent.url + "/-/reload", timeout=10)
    assert r.status_code == 403 and "not enabled" in r.text
    assert "configuration reloaded" not in agent.log()


def test_reload_with_broken_config_keeps_the_last_good_one(agent_factory):
    agent = agent_factory(SYSTEM_ONLY, start=False)
    agent.start(extra_args=("--web.enable-lifecycle",))
    good = open(agent.config_path).read()
    with open(agent.config_path, "a") as f:
        f.write("global_typo: 1\n")
    r = __import__("requests").post(agent.url + "/-/reload", timeout=10)
    assert r.status_code == 500
    assert f"{agent.config_path}:" in r.text and "unknown field 'global_typo'" in r.text
    log_line = wait_for(lambda: [l for l in agent.log().splitlines() if "global_typo" in l], what="reload error log")
    assert f"{agent.config_path}:" in log_line[0]
    m = agent.metrics()
    assert m["forewarn_config_last_reload_successful"][0][1] == 0
    assert agent.get("/-/ready").status_code == 200
    # The same through SIGHUP, then a fixed config is taken.
    agent.signal(signal.SIGHUP)
    wait_for(lambda: agent.log().count("global_typo") >= 2, what="the SIGHUP reload rejected too")
    with open(agent.config_path, "w") as f:
        f.write(good.replace("collectors: [cpu, memory, load, time]", "collectors: [cpu, memory, load]"))
    agent.signal(signal.SIGHUP)
    try:
        wait_for(lambda: agent.metrics()["forewarn_config_last_reload_successful"][0][1] == 1, what="good reload")
    except AssertionError as e:
        raise AssertionError(f"{e}; agent log:\n{agent.log()[-3000:]}") from None
    assert "configuration reloaded" in agent.log()


def test_sigterm_writes_snapshot_and_restart_restores(agent_factory):
    agent = agent_factory(SYSTEM_ONLY)
    before = agent.metrics()["forewarn_store_series"][0][1]
    agent.signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=5) == 0
    snap = os.path.join(agent.state_dir, "store.snapshot")
    assert os.path.getsize(snap) > 0
    agent.start()
    assert f"restored {int(before)} series" in agent.log() or "restored" in agent.log()
    restored = int(agent.log().split("restored ")[1].split(" ")[0])
    assert restored >= before


def test_corrupt_snapshot_is_set_aside(agent_factory):
    agent = agent_factory(SYSTEM_ONLY, start=False)
    os.makedirs(agent.state_dir)
    snap = os.path.join(agent.state_dir, "store.snapshot")
    with open(snap, "wb") as f:
        f.write(b"FWSNAP1\n" + b"\x00" * 40)
    agent.start()
    assert "unreadable" in agent.log()
    aside = [n for n in os.listdir(agent.state_dir) if n.startswith("store.snapshot.corrupt-")]
    assert len(aside) == 1
    assert agent.metrics()["forewarn_store_series"][0][1] > 0


def test_invalid_config_at_start_exits_1_with_position(agent_factory):
    agent = agent_factory(start=False)
    with open(agent.config_path, "w") as f:
        f.write("web:\n  listen_address: nowhere\n")
    agent.start(wait_ready=False)
    assert agent.proc.wait(timeout=30) == 1
    assert f"{agent.config_path}:2:19: web.listen_address: not a valid listen address" in agent.log()


def test_a_stop_during_the_restore_leaves_the_snapshot_as_it_was(tmp_path):
    """SIGTERM sets stop_requested (forewarn run's handler); a restore polls it between chunks,
    start() returns at once and stop() does not overwrite the snapshot with an empty store."""
    cfg_path = tmp_path / "forewarn.yml"
    cfg_path.write_text(f"global: {{state_dir: {tmp_path / 'state'}}}\nsystem: {{enabled: false}}\n"
                        "web: {listen_address: '127.0.0.1:0'}\nrule_files: []\n")
    os.makedirs(tmp_path / "state")
    old = Store(raw_capacity=8)
    old.append_samples([(make_labels("m", {"i": str(i)}), 1.0) for i in range(100)], 1000.0)
    snap = str(tmp_path / "state" / "store.snapshot")
    old.save(snap)
    data = open(snap, "rb").read()
    agent = Agent(load_config(str(cfg_path)))
    agent.stop_requested.set()
    agent.start()
    assert agent.restore_interrupted and agent.web is None  # nothing was started
    agent.stop()
    assert open(snap, "rb").read() == data
