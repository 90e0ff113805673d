"""`forewarn remediation status|disable|enable`: the running agent's remediations, through its
API (`/api/v1/remediation`) at `--url`, by default where the config says it listens. With
`--offline`, the kill switch in the config's `state_dir` instead (for an agent that is
stopped: it reads the switch when it starts).

    forewarn remediation status              the kill switch, dry run, definitions, latest attempts
    forewarn remediation disable --reason "incident 42: hands off"
    forewarn remediation enable              (needs the agent's admin API, or --offline)

`--config`, `--url` and `--offline` go before or after the action. Exit 0 on success, 1 on an
invalid config or an agent that refuses or does not answer. A command: it may import
anything, and nothing but the CLI imports it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from agent.clock import rfc3339
from agent.commands.remote import RemoteError, agent_or_config, call, fail
from agent.tickets.remediation.runner import SwitchState, set_switch_offline


def _switch_line(enabled: bool, reason: str, changed_at: float | None) -> str:
    when = f" since {rfc3339(changed_at, 'seconds')}" if changed_at else ""
    state = "enabled" if enabled else "DISABLED"
    return f"remediation {state}{when}" + (f": {reason}" if reason else "")


def _print_status(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=1, sort_keys=True))
        return
    print(_switch_line(data["enabled"], data["reason"], data["changedAt"]) + (" (dry run)" if data["dryRun"] else ""))
    for d in data["definitions"]:
        print(f"  {d['name']}: when {d['when']}, verify {d['verify']:g}s, at most {d['max_attempts']} per "
              f"{d['rate_window']:g}s ({d['max_attempts_per_problem']} per problem), cool-down {d['cooldown']:g}s")
    if not data["attempts"]:
        print("no attempts")
    for a in data["attempts"]:
        took = f" in {a['finished_at'] - a['started_at']:.1f}s" if a["finished_at"] is not None else ""
        print(f"{rfc3339(a['started_at'], 'seconds')}  {a['remediation']}  {a['status']}{took}  {a['rule']} "
              f"{a['dedup_key']}")
        if a["detail"]:
            print(f"    {a['detail']}")


def _remote(base: str, args: Any) -> int:
    try:
        if args.remediation_action == "status":
            _print_status(call(base, "GET", "/api/v1/remediation", params={"limit": args.limit}), args.json)
            return 0
        out = call(base, "POST", f"/api/v1/remediation/{args.remediation_action}", body={"reason": args.reason})
    except RemoteError as e:
        return fail("remediation", e)
    print(_switch_line(out["enabled"], out["reason"], out["changedAt"]) + f" on {base}")
    return 0


def command(args: Any) -> int:
    cfg = agent_or_config(args, _remote)
    if isinstance(cfg, int):
        return cfg
    action = args.remediation_action
    enabled = None if action == "status" else action == "enable"
    reason = args.reason or ("" if enabled is None else f"{action}d with forewarn remediation --offline")
    sw: SwitchState = set_switch_offline(cfg.state_dir, enabled, reason, time.time(), cfg.remediation.enabled)
    if args.json:
        print(json.dumps({"enabled": sw.enabled, "reason": sw.reason, "changedAt": sw.changed_at}, indent=1))
    else:
        print(_switch_line(sw.enabled, sw.reason, sw.changed_at) + f" in {cfg.state_dir}")
    return 0


__all__ = ["command"]
