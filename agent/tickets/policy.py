"""A rule's ticket policy: the `ticket:` block of a rule file, the one type that crosses from
rules to problems (rules build it from the file; problems read it). It imports only the
config decoder, so both sides can use it without knowing each other."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal

from agent.config.decode import doc

# Ticket grouping when a rule's `ticket.group_by` is not given: like Alertmanager's common
# `group_by: [alertname, host]`, one problem per rule and host; a label missing from an alert
# simply does not take part in the key.
DEFAULT_GROUP_BY = ("alertname", "host")

LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass
class TicketPolicy:
    """`ticket:` - where and how the rule's problems become tickets."""

    sink: str | None = doc("Sink name from the config (default: ticketing.default_sink).", default=None)
    group_by: list[str] | None = doc(
        "Labels that make one problem (default: alertname and host; '...': every label).", default=None)
    on_clear: Literal["comment", "resolve"] = doc("What happens to the ticket when the problem clears.",
                                                  default="comment")
    unit: Literal["", "bytes", "seconds", "ratio", "percent", "none"] = doc(
        "Unit of the rule's values in ticket texts and charts (bytes in KiB/MiB/GiB, seconds as durations, "
        "ratio as a percentage); empty: from the metric's name when the expression is one series "
        "(node_filesystem_avail_bytes: bytes).", default="")

    def validate(self, err: Any) -> None:
        for name in self.group_by or ():
            if name != "..." and not LABEL_NAME_RE.match(name):
                err("group_by", f"invalid label name {name!r}")

    def with_defaults(self) -> TicketPolicy:
        """The policy a rule runs with: `group_by` filled in with the default when not given."""
        if self.group_by is not None:
            return dataclasses.replace(self, group_by=list(self.group_by))
        return dataclasses.replace(self, group_by=list(DEFAULT_GROUP_BY))

    def sink_name(self, default_sink: str) -> str:
        return self.sink or default_sink

    def grouping(self) -> tuple[str, ...] | None:
        """The labels that make one problem; None: every label (one problem per alert)."""
        if not self.group_by or "..." in self.group_by:
            return None
        return tuple(self.group_by)
