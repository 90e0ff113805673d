"""`forewarn silence add|list|expire`: the running agent's silences, through its silence API
(`/api/v1/silences`, Alertmanager v2's shapes) at `--url`, by default where the config says it
listens. With `--offline`, the silences file in the config's `state_dir` instead (for an agent
that is stopped; a running one re-reads the file at its next evaluation).

    forewarn silence add alertname=FilesystemWillFill 'host=~"db-.*"' --duration 2h --comment "disk swap"
    forewarn silence list
    forewarn silence expire 3f2c...   (an id or a unique prefix)

`--config`, `--url` and `--offline` go before or after the action. Exit 0 on success, 1 on an
invalid config, an unknown id or an agent that refuses or does not answer, 2 on bad matchers
or times. A command: it may import anything, and nothing but the CLI imports it.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from typing import Any

from agent.clock import parse_time, rfc3339
from agent.commands.remote import RemoteError, agent_or_config, call, fail
from agent.config.decode import parse_duration
from agent.tickets.suppress import Matcher, Silence, SilenceStore, parse_matcher_list, silences_from_config


def _author(explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _add(store: SilenceStore, args: Any, now: float) -> int:
    try:
        matchers = parse_matcher_list(args.matchers)
        ends_at = parse_time(args.end) if args.end else now + parse_duration(args.duration)
        if ends_at <= now:
            raise ValueError("the silence would end in the past")
        sil = store.add(matchers, now, ends_at, comment=args.comment, created_by=_author(args.author), now=now)
    except ValueError as e:
        print(f"forewarn silence add: {e}", file=sys.stderr)
        return 2
    print(sil.id)
    print(f"silenced {', '.join(map(str, sil.matchers))} until {rfc3339(sil.ends_at, 'seconds')}", file=sys.stderr)
    return 0


def _list(store: SilenceStore, config_silences: list[Silence], now: float, as_json: bool) -> int:
    sils = [s for s in config_silences + store.all() if s.ends_at > now]
    if as_json:
        print(json.dumps([{**s.to_json(), "starts_at": s.starts_at if s.starts_at != float("-inf") else None,
                           "ends_at": s.ends_at if s.ends_at != float("inf") else None} for s in sils], indent=1))
        return 0
    if not sils:
        print("no active silences")
        return 0
    for s in sils:
        state = "active" if s.active(now) else "pending"
        until = rfc3339(s.ends_at, "seconds") if s.ends_at != float("inf") else "never"
        print(f"{s.id}  {state}  until {until}  by {s.created_by or '-'}  [{s.source}]")
        print(f"    matchers: {', '.join(map(str, s.matchers))}")
        if s.comment:
            print(f"    comment:  {s.comment}")
    return 0


def _expire(store: SilenceStore, silence_id: str, now: float) -> int:
    if silence_id.startswith("config-"):
        print(f"forewarn silence expire: {silence_id} comes from the config file; remove it there", file=sys.stderr)
        return 1
    try:
        sil = store.expire(silence_id, now)
    except KeyError:
        print(f"forewarn silence expire: no silence with id {silence_id!r} (or the prefix is ambiguous)",
              file=sys.stderr)
        return 1
    print(f"expired {sil.id}")
    return 0


def _matcher_json(m: Matcher) -> dict[str, Any]:
    return {"name": m.name, "value": m.value, "isRegex": m.op in ("=~", "!~"), "isEqual": m.op in ("=", "=~")}


def _matcher_text(m: dict[str, Any]) -> str:
    op = ("=~" if m.get("isEqual", True) else "!~") if m.get("isRegex") else ("=" if m.get("isEqual", True) else "!=")
    return f"{m['name']}{op}{json.dumps(m['value'])}"


def _remote(base: str, args: Any) -> int:
    now = time.time()
    action = args.silence_action
    try:
        if action == "add":
            try:
                matchers = parse_matcher_list(args.matchers)
                ends_at = parse_time(args.end) if args.end else now + parse_duration(args.duration)
                if ends_at <= now:
                    raise ValueError("the silence would end in the past")
            except ValueError as e:
                print(f"forewarn silence add: {e}", file=sys.stderr)
                return 2
            out = call(base, "POST", "/api/v1/silences", body={
                "matchers": [_matcher_json(m) for m in matchers], "startsAt": rfc3339(now), "endsAt": rfc3339(ends_at),
                "createdBy": _author(args.author), "comment": args.comment})
            print(out["silenceID"])
            print(f"silenced {', '.join(map(str, matchers))} until {rfc3339(ends_at, 'seconds')} on {base}", file=sys.stderr)
            return 0
        sils = call(base, "GET", "/api/v1/silences")
        if action == "expire":
            hits = [s for s in sils if s["id"] == args.silence_id] or [s for s in sils if s["id"].startswith(args.silence_id)]
            if len(hits) != 1:
                print(f"forewarn silence expire: no silence with id {args.silence_id!r} (or the prefix is ambiguous)",
                      file=sys.stderr)
                return 1
            if hits[0].get("source") == "config":
                print(f"forewarn silence expire: {hits[0]['id']} comes from the config file; remove it there",
                      file=sys.stderr)
                return 1
            call(base, "DELETE", f"/api/v1/silence/{hits[0]['id']}")
            print(f"expired {hits[0]['id']}")
            return 0
    except RemoteError as e:
        return fail("silence", e)
    live = [s for s in sils if s["status"]["state"] != "expired"]
    if args.json:
        print(json.dumps(live, indent=1))
        return 0
    if not live:
        print("no active silences")
        return 0
    for s in live:
        until = s["endsAt"] or "never"
        print(f"{s['id']}  {s['status']['state']}  until {until}  by {s['createdBy'] or '-'}  [{s.get('source', 'store')}]")
        print(f"    matchers: {', '.join(_matcher_text(m) for m in s['matchers'])}")
        if s["comment"]:
            print(f"    comment:  {s['comment']}")
    return 0


def command(args: Any) -> int:
    cfg = agent_or_config(args, _remote)
    if isinstance(cfg, int):
        return cfg
    store = SilenceStore(cfg.state_dir)
    now = time.time()
    if args.silence_action == "add":
        return _add(store, args, now)
    if args.silence_action == "expire":
        return _expire(store, args.silence_id, now)
    try:
        config_silences = silences_from_config(cfg.ticketing.silences)
    except ValueError as e:
        print(f"{cfg.path}: ticketing.silences: {e}", file=sys.stderr)
        return 1
    return _list(store, config_silences, now, getattr(args, "json", False))
