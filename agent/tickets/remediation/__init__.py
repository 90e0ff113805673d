"""Remediations: the runbook's first step, run by the agent before (or alongside) a ticket.

Each kind is one module, registered by `type` name in `REMEDIATION_TYPES` (like the sinks):
`command` (an executable without a shell), `webhook` (an automation system's job launch:
AWX, Rundeck, StackStorm, or a plain JSON POST), `systemd` (restart or reload one unit).
`base` has what they share; `runner` holds the attempts, the policy (rate limits,
cool-down, kill switch, dry run) and the worker threads.

Remediations are defined in the main config only; rules name them (`remediate: [name]`),
so whoever can edit rule files cannot run what the host's administrator has not defined.
"""

from __future__ import annotations

from typing import Any

from agent.tickets.remediation.command import CommandRemediation
from agent.tickets.remediation.systemd import SystemdRemediation
from agent.tickets.remediation.webhook import WebhookRemediation

REMEDIATION_TYPES: dict[str, Any] = {
    "command": CommandRemediation,
    "webhook": WebhookRemediation,
    "systemd": SystemdRemediation,
}
