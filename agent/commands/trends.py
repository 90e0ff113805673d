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

Importing this module costs only argparse (agent.cli builds every subparser); the analysis is
imported when the command runs. Must never import agent.rules, agent.promql, agent.models,
agent.web, agent.daemon or agent.pipeline.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_OPEN_PROBLEMS = 5

EPILOG = """\
sources (one of):
  --input CSV         an export: ServiceNow, Jira, RT, PagerDuty or Opsgenie column names are
                      recognised (number/key/id, opened_at/created, resolved_at/resolved/closed_at,
                      cmdb_ci/business_service/component/queue, category, assignment_group,
                      priority, short_description/summary/subject/title, problem_id);
                      others are mapped with --columns opened="Date Opened",title=Headline
  --sink NAME         a configured ServiceNow, Jira/JSM, Request Tracker, PagerDuty or Opsgenie sink
  --source forewarn   the agent's own local tickets and problems (state_dir of --config)
problem records:
  --open-problems [N] plan one record per top-N candidate (default 5) and updates for earlier ones;
                      a dry run that prints the plan unless --apply is given
exit status: 0 done, 1 bad input rows (reported, rest analysed) or source errors, 2 usage error.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="CSV export of incidents ('-' reads standard input)")
    src.add_argument("--sink", help="read incidents through this configured sink's API")
    src.add_argument("--source", choices=["forewarn"], help="forewarn: the agent's own tickets and problems")
    p.add_argument("--config", default=None, help="config file (default config/forewarn.yml when it exists)")
    p.add_argument("--since", default=None, help="history analysed: a duration back from --until (default the "
                   "config's trends.since, 90d) or an RFC 3339 time")
    p.add_argument("--until", default=None, help="end of the history (RFC 3339 or Unix seconds; default now)")
    p.add_argument("--columns", default="", help="CSV column mapping ROLE=HEADER,... (roles: id, opened, resolved, "
                   "closed, service, category, group, priority, title, problem)")
    p.add_argument("--json", action="store_true", help="print the JSON document instead of the table")
    p.add_argument("--report", default=None, help="write the HTML report here")
    p.add_argument("--open-problems", dest="open_problems", nargs="?", type=int, const=DEFAULT_OPEN_PROBLEMS,
                   default=None, metavar="N", help=f"problem records for the top N candidates (default "
                   f"{DEFAULT_OPEN_PROBLEMS}); dry run unless --apply")
    p.add_argument("--apply", action="store_true", help="with --open-problems: really open and update the records")
    p.add_argument("--problem-sink", dest="problem_sink", default=None,
                   help="sink for problem records (default: trends.problem_sink, else the --sink read, else "
                   "ticketing.default_sink)")
    p.add_argument("--min-count", dest="min_count", type=int, default=None,
                   help="incidents a cluster needs to be a candidate (default trends.min_count, 3)")
    p.add_argument("--threshold", type=float, default=None,
                   help="title similarity threshold (default trends.similarity_threshold)")


def _load_config(path: str | None) -> Any:
    from agent.config import ConfigErrors, default_config, load_config

    if path is None and os.path.exists("config/forewarn.yml"):
        path = "config/forewarn.yml"
    if path is None:
        return default_config()
    try:
        return load_config(path)
    except ConfigErrors as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        return None


def _window(args: argparse.Namespace, default_since: float) -> tuple[float, float]:
    from agent.clock import parse_time
    from agent.yamlutil import parse_duration

    until = parse_time(args.until) if args.until else time.time()
    if args.since is None:
        return until - default_since, until
    try:
        return until - parse_duration(args.since), until
    except ValueError:
        return parse_time(args.since), until


def command(args: argparse.Namespace) -> int:
    from agent.trends.cluster import ClusterParams
    from agent.trends.history import HistoryError, parse_columns, read_csv
    from agent.trends.stats import EffortPolicy, analyse

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
        from agent.config import default_config

        cfg = default_config()
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
        from agent.trends.readers import ReaderError, make_reader

        try:
            hist = make_reader(cfg, args.sink).read(since, until)
        except ReaderError as e:
            print(f"forewarn trends: {e}", file=sys.stderr)
            return 1
        source_name = f"sink {args.sink}"
    else:
        from agent.trends.own import read_forewarn

        hist = read_forewarn(cfg, since, until)
        source_name = "forewarn's own tickets and problems"
    if hist.truncated:
        print(f"forewarn trends: {source_name}: history cut at a bound (max_pages/max_incidents); "
              f"the analysis covers what was read", file=sys.stderr)

    problem_sink = args.problem_sink or tcfg.problem_sink or args.sink or cfg.ticketing.default_sink
    registry = None
    if args.open_problems is not None:
        from agent.trends.problems import ProblemRegistry

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

    from agent.trends import report

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


def _problems(cfg: Any, registry: Any, analysis: Any, args: argparse.Namespace, sink_name: str,
              out: list[str]) -> int:
    from agent.trends.problems import OUTBOX_FILE, deliver, describe

    planned = registry.plan(analysis, args.open_problems, chart=args.apply)
    if not args.apply:
        out.append(describe(planned, sink_name))
        if planned:
            out.append("(dry run: add --apply to open and update these records)")
        return 0
    from agent.clock import WallClock
    from agent.outbox import Outbox
    from agent.problems import _resolved_paths
    from agent.sinks import SINK_TYPES
    from agent.sinks.local import LocalSink

    entry = next((e for e in cfg.ticketing.sinks if e.name == sink_name), None)
    try:
        if entry is None:  # `local` exists without being listed
            sink: Any = LocalSink("local", LocalSink.Config(), state_dir=cfg.state_dir)
        else:
            sink = SINK_TYPES[entry.type](sink_name, _resolved_paths(cfg, entry.settings), state_dir=cfg.state_dir)
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
        out.append(f"  {p.action} {p.dedup_key} cluster {p.cluster.id}" + (f" -> {sink_name}:{ref}" if ref else ""))
    fresh_dead = [d for d in dead if any(d["dedup_key"] == p.dedup_key for p in done)]
    for d in fresh_dead:
        out.append(f"  FAILED {d['action']} {d['dedup_key']}: {d['reason']}")
    return 1 if pending or fresh_dead else 0
