"""Remediations: the runbook's first step, run by the agent before (or alongside) a ticket.

Each kind is one module, registered by `type` name in `REMEDIATION_TYPES` (like the sinks):
`command` (an executable without a shell), `webhook` (an automation system's job launch:
AWX, Rundeck, StackStorm, or a plain JSON POST), `systemd` (restart or reload one unit).
`base` has what they share; `runner` holds the attempts, the policy (rate limits,
cool-down, kill switch, dry run) and the worker threads.

A kind's module is imported the first time its name is looked up (a config that defines
one, the docs): an agent without remediations does not load them (about 1 MB and the
subprocess machinery, on a host where the agent must stay under 60 MB).

Remediations are defined in the main config only; rules name them (`remediate: [name]`),
so whoever can edit rule files cannot run what the host's administrator has not defined.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any


class KindRegistry(Mapping[str, Any]):
    """type name -> kind class, each module imported on first use."""

    def __init__(self, kinds: Mapping[str, tuple[str, str]]) -> None:
        self._kinds = dict(kinds)

    def __getitem__(self, name: str) -> Any:
        module, cls = self._kinds[name]
        return getattr(importlib.import_module(module), cls)

    def __contains__(self, name: object) -> bool:  # without importing anything
        return name in self._kinds

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)


REMEDIATION_TYPES = KindRegistry({
    "command": ("agent.tickets.remediation.command", "CommandRemediation"),
    "webhook": ("agent.tickets.remediation.webhook", "WebhookRemediation"),
    "systemd": ("agent.tickets.remediation.systemd", "SystemdRemediation"),
})
