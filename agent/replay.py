"""The daemon's tick, simulated: one replay loop for `forewarn test` and `forewarn backtest`.

`replay` builds the rule manager (`agent.rules.manager.build_rule_manager`, as the pipeline
does) and, when asked, the problem manager with an in-memory outbox (problem state in a
temporary directory; no sink is contacted), then steps a `SimulatedClock` through the
evaluation times. At each time it feeds the samples up to that time, runs
`agent.pipeline.evaluate_tick` (the daemon's own tick: due groups, then problems), reports
the tick to the caller, and runs the forecast refits due at that time in the refit worker,
installed before the next evaluation so the replay is deterministic.

Evaluation times are either a fixed grid `start, start + step, ...` (promtool's semantics,
`forewarn test`) or, without a step, whenever a group is due (`forewarn backtest`).

Imports the pipeline and the stages before it; never web, the daemon or commands.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from agent.clock import SimulatedClock
from agent.config.schema import TicketingConfig
from agent.models.refit import RefitWorker
from agent.pipeline import evaluate_tick
from agent.rules.file import RuleGroupDef
from agent.rules.manager import RuleManager, RuleOptions, build_rule_manager
from agent.rules.remediate import alert_expander
from agent.store import Store
from agent.tickets.manager import ProblemDecision as Decision
from agent.tickets.manager import ProblemManager
from agent.tickets.outbox import MemoryOutbox
from agent.tickets.problems import Problem
from agent.tickets.remediation.base import CommonSettings, Status
from agent.tickets.remediation.runner import simulated_runner
from agent.tickets.sinks.base import Ticket
from agent.tickets.suppress import NoSuppression

REFIT_WAIT_SECONDS = 300.0  # the longest a replay waits for the refit worker's results
REFIT_BATCH = 16  # model histories in flight to the refit worker at most


@dataclass
class Tick:
    """One evaluation time of a replay: the rules and problems right after it, the problem
    manager's decisions, and the ticket actions enqueued, as (sink name, ticket) in order."""

    time: float
    rules: RuleManager
    problems: ProblemManager | None
    decisions: list[Decision] = field(default_factory=list)
    tickets: Sequence[tuple[str, Ticket]] = field(default_factory=list)


@dataclass
class ReplayResult:
    """How many evaluation times and refits the replay ran, and the problems at its end
    (empty without ticketing)."""

    evaluations: int
    refits: int
    problems: list[Problem]


# Called after each evaluation time; returning False ends the replay there.
TickHandler = Callable[[Tick], bool | None]


def replay(groups: list[RuleGroupDef], store: Store, feed: Callable[[float], object], *, start: float, end: float,
           options: RuleOptions, ticketing: TicketingConfig | None = None, step: float | None = None,
           on_tick: TickHandler | None = None, remediations: Mapping[str, CommonSettings] | None = None,
           outcomes: Mapping[str, Status] | None = None) -> ReplayResult:
    """Replay `groups` over `store` from `start` to `end` (both included); see the module doc.

    `feed(t)` appends the samples with times up to t to `store`. `ticketing`: run the problem
    manager with these settings (None: rules only). `step`: evaluate at a fixed grid instead
    of when groups are due. `remediations`: the settings of the remediations rules name (a
    name missing here gets the defaults); they are recorded, never run, each with its
    outcome in `outcomes` (default succeeded)."""
    clock = SimulatedClock(start)
    rules = build_rule_manager(groups, store, clock, options)
    outbox = MemoryOutbox()
    refits = Refits()
    evaluations = 0
    with tempfile.TemporaryDirectory(prefix="forewarn-replay-") as state_dir:
        problems = None
        runner = None
        if ticketing is not None:
            named = {n for g in groups for r in g.rule_defs() for n in r.spec.remediate}
            if named:
                settings = {n: (remediations or {}).get(n) or CommonSettings() for n in sorted(named)}
                runner = simulated_runner(settings, state_dir, clock, outcomes)
            problems = ProblemManager(ticketing, state_dir, clock, {}, NoSuppression(), outbox, remediation=runner,
                                      expand=alert_expander)
        try:
            for now in _evaluation_times(rules, start, end, step):
                feed(now)
                clock.set(now)
                seen = len(outbox.enqueued)
                decisions = evaluate_tick(rules, problems, now)
                evaluations += 1
                if on_tick is not None and on_tick(Tick(now, rules, problems, decisions, outbox.enqueued[seen:])) is False:
                    break
                refits.run(rules, now)
            final = problems.problems() if problems is not None else []
        finally:
            if problems is not None:
                problems.close()
            if runner is not None:
                runner.close()
            refits.close()
    return ReplayResult(evaluations, refits.done, final)


def _evaluation_times(rules: RuleManager, start: float, end: float, step: float | None) -> Iterator[float]:
    """The grid `start + k * step` up to `end`, or (no step) each time the next group is due;
    read lazily, after the previous time's evaluation."""
    if step is not None:
        for k in range(int(math.floor((end - start) / step + 1e-9)) + 1):
            yield start + k * step
        return
    now = start
    while now <= end:
        yield now
        nxt = rules.next_due()
        if nxt is None or nxt <= now:
            return
        now = nxt


class Refits:
    """Runs the forecast models' due refits in the refit worker process (started with the
    first job) and installs the results before returning."""

    def __init__(self) -> None:
        self.worker: RefitWorker | None = None
        self.done = 0

    def run(self, rules: RuleManager, now: float) -> None:
        """The refits due at `now` (the daemon's `RuleManager.refit_jobs` / `apply_refits`)."""
        jobs = rules.refit_jobs(now)
        while jobs:
            if self.worker is None:
                self.worker = RefitWorker(max_pending=REFIT_BATCH)
            n = self.worker.submit(jobs)
            jobs = jobs[n:]
            results = self.worker.wait(REFIT_WAIT_SECONDS)
            rules.apply_refits(results)
            self.done += len(results)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
