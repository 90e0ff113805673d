"""`forewarn run`: the daemon's command line: logging, checks of the flags, signals, and the
main thread's wait loop around `agent.daemon.Agent`. Like every command, nothing imports it."""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from agent import allocator
from agent.config.schema import ConfigErrors, load_config, parse_listen_address, parse_shard
from agent.daemon import Agent

log = logging.getLogger("forewarn")


def setup_logging(level: str) -> None:
    """logfmt lines on stderr, like Prometheus (journald adds its own timestamps)."""
    lvl = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}[level]

    class Logfmt(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
            msg = record.getMessage().replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            line = f'ts={ts} level={record.levelname.lower()} logger={record.name} msg="{msg}"'
            if record.exc_info:
                line += ' err="' + self.formatException(record.exc_info).replace('"', "'").replace("\n", "\\n") + '"'
            return line

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Logfmt())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


class Reloads:
    """SIGHUP's reloads, on a thread of their own: the main thread stays free to act on SIGTERM
    while a reload reads and checks files (a slow one must not hold up a stop). A SIGHUP during
    a reload asks for one more after it, so the last change is always read."""

    def __init__(self, reload: Callable[[], object]) -> None:
        self.reload = reload
        self.pending = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def request(self) -> None:
        with self.lock:
            self.pending.set()
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="reload", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            with self.lock:
                if not self.pending.is_set():
                    self.thread = None
                    return
                self.pending.clear()
            try:
                self.reload()
            except Exception:  # Agent.reload reports its own failures; this is the net under it
                log.exception("reload failed")


def command(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    allocator.tune()
    try:
        cfg = load_config(args.config)
    except ConfigErrors as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        return 1
    if args.shard and not parse_shard(args.shard):
        print(f"forewarn: error: --shard: not a valid shard {args.shard!r} (want i/n with 0 <= i < n)",
              file=sys.stderr)
        return 2
    if args.listen_address:
        try:
            parse_listen_address(args.listen_address)
        except ValueError as e:
            print(f"forewarn: error: --web.listen-address: {e}", file=sys.stderr)
            return 2
    agent = Agent(cfg, args.listen_address, args.shard, enable_lifecycle=args.enable_lifecycle,
                  enable_admin_api=args.enable_admin_api, web_config_file=args.web_config_file)
    signals: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signals.append(signum)
        if signum != signal.SIGHUP:
            agent.stop_requested.set()  # a snapshot restore in progress ends at once

    # A process-directed signal may land on a worker thread; CPython then runs the handler only
    # when the main thread next executes bytecode. Its C handler also writes the signal's number
    # to the wakeup fd, whichever thread took it: the main thread sleeps on that fd and nothing
    # else (it used to wake twice a second to look).
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_r, False)
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
    for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(handled, on_signal)
    try:
        agent.start()
    except (OSError, ValueError) as e:  # the port, the state directory, the web config file
        log.error("cannot start: %s", e)
        return 1
    reloads = Reloads(agent.reload)
    while True:
        select.select([wakeup_r], [], [])  # the handlers have run when it returns (PEP 475)
        try:
            while os.read(wakeup_r, 512):
                pass
        except BlockingIOError:
            pass
        while signals:
            s = signals.pop(0)
            if s == signal.SIGHUP:
                reloads.request()
            else:
                agent.stop()
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                # Worker threads may sit in a scrape until its timeout; the state is saved,
                # so leave now rather than let interpreter shutdown join them.
                os._exit(0)
