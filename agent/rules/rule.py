"""What alerting and recording rules share: the definition, health and timings of the last
evaluation, and the typed errors an evaluation can end with.

An evaluation that fails raises a `RuleError`; the rule keeps it as `last_error` and its
`health` becomes `Health.ERR` until an evaluation succeeds. Text is made only at the edges
(the API's `lastError`, `forewarn test`'s failure lines) with `str(error)`, which is the
message Prometheus shows.

Imports `agent.store`, `agent.rules.file` and `agent.rules.query`; never tickets, web,
sources, the pipeline or the daemon.
"""

from __future__ import annotations

import enum
import logging

from agent.rules.file import RuleDef
from agent.rules.query import LabeledValue, QueryFn, QueryStillRunning, QueryTimedOut, to_samples

log = logging.getLogger(__name__)


class Health(enum.StrEnum):
    """A rule's health as Prometheus's API reports it."""

    UNKNOWN = "unknown"  # not evaluated yet
    OK = "ok"
    ERR = "err"


class RuleError(Exception):
    """Why an evaluation failed; `str()` is the message shown as the rule's last error."""


class QueryFailedError(RuleError):
    """The expression could not be evaluated (`cause`: what the query function raised)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause


class QueryTimeoutError(RuleError):
    """The expression ran longer than the rule query timeout; the rule is skipped (and says so)
    until that query ends, so one slow rule never holds up the others."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"query timed out after {timeout:g}s")


class QueryStillRunningError(RuleError):
    """The rule's previous query, which timed out, has not ended yet."""

    def __init__(self) -> None:
        super().__init__("skipped: the query that timed out earlier is still running")


class TemplateExpansionError(RuleError):
    """A label or annotation template failed on this evaluation's data (`where`: e.g.
    `annotations.summary`). The alerts are kept, with Prometheus's `<error expanding template:
    ...>` text where the value would be."""

    def __init__(self, where: str, message: str, more: int = 0) -> None:
        tail = f" (and {more} more)" if more else ""
        super().__init__(f"expanding {where}: {message}{tail}")


class InternalError(RuleError):
    """An exception nothing foresaw; the rule fails alone (its traceback is logged once)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"internal error: {type(cause).__name__}: {cause}")
        self.cause = cause


class DuplicateLabelsetError(RuleError):
    """Two output series became one label set once the rule's labels were applied."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"vector contains metrics with the same labelset after applying {kind} labels")


class LimitExceededError(RuleError):
    """More alerts (or series) than the group's `limit`."""

    def __init__(self, limit: int, count: int, unit: str) -> None:
        super().__init__(f"exceeded limit of {limit} with {count} {unit}")
        self.limit, self.count = limit, count


class Rule:
    """Definition, health and timings of one rule."""

    def __init__(self, d: RuleDef) -> None:
        self.definition = d
        self.name = d.name
        self.group = d.group
        self.expr = d.expr
        self.query_text = d.spec.expr
        self.labels: dict[str, str] = dict(d.spec.labels)
        self.last_error: RuleError | None = None
        # Why a rule that evaluates cannot tell anything yet (its anomaly model is still
        # warming up): health is unknown meanwhile, and the API says why.
        self.warming: str | None = None
        self.last_evaluation: float | None = None
        # The expression's output at the last evaluation (empty after a failed query): what a
        # backtest charts and judges; one list per rule, replaced each time.
        self.last_samples: list[LabeledValue] = []
        self.keep_samples = True  # False: last_samples stays empty (the daemon's RuleOptions)
        self.evaluation_seconds = 0.0

    @property
    def health(self) -> Health:
        if self.last_evaluation is None:
            return Health.UNKNOWN
        if self.last_error is not None:
            return Health.ERR
        return Health.UNKNOWN if self.warming else Health.OK

    def adopt(self, old: Rule) -> None:
        """Take over what `old` (the same rule before a reload) holds that is still valid.
        A recording rule holds nothing itself (its group keeps the series it wrote)."""

    def query(self, now: float, query: QueryFn) -> list[LabeledValue]:
        """The rule's expression at `now`; raises QueryFailedError, QueryTimeoutError or
        QueryStillRunningError."""
        self.last_samples = []
        try:
            samples = to_samples(query(self.expr if self.expr is not None else self.query_text, now))
            if self.keep_samples:
                self.last_samples = samples
            return samples
        except QueryTimedOut as e:
            raise QueryTimeoutError(e.timeout) from None
        except QueryStillRunning:
            raise QueryStillRunningError() from None
        except Exception as e:
            raise QueryFailedError(e) from e

    def succeeded(self) -> None:
        self.last_error = None

    def failed(self, error: RuleError) -> None:
        """Record an evaluation error; logged when it first appears or changes, not every
        interval (the API and health show it meanwhile)."""
        if self.last_error is None or str(self.last_error) != str(error):
            if isinstance(error, InternalError):
                log.error("rule %s/%s: %s", self.group, self.name, error, exc_info=error.cause)
            else:
                log.warning("rule %s/%s: %s", self.group, self.name, error)
        self.last_error = error
