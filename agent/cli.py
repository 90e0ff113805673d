"""`forewarn` command line (DESIGN.md, contract: command line).

Exit codes: 0 success, 1 a finding (invalid config, failed rule test), 2 usage error.
Subcommand modules are imported only when used, so `forewarn check` stays quick and the
daemon never imports what it does not need. It imports the commands (by name) and nothing else
of the agent.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from agent import __version__

DEFAULT_CONFIG = "config/forewarn.yml"

BACKTEST_EPILOG = """\
input CSV formats (the header row decides; timestamps Unix seconds or RFC 3339):
  long:  timestamp,series,value
         1700000000,"node_filesystem_avail_bytes{mountpoint=""/var""}",5.1e9
  long:  metric,labels,timestamp,value      (labels as {name="value",...})
  wide:  timestamp,<series>,<series>,...    (one column per series; empty cell: no sample)
values: numbers, NaN, +Inf, -Inf or stale. Bad rows are reported as PATH:LINE: message.
exit status: 0 done, 1 bad input, 2 usage error.
"""

TRENDS_OPEN_PROBLEMS = 5

TRENDS_EPILOG = """\
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # usage errors exit 2, as the contract says
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _agent_flags(p: argparse.ArgumentParser, default: str) -> None:
    """The flags of commands that act on the running agent, accepted before and after the
    action (`default` SUPPRESS on the action's parser, so a value given before it stands)."""
    suppress = default == argparse.SUPPRESS
    p.add_argument("--config", default=default, help=None if suppress else "config file: where the agent listens "
                   "and, with --offline, its state directory (default %(default)s)")
    p.add_argument("--url", default=argparse.SUPPRESS if suppress else None,
                   help=None if suppress else "the agent's URL (default: from the config's web.listen_address)")
    p.add_argument("--offline", action="store_true", default=argparse.SUPPRESS if suppress else False,
                   help=None if suppress else "act on the state directory instead of the running agent "
                   "(when it is stopped)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="forewarn", description="Proactive monitoring agent: preventive problem tickets.")
    p.add_argument("--version", action="version", version=f"forewarn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", default=DEFAULT_CONFIG, help="config file (default %(default)s)")
    run.add_argument("--web.listen-address", dest="listen_address", default=None, help="HOST:PORT for /metrics and the API")
    run.add_argument("--web.enable-lifecycle", dest="enable_lifecycle", action="store_true",
                     help="allow POST /-/reload (also web.enable_lifecycle in the config)")
    run.add_argument("--web.enable-admin-api", dest="enable_admin_api", action="store_true",
                     help="allow creating and expiring silences over HTTP and in the UI (also web.enable_admin_api)")
    run.add_argument("--web.config.file", dest="web_config_file", default=None,
                     help="TLS and basic auth, in the exporter toolkit's format (also web.config_file)")
    run.add_argument("--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"])
    run.add_argument("--shard", default=None, help="i/n: take only this agent's share of series")

    check = sub.add_parser("check", help="validate config and rule files")
    check.add_argument("--config", default=None,
                       help=f"config file (default {DEFAULT_CONFIG} when no rule file is given)")
    check.add_argument("rule_files", nargs="*", help="rule files to check")

    test = sub.add_parser("test", help="run rule unit tests (promtool test rules format)")
    test.add_argument("test_files", nargs="+")
    test.add_argument("--run", action="append", default=[], metavar="REGEX",
                      help="only test groups whose name matches (repeatable), as promtool's --run")

    bt = sub.add_parser("backtest", help="replay history through rules", epilog=BACKTEST_EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    bt.add_argument("--rules", required=True, action="append", help="rule file (repeatable)")
    bt.add_argument("--input", required=True, help="CSV file or Prometheus URL")
    bt.add_argument("--from", dest="from_", default=None, help="start time (RFC 3339 or Unix seconds)")
    bt.add_argument("--to", default=None, help="end time")
    bt.add_argument("--step", default=None, help="evaluation step (default: each group's interval)")
    bt.add_argument("--query", action="append", default=[], help="selector to fetch when --input is a URL")
    bt.add_argument("--json", action="store_true", help="machine-readable output")
    bt.add_argument("--report", default=None, help="write an HTML report here")
    bt.add_argument("--incidents", default=None,
                    help="CSV of known incidents (start,end[,labels]) that anomaly tickets are judged against")
    bt.add_argument("--progress", action="store_true",
                    help="show progress on stderr even when it is not a terminal (it is shown on one)")

    det = sub.add_parser("detect", help="score one series for anomalies")
    det.add_argument("--input", required=True, help="CSV with timestamp,value")
    det.add_argument("--output", required=True, help="CSV with an anomaly_score column added")
    det.add_argument("--model", default="default", help="detector name (default %(default)s)")

    tk = sub.add_parser("tickets", help="tickets and the outbox of the running agent")
    _agent_flags(tk, DEFAULT_CONFIG)
    tk.add_argument("action", nargs="?", default="list", choices=["list", "show", "outbox"])
    tk.add_argument("id", nargs="?")
    tk.add_argument("--json", action="store_true")

    slo = sub.add_parser("slo", help="service level objectives")
    slo_sub = slo.add_subparsers(dest="slo_action", metavar="ACTION", parser_class=_Parser)
    sexp = slo_sub.add_parser("export", help="the rules generated for slo: rules, as a Prometheus rule file")
    sexp.add_argument("rule_files", nargs="+")
    sexp.add_argument("--evaluation-interval", default="1m",
                      help="interval of groups that give none (default %(default)s)")
    sexp.add_argument("--output", "-o", default=None, help="write to this file instead of stdout")

    si = sub.add_parser("silence", help="silences of the running agent")
    _agent_flags(si, DEFAULT_CONFIG)
    si_sub = si.add_subparsers(dest="silence_action", metavar="ACTION", parser_class=_Parser)
    add = si_sub.add_parser("add", help="add a silence")
    _agent_flags(add, argparse.SUPPRESS)
    add.add_argument("matchers", nargs="+", help='label matchers, e.g. alertname=FilesystemWillFill host=~"db-.*"')
    add.add_argument("--duration", default="1h")
    add.add_argument("--end", default=None, help="RFC 3339 end time (instead of --duration)")
    add.add_argument("--comment", default="")
    add.add_argument("--author", default=None)
    ls = si_sub.add_parser("list", help="list active and pending silences")
    _agent_flags(ls, argparse.SUPPRESS)
    ls.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    exp = si_sub.add_parser("expire", help="expire a silence")
    _agent_flags(exp, argparse.SUPPRESS)
    exp.add_argument("silence_id")

    rem = sub.add_parser("remediation", help="remediations of the running agent: status and the kill switch")
    _agent_flags(rem, DEFAULT_CONFIG)
    rem_sub = rem.add_subparsers(dest="remediation_action", metavar="ACTION", parser_class=_Parser)
    rst = rem_sub.add_parser("status", help="the kill switch, dry run, definitions and the latest attempts")
    _agent_flags(rst, argparse.SUPPRESS)
    rst.add_argument("--limit", type=int, default=20, help="attempts shown (default %(default)s)")
    for action, text in (("disable", "the kill switch: no new remediation starts (running ones finish)"),
                         ("enable", "let remediations start again (the agent's admin API, or --offline)")):
        ra = rem_sub.add_parser(action, help=text)
        _agent_flags(ra, argparse.SUPPRESS)
        ra.add_argument("--reason", default="", help="why (shown by status, the API and the tickets)")
    for ra in rem_sub.choices.values():
        ra.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    tr = sub.add_parser("trends", help="incident-trend analysis: recurring clusters, problem candidates",
                        epilog=TRENDS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = tr.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="CSV export of incidents ('-' reads standard input)")
    src.add_argument("--sink", help="read incidents through this configured sink's API")
    src.add_argument("--source", choices=["forewarn"], help="forewarn: the agent's own tickets and problems")
    tr.add_argument("--config", default=None, help="config file (default config/forewarn.yml when it exists)")
    tr.add_argument("--since", default=None, help="history analysed: a duration back from --until (default the "
                    "config's trends.since, 90d) or an RFC 3339 time")
    tr.add_argument("--until", default=None, help="end of the history (RFC 3339 or Unix seconds; default now)")
    tr.add_argument("--columns", default="", help="CSV column mapping ROLE=HEADER,... (roles: id, opened, resolved, "
                    "closed, service, category, group, priority, title, problem)")
    tr.add_argument("--json", action="store_true", help="print the JSON document instead of the table")
    tr.add_argument("--report", default=None, help="write the HTML report here")
    tr.add_argument("--open-problems", dest="open_problems", nargs="?", type=int, const=TRENDS_OPEN_PROBLEMS,
                    default=None, metavar="N", help=f"problem records for the top N candidates (default "
                    f"{TRENDS_OPEN_PROBLEMS}); dry run unless --apply")
    tr.add_argument("--apply", action="store_true", help="with --open-problems: really open and update the records")
    tr.add_argument("--problem-sink", dest="problem_sink", default=None,
                    help="sink for problem records (default: trends.problem_sink, else the --sink read, else "
                    "ticketing.default_sink)")
    tr.add_argument("--min-count", dest="min_count", type=int, default=None,
                    help="incidents a cluster needs to be a candidate (default trends.min_count, 3)")
    tr.add_argument("--threshold", type=float, default=None,
                    help="title similarity threshold (default trends.similarity_threshold)")
    return p


# subcommand -> module with `command(args) -> int`
_COMMANDS = {
    "run": "agent.commands.run",
    "check": "agent.commands.check",
    "test": "agent.commands.test",
    "backtest": "agent.commands.backtest",
    "detect": "agent.commands.detect",
    "tickets": "agent.commands.tickets",
    "silence": "agent.commands.silence",
    "remediation": "agent.commands.remediation",
    "slo": "agent.commands.slo",
    "trends": "agent.commands.trends",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "silence" and not args.silence_action:
        parser.parse_args(["silence", "--help"])
    if args.command == "remediation" and not args.remediation_action:
        parser.parse_args(["remediation", "--help"])
    if args.command == "remediation":
        args.json = getattr(args, "json", False)
        args.reason = getattr(args, "reason", "")
        args.limit = getattr(args, "limit", 20)
    if args.command == "slo" and not args.slo_action:
        parser.parse_args(["slo", "--help"])
    if args.command == "silence" and not hasattr(args, "json"):
        args.json = False
    module = importlib.import_module(_COMMANDS[args.command])
    try:
        return int(module.command(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
