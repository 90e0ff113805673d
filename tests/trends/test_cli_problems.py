"""`forewarn trends` end to end on CSV input, and --open-problems through the outbox into the
local ticket store: dry run by default, one record per candidate, updates for new occurrences."""

from __future__ import annotations

import json
import os

from agent.cli import main
from agent.tickets.sinks.local import get_ticket, list_tickets
from agent.trends.history import Incident
from agent.trends.problems import ProblemRegistry, dedup_key
from agent.trends.stats import analyse

T0 = 1_735_689_600.0  # 2025-01-01
DAY = 86400.0

ROWS = [  # (title, service, every n days)
    ("Disk full on db-{k} /var", "orders-db", 3),
    ("Login failures on shop ({k})", "shop", 4),
    ("Backup job failed on bk-{k}", "vault", 5),
]


def write_csv(path, days: int) -> None:
    lines = ["number,short_description,opened_at,resolved_at,cmdb_ci,priority"]
    n = 0
    for d in range(days):
        for title, svc, every in ROWS:
            if d % every == 0:
                n += 1
                t = T0 + d * DAY + 3600 * (n % 7)
                lines.append(f"INC{n:05d},{title.format(k=n % 5)},{_ts(t)},{_ts(t + 5400)},{svc},P3")
        # keep ids stable when the history grows: number by (day, row)
    path.write_text("\n".join(lines) + "\n")


def _ts(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def config(tmp_path) -> str:
    p = tmp_path / "forewarn.yml"
    p.write_text(f"global: {{state_dir: {tmp_path / 'state'}}}\nticketing: {{sinks: [{{name: local, type: local}}]}}\n")
    return str(p)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["trends", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_from_a_csv(tmp_path, capsys):
    csv = tmp_path / "export.csv"
    write_csv(csv, 60)
    code, out, err = run(capsys, "--input", str(csv), "--since", "2025-01-01T00:00:00Z", "--until",
                         "2025-03-02T00:00:00Z", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert sorted(c["service"] for c in doc["clusters"]) == ["orders-db", "shop", "vault"]
    assert len(doc["candidates"]) == 3
    disk = next(c for c in doc["clusters"] if c["service"] == "orders-db")
    assert disk["count"] == 20 and disk["mttr_hours"] == 1.5 and disk["first"] == "2025-01-01T01:00:00Z"


def test_bad_rows_exit_1_but_the_rest_is_reported(tmp_path, capsys):
    csv = tmp_path / "export.csv"
    write_csv(csv, 30)
    csv.write_text(csv.read_text() + "INC99999,Disk full on db-1,not a date,,orders-db,P3\n")
    code, out, err = run(capsys, "--input", str(csv), "--since", "2025-01-01T00:00:00Z", "--until",
                         "2025-02-01T00:00:00Z")
    assert code == 1
    assert "column 'opened_at': unparseable date 'not a date'" in err and "1 row(s) skipped" in err
    assert "problem candidates" in out


def test_usage_errors_exit_2(tmp_path, capsys):
    assert run(capsys, "--input", "x.csv", "--apply")[0] == 2
    assert run(capsys, "--input", "x.csv", "--since", "soon")[0] == 2
    try:
        main(["trends"])
    except SystemExit as e:
        assert e.code == 2
    capsys.readouterr()
    code, _, err = run(capsys, "--input", str(tmp_path / "missing.csv"))
    assert code == 1 and "missing.csv" in err


def test_open_problems_dry_run_then_apply_then_rerun_then_updates(tmp_path, capsys):
    cfg = config(tmp_path)
    csv = tmp_path / "export.csv"
    write_csv(csv, 60)
    window = ["--since", "2025-01-01T00:00:00Z", "--until", "2025-03-02T00:00:00Z"]
    code, out, _ = run(capsys, "--input", str(csv), "--config", cfg, "--open-problems", "2", *window)
    assert code == 0 and out.count("would open in local") == 2 and "dry run" in out
    assert not os.path.exists(tmp_path / "state" / "trends.db")  # a dry run writes nothing
    db = str(tmp_path / "state" / "tickets.db")

    code, out, err = run(capsys, "--input", str(csv), "--config", cfg, "--open-problems", "2", "--apply", *window)
    assert code == 0, err
    assert "2 opened, 0 updated" in out
    tickets = list_tickets(db)
    assert len(tickets) == 2 and all(t["rule"] == "forewarn-trends" for t in tickets)
    body = get_ticket(db, tickets[0]["id"])["body"]
    assert "Incidents (newest first):" in body and "Trend:" in body and "Effort:" in body

    # same history again: the two clusters are covered now and get nothing (nothing new);
    # the third candidate moves up into the top 2 and is opened: never a duplicate
    code, out, err = run(capsys, "--input", str(csv), "--config", cfg, "--open-problems", "2", "--apply", *window,
                         "--json")
    assert code == 0
    doc = json.loads(out)
    covered = [c for c in doc["clusters"] if c["covered_by"]]
    assert len(covered) == 2 and all(c["covered_by"].startswith("local:") for c in covered)
    assert len(doc["candidates"]) == 1
    assert "1 opened, 0 updated" in err  # with --json the summary goes to stderr
    assert len(list_tickets(db)) == 3

    # a longer history: each record gets its new occurrences as an update, none is opened again
    write_csv(csv, 75)
    later = ["--since", "2025-01-01T00:00:00Z", "--until", "2025-03-17T00:00:00Z"]
    code, out, err = run(capsys, "--input", str(csv), "--config", cfg, "--open-problems", "3", "--apply", *later)
    assert code == 0, err
    assert "0 opened, 3 updated" in out
    tickets = list_tickets(db)
    assert len(tickets) == 3
    first = get_ticket(db, min(t["id"] for t in tickets))
    assert [c["action"] for c in first["comments"]] == ["open", "update"]
    assert "new occurrence(s)" in first["comments"][1]["body"]
    # and again: nothing at all
    code, out, _ = run(capsys, "--input", str(csv), "--config", cfg, "--open-problems", "3", "--apply", *later)
    assert "0 opened, 0 updated" in out and len(list_tickets(db)) == 3


def test_a_drifting_signature_still_matches_its_record_by_shared_incidents(tmp_path):
    from agent.trends.problems import Record

    incs = [Incident(f"I{k}", T0 + k * DAY, "Disk full on db-1", service="db") for k in range(6)]
    a = analyse(incs, T0, T0 + 30 * DAY)
    (c,) = a.clusters
    reg = ProblemRegistry(str(tmp_path), "local")
    reg.records["trend-old"] = Record("local", "trend-old", "db | some older wording", "cold", 2,
                                      ["I0", "I1", "I2", "I3"], T0, T0)
    assert reg.match(c).dedup_key == "trend-old"
    assert reg.covered(c) == "local:pending trend-old"
    plan = reg.plan(analyse(incs, T0, T0 + 30 * DAY, covered=reg.covered), 5, chart=False)
    assert [(p.action, p.dedup_key, p.new_ids) for p in plan] == [("update", "trend-old", ["I4", "I5"])]
    assert plan[0].ticket.sequence == 3
    assert dedup_key("x") == dedup_key("x") and dedup_key("x").startswith("trend-")
