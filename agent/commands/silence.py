"""`forewarn silence add|list|expire`: silences persisted in `state_dir` (found via `--config`).

    forewarn silence add alertname=FilesystemWillFill 'host=~"db-.*"' --duration 2h --comment "disk swap"
    forewarn silence list
    forewarn silence expire 3f2c...   (an id or a unique prefix)

The running daemon picks changes up at its next evaluation; no reload is needed.
Exit 0 on success, 1 on an invalid config or unknown id, 2 on bad matchers or times.
A command: it may import anything, and nothing but the CLI imports it.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from typing import Any

from agent.clock import parse_time, rfc3339
from agent.commands.tickets import load_config_for_command
from agent.config.decode import parse_duration
from agent.tickets.suppress import Silence, SilenceStore, parse_matcher_list, silences_from_config


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


def command(args: Any) -> int:
    cfg = load_config_for_command(args.config)
    if cfg is None:
        return 1
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
