"""The remediation runner: the policy that decides whether a step may run, the worker
threads that run it, and the record of every attempt in `state_dir/remediations.db`.

A *run* is what one problem episode gets: the remediations its rule names, in order, each an
*attempt* (one row), stopping at the first that does not succeed. `plan` says whether a run
may start now (or why not: the kill switch, a rate limit, the cool-down, a remediation no
longer defined); `launch` records every step as `running` *before* anything is executed
(launches are at-least-once: a crash leaves rows that say so, marked `interrupted` at the
next start) and hands the run to a worker thread; `run` reads where it stands.

Policy, per remediation (its settings in the main config):
- at most `max_attempts` in `rate_window` over all problems, and `max_attempts_per_problem`
  for one problem (dedup key);
- at least `cooldown` between two attempts for one problem;
- one run at a time per problem (a problem in a run is not planned again);
- nothing while the kill switch is off (`remediation.enabled: false` in the config, or
  `POST /api/v1/remediation/disable`, which is remembered across restarts until enabled);
- `dry_run`: the run is recorded with what it would have done, nothing is executed.
Silences and maintenance windows come before: a suppressed problem never reaches `plan`.

`execute=False` never runs anything: each step is recorded with the outcome the caller set
(default succeeded) at the time it was launched, with `not_executed` saying why. forewarn
test and backtest run so, and so does every agent of an HA pair but the first: the first
agent runs the step, the others record it as done by the first and verify the rule as it
does, so the pair makes one run and, through the outbox's HA exchange, one ticket.

Like the rest of tickets, this module never imports rules, models, PromQL, sources or web.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.clock import Clock, human_time
from agent.config.decode import format_duration
from agent.metrics import CounterMetricFamily, GaugeMetricFamily, Histogram, Metric, Registry
from agent.persistence import Transaction, connect, migrate, open_or_move_aside
from agent.tickets.remediation.base import CommonSettings, ExpansionError, Kind, Outcome, Request, Status, redact

log = logging.getLogger(__name__)

REMEDIATIONS_FILE = "remediations.db"
ATTEMPT_RETENTION = 30 * 86400.0  # attempts are kept this long (longer than any rate window)
MAX_QUEUED_RUNS = 100  # runs waiting for a worker; beyond, plan says "busy"
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
OUTPUT_IN_TICKET = 2000  # bytes of an attempt's output quoted in a ticket

MIGRATIONS = (
    """
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,           -- the id of the run's first attempt
    step INTEGER NOT NULL,             -- 0-based position in the rule's remediate list
    dedup_key TEXT NOT NULL,
    rule TEXT NOT NULL,
    remediation TEXT NOT NULL,
    description TEXT NOT NULL,         -- what it does, in one line (templates expanded)
    status TEXT NOT NULL,              -- running | succeeded | failed | timed_out | error | interrupted | dry_run
    detail TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    exit_code INTEGER,
    http_status INTEGER,
    reference TEXT NOT NULL,
    output TEXT NOT NULL               -- redacted, truncated
);
CREATE INDEX IF NOT EXISTS attempts_by_key ON attempts (dedup_key, remediation, started_at);
CREATE INDEX IF NOT EXISTS attempts_by_remediation ON attempts (remediation, started_at);
CREATE TABLE IF NOT EXISTS switch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    enabled INTEGER NOT NULL,
    changed_at REAL NOT NULL,
    reason TEXT NOT NULL
);
""",
)

# Outcomes of a run, as the decision reads them
FAILED_STATUSES = (Status.FAILED, Status.TIMED_OUT, Status.ERROR, Status.INTERRUPTED)


@dataclass(frozen=True)
class Attempt:
    """One step of a run, as recorded."""

    id: int
    run_id: int
    step: int
    dedup_key: str
    rule: str
    remediation: str
    description: str
    status: Status
    detail: str
    started_at: float
    finished_at: float | None
    exit_code: int | None = None
    http_status: int | None = None
    reference: str = ""
    output: str = ""

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "run_id": self.run_id, "step": self.step, "dedup_key": self.dedup_key,
                "rule": self.rule, "remediation": self.remediation, "description": self.description,
                "status": str(self.status), "detail": self.detail, "started_at": self.started_at,
                "finished_at": self.finished_at, "exit_code": self.exit_code, "http_status": self.http_status,
                "reference": self.reference, "output": self.output}


@dataclass(frozen=True)
class Run:
    """The attempts of one run and where it stands: `running` until every step finished or
    one did not succeed; then the status of the last step that ran."""

    run_id: int
    attempts: tuple[Attempt, ...]
    when: str  # before | alongside
    verify: float  # seconds the rule is watched after success
    on_recovery: str  # no_ticket | record

    @property
    def status(self) -> Status:
        for a in self.attempts:
            if a.status != Status.SUCCEEDED:
                return a.status
        return Status.SUCCEEDED

    @property
    def finished_at(self) -> float | None:
        if self.status == Status.RUNNING:
            return None
        return max((a.finished_at or a.started_at) for a in self.attempts)

    @property
    def names(self) -> list[str]:
        return [a.remediation for a in self.attempts]

    def summary(self) -> str:
        """One line: what ran and how it ended."""
        parts = []
        for a in self.attempts:
            took = f", {a.finished_at - a.started_at:.1f} s" if a.finished_at is not None else ""
            parts.append(f"{a.remediation} {a.status}" + (f" ({a.detail}{took})" if a.detail else ""))
            if a.status != Status.SUCCEEDED:
                break
        return "; ".join(parts)

    def record(self) -> str:
        """The run for a ticket: each step, when, what it did, how it ended, and the end of its
        output."""
        lines = []
        for a in self.attempts:
            took = f" in {a.finished_at - a.started_at:.1f} s" if a.finished_at is not None else ""
            lines.append(f"- {a.remediation} at {human_time(a.started_at)}: {a.description}")
            lines.append(f"  {a.status}{took}" + (f": {a.detail}" if a.detail else ""))
            if a.reference:
                lines.append(f"  job: {a.reference}")
            if a.output.strip():
                out = a.output.strip()
                if len(out) > OUTPUT_IN_TICKET:
                    out = "[...]\n" + out[-OUTPUT_IN_TICKET:]
                lines += ["  output:", *("    " + line for line in out.splitlines())]
            if a.status not in (Status.SUCCEEDED, Status.RUNNING):
                break
        return "\n".join(lines)


@dataclass(frozen=True)
class Plan:
    """A run may start: the remediations in order, and whether it goes before the ticket
    (the first step's `when`)."""

    names: tuple[str, ...]
    when: str
    dry_run: bool = False


@dataclass(frozen=True)
class Governing:
    """The settings that govern a run of several steps: the first step's `when` and
    `on_recovery`, the longest `verify` (defaults for steps no longer defined)."""

    when: str
    verify: float
    on_recovery: str

    @classmethod
    def of(cls, defs: Sequence[CommonSettings | None]) -> Governing:
        known = [d for d in defs if d is not None] or [CommonSettings()]
        return cls(known[0].when, max(float(d.verify) for d in known), known[0].on_recovery)


@dataclass(frozen=True)
class Skip:
    """No run: why (for the ticket and the log), and the metric's reason label."""

    names: tuple[str, ...]
    reason: str
    kind: str  # disabled | rate_limit | cooldown | undefined | busy


@dataclass
class RemediationSettings:
    """What the runner needs of the config's `remediation:` section."""

    enabled: bool = True
    dry_run: bool = False
    max_concurrent: int = 2
    definitions: Mapping[str, CommonSettings] = field(default_factory=dict)


@dataclass(frozen=True)
class SwitchState:
    enabled: bool
    changed_at: float
    reason: str


class RemediationRunner:
    """See the module docstring. `kinds` maps each defined name to its built kind."""

    def __init__(self, settings: RemediationSettings, kinds: Mapping[str, Kind], state_dir: str, clock: Clock,
                 *, execute: bool = True, simulated: Mapping[str, Status] | None = None,
                 not_executed: str = "not executed (forewarn test/backtest)") -> None:
        self.settings = settings
        self.kinds = dict(kinds)
        self.clock = clock
        self.execute = execute
        self.simulated = dict(simulated or {})
        self.not_executed = not_executed
        self.path = f"{state_dir.rstrip('/')}/{REMEDIATIONS_FILE}"
        self._lock = threading.RLock()
        self._conn, _ = open_or_move_aside(self.path, self._setup, "remediation record")
        self._queue: queue.Queue[tuple[int, list[Attempt], Callable[[str], str]] | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._attempts_total: Counter[tuple[str, str]] = Counter()
        self._skipped_total: Counter[tuple[str, str]] = Counter()
        self._durations = Histogram("forewarn_remediation_duration_seconds",
                                    "Time from an attempt's start to its end.", ["remediation"],
                                    Registry(), buckets=DURATION_BUCKETS)
        self._last_gc = 0.0
        self._mark_interrupted()

    # ---- set-up ------------------------------------------------------------------------------

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> sqlite3.Connection:
        migrate(conn, MIGRATIONS, "remediations.db")
        return conn

    def _mark_interrupted(self) -> None:
        """Attempts left `running` by a previous process: their result is unknown."""
        with self._lock, Transaction(self._conn) as c:
            n = c.execute("UPDATE attempts SET status=?, detail=?, finished_at=COALESCE(finished_at, ?) "
                          "WHERE status=?", (Status.INTERRUPTED.value,
                                             "the agent stopped while it ran; its result is unknown",
                                             self.clock.now(), Status.RUNNING.value)).rowcount
        if n:
            log.warning("remediation: %d attempts were running when the agent stopped: marked interrupted", n)

    def start(self) -> None:
        """Start the worker threads (the daemon; replays never execute). Also done by the
        first launch, so an agent without remediations runs no thread for them."""
        if not self.execute or self._threads or self._stop.is_set():
            return
        for i in range(max(1, self.settings.max_concurrent)):
            t = threading.Thread(target=self._work, name=f"remediation-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def close(self, wait: float = 10.0) -> None:
        """Stop: running steps are cancelled (a process group killed, a job cancelled) and
        recorded as interrupted; queued runs are marked interrupted. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + wait
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        with self._lock:
            self._mark_interrupted()
            self._conn.close()

    def reconfigure(self, settings: RemediationSettings, kinds: Mapping[str, Kind]) -> None:
        """A reload: new definitions for what starts from now on (a step already running
        finishes as it started)."""
        self.settings = settings
        self.kinds = dict(kinds)

    # ---- the kill switch ---------------------------------------------------------------------

    def switch(self) -> SwitchState:
        """Whether new runs may start: the config's `enabled` and the API's switch."""
        with self._lock:
            return read_switch(self._conn, self.settings.enabled)

    def set_enabled(self, enabled: bool, reason: str) -> SwitchState:
        """The API's kill switch, remembered across restarts. Running steps are not stopped."""
        with self._lock:
            write_switch(self._conn, enabled, self.clock.now(), reason)
        log.warning("remediation %s through the API: %s", "enabled" if enabled else "DISABLED", reason or "-")
        return self.switch()

    # ---- policy ------------------------------------------------------------------------------

    def plan(self, names: Sequence[str], dedup_key: str, now: float | None = None) -> Plan | Skip:
        """Whether a run of `names` may start now for the problem `dedup_key`."""
        now = self.clock.now() if now is None else now
        names = tuple(names)
        with self._lock:  # the workers write the attempts through the same connection
            skip = self._why_not(names, dedup_key, now)
        if skip is not None:
            for n in names:
                self._skipped_total[(n, skip.kind)] += 1
            log.info("remediation %s for %s not attempted: %s", ", ".join(names), dedup_key, skip.reason)
            return skip
        return Plan(names, self.settings.definitions[names[0]].when, dry_run=self.settings.dry_run)

    def _why_not(self, names: tuple[str, ...], key: str, now: float) -> Skip | None:
        undefined = [n for n in names if n not in self.settings.definitions or n not in self.kinds]
        if undefined:
            return Skip(names, f"{', '.join(undefined)} not defined in the config", "undefined")
        sw = self.switch()
        if not sw.enabled:
            return Skip(names, f"remediation is switched off ({sw.reason or 'kill switch'})", "disabled")
        if self._queue.qsize() >= MAX_QUEUED_RUNS:
            return Skip(names, f"{MAX_QUEUED_RUNS} runs already wait for a worker", "busy")
        for n in names:
            d = self.settings.definitions[n]
            since = now - float(d.rate_window)
            counted = (Status.DRY_RUN.value,)  # dry runs do not use the budget
            q = "SELECT COUNT(*), MAX(started_at) FROM attempts WHERE remediation=? AND started_at>? AND status NOT IN (?)"
            total = self._conn.execute(q, (n, since, *counted)).fetchone()[0]
            if total >= d.max_attempts:
                return Skip(names, f"{n} ran {total} times in the last {format_duration(d.rate_window)} "
                                   f"(max_attempts {d.max_attempts})", "rate_limit")
            row = self._conn.execute(q.replace("remediation=?", "remediation=? AND dedup_key=?"),
                                     (n, key, since, *counted)).fetchone()
            if row[0] >= d.max_attempts_per_problem:
                return Skip(names, f"{n} ran {row[0]} times for this problem in the last {format_duration(d.rate_window)} "
                                   f"(max_attempts_per_problem {d.max_attempts_per_problem})", "rate_limit")
            last = self._conn.execute("SELECT MAX(started_at) FROM attempts WHERE remediation=? AND dedup_key=? "
                                      "AND status NOT IN (?)", (n, key, *counted)).fetchone()[0]
            if last is not None and now - last < float(d.cooldown):
                return Skip(names, f"{n} ran for this problem at {human_time(last)}, within its cool-down of "
                                   f"{format_duration(d.cooldown)}; it did not keep the problem away", "cooldown")
            running = self._conn.execute("SELECT COUNT(*) FROM attempts WHERE dedup_key=? AND status=?",
                                         (key, Status.RUNNING.value)).fetchone()[0]
            if running:
                return Skip(names, "a run for this problem is still in progress", "busy")
        return None

    # ---- runs ---------------------------------------------------------------------------------

    def launch(self, plan: Plan, dedup_key: str, rule: str, expand: Callable[[str], str],
               now: float | None = None) -> int:
        """Record the run's steps and start it; returns its run id. A dry run (or a replay) is
        recorded finished at once."""
        now = self.clock.now() if now is None else now
        rows = []
        for step, n in enumerate(plan.names):
            kind = self.kinds[n]
            try:
                description = redact(kind.describe(expand), kind.secrets())
            except ExpansionError as e:  # the step will fail the same way, and say so
                description = f"{n} ({e})"
            rows.append((step, n, description))
        status, detail = Status.RUNNING, ""
        if plan.dry_run:
            status, detail = Status.DRY_RUN, "dry run: not executed (remediation.dry_run)"
        with self._lock, Transaction(self._conn) as c:
            run_id = 0
            for step, n, description in rows:
                cur = c.execute("INSERT INTO attempts (run_id, step, dedup_key, rule, remediation, description, status, "
                                "detail, started_at, finished_at, reference, output) VALUES (?,?,?,?,?,?,?,?,?,?,'','')",
                                (run_id, step, dedup_key, rule, n, description, status.value, detail, now,
                                 now if status != Status.RUNNING else None))
                if step == 0:
                    run_id = int(cur.lastrowid or 0)
                    c.execute("UPDATE attempts SET run_id=? WHERE id=?", (run_id, run_id))
        # a replay's runs are simulated: not worth a warning in `forewarn test` output
        log.log(logging.WARNING if self.execute else logging.INFO, "remediation run %d for %s (%s): %s%s", run_id,
                rule, dedup_key, "; ".join(d for _, _, d in rows), " [dry run]" if plan.dry_run else "")
        if plan.dry_run:
            for n in plan.names:
                self._attempts_total[(n, Status.DRY_RUN.value)] += 1
            return run_id
        attempts = list(self._attempts(run_id))
        if not self.execute:
            self._simulate(attempts, now)
        else:
            self.start()
            self._queue.put((run_id, attempts, expand))
        return run_id

    def _simulate(self, attempts: list[Attempt], now: float) -> None:
        for a in attempts:
            status = self.simulated.get(a.remediation, Status.SUCCEEDED)
            self._finish(a, Outcome(status, detail=f"{status}: {self.not_executed}"), now)
            if status != Status.SUCCEEDED:
                self._abandon(attempts[a.step + 1:], "not run: an earlier step did not succeed", now)
                break

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            run_id, attempts, expand = item
            try:
                self._run_steps(attempts, expand)
            except Exception:  # a bug in a kind must not take the worker down
                log.exception("remediation run %d failed", run_id)
                self._abandon(attempts, "internal error (see the agent's log)", self.clock.now(), Status.ERROR)

    def _run_steps(self, attempts: list[Attempt], expand: Callable[[str], str]) -> None:
        for i, a in enumerate(attempts):
            if self._stop.is_set():
                self._abandon(attempts[i:], "the agent stopped before this step ran", self.clock.now(),
                              Status.INTERRUPTED)
                return
            kind = self.kinds.get(a.remediation)
            if kind is None:
                self._abandon(attempts[i:], f"{a.remediation} is no longer defined", self.clock.now(), Status.ERROR)
                return
            started = time.monotonic()
            request = Request(expand=expand, deadline=started + float(kind.config.timeout), cancel=self._stop,
                              max_output_bytes=int(kind.config.max_output_bytes))
            try:
                outcome = kind.run(request)
            except ExpansionError as e:
                outcome = Outcome(Status.ERROR, detail=f"not run: {e}")
            except Exception as e:
                log.exception("remediation %s raised", a.remediation)
                outcome = Outcome(Status.ERROR, detail=f"internal error: {type(e).__name__}")
            if self._stop.is_set() and outcome.status != Status.SUCCEEDED:
                outcome.status = Status.INTERRUPTED
            self._durations.labels(a.remediation).observe(time.monotonic() - started)
            self._finish(a, outcome, self.clock.now(), kind)
            if outcome.status != Status.SUCCEEDED:
                self._abandon(attempts[i + 1:], "not run: an earlier step did not succeed", self.clock.now())
                return

    def _finish(self, a: Attempt, o: Outcome, now: float, kind: Kind | None = None) -> None:
        secrets = kind.secrets() if kind is not None else []
        output, detail = redact(o.output, secrets), redact(o.detail, secrets)
        with self._lock, Transaction(self._conn) as c:
            c.execute("UPDATE attempts SET status=?, detail=?, finished_at=?, exit_code=?, http_status=?, "
                      "reference=?, output=? WHERE id=?",
                      (o.status.value, detail, now, o.exit_code, o.http_status, redact(o.reference, secrets),
                       output, a.id))
        self._attempts_total[(a.remediation, o.status.value)] += 1
        level = logging.INFO if o.status == Status.SUCCEEDED or not self.execute else logging.WARNING
        log.log(level, "remediation %s for %s: %s%s", a.remediation, a.dedup_key, o.status,
                f" ({detail})" if detail else "")

    def _abandon(self, attempts: Sequence[Attempt], why: str, now: float, status: Status = Status.ERROR) -> None:
        """Steps that will not run (an earlier one failed, the agent stops)."""
        if not attempts:
            return
        with self._lock, Transaction(self._conn) as c:
            for a in attempts:
                c.execute("UPDATE attempts SET status=?, detail=?, finished_at=? WHERE id=? AND status=?",
                          (status.value, why, now, a.id, Status.RUNNING.value))

    # ---- reading ------------------------------------------------------------------------------

    def _attempts(self, run_id: int) -> Iterable[Attempt]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM attempts WHERE run_id=? ORDER BY step", (run_id,)).fetchall()
        return [_attempt(r) for r in rows]

    def run(self, run_id: int | None) -> Run | None:
        """A run by id (None: unknown, as after its record was lost)."""
        if run_id is None:
            return None
        attempts = tuple(self._attempts(run_id))
        if not attempts:
            return None
        g = Governing.of([self.settings.definitions.get(a.remediation) for a in attempts])
        return Run(run_id, attempts, g.when, g.verify, g.on_recovery)

    def history(self, dedup_key: str | None = None, limit: int = 100) -> list[Attempt]:
        """The latest attempts, newest first (of one problem, or of all)."""
        q, args = "SELECT * FROM attempts", tuple[str, ...]()
        if dedup_key is not None:
            q, args = q + " WHERE dedup_key=?", (dedup_key,)
        with self._lock:
            rows = self._conn.execute(q + " ORDER BY id DESC LIMIT ?", (*args, int(limit))).fetchall()
        return [_attempt(r) for r in rows]

    def gc(self, now: float | None = None) -> None:
        """Forget attempts older than ATTEMPT_RETENTION (at most once an hour)."""
        now = self.clock.now() if now is None else now
        if now - self._last_gc < 3600:
            return
        self._last_gc = now
        with self._lock, Transaction(self._conn) as c:
            c.execute("DELETE FROM attempts WHERE started_at < ? AND status != ?",
                      (now - ATTEMPT_RETENTION, Status.RUNNING.value))

    # ---- metrics -------------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        attempts = CounterMetricFamily("forewarn_remediation_attempts", "Remediation attempts that ended, by status "
                                       "(dry_run: recorded, not executed).", labels=["remediation", "status"])
        for (n, st), v in sorted(self._attempts_total.items()):
            attempts.add_metric([n, st], v)
        yield attempts
        skipped = CounterMetricFamily("forewarn_remediation_skipped", "Runs a problem would have had but did not, "
                                      "by reason (disabled, rate_limit, cooldown, undefined, busy).",
                                      labels=["remediation", "reason"])
        for (n, why), v in sorted(self._skipped_total.items()):
            skipped.add_metric([n, why], v)
        yield skipped
        running = GaugeMetricFamily("forewarn_remediation_running", "Attempts running or waiting for a worker.",
                                    labels=["remediation"])
        with self._lock:
            rows = self._conn.execute("SELECT remediation, COUNT(*) AS n FROM attempts WHERE status=? "
                                      "GROUP BY remediation", (Status.RUNNING.value,)).fetchall()
        counts = {r["remediation"]: r["n"] for r in rows}
        for n in sorted(set(self.settings.definitions) | set(counts)):
            running.add_metric([n], counts.get(n, 0))
        yield running
        yield GaugeMetricFamily("forewarn_remediation_enabled", "1 when remediations may start (the config's "
                                "remediation.enabled and the API's kill switch), else 0.",
                                value=1.0 if self.switch().enabled else 0.0)
        yield GaugeMetricFamily("forewarn_remediation_dry_run", "1 when remediations are recorded, not executed.",
                                value=1.0 if self.settings.dry_run else 0.0)
        yield from self._durations.collect()


def read_switch(conn: sqlite3.Connection, config_enabled: bool = True) -> SwitchState:
    """The kill switch as stored (and as the config's `remediation.enabled` overrides it)."""
    row = conn.execute("SELECT enabled, changed_at, reason FROM switch WHERE id=1").fetchone()
    if not config_enabled:
        return SwitchState(False, row["changed_at"] if row else 0.0, "remediation.enabled is false in the config")
    if row is not None and not row["enabled"]:
        return SwitchState(False, row["changed_at"], row["reason"])
    return SwitchState(True, row["changed_at"] if row else 0.0, row["reason"] if row else "")


def write_switch(conn: sqlite3.Connection, enabled: bool, now: float, reason: str) -> None:
    with Transaction(conn) as c:
        c.execute("INSERT INTO switch (id, enabled, changed_at, reason) VALUES (1, ?, ?, ?) "
                  "ON CONFLICT (id) DO UPDATE SET enabled=excluded.enabled, changed_at=excluded.changed_at, "
                  "reason=excluded.reason", (int(enabled), now, reason))


def set_switch_offline(state_dir: str, enabled: bool | None, reason: str, now: float,
                       config_enabled: bool = True) -> SwitchState:
    """Read (`enabled` None) or set the kill switch in a stopped agent's state directory
    (`forewarn remediation --offline`); the attempts are left as they are."""
    conn = connect(f"{state_dir.rstrip('/')}/{REMEDIATIONS_FILE}")
    try:
        migrate(conn, MIGRATIONS, "remediations.db")
        if enabled is not None:
            write_switch(conn, enabled, now, reason)
        return read_switch(conn, config_enabled)
    finally:
        conn.close()


class SimulatedKind:
    """A remediation in a replay (forewarn test, backtest): described, never run."""

    def __init__(self, name: str, config: CommonSettings) -> None:
        self.name = name
        self.config = config

    def describe(self, expand: Callable[[str], str]) -> str:
        return f"{self.name} (a replay: remediations are never executed there)"

    def run(self, request: Request) -> Outcome:
        raise RuntimeError("a replay never runs a remediation")

    def secrets(self) -> list[str]:
        return []


def simulated_runner(definitions: Mapping[str, CommonSettings], state_dir: str, clock: Clock,
                     outcomes: Mapping[str, Status] | None = None) -> RemediationRunner:
    """The runner of a replay: each step recorded with its outcome (default succeeded) at
    once, nothing executed."""
    kinds = {n: SimulatedKind(n, c) for n, c in definitions.items()}
    return RemediationRunner(RemediationSettings(definitions=dict(definitions)), kinds, state_dir, clock,
                             execute=False, simulated=outcomes)


def _attempt(r: sqlite3.Row) -> Attempt:
    return Attempt(r["id"], r["run_id"], r["step"], r["dedup_key"], r["rule"], r["remediation"], r["description"],
                   Status(r["status"]), r["detail"], r["started_at"], r["finished_at"], r["exit_code"],
                   r["http_status"], r["reference"], r["output"])

