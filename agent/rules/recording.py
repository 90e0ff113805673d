"""The recording rule (Prometheus's rules/recording.go): the expression's output, renamed to
the rule's `record` name and with the rule's labels, becomes series the group writes to the
store (stale markers for series that stop being produced are the group's job).

Imports `agent.store` and the rules package's own modules; never tickets, web, sources, the
pipeline or the daemon.
"""

from __future__ import annotations

import time

from agent.rules.query import LabeledValue, QueryFn
from agent.rules.rule import DuplicateLabelsetError, InternalError, LimitExceededError, Rule, RuleError
from agent.store import Labels, make_labels


class RecordingRule(Rule):
    kind = "record"

    def evaluate(self, now: float, query: QueryFn, limit: int = 0) -> list[LabeledValue]:
        """The series to write at `now` (empty on an error, kept as `last_error`)."""
        start = time.monotonic()
        self.last_evaluation = now
        try:
            out = self._series(self.query(now, query), limit)
        except RuleError as e:
            self.failed(e)
            return []
        except Exception as e:  # one rule's bug or bad data never stops the group or the tick
            self.failed(InternalError(e))
            return []
        else:
            self.succeeded()
            return out
        finally:
            self.evaluation_seconds = time.monotonic() - start

    def _series(self, samples: list[LabeledValue], limit: int) -> list[LabeledValue]:
        out: list[LabeledValue] = []
        seen: set[Labels] = set()
        for labels, value in samples:
            d = dict(labels)
            d.update(self.labels)
            lab = make_labels(self.name, d)
            if lab in seen:
                raise DuplicateLabelsetError("rule")
            seen.add(lab)
            out.append((lab, value))
        if limit > 0 and len(out) > limit:
            raise LimitExceededError(limit, len(out), "series")
        return out
