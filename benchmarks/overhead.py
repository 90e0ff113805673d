"""Resource overhead: the agent on the shipped config beside a real node_exporter.

Both are scraped every 15 s (as Prometheus would); the agent also collects on its own
schedule. Prints each process's RSS and CPU seconds per minute of wall time.
Usage: python benchmarks/overhead.py [--seconds 150]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import requests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=150.0, help="measurement length (>= 120 for the issue)")
    ap.add_argument("--interval", type=float, default=15.0)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="forewarn-overhead-")
    agent_port, ne_port = free_port(), free_port()
    cfg = os.path.join(tmp, "forewarn.yml")
    shipped = open(os.path.join(REPO, "config", "forewarn.yml")).read()
    shipped = shipped.replace('listen_address: ":9469"', f'listen_address: "127.0.0.1:{agent_port}"')
    shipped = shipped.replace('rule_files: ["rules/*.yml"]', f'rule_files: ["{REPO}/rules/*.yml"]')
    shipped = shipped.replace("global:\n", f"global:\n  state_dir: {tmp}/state\n", 1)
    with open(cfg, "w") as f:
        f.write(shipped)
    forewarn = shutil.which("forewarn")
    cmd = [forewarn, "run", "--config", cfg] if forewarn else [sys.executable, "-m", "agent", "run", "--config", cfg]
    # Measure the agent as installed: with bytecode (pip compiles it). Compiling modules from
    # source at start costs several MB that stay in the heap, which a checkout under
    # PYTHONDONTWRITEBYTECODE would otherwise pay at every start.
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(REPO, "agent")], check=False,
                   stdout=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", "import agent.commands.run"], env=env, check=False, cwd=REPO)
    agent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "agent.log"), "wb"), env=env)
    ne = subprocess.Popen(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{ne_port}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{agent_port}/-/ready")
        wait_http(f"http://127.0.0.1:{ne_port}/metrics")
        time.sleep(2 * args.interval)  # warm-up: first collections, imports, caches
        procs = {"forewarn": agent.pid, "node_exporter": ne.pid}
        start_cpu = {k: cpu_seconds(p) for k, p in procs.items()}
        peak = {k: rss_mb(p) for k, p in procs.items()}
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            for port in (agent_port, ne_port):
                requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
            for k, p in procs.items():
                peak[k] = max(peak[k], rss_mb(p))
            time.sleep(args.interval)
        wall_min = (time.monotonic() - t0) / 60
        series = requests.get(f"http://127.0.0.1:{agent_port}/metrics", timeout=10).text.count("\n")
        print(f"overhead over {wall_min * 60:.0f} s at a {args.interval:.0f} s interval "
              f"(agent /metrics: {series} lines; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
        print(f"{'process':<15} {'RSS now MB':>10} {'RSS peak MB':>12} {'CPU s/min':>10} {'% of a core':>12}")
        for k, p in procs.items():
            cpu_per_min = (cpu_seconds(p) - start_cpu[k]) / wall_min
            print(f"{k:<15} {rss_mb(p):>10.1f} {peak[k]:>12.1f} {cpu_per_min:>10.3f} {100 * cpu_per_min / 60:>11.2f}%")
        for c in children(agent.pid):
            print(f"{'  worker ' + str(c):<15} {rss_mb(c):>10.1f} {'':>12} {'(refit worker: statsmodels fits, niced)'}")
        print("targets for the agent's main process: RSS <= 60 MB, < 1% of one core")
    finally:
        for p in (agent, ne):
            p.terminate()
            p.wait(timeout=15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
