"""`forewarn trends --sink rt` against a real Request Tracker 5 (tests/rt_server.py).

RT is seeded through its REST2 API with an incident history in two queues (one per service).
REST2 cannot back-date `Created`, so, as imports into RT do, each ticket keeps its original
opening time in `Starts`, and the reader is configured with `opened_field: Starts`. The
analysis must find the seeded clusters with exactly their tickets; `--open-problems --apply`
must open one problem ticket (queue General, DedupKey custom field) per candidate, a second
run none, and a run after new incidents only comment on the existing problem tickets.
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap
import uuid

import requests

from agent.cli import main

T0 = dt.datetime(2025, 3, 3, tzinfo=dt.UTC).timestamp()
DAY = 86400.0

# (queue suffix, title template, days between, first day, count, hours to restore)
PATTERNS = [
    ("db", "Disk full on db-{k} /var/lib/postgresql", 4, 0, 8, 3),
    ("db", "Replication lag {k}m on db-{k}", 6, 1, 6, 1),
    ("shop", "Login failures on shop ({k} users)", 5, 2, 7, 2),
]
ONE_OFFS = [("shop", "Projector broken in meeting room 4"), ("db", "Request: new read-only DB account")]


def rest(rt, method: str, path: str, body=None):
    r = requests.request(method, f"{rt.url}/REST/2.0{path}", json=body, timeout=30,
                         headers={"Authorization": f"token {rt.token}"})
    assert r.status_code in (200, 201), (r.status_code, r.text)
    return r.json()


def rt_time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def seed(rt, queues: dict[str, str], pattern_index: int, start: int, stop: int) -> list[str]:
    """Create tickets start..stop-1 of one pattern; returns their ids."""
    suffix, template, every, first, _, restore_h = PATTERNS[pattern_index]
    ids = []
    for k in range(start, stop):
        opened = T0 + (first + k * every) * DAY + 3600 * (k % 5)
        body = {"Queue": queues[suffix], "Subject": template.format(k=k % 4 + 1), "Content": "seeded incident",
                "Starts": rt_time(opened), "Status": "resolved", "Resolved": rt_time(opened + restore_h * 3600)}
        ids.append(str(rest(rt, "POST", "/ticket", body)["id"]))
    return ids


def write_config(tmp_path, rt) -> str:
    p = tmp_path / "forewarn.yml"
    p.write_text(textwrap.dedent(f"""\
        global: {{state_dir: {tmp_path / 'state'}}}
        ticketing:
          sinks:
            - {{name: rt, type: request_tracker, url: '{rt.url}', credentials_file: '{rt.token_file}'}}
        trends:
          readers:
            rt: {{opened_field: Starts, page_size: 10}}
        """))
    return str(p)


def trends(capsys, cfg: str, until: float, *extra: str) -> tuple[int, dict, str]:
    code = main(["trends", "--sink", "rt", "--config", cfg, "--since", "2025-03-01T00:00:00Z",
                 "--until", dt.datetime.fromtimestamp(until, dt.UTC).isoformat(), "--json", *extra])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_trends_on_a_real_rt_finds_the_seeded_clusters_and_opens_one_problem_each(rt_server, tmp_path, capsys):
    rt = rt_server
    tag = uuid.uuid4().hex[:6]
    queues = {s: f"{s}-{tag}" for s in ("db", "shop")}
    for name in queues.values():
        rest(rt, "POST", "/queue", {"Name": name, "Description": "seeded service"})
    seeded = [seed(rt, queues, i, 0, p[4]) for i, p in enumerate(PATTERNS)]
    one_offs = []
    for suffix, title in ONE_OFFS:
        one_offs.append(str(rest(rt, "POST", "/ticket", {
            "Queue": queues[suffix], "Subject": title, "Starts": rt_time(T0 + 9 * DAY)})["id"]))
    cfg = write_config(tmp_path, rt)
    until = T0 + 60 * DAY

    code, doc, err = trends(capsys, cfg, until)
    assert code == 0, err
    found = sorted(sorted(c["incidents"], key=int) for c in doc["clusters"])
    assert found == sorted([sorted(s, key=int) for s in seeded] + [[i] for i in one_offs])
    by_first = {c["incidents"][0]: c for c in doc["clusters"]}
    disk = by_first[seeded[0][0]]
    assert disk["service"] == queues["db"] and disk["count"] == 8 and disk["mttr_hours"] == 3.0
    assert disk["first"] == "2025-03-03T00:00:00Z"
    assert len(doc["candidates"]) == 3 and all(by_first[s[0]]["id"] in doc["candidates"] for s in seeded)

    def problem_tickets():
        return rt.search("'CF.{DedupKey}' LIKE 'trend-' AND Queue = 'General'")

    # first run: one problem ticket per candidate
    code, doc, err = trends(capsys, cfg, until, "--open-problems", "--apply")
    assert code == 0, err
    assert "3 opened, 0 updated" in err
    problems = problem_tickets()
    assert len(problems) == 3
    subjects = sorted(p["Subject"] for p in problems)
    assert any("disk full" in s.lower() and "8x" in s for s in subjects), subjects

    # second run: the problem tickets are neither incidents nor opened again; clusters are covered
    code, doc, err = trends(capsys, cfg, until, "--open-problems", "--apply")
    assert code == 0, err
    assert "0 opened, 0 updated" in err and len(problem_tickets()) == 3
    assert doc["candidates"] == []
    refs = {p["id"] for p in problems}
    covered = [c["covered_by"] for c in doc["clusters"] if c["covered_by"]]
    assert len(covered) == 3 and {c.split(":", 1)[1] for c in covered} == refs

    # new occurrences of the disk pattern: an update (a comment) on its problem, nothing opened
    new = seed(rt, queues, 0, 8, 10)
    code, doc, err = trends(capsys, cfg, T0 + 70 * DAY, "--open-problems", "--apply")
    assert code == 0, err
    assert "0 opened, 1 updated" in err and len(problem_tickets()) == 3
    disk = next(c for c in doc["clusters"] if seeded[0][0] in c["incidents"])
    assert set(new) <= set(disk["incidents"])
    ref = disk["covered_by"].split(":", 1)[1]
    comments = [h for h in rt.history(ref) if h.get("Type") == "Comment"]
    assert len(comments) == 1
