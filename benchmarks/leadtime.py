"""Lead time and false tickets: our `forecast:` rule (model auto and linear) against the
classic `predict_linear(x[6h], 24*3600)` threshold rule, on disk-fill and memory-leak
scenarios built on the real noise of NAB series.

    python benchmarks/leadtime.py [--nab ../shared/data/nab] [--sources 4] [--days 7]
                                  [--models auto,linear] [--confidence 0.9]
                                  [--forecast-horizon 24h] [--json]

(auto refits every series every 6 h in the refit worker, ~1 s each: 4 sources take
~15-25 minutes; `--models linear --sources 8` takes under a minute.)

Scenarios. Each noise source is a real NAB series (5-minute samples), detrended (its least
squares line removed) and rescaled by its robust spread (1.4826 * MAD), so its bursts,
daily cycles and level shifts stay as they are. On it:

- disk: free space in percent, 40 + 1.5 * noise, minus a fill that brings the trend to 0
  (the threshold, direction below) a known time D after the fill starts: linear at
  D = 12 h, 1 d, 3 d, accelerating (quadratic) at D = 2 d;
- memory: used percent, 60 + 2.5 * noise, plus a leak that brings the trend to 95
  (direction above): linear at D = 1 d, 3 d, accelerating at D = 2 d;
- the same disk and memory series with no fill or leak.

Fills start at day `days - 3.5`. The breach time is when the trend crosses the threshold
(fill start + D), known by construction; the noisy series may touch it a little earlier.
Rules (group interval 5m, `for: 15m` for all):
forecast {model, lookback 6h, horizon 24h, confidence 0.9} and
`predict_linear(x[6h], 24*3600) < 0` (resp. `> 95`).

Everything runs through `agent.commands.backtest.run_backtest` (the replay loop of `agent.replay`:
Store, RuleManager, evaluate_tick, ProblemManager, refit worker), with the storm guard lifted (each series is its own host).
Metrics per rule kind:
- lead: for a breach series, (breach time - first ticket opened between fill start and
  breach) / horizon; 0 when no ticket opened before the breach (a miss). Median over series.
- false tickets per series-week: tickets opened on no-fill series, or on fill series before
  their fill started, per week of such series time.
Target: at least 2x fewer false tickets than predict_linear at an equal or better median lead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from agent.commands import backtest
from agent.config.schema import TicketingConfig
from agent.sources.recording import Recording
from agent.store import make_labels

DEFAULT_NAB = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "nab"))
NOISE_SOURCES = [  # 5-minute series with at least 14 days, different kinds of noise
    "realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv",
    "realAWSCloudwatch/rds_cpu_utilization_cc0c53.csv",
    "realKnownCause/ec2_request_latency_system_failure.csv",
    "realAWSCloudwatch/elb_request_count_8c0756.csv",
    "realAWSCloudwatch/ec2_network_in_5abac7.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_ac20cd.csv",
    "realKnownCause/machine_temperature_system_failure.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv",
]
STEP = 300.0
HORIZON = 86400.0
T0 = 1_700_000_000.0
DAY = 86400.0

# (kind, shape, time from fill start to the trend's crossing)
SCENARIOS = [
    ("disk", "linear", 0.5 * DAY), ("disk", "linear", 1 * DAY), ("disk", "linear", 3 * DAY),
    ("disk", "accelerating", 2 * DAY), ("disk", "none", 0.0),
    ("memory", "linear", 1 * DAY), ("memory", "linear", 3 * DAY), ("memory", "accelerating", 2 * DAY),
    ("memory", "none", 0.0),
]
DISK = dict(metric="disk_free_percent", level=40.0, noise=1.5, threshold=0.0, direction="below")
MEMORY = dict(metric="memory_used_percent", level=60.0, noise=2.5, threshold=95.0, direction="above")

RULE_KINDS = {"auto": "forecast model auto", "linear": "forecast model linear",
              "predict_linear": "predict_linear(x[6h], 24*3600)"}


def rules_yaml(models: list[str], confidence: float = 0.9, horizon: str = "24h") -> str:
    out = ["groups:", "  - name: leadtime", "    interval: 5m", "    rules:"]
    for kind, p in (("Disk", DISK), ("Memory", MEMORY)):
        for m in models:
            out += [f"      - alert: {kind}_{m}", f"        expr: {p['metric']}",
                    f"        forecast: {{model: {m}, lookback: 6h, horizon: {horizon}, threshold: {p['threshold']}, "
                    f"direction: {p['direction']}, confidence: {confidence}}}",
                    "        for: 15m"]
        op = "<" if p["direction"] == "below" else ">"
        out += [f"      - alert: {kind}_predict_linear",
                f"        expr: predict_linear({p['metric']}[6h], 24*3600) {op} {p['threshold']}",
                "        for: 15m"]
    return "\n".join(out) + "\n"


def load_noise(path: str, n: int) -> np.ndarray:
    v = np.genfromtxt(path, delimiter=",", skip_header=1, usecols=1, dtype=float)
    v = v[np.isfinite(v)][:n]
    if v.size < n:
        raise SystemExit(f"{path}: only {v.size} samples, need {n}")
    x = np.arange(n, dtype=float)
    slope, icpt = np.polyfit(x, v, 1)
    r = v - (slope * x + icpt)
    scale = 1.4826 * np.median(np.abs(r - np.median(r)))
    if not scale > 0:
        scale = float(np.std(r)) or 1.0
    return (r - np.median(r)) / scale


@dataclass
class Series:
    labels: dict[str, str]
    kind: str
    shape: str
    fill_start: float | None
    breach: float | None  # when the fill's trend crosses the threshold


def build(nab: str, n_sources: int, days: float) -> tuple[Recording, list[Series]]:
    n = int(days * DAY / STEP)
    t = T0 + STEP * np.arange(n)
    fill_start = T0 + (days - 3.5) * DAY
    labels, series, chunks_t, chunks_s, chunks_v = [], [], [], [], []
    for src in NOISE_SOURCES[:n_sources]:
        noise = load_noise(os.path.join(nab, "data", src), n)
        name = os.path.splitext(os.path.basename(src))[0]
        for kind, shape, d in SCENARIOS:
            p = DISK if kind == "disk" else MEMORY
            sign = -1.0 if p["direction"] == "below" else 1.0
            base = p["level"] + p["noise"] * noise
            gap = abs(p["threshold"] - p["level"])
            u = np.clip((t - fill_start) / d, 0, None) if d else np.zeros(n)
            drift = gap * (u if shape == "linear" else u * u) if shape != "none" else 0.0
            v = base + sign * drift
            breach = fill_start + d if shape != "none" else None  # the trend crosses here, by construction
            host = f"{name}/{kind}-{shape}-{d / 3600:g}h" if shape != "none" else f"{name}/{kind}-none"
            lab = {"host": host, "scenario": kind}
            series.append(Series(lab, kind, shape, fill_start if shape != "none" else None, breach))
            labels.append(make_labels(p["metric"], lab))
            chunks_t.append(t)
            chunks_s.append(np.full(n, len(labels) - 1))
            chunks_v.append(v)
    rec = Recording.from_arrays(labels, np.concatenate(chunks_t), np.concatenate(chunks_s), np.concatenate(chunks_v))
    return rec, series


@dataclass
class Score:
    leads: list[float]
    misses: int
    false_tickets: int
    exposure_weeks: float

    @property
    def median_lead(self) -> float:
        return float(statistics.median(self.leads)) if self.leads else 0.0

    @property
    def false_per_week(self) -> float:
        return self.false_tickets / self.exposure_weeks if self.exposure_weeks else float("nan")


def score(res: backtest.BacktestResult, series: list[Series], kind_filter: str | None,
          start: float, end: float) -> dict[str, Score]:
    opens: dict[tuple[str, str], list[float]] = {}
    for e in res.events:
        if e.action == "open":
            opens.setdefault((e.rule, e.labels.get("host", "")), []).append(e.time)
    out: dict[str, Score] = {}
    for rk in sorted({r.split("_", 1)[1] for r in res.rule_kinds}):
        sc = Score([], 0, 0, 0.0)
        for s in series:
            if kind_filter and s.kind != kind_filter and kind_filter != s.shape:
                continue
            rule = ("Disk_" if s.kind == "disk" else "Memory_") + rk
            times = opens.get((rule, s.labels["host"]), [])
            if s.fill_start is None:
                sc.false_tickets += len(times)
                sc.exposure_weeks += (end - start) / (7 * DAY)
                continue
            sc.false_tickets += sum(1 for x in times if x < s.fill_start)
            sc.exposure_weeks += (s.fill_start - start) / (7 * DAY)
            if s.breach is None or s.breach > end:
                continue
            warned = [x for x in times if s.fill_start <= x <= s.breach]
            if warned:
                sc.leads.append((s.breach - warned[0]) / HORIZON)
            else:
                sc.leads.append(0.0)
                sc.misses += 1
        out[rk] = sc
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nab", default=DEFAULT_NAB)
    ap.add_argument("--sources", type=int, default=4, help=f"noise sources (1-{len(NOISE_SOURCES)})")
    ap.add_argument("--days", type=float, default=7.0, help="length of each series (fills start 3.5 days before the end)")
    ap.add_argument("--models", default="auto,linear", help="forecast models to compare (comma-separated)")
    ap.add_argument("--confidence", type=float, default=0.9, help="the forecast rules' confidence")
    ap.add_argument("--forecast-horizon", default="24h",
                    help="the forecast rules' horizon (lead is still a fraction of 24 h, predict_linear's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    rec, series = build(args.nab, min(args.sources, len(NOISE_SOURCES)), args.days)
    ticketing = TicketingConfig(max_new_tickets_per_hour=10**9, max_new_tickets_per_hour_per_rule=10**9)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rules.yml")
        with open(path, "w") as f:
            f.write(rules_yaml(models, args.confidence, args.forecast_horizon))
        groups = backtest.load_rules([path])
    started = time.monotonic()
    def progress(fraction: float) -> None:
        print(f"\rreplaying: {fraction * 100:5.1f}% ({time.monotonic() - started:.0f} s)", end="", file=sys.stderr,
              flush=True)

    res = backtest.run_backtest(groups, rec, ticketing=ticketing, progress=progress)
    print(file=sys.stderr)
    wall = time.monotonic() - started
    start, end = float(rec.t[0]), float(rec.t[-1])
    kinds = [m for m in models] + ["predict_linear"]
    views = [("all scenarios", None), ("disk", "disk"), ("memory", "memory"),
             ("linear fills", "linear"), ("accelerating fills", "accelerating")]
    table = {name: score(res, series, f, start, end) for name, f in views}
    if args.json:
        print(json.dumps({name: {k: dict(median_lead=s.median_lead, misses=s.misses, false_tickets=s.false_tickets,
                                           false_per_series_week=s.false_per_week, breach_series=len(s.leads))
                                 for k, s in sc.items()} for name, sc in table.items()}, indent=2))
    n_breach = sum(1 for s in series if s.breach is not None)
    print(f"{len(series)} series ({n_breach} with a breach) from {min(args.sources, len(NOISE_SOURCES))} NAB noise "
          f"sources, {args.days:g} days at 5 min, forecast confidence {args.confidence:g} horizon {args.forecast_horizon}; "
          f"{res.evaluations} evaluations, {res.refits} refits, {wall:.0f} s")
    print(f"{'':<20}" + "".join(f"{RULE_KINDS.get(k, k):>34}" for k in kinds))
    for name, sc in table.items():
        cells = []
        for k in kinds:
            s = sc.get(k)
            cells.append(f"lead {s.median_lead:4.2f} miss {s.misses:2d} false/wk {s.false_per_week:5.2f}" if s else "-")
        print(f"{name:<20}" + "".join(f"{c:>34}" for c in cells))
    overall = table["all scenarios"]
    pl = overall["predict_linear"]
    verdict = 0
    for m in models:
        s = overall[m]
        ok_false = s.false_per_week * 2 <= pl.false_per_week or (s.false_tickets == 0 and pl.false_tickets == 0)
        ok_lead = s.median_lead >= pl.median_lead
        status = "MET" if ok_false and ok_lead else "MISSED"
        print(f"target for forecast model {m}: false tickets {s.false_per_week:.2f} vs {pl.false_per_week:.2f} per "
              f"series-week ({'ok' if ok_false else 'not 2x fewer'}), median lead {s.median_lead:.2f} vs "
              f"{pl.median_lead:.2f} of the horizon ({'ok' if ok_lead else 'shorter'}): {status}")
        if status == "MISSED":
            verdict = 1
            for name, sc in table.items():
                x, y = sc[m], sc["predict_linear"]
                if x.false_per_week > y.false_per_week / 2 or x.median_lead < y.median_lead:
                    print(f"  where: {name}: lead {x.median_lead:.2f} vs {y.median_lead:.2f}, false/wk "
                          f"{x.false_per_week:.2f} vs {y.false_per_week:.2f}")
    return verdict


if __name__ == "__main__":
    sys.exit(main())
