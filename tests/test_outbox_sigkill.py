"""The outbox survives SIGKILL at any moment during delivery.

A child process delivers the outbox to a slow HTTP receiver (a tiny webhook-like ticket tool
whose `find` the sink consults, like a real tool); it is SIGKILLed at random moments and
restarted, several times. At the end the receiver's raw log (no deduplication on its side)
shows exactly one open per problem, every action of every problem, in order. Updates and
clears are at-least-once: a kill between the tool's answer and the commit re-sends them,
which shows as an adjacent repeat of the same sequence, never as a gap or a reordering.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import requests

from agent.clock import WallClock
from agent.tickets.outbox import Outbox
from agent.tickets.sinks.base import Ticket, check_response, network_error

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBLEMS = 20
ACTIONS = ["open", "update", "update", "clear"]


class HookSink:
    """Webhook-like test sink: one HTTP exchange per call, `find` asks the receiver."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()

    def _call(self, method: str, path: str, what: str, **kw) -> requests.Response:
        try:
            resp = self.session.request(method, self.url + path, timeout=5, **kw)
        except requests.RequestException as e:
            raise network_error(what, e) from None
        if resp.status_code == 404 and method == "GET":
            return resp
        check_response(resp, what)
        return resp

    def find(self, dedup_key: str) -> str | None:
        r = self._call("GET", "/tickets", "find", params={"dedup_key": dedup_key})
        return None if r.status_code == 404 else str(r.json()["id"])

    def open(self, ticket: Ticket) -> str:
        r = self._call("POST", "/tickets", "open", json=ticket.to_json())
        return str(r.json()["id"])

    def update(self, ref: str, ticket: Ticket) -> None:
        self._call("POST", f"/tickets/{ref}/events", "update", json=ticket.to_json())

    def clear(self, ref: str, ticket: Ticket) -> None:
        self._call("POST", f"/tickets/{ref}/events", "clear", json=ticket.to_json())


class Receiver:
    """The tool: records every request raw, then answers slowly (the kill window)."""

    def __init__(self, seed: int) -> None:
        self.lock = threading.Lock()
        self.raw: list[tuple[str, str, int]] = []  # (dedup_key, action, sequence), as received
        self.tickets: dict[int, dict] = {}
        self.rng = random.Random(seed)
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:
                pass

            def _send(self, code: int, body: dict | None = None) -> None:
                data = json.dumps(body or {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                u = urlparse(self.path)
                key = parse_qs(u.query).get("dedup_key", [""])[0]
                with rec.lock:
                    hits = [i for i, t in rec.tickets.items() if t["key"] == key and t["open"]]
                self._send(200, {"id": hits[0]}) if hits else self._send(404)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with rec.lock:
                    rec.raw.append((body["dedup_key"], body["action"], body["sequence"]))
                    if self.path == "/tickets":
                        tid = len(rec.tickets) + 1
                        rec.tickets[tid] = {"key": body["dedup_key"], "open": True, "events": [body["sequence"]]}
                        answer = {"id": tid}
                    else:
                        tid = int(self.path.split("/")[2])
                        t = rec.tickets[tid]
                        t["events"].append(body["sequence"])
                        if body["action"] == "clear" and body["resolve"]:
                            t["open"] = False
                        answer = {}
                    # opens answer slowest: most kills land between the tool creating a ticket
                    # and the outbox recording it, the window `find` must cover
                    delay = rec.rng.uniform(0.05, 0.12) if self.path == "/tickets" else rec.rng.uniform(0.01, 0.04)
                time.sleep(delay)  # the tool has acted; the answer is still on its way
                self._send(201 if self.path == "/tickets" else 200, answer)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                pass  # the killed client's connection is gone when the slow answer goes out

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def child_main(state_dir: str, url: str) -> int:
    """Deliver until the outbox is empty (the process under test)."""
    ob = Outbox(os.path.join(state_dir, "outbox.db"), {"hook": HookSink(url)}, WallClock(),
                base_backoff=0.05, max_backoff=0.2)
    while ob.pending_count():
        if ob.deliver_due(budget=5).attempted == 0:
            time.sleep(0.01)
    return 0


def _start_child(state_dir: str, url: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.test_outbox_sigkill", state_dir, url], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_during_delivery_every_action_once_in_order(tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    rec = Receiver(seed)
    try:
        ob = Outbox(str(tmp_path / "outbox.db"), {}, WallClock())
        for i in range(PROBLEMS):
            for seq, action in enumerate(ACTIONS, 1):
                t = Ticket(dedup_key=f"problem-{i:02d}", action=action, sequence=seq, title=f"p{i}",  # type: ignore[arg-type]
                           body="b", rule="R", resolve=True)
                assert ob.enqueue("hook", t)
        ob.close()

        kills = 0
        for _ in range(12):
            child = _start_child(str(tmp_path), rec.url)
            time.sleep(rng.uniform(0.3, 0.9))
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
                kills += 1
            child.wait(timeout=30)
            if kills >= 5:
                break
        child = _start_child(str(tmp_path), rec.url)
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()[-2000:]
        assert kills >= 3, f"seed {seed}: too few kills landed during delivery"

        with rec.lock:
            raw = list(rec.raw)
            tickets = dict(rec.tickets)
        keys = [f"problem-{i:02d}" for i in range(PROBLEMS)]
        opens = [k for k, a, _ in raw if a == "open"]
        assert sorted(opens) == keys, f"seed {seed}: raw opens {sorted(opens)}"  # exactly one open each
        assert len(tickets) == PROBLEMS
        for k in keys:
            seqs = [s for kk, _, s in raw if kk == k]
            assert seqs == sorted(seqs), f"seed {seed}: {k} delivered out of order: {seqs}"
            assert set(seqs) == {1, 2, 3, 4}, f"seed {seed}: {k} missing actions: {seqs}"
        for t in tickets.values():
            assert t["events"] == sorted(t["events"]) and set(t["events"]) == {1, 2, 3, 4} and not t["open"]
        repeats = len(raw) - PROBLEMS * len(ACTIONS)
        db = sqlite3.connect(tmp_path / "outbox.db")
        recovered = db.execute("SELECT COUNT(*) FROM actions WHERE outcome='recovered'").fetchone()[0]
        assert db.execute("SELECT COUNT(*) FROM actions WHERE state!='delivered'").fetchone()[0] == 0
        print(f"seed {seed}: {kills} kills, {len(raw)} raw deliveries, {repeats} re-sent updates/clears,"
              f" {recovered} opens recovered through find")
    finally:
        rec.close()


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1], sys.argv[2]))



