"""The remediation API, over the running agent's remediation runner:

    GET  /api/v1/remediation             the kill switch, dry run, the definitions, and the
                                         latest attempts (`dedup_key`: one problem's; `limit`)
    POST /api/v1/remediation/disable     the kill switch: no new attempt starts (`reason`);
                                         allowed without the admin API: stopping is always safe
    POST /api/v1/remediation/enable      undo it; needs the admin API (`web.enable_admin_api`)

The switch is remembered across restarts; `remediation.enabled: false` in the config wins
over it. Answers use Prometheus's envelope (`status`, `data`). Like the rest of web, it
decides nothing itself: the runner does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from agent.tickets.remediation.runner import RemediationRunner
from agent.web.server import Endpoint, Reply, Request

MAX_LIMIT = 1000
MAX_REASON = 1024


def _unavailable() -> Reply:
    return 503, {"status": "error", "errorType": "unavailable", "error": "remediation is not running"}


def status(runner: RemediationRunner | None, req: Request) -> Reply:
    if runner is None:
        return _unavailable()
    try:
        limit = min(MAX_LIMIT, max(1, int(req.get("limit", "100"))))
    except ValueError:
        return 400, {"status": "error", "errorType": "bad_data", "error": "limit must be an integer"}
    sw = runner.switch()
    definitions = []
    for name, kind in sorted(runner.kinds.items()):
        settings = {k: v for k, v in dataclasses.asdict(kind.config).items()
                    if k in ("when", "verify", "on_recovery", "timeout", "max_attempts", "max_attempts_per_problem",
                             "rate_window", "cooldown")}
        definitions.append({"name": name, "type": type(kind).__name__, **settings})
    attempts = [a.to_json() for a in runner.history(req.get("dedup_key") or None, limit)]
    return 200, {"status": "success", "data": {
        "enabled": sw.enabled, "reason": sw.reason, "changedAt": sw.changed_at, "dryRun": runner.settings.dry_run,
        "definitions": definitions, "attempts": attempts}}


def switch(runner: RemediationRunner | None, enabled: bool, req: Request) -> Reply:
    if runner is None:
        return _unavailable()
    reason = req.get("reason")
    if not reason and req.body:  # a JSON body {"reason": ...}, as `forewarn remediation` sends
        try:
            doc = req.json()
        except ValueError:
            return 400, {"status": "error", "errorType": "bad_data", "error": "the body is not JSON"}
        reason = str(doc.get("reason", "")) if isinstance(doc, dict) else ""
    reason = reason[:MAX_REASON]
    sw = runner.set_enabled(enabled, reason or ("enabled" if enabled else "disabled") + " through the API")
    return 200, {"status": "success", "data": {"enabled": sw.enabled, "reason": sw.reason, "changedAt": sw.changed_at}}


def routes(current: Callable[[], RemediationRunner | None]) -> dict[str, Any]:
    return {
        "/api/v1/remediation": Endpoint(lambda req: status(current(), req), frozenset({"GET"})),
        "/api/v1/remediation/disable": Endpoint(lambda req: switch(current(), False, req), frozenset({"POST"})),
        "/api/v1/remediation/enable": Endpoint(lambda req: switch(current(), True, req), frozenset({"POST"}),
                                               admin=frozenset({"POST"})),
    }
