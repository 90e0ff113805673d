"""`forewarn backtest`: known breaches give the expected tickets at the expected times,
through the daemon's own rule and problem code; CSV formats and errors; JSON, HTML, exit codes;
input from a Prometheus-compatible HTTP API."""

from __future__ import annotations

import http.server
import json
import math
import os
import re
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from statistics import NormalDist

import numpy as np
import pytest

from agent import replay
from agent.cli import main
from agent.commands import backtest, backtest_outcome, backtest_report
from agent.config.schema import TicketingConfig
from agent.models.linear import RATE_UNCERTAINTY
from agent.rules.manager import RuleOptions
from agent.sources import recording
from agent.store import make_labels

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures", "backtest")
RULES = os.path.join(FIX, "rules.yml")
LONG = os.path.join(FIX, "long.csv")
WIDE = os.path.join(FIX, "wide.csv")
T0 = 1_700_000_000.0  # first row of the fixtures; /data falls 1000 -> 0 from minute 60 to 660
# The forecast rule (horizon 6 h, confidence 0.9, `for: 5m`) on that noiseless line: with the
# fill rate known to within RATE_UNCERTAINTY (1 sd), a breach T minutes away is inside the
# horizon with probability Phi((1 - T / 360) / RATE_UNCERTAINTY), 0.9 once T is at most
# 360 * (1 - z_0.9 * RATE_UNCERTAINTY): pending from the next minute, firing 5 minutes later.
_Z90 = NormalDist().inv_cdf(0.9)
FIRE_MIN = math.ceil(660 - 360 * (1 - _Z90 * RATE_UNCERTAINTY)) + 5
LEFT_MIN = 660 - FIRE_MIN  # minutes to the breach when the ticket opens
FIRE_AT = datetime.fromtimestamp(T0 + FIRE_MIN * 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _opens(res: backtest.BacktestResult) -> list[tuple[float, str, str]]:
    return [(e.time, e.rule, e.labels.get("mount", "")) for e in res.events if e.action == "open"]


def test_known_breach_opens_the_expected_tickets_at_the_expected_times() -> None:
    res = backtest.run_backtest(backtest.load_rules([RULES]), recording.read_csv(LONG))
    # Forecast: the line reaches 0 at minute 660; firing at FIRE_MIN (see above).
    # Threshold: below 100 from minute 601 (100.0 exactly at 600), firing at 606.
    assert _opens(res) == [(T0 + FIRE_MIN * 60, "DiskWillFill", "/data"), (T0 + 606 * 60, "DiskLow", "/data")]
    first = res.events[0]
    assert first.reason == "first notification" and first.sequence == 1
    assert first.value == pytest.approx(1000 - (FIRE_MIN - 60) * 1000 / 600, abs=1e-3)
    assert first.eta == pytest.approx(LEFT_MIN * 60, rel=1e-3)  # the median: the line's own crossing
    # the 80 % interval: 10th and 90th percentiles of the breach time, the rate within RATE_UNCERTAINTY
    assert first.eta_low == pytest.approx(LEFT_MIN * 60 / (1 + _Z90 * RATE_UNCERTAINTY), rel=0.01)
    assert first.eta_high == pytest.approx(LEFT_MIN * 60 / (1 - _Z90 * RATE_UNCERTAINTY), rel=0.01)
    assert first.probability == pytest.approx(NormalDist().cdf((1 - LEFT_MIN / 360) / RATE_UNCERTAINTY), abs=0.005)
    # nothing about the flat /var series; the forecast ticket is updated as the breach nears
    assert all(e.labels["mount"] == "/data" for e in res.events)
    assert [e.action for e in res.events if e.rule == "DiskWillFill"] == ["open", "update", "update"]
    summary = {s.rule: s for s in res.summary}
    assert summary["DiskWillFill"].tickets == 1 and summary["DiskWillFill"].open_at_end == 1
    assert summary["DiskWillFill"].median_eta_at_open_seconds == pytest.approx(LEFT_MIN * 60, rel=1e-3)
    assert summary["DiskLow"].tickets == 1 and summary["DiskLow"].kind == "threshold"
    assert len(res.open_at_end) == 2
    assert res.evaluations == 721  # one per minute, both ends included


def test_wide_format_with_gaps_gives_the_same_tickets() -> None:
    rec = recording.read_csv(WIDE)
    assert [dict(lab)["mount"] for lab in rec.labels] == ["/data", "/var"]
    assert len(rec) == 2 * 721 - sum(1 for i in range(721) if i % 7 == 3)
    res = backtest.run_backtest(backtest.load_rules([RULES]), rec)
    assert _opens(res) == [(T0 + FIRE_MIN * 60, "DiskWillFill", "/data"), (T0 + 606 * 60, "DiskLow", "/data")]


def test_clear_when_the_series_recovers_and_step_and_window(tmp_path) -> None:
    path = tmp_path / "recover.csv"
    rows = ["metric,labels,timestamp,value"]  # the four-column long format
    for i in range(0, 121):
        v = 50.0 if 20 <= i < 60 else 500.0
        rows.append(f'disk_free_bytes,"{{mount=""/x""}}",{T0 + 60 * i:.0f},{v}')
    path.write_text("\n".join(rows) + "\n")
    groups = backtest.load_rules([RULES])
    res = backtest.run_backtest(groups, recording.read_csv(str(path)))
    low = [(e.action, e.time) for e in res.events if e.rule == "DiskLow"]
    assert low == [("open", T0 + 25 * 60), ("clear", T0 + 60 * 60)]
    assert {s.rule: s for s in res.summary}["DiskLow"].median_duration_seconds == 35 * 60
    assert res.open_at_end == []
    # --step 10m: evaluations at 0, 10, 20, ...: active at 20, firing at 30, cleared at 60
    res = backtest.run_backtest(groups, recording.read_csv(str(path)), step=600.0)
    assert [(e.action, e.time) for e in res.events if e.rule == "DiskLow"] == [
        ("open", T0 + 30 * 60), ("clear", T0 + 60 * 60)]
    # --from/--to cut the data: the problem has not fired yet at minute 24
    res = backtest.run_backtest(groups, recording.read_csv(str(path)), start=T0, end=T0 + 24 * 60)
    assert res.events == [] and res.evaluations == 25


def test_cli_json_shape_and_html_report(tmp_path, capsys) -> None:
    report = tmp_path / "out.html"
    rc = main(["backtest", "--rules", RULES, "--input", LONG, "--json", "--report", str(report)])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) >= {"from", "to", "series", "samples", "evaluations", "events", "summary", "open_at_end"}
    assert doc["series"] == 2 and doc["samples"] == 2 * 721
    ev = doc["events"][0]
    assert set(ev) >= {"time", "time_rfc3339", "action", "rule", "labels", "reason", "value", "eta", "eta_low",
                       "eta_high", "probability", "dedup_key", "sequence", "title"}
    assert ev["time_rfc3339"] == FIRE_AT and ev["action"] == "open"
    assert ev["anomaly_score"] is None
    assert {s["rule"] for s in doc["summary"]} == {"DiskLow", "DiskWillFill"}
    summary = {s["rule"]: s for s in doc["summary"]}
    assert summary["DiskWillFill"]["true_tickets"] == 1 and summary["DiskWillFill"]["false_tickets"] == 0
    assert summary["DiskWillFill"]["median_lead_time_seconds"] == pytest.approx(LEFT_MIN * 60)
    assert doc["warnings"] == []
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page
    assert page.count("<svg") == 2  # one chart per problem
    charts = [ET.fromstring(m) for m in re.findall(r"<svg.*?</svg>", page, re.S)]  # well-formed
    ns = "{http://www.w3.org/2000/svg}"

    def of(chart, tag, cls):
        return [e for e in chart.iter(f"{ns}{tag}") if cls in (e.get("class") or "").split()]

    # The forecast problem: the rule's own series only (the /data one, not /var), the
    # threshold, a forecast line and band at the open and each update, a mark per action,
    # the actual breach shaded, and time and value axes.
    fc = charts[0]
    assert len(of(fc, "polyline", "series")) == 1
    assert len(of(fc, "line", "threshold")) == 1
    assert len(of(fc, "line", "forecast")) == 3 and len(of(fc, "polygon", "band")) == 3
    assert [m.get("class") for m in of(fc, "line", "mark")] == ["mark open", "mark update", "mark update"]
    assert len(of(fc, "rect", "breach")) == 1
    labels = [t.text for t in fc.iter(f"{ns}text")]
    assert "UTC" in labels and any(re.fullmatch(r"\d\d:\d\d", t or "") for t in labels)
    legend = page.split(re.findall(r"<svg.*?</svg>", page, re.S)[0])[1].split("</div>")[0]
    assert "{mount=&quot;/data&quot;}" in legend and "threshold 0" in legend and "actual breach" in legend
    # The threshold problem is charted too: the left side of `disk_free_bytes < 100`, the
    # threshold 100 and the open mark.
    th = charts[1]
    assert len(of(th, "polyline", "series")) == 1 and len(of(th, "line", "threshold")) == 1
    assert [m.get("class") for m in of(th, "line", "mark")] == ["mark open"]
    assert "DiskWillFill" in page and "first notification" in page and "http" not in page.split("<body>")[1].replace(
        "http://www.w3.org/2000/svg", "")  # self-contained: no external resources
    assert "<script" not in page


def test_cli_text_output(capsys) -> None:
    assert main(["backtest", "--rules", RULES, "--input", WIDE, "--step", "60"]) == 0
    out = capsys.readouterr().out
    assert f"{FIRE_AT}  open    DiskWillFill" in out
    assert f"breach in ~{round(LEFT_MIN / 60)} h" in out
    assert "DiskLow" in out and "threshold" in out


@pytest.mark.parametrize("content, message", [
    ("timestamp,series,value\n1700000000,up,1\nyesterday,up,2\n", "{p}:3: not a valid time: 'yesterday'"),
    ("timestamp,series,value\n1700000000,up,1\n1700000060,up,many\n", "{p}:3: bad value 'many'"),
    ("timestamp,series,value\n\n# comment\n1700000000,up{a=,1\n", "{p}:4: "),
    ("timestamp,series,value\n1700000000,up,1,2\n", "{p}:2: want 3 fields, got 4"),
    ("time,value\n1,2\n", "{p}:1: unknown header"),
    ('timestamp,up,"up{a=""b""}"\n1700000000,1\n', "{p}:2: want 3 fields (timestamp and 2 series), got 2"),
    ('timestamp,up,"up{a=""b""}"\n1700000000,1,x\n', "{p}:2: column 3: bad value 'x'"),
    ('timestamp,up,up\n1700000000,1,2\n', "{p}:1: column 3: series 'up' appears twice"),
    ("", "{p}:1: empty file"),
])
def test_csv_errors_name_the_line(tmp_path, capsys, content: str, message: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(recording.ReplayInputError) as ei:
        recording.read_csv(str(p))
    assert ei.value.messages[0].startswith(message.format(p=p))
    assert main(["backtest", "--rules", RULES, "--input", str(p)]) == 1
    assert message.format(p=p) in capsys.readouterr().err


def test_exit_codes(tmp_path, capsys) -> None:
    assert main(["backtest", "--rules", RULES, "--input", str(tmp_path / "missing.csv")]) == 1
    assert "missing.csv:0: cannot read file" in capsys.readouterr().err
    bad_rules = tmp_path / "bad.yml"
    bad_rules.write_text("groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: up >\n")
    assert main(["backtest", "--rules", str(bad_rules), "--input", LONG]) == 1
    assert f"{bad_rules}:5:" in capsys.readouterr().err
    assert main(["backtest", "--rules", RULES, "--input", LONG, "--from", "soon"]) == 2
    assert "--from: not a valid time" in capsys.readouterr().err
    assert main(["backtest", "--rules", RULES, "--input", LONG, "--step=-5m"]) == 2
    assert main(["backtest", "--rules", RULES, "--input", LONG, "--from", "2030-01-01T00:00:00Z"]) == 1
    assert "no samples" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ei:
        main(["backtest", "--rules", RULES])  # --input missing
    assert ei.value.code == 2
    with pytest.raises(SystemExit) as ei:
        main(["backtest", "--help"])
    assert ei.value.code == 0
    assert "timestamp,series,value" in capsys.readouterr().out  # the formats are in the help


def test_time_formats() -> None:
    assert recording.parse_time("1700000000") == 1_700_000_000
    assert recording.parse_time("2023-11-14T22:13:20Z") == 1_700_000_000
    assert recording.parse_time("2023-11-14T23:13:20+01:00") == 1_700_000_000
    assert recording.parse_time("2023-11-14T22:13:20") == 1_700_000_000  # no offset: UTC
    assert np.isnan(recording.parse_value("stale"))


class _FakePrometheus(http.server.BaseHTTPRequestHandler):
    """Answers instant queries of `selector[Ns]` the way Prometheus does: the raw samples in
    (time - N, time], as a matrix."""

    samples: dict[str, list[tuple[dict[str, str], np.ndarray, np.ndarray]]] = {}
    seen: list[str] = []

    def do_POST(self) -> None:
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        query, at = form["query"][0], float(form["time"][0])
        self.seen.append(query)
        selector, rng = query[:-1].rsplit("[", 1)
        lo = at - float(rng.rstrip("s"))
        result = []
        for metric, t, v in self.samples.get(selector, []):
            keep = (t > lo) & (t <= at)
            result.append({"metric": metric, "values": [[a, repr(b)] for a, b in zip(t[keep].tolist(), v[keep].tolist())]})
        body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_input_from_a_prometheus_api(capsys) -> None:
    rec = recording.read_csv(LONG)
    series = []
    for i, lab in enumerate(rec.labels):
        t, v = rec.series_values(i)
        series.append((dict(lab), t, v))
    _FakePrometheus.samples = {"disk_free_bytes": series}
    _FakePrometheus.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        # default selectors come from the rules' expressions
        assert backtest.rule_selectors(backtest.load_rules([RULES])) == ["disk_free_bytes"]
        rc = main(["backtest", "--rules", RULES, "--input", url, "--from", "2023-11-14T22:13:20Z", "--to", str(T0 + 720 * 60),
                   "--json"])
        assert rc == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["samples"] == 2 * 721
        opens = [(e["time"], e["rule"]) for e in doc["events"] if e["action"] == "open"]
        assert opens == [(T0 + FIRE_MIN * 60, "DiskWillFill"), (T0 + 606 * 60, "DiskLow")]
        assert all(q.startswith("disk_free_bytes[") for q in _FakePrometheus.seen)
        assert len(_FakePrometheus.seen) >= 2  # 6 h chunks
        fetched = recording.fetch_recording(url, ["disk_free_bytes"], T0, T0 + 720 * 60)
        assert len(fetched) == 2 * 721
        assert fetched.labels == [make_labels("disk_free_bytes", {"mount": "/data"}),
                                  make_labels("disk_free_bytes", {"mount": "/var"})]
        # a server that is not there: exit 1 with the reason
        server.shutdown()
        server.server_close()
        assert main(["backtest", "--rules", RULES, "--input", url, "--query", "up"]) == 1
        assert "connection" in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()


def test_unsorted_unaligned_and_repeated_samples(tmp_path) -> None:
    rows = ["timestamp,series,value"]
    for i in reversed(range(60)):  # newest first: the reader sorts
        rows.append(f'{T0 + 60 * i + 7:.0f},"disk_free_bytes{{mount=""/b""}}",{50.0 if i >= 30 else 500.0}')
        rows.append(f'{T0 + 60 * i + 13 * (i % 4):.0f},"disk_free_bytes{{mount=""/a""}}",500')
    rows.append(f'{T0 + 7:.0f},"disk_free_bytes{{mount=""/b""}}",1')  # a repeat: the first row wins
    path = tmp_path / "jitter.csv"
    path.write_text("\n".join(rows) + "\n")
    rec = recording.read_csv(str(path))
    assert np.all(np.diff(rec.t) >= 0) and len(rec) == 121
    res = backtest.run_backtest(backtest.load_rules([RULES]), rec, step=60.0)
    # /b drops below 100 at minute 30 (+7 s): seen at the evaluation of minute 31, firing 5 m later
    assert [(e.action, e.time, e.labels["mount"]) for e in res.events if e.rule == "DiskLow"] == [
        ("open", T0 + 36 * 60, "/b")]
    # both feeding paths store the same samples: one append per timestamp, or one extend per series
    for step in (60.0, 3600.0):
        store = recording.store_for(rec, 3600.0)
        feeder = recording.Feeder(rec, store)
        for t in np.arange(T0, T0 + 3600 + step, step):
            feeder.feed_until(t)
        sid = store.get_id(make_labels("disk_free_bytes", {"mount": "/b"}))
        t_b, v_b = store.raw(sid)
        assert len(t_b) == 60 and v_b[0] == 500.0


def _replay(step: float | None, **kw) -> tuple[list[float], list[tuple[float, int, list[str]]], replay.ReplayResult]:
    """Replay the fixture with the daemon's defaults: (times fed, (time, samples fed, ticket
    actions) per tick, result)."""
    rec = recording.read_csv(LONG)
    store = recording.store_for(rec, 3600.0)
    feeder = recording.Feeder(rec, store)
    fed: list[float] = []
    ticks: list[tuple[float, int, list[str]]] = []

    def feed(t: float) -> None:
        fed.append(t)
        feeder.feed_until(t)

    def on_tick(tick: replay.Tick) -> bool:
        ticks.append((tick.time, feeder.pos, [f"{t.action} {t.rule}" for _, t in tick.tickets]))
        return kw.get("until") is None or tick.time < kw["until"]

    run = replay.replay(backtest.load_rules([RULES]), store, feed, start=T0, end=T0 + 610 * 60,
                        options=RuleOptions(default_interval=60.0), ticketing=kw.get("ticketing"), step=step,
                        on_tick=on_tick)
    return fed, ticks, run


def test_replay_steps_feeds_and_reports_each_tick() -> None:
    """The loop `forewarn test` and `forewarn backtest` share: samples fed up to each time
    before it is evaluated, on a grid or when groups are due, ticket actions per tick."""
    # the group runs every minute; a 10-minute grid sees DiskLow (`for: 5m`) first at minute 610, pending
    for step, want, problems in ((None, [T0 + 60 * k for k in range(611)], ["DiskLow", "DiskWillFill"]),
                                 (600.0, [T0 + 600 * k for k in range(62)], ["DiskWillFill"])):
        fed, ticks, run = _replay(step, ticketing=TicketingConfig())
        assert fed == want == [t for t, _, _ in ticks] and run.evaluations == len(want)
        assert [pos for _, pos, _ in ticks] == [2 * (int(t - T0) // 60 + 1) for t in want]  # both series, up to t
        opens = [(t, a) for t, _, acts in ticks for a in acts if a.startswith("open")]
        if step is None:  # as `forewarn backtest` reports them
            assert opens == [(T0 + FIRE_MIN * 60, "open DiskWillFill"), (T0 + 606 * 60, "open DiskLow")]
        assert sorted(p.rule for p in run.problems) == problems
    # without ticketing: rules only; a handler returning False ends the replay
    fed, ticks, run = _replay(None, until=T0 + 120)
    assert run.evaluations == 3 and run.problems == [] and all(acts == [] for _, _, acts in ticks)


OUTCOME_RULES = """\
groups:
  - name: outcome
    interval: 1m
    rules:
      - alert: FreeLow
        expr: free < 100
        for: 5m
      - alert: FreeWillRunOut
        expr: free
        forecast: {model: linear, lookback: 1h, horizon: 2h, threshold: 0, direction: below, confidence: 0.9}
        for: 5m
      - alert: Typo
        expr: fre_typo < 1
      - alert: TypoForecast
        expr: fre_typo
        forecast: {model: linear, lookback: 1h, horizon: 2h, threshold: 0}
"""


def _outcome_data(path) -> None:
    """Three series over 10 hours at 1m. `a` falls towards 0 and is cleaned up at 100 (a
    forecast that did not come true); `b` drops from 1000 to -10 at once at 5 h (a breach no
    forecast could see: missed by the forecast rule, caught late by the threshold rule); `c`
    falls steadily to 0 at 8 h (true, with its lead time)."""
    rows = ["timestamp,series,value"]
    for i in range(601):
        t = T0 + 60 * i
        a = 1000 - 6 * i if i < 150 else 1000.0
        b = 1000.0 if i < 300 else -10.0
        c = max(1000 - 1000 * i / 480, 0.0)
        for name, v in (("a", a), ("b", b), ("c", c)):
            rows.append(f'{t:.0f},"free{{disk=""{name}""}}",{v}')
    path.write_text("\n".join(rows) + "\n")


def test_tickets_are_judged_against_what_the_data_did(tmp_path) -> None:
    data, rules = tmp_path / "free.csv", tmp_path / "rules.yml"
    _outcome_data(data)
    rules.write_text(OUTCOME_RULES.replace("        for: 5m\n", "        for: 5m\n        ticket: {group_by: [disk]}\n"))
    res = backtest.run_backtest(backtest.load_rules([str(rules)]), recording.read_csv(str(data)))
    opens = {(e.rule, e.labels["disk"]): e for e in res.events if e.action == "open"}
    # forecast: a (cleaned up before reaching 0) false; b true but late (it opened after the
    # drop, once `for` had passed); c true, warned ahead of its breach at minute 480
    assert opens[("FreeWillRunOut", "a")].verdict == "false"
    assert (opens[("FreeWillRunOut", "b")].verdict, opens[("FreeWillRunOut", "b")].lead_seconds) == ("true", -300.0)
    c = opens[("FreeWillRunOut", "c")]
    assert c.verdict == "true" and c.lead_seconds == pytest.approx(T0 + 480 * 60 - c.time) and c.lead_seconds > 3600
    summary = {s.rule: s for s in res.summary}
    fc = summary["FreeWillRunOut"]
    assert (fc.tickets, fc.true_tickets, fc.false_tickets, fc.breaches, fc.missed_breaches) == (3, 2, 1, 2, 1)
    assert fc.median_lead_time_seconds == pytest.approx((c.lead_seconds - 300.0) / 2)
    missed = [b for b in res.outcomes["FreeWillRunOut"].breaches if not b.caught]
    assert [(b.series["disk"], b.start) for b in missed] == [("b", T0 + 300 * 60)]  # no forecast saw the drop
    # threshold: b below 100 from minute 300, c from 433; each fires after `for: 5m`
    th = summary["FreeLow"]
    assert (th.tickets, th.true_tickets, th.false_tickets, th.breaches, th.missed_breaches) == (2, 2, 0, 2, 0)
    assert opens[("FreeLow", "b")].lead_seconds == -300.0 and opens[("FreeLow", "c")].lead_seconds == -300.0
    assert th.time_in_alert_seconds == pytest.approx((600 - 305) * 60 + (600 - 438) * 60)
    # a selector that matches nothing reads "no data", not "0 tickets" like a quiet rule
    assert summary["Typo"].evaluations_with_data == 0 and summary["Typo"].evaluations == 601
    assert summary["FreeLow"].evaluations_with_data > 0
    assert res.warnings == [
        "rule Typo: its expression returned no data at any of 601 evaluations; no series matched fre_typo",
        "rule TypoForecast: its expression returned no data at any of 601 evaluations; no series matched fre_typo"]
    text = backtest.format_text(res)
    assert "warning: rule Typo: its expression returned no data" in text
    assert [ln.split()[0] for ln in text.splitlines() if ln.endswith("NO DATA")] == ["Typo", "TypoForecast"]
    page = backtest_report.format_html(res)
    assert page.count('class="warn"') == 2 and page.count('<span class="nodata">no data</span>') == 2
    assert "Missed breaches" in page
    # With the default grouping all disks are one problem: c joins b's ticket by an update
    # before its breach, so that breach is covered; b's drop is still missed.
    rules.write_text(OUTCOME_RULES)
    res = backtest.run_backtest(backtest.load_rules([str(rules)]), recording.read_csv(str(data)))
    missed = [b for b in res.outcomes["FreeWillRunOut"].breaches if not b.caught]
    assert [(b.series["disk"], b.start) for b in missed] == [("b", T0 + 300 * 60)]


def test_anomaly_tickets_are_judged_against_incident_windows(tmp_path) -> None:
    incidents = tmp_path / "incidents.csv"
    incidents.write_text('start,end,labels\n2023-11-15T00:00:00Z,2023-11-15T01:00:00Z,"{disk=""a""}"\n'
                         "1700010000,1700013600\n")
    got = backtest_outcome.read_incidents(str(incidents))
    assert got[0].labels == {"disk": "a"} and got[1].start == 1700010000.0
    opened = [backtest_outcome.Opened("k1", 1700006400.0 + 60, None, {"disk": "a"}),  # inside the first window
              backtest_outcome.Opened("k2", 1700020000.0, None, {"disk": "b"})]  # in none
    out = backtest_outcome.judge(None, "anomaly", opened, incidents=got)
    assert [o.verdict for o in opened] == ["true", "false"] and opened[0].lead_seconds == -60.0
    assert (out.true, out.false, out.missed) == (1, 1, 1)  # the second incident had no ticket
    assert backtest_outcome.judge(None, "anomaly", opened).true is None  # no incidents: not judged
    bad = tmp_path / "bad.csv"
    bad.write_text("start,end\nyesterday,1\n")
    with pytest.raises(recording.ReplayInputError, match=r"bad.csv:2: "):
        backtest_outcome.read_incidents(str(bad))


def test_progress_shows_rate_and_time_left(tmp_path, capsys) -> None:
    import io

    out = io.StringIO()
    p = backtest.Progress(30 * 86400.0, tty=False, stream=out)
    p(0.5)
    p(0.6)  # within LOG_EVERY of the last line: not repeated in a log
    p(1.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "50.0%" in lines[0] and "of data/s" in lines[0] and "ETA" in lines[0]
    assert "100.0%" in lines[1] and "done in" in lines[1]
    # --progress writes it to stderr when stderr is not a terminal; stdout keeps the JSON
    assert main(["backtest", "--rules", RULES, "--input", LONG, "--json", "--progress"]) == 0
    cap = capsys.readouterr()
    assert "replaying" in cap.err and "100.0%" in cap.err and json.loads(cap.out)["evaluations"] == 721
    assert main(["backtest", "--rules", RULES, "--input", LONG, "--json"]) == 0
    assert capsys.readouterr().err == ""
