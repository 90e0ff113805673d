"""`forewarn trends`: incident-trend analysis (DESIGN.md, contract: command line; issue 16).

    forewarn trends --input CSV | --sink NAME | --source forewarn
                    [--config F] [--since 90d] [--until T] [--columns ROLE=HEADER,...]
                    [--json] [--report OUT.html] [--open-problems [N]] [--apply] [--problem-sink NAME]

Reads incident history (a CSV export, a configured sink's API, or the agent's own tickets and
problems), clusters recurring incidents, tests their trends, and prints the clusters and the
problem candidates (a table, or `--json`); `--report` writes the HTML report.
`--open-problems [N]` plans a problem record for each of the top N candidates (default 5)
and updates for records opened earlier; it only prints the plan unless `--apply` is given.

Exit status: 0 done; 1 bad input (unreadable rows were reported and skipped, the rest
analysed; or the source failed), config errors, or problem records left undelivered; 2
usage errors.

A command: nothing imports it but the CLI (which builds its arguments itself and imports it
only when `forewarn trends` runs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from agent.clock import WallClock, parse_time
from agent.commands.remote import load_config_for_command
from agent.config.decode import parse_duration
from agent.config.schema import Config
from agent.tickets.builder import build_sink
from agent.tickets.outbox import Outbox
from agent.trends import report
from agent.trends.cluster import ClusterParams
from agent.trends.history import HistoryError, parse_columns, read_csv
from agent.trends.own import read_forewarn
from agent.trends.problems import OUTBOX_FILE, ProblemRegistry, deliver, describe
from agent.trends.readers import ReaderError, make_reader
from agent.trends.stats import Analysis, EffortPolicy, analyse

DEFAULT_CONFIG = "config/forewarn.yml"


def _load_config(path: str | None) -> Config | None:
    """The config (defaults when there is no file), or None after printing its errors."""
    if path is None and os.path.exists(DEFAULT_CONFIG):
        path = DEFAULT_CONFIG
    return Config() if path is None else load_config_for_command(path)


def _window(args: argparse.Namespace, default_since: float) -> tuple[float, float]:
    until = parse_time(args.until) if args.until else time.time()
    if args.since is None:
        return until - default_since, until
    try:
        return until - parse_duration(args.since), until
    except ValueError:
        return parse_time(args.since), until


def command(args: argparse.Namespace) -> int:
    if args.apply and args.open_problems is None:
        print("forewarn trends: --apply needs --open-problems", file=sys.stderr)
        return 2
    if args.open_problems is not None and args.open_problems < 1:
        print("forewarn trends: --open-problems N needs N >= 1", file=sys.stderr)
        return 2
    needs_config = args.sink or args.source or args.open_problems is not None or args.config
    cfg = _load_config(args.config) if needs_config else None
    if needs_config and cfg is None:
        return 1
    if cfg is None:
        cfg = Config()
    tcfg = cfg.trends
    try:
        since, until = _window(args, float(tcfg.since))
        columns = parse_columns(args.columns) if args.columns else None
    except ValueError as e:
        print(f"forewarn trends: {e}", file=sys.stderr)
        return 2
    if since >= until:
        print("forewarn trends: --since must be before --until", file=sys.stderr)
        return 2
    if args.columns and not args.input:
        print("forewarn trends: --columns applies to --input only", file=sys.stderr)
        return 2

    status = 0
    if args.input:
        try:
            data = sys.stdin.buffer.read() if args.input == "-" else None
            hist = read_csv(args.input, columns, data=data, since=since, until=until)
        except HistoryError as e:
            print(f"{e}", file=sys.stderr)
            return 1
        for err in hist.errors:
            print(err, file=sys.stderr)
        if hist.skipped_rows:
            print(f"{args.input}: {hist.skipped_rows} row(s) skipped; {len(hist.incidents)} incidents analysed",
                  file=sys.stderr)
        if hist.rejected:
            status = 1
        source_name = args.input
    elif args.sink:
        try:
            hist = make_reader(cfg, args.sink).read(since, until)
        except ReaderError as e:
            print(f"forewarn trends: {e}", file=sys.stderr)
            return 1
        source_name = f"sink {args.sink}"
    else:
        try:
            hist = read_forewarn(cfg, since, until)
        except HistoryError as e:
            print(f"forewarn trends: {e}", file=sys.stderr)
            return 1
        source_name = "forewarn's own tickets and problems"
    if hist.truncated:
        print(f"forewarn trends: {source_name}: history cut at a bound (max_pages/max_incidents); "
              f"the analysis covers what was read", file=sys.stderr)

    problem_sink = args.problem_sink or tcfg.problem_sink or args.sink or cfg.ticketing.default_sink
    registry = None
    if args.open_problems is not None:
        known = {e.name for e in cfg.ticketing.sinks} | {"local"}
        if problem_sink not in known:
            print(f"forewarn trends: unknown problem sink {problem_sink!r} (configured: {', '.join(sorted(known))})",
                  file=sys.stderr)
            return 2
        registry = ProblemRegistry(cfg.state_dir, problem_sink)

    params = ClusterParams(threshold=args.threshold if args.threshold is not None else tcfg.similarity_threshold)
    if not 0 < params.threshold < 1:
        print("forewarn trends: --threshold must be between 0 and 1", file=sys.stderr)
        return 2
    analysis = analyse(hist.incidents, since, until, params=params,
                       effort=EffortPolicy({k.lower(): v for k, v in tcfg.cost_per_priority.items()}),
                       min_count=args.min_count if args.min_count is not None else tcfg.min_count,
                       covered=registry.covered if registry is not None else None)

    if args.report:
        try:
            with open(args.report, "w", encoding="utf-8") as f:
                f.write(report.to_html(analysis, source=source_name))
        except OSError as e:
            print(f"forewarn trends: cannot write {args.report}: {e.strerror}", file=sys.stderr)
            return 1
    out_lines: list[str] = []
    if registry is not None:
        status = max(status, _problems(cfg, registry, analysis, args, problem_sink, out_lines))
    if args.json:
        print(json.dumps(report.to_json(analysis), indent=1))
        for line in out_lines:
            print(line, file=sys.stderr)
    else:
        print(report.table(analysis))
        if out_lines:
            print()
            print("\n".join(out_lines))
    return status


def _problems(cfg: Config, registry: ProblemRegistry, analysis: Analysis, args: argparse.Namespace, sink_name: str,
              out: list[str]) -> int:
    planned = registry.plan(analysis, args.open_problems, chart=args.apply)
    if not args.apply:
        out.append(describe(planned, sink_name))
        if planned:
            out.append("(dry run: add --apply to open and update these records)")
        return 0
    try:
        sink = build_sink(cfg, sink_name)
    except ValueError as e:
        print(f"forewarn trends: sink {sink_name!r}: {e}", file=sys.stderr)
        return 1
    outbox = Outbox(os.path.join(cfg.state_dir, OUTBOX_FILE), {sink_name: sink}, WallClock())
    try:
        done = registry.apply(planned, outbox)
        pending = deliver(outbox, max_wait_seconds=float(cfg.trends.max_wait))
        registry.load_refs()
        dead = outbox.dead_letters(limit=20)
    finally:
        outbox.close()
    opened = sum(p.action == "open" for p in done)
    updated = sum(p.action == "update" for p in done)
    out.append(f"problem records in {sink_name}: {opened} opened, {updated} updated"
               + (f"; {pending} action(s) still pending (delivered by the next run)" if pending else ""))
    for p in done:
        ref = registry.refs.get(p.dedup_key)
        out.append(f"  {p.action} {p.dedup_key} cluster {p.cluster_id}" + (f" -> {sink_name}:{ref}" if ref else ""))
    fresh_dead = [d for d in dead if any(d["dedup_key"] == p.dedup_key for p in done)]
    for d in fresh_dead:
        out.append(f"  FAILED {d['action']} {d['dedup_key']}: {d['reason']}")
    return 1 if pending or fresh_dead else 0
