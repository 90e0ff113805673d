"""Ticket delivery: throughput and latency through the real outbox and webhook sink.

    python benchmarks/delivery.py [--problems N] [--rate R]

A local webhook receiver (tests/sinks/fake_webhook.py: checks the HMAC signature, drops
repeats by Idempotency-Key) on 127.0.0.1, always healthy. Prints:

- throughput: N problems x (open, update, clear) enqueued at once into a fresh outbox
  (SQLite WAL, fsync per commit), then delivered by one thread; actions per second from the
  first attempt to the empty outbox.
- latency: actions enqueued one by one at R per second while one delivery thread loops
  (as the daemon's delivery job does, without its 1 s tick); p50/p99/max of the time from
  enqueue to the commit of the delivered state, and p99 of the HTTP exchange alone.

Each open costs one commit more than updates and clears: the in-flight mark committed before
the create is sent (the crash window's guard). The machine's load average is printed before
and after: on a shared machine the figures are only comparable at a similar load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.clock import WallClock
from agent.persistence import connect
from agent.tickets.outbox import Outbox
from agent.tickets.sinks.webhook import WebhookSink
from tests.sinks.fake_webhook import FakeWebhook
from tests.sinks.fakehttp import make_ticket

SECRET = "benchmark-secret"


class TimedSink:
    """Wraps a sink and records the duration of every exchange (seconds)."""

    def __init__(self, sink: WebhookSink) -> None:
        self.sink = sink
        self.durations: list[float] = []

    def _timed(self, fn, *args):
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.durations.append(time.perf_counter() - t)

    def find(self, key):
        return self.sink.find(key)

    def open(self, ticket):
        return self._timed(self.sink.open, ticket)

    def update(self, ref, ticket):
        return self._timed(self.sink.update, ref, ticket)

    def clear(self, ref, ticket):
        return self._timed(self.sink.clear, ref, ticket)


def make_outbox(workdir: str, url: str) -> tuple[Outbox, TimedSink]:
    cred = os.path.join(workdir, "secret")
    with open(cred, "w") as f:
        f.write(SECRET)
    sink = TimedSink(WebhookSink("hook", WebhookSink.Config(url=url, credentials_file=cred, timeout=5),
                                 state_dir=workdir))
    return Outbox(os.path.join(workdir, "outbox.db"), {"hook": sink}, WallClock()), sink


def tickets(prefix: str, problems: int):
    for i in range(problems):
        key = f"{prefix}-{i}"
        yield make_ticket("open", key)
        yield make_ticket("update", key)
        yield make_ticket("clear", key, resolve=True)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def throughput(url: str, problems: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        outbox, _ = make_outbox(d, url)
        for t in tickets("tp", problems):
            outbox.enqueue("hook", t)
        n = outbox.pending_count()
        start = time.perf_counter()
        while outbox.pending_count():
            outbox.deliver_due(budget=1000)
        elapsed = time.perf_counter() - start
        assert not outbox.dead_letters()
        outbox.close()
    print(f"throughput: {n} actions in {elapsed:.2f} s = {n / elapsed:.0f} actions/s")


def latency(url: str, problems: int, rate: float) -> None:
    with tempfile.TemporaryDirectory() as d:
        outbox, sink = make_outbox(d, url)
        stop = threading.Event()

        def deliver() -> None:
            while not stop.is_set():
                if outbox.deliver_due().attempted == 0:
                    time.sleep(0.001)

        worker = threading.Thread(target=deliver, daemon=True)
        worker.start()
        for t in tickets("lat", problems):
            outbox.enqueue("hook", t)
            time.sleep(1.0 / rate)
        while outbox.pending_count():
            time.sleep(0.01)
        stop.set()
        worker.join()
        conn = connect(os.path.join(d, "outbox.db"), readonly=True)
        lat = [r["done_at"] - r["enqueued_at"] for r in conn.execute(
            "SELECT enqueued_at, done_at FROM actions WHERE state='delivered'")]
        conn.close()
        outbox.close()
    ms = [x * 1000 for x in lat]
    ex = [x * 1000 for x in sink.durations]
    print(f"latency: {len(ms)} actions at {rate:.0f}/s, enqueue -> delivered: p50 {percentile(ms, 0.5):.1f} ms, "
          f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms; HTTP exchange p99 {percentile(ex, 0.99):.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=500, help="problems for the throughput run (3 actions each)")
    ap.add_argument("--rate", type=float, default=50.0, help="actions per second enqueued in the latency run")
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    with FakeWebhook(secret=SECRET) as receiver:
        throughput(receiver.hook_url, args.problems)
        latency(receiver.hook_url, max(1, args.problems // 5), args.rate)
        assert receiver.repeats == 0
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
