"""`forewarn silence` and `forewarn tickets` act on the running agent through its HTTP API, from
any working directory: a daemon started in one directory (its state in ./data there), the
command run from another with only the config, and the silence holds on the daemon's
problem. Without the admin API the command says how to enable it; an agent that does not
answer is reported with the way out (`--url`, `--offline`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.helpers import REPO, Exporter, free_port, wait_for


def forewarn(cwd: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "agent", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=env)


def test_silence_add_from_another_directory_silences_the_daemons_problem(tmp_path):
    exporter = Exporter(lambda e: f"# TYPE disk_errors gauge\ndisk_errors{{disk=\"sda\"}} {e.values['n']}\n", {"n": 0})
    daemon_dir, shell_dir = tmp_path / "srv", tmp_path / "home"
    daemon_dir.mkdir()
    shell_dir.mkdir()
    port = free_port()
    (daemon_dir / "rules.yml").write_text(textwrap.dedent("""\
        groups:
          - name: disks
            interval: 1s
            rules:
              - alert: DiskErrors
                expr: disk_errors > 0
        """))
    # no state_dir: the daemon keeps its state in ./data of its own working directory
    (daemon_dir / "forewarn.yml").write_text(textwrap.dedent(f"""\
        global: {{scrape_interval: 1s, scrape_timeout: 1s}}
        web: {{listen_address: "127.0.0.1:{port}"}}
        system: {{collectors: [load]}}
        scrape_configs:
          - job_name: node
            static_configs: [{{targets: ["{exporter.address}"]}}]
        rule_files: [rules.yml]
        """))
    cfg = str(daemon_dir / "forewarn.yml")
    log = open(tmp_path / "agent.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", "forewarn.yml", "--web.enable-admin-api"],
                            cwd=daemon_dir, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=REPO))
    try:
        import requests

        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(base + "/-/ready", timeout=2).status_code == 200, timeout=60, what="agent ready")
        # --config after the action, from the other directory
        p = forewarn(str(shell_dir), "silence", "add", "alertname=DiskErrors", 'disk=~"sd.*"', "--duration", "1h",
                     "--comment", "replacing sda", "--author", "ana", "--config", cfg)
        assert p.returncode == 0, p.stderr
        sid = p.stdout.strip()
        assert len(sid) == 36 and base in p.stderr
        assert not (shell_dir / "data").exists(), "the command wrote a state directory of its own"
        p = forewarn(str(shell_dir), "silence", "--config", cfg, "list", "--json")
        (listed,) = json.loads(p.stdout)
        assert listed["id"] == sid and listed["status"]["state"] == "active" and listed["comment"] == "replacing sda"
        exporter.values["n"] = 3

        def silenced():
            ps = requests.get(base + "/api/v1/problems", timeout=5).json()["data"]["problems"]
            return ps and ps[0]["state"] == "silenced" and sid in ps[0]["detail"]

        wait_for(silenced, timeout=30, what="the problem silenced")
        p = forewarn(str(shell_dir), "tickets", "list", "--config", cfg)
        assert p.returncode == 0 and "no tickets" in p.stdout, p.stdout + p.stderr
        p = forewarn(str(shell_dir), "silence", "expire", sid[:8], "--url", base)
        assert p.returncode == 0 and f"expired {sid}" in p.stdout, p.stderr

        def ticket():
            p = forewarn(str(shell_dir), "tickets", "--url", base, "list", "--json")
            return json.loads(p.stdout)["tickets"] if p.returncode == 0 else None

        (t,) = wait_for(ticket, timeout=30, what="a ticket once the silence expired")
        p = forewarn(str(shell_dir), "tickets", "show", t["id"], "--url", base)
        assert p.returncode == 0 and "Rule: DiskErrors" in p.stdout
        p = forewarn(str(shell_dir), "tickets", "outbox", "--url", base)
        assert p.returncode == 0 and "0 pending" in p.stdout, p.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        exporter.close()
    assert (daemon_dir / "data" / "silences.json").exists()


def test_refusals_say_what_to_do(agent_factory, tmp_path):
    agent = agent_factory("system:\n  collectors: [load]\n")
    p = forewarn(str(tmp_path), "silence", "add", "alertname=X", "--config", agent.config_path)
    assert p.returncode == 1 and "HTTP 403" in p.stderr and "--web.enable-admin-api" in p.stderr
    p = forewarn(str(tmp_path), "silence", "list", "--url", f"http://127.0.0.1:{free_port()}")
    assert p.returncode == 1 and "cannot reach the agent" in p.stderr and "--offline" in p.stderr
    p = forewarn(str(tmp_path), "tickets", "show", "42", "--config", agent.config_path)
    assert p.returncode == 1 and "no ticket 42" in p.stderr
