"""Lead time, false tickets and ETA-interval coverage at an equal horizon: our `forecast:` rule
against the classic `predict_linear(x[6h], H) < threshold` rule, on capacity scenarios built
on the real noise of NAB series.

    python benchmarks/leadtime.py [--nab ../shared/data/nab] [--set report|tune|all]
                                  [--models linear] [--confidence 0.8] [--horizon 24h]
                                  [--lookback 6h] [--sweep 0.6,0.7,0.8,0.9] [--history 3d] [--json]

Scenarios. Each noise source is a real NAB series (5-minute samples), detrended (its least
squares line removed), rescaled by its robust spread (1.4826 * MAD) and clipped to +-10 of
it (so a scenario's breach is the one it was built with, not one 80-sigma spike), so its
bursts, daily cycles and level shifts stay as they are. On it, per kind:

- disk: free percent, 40 + 1.5 * noise, direction below, threshold 0;
- memory: used percent, 60 + 2.5 * noise, above 95;
- heap: JVM heap used percent with a garbage-collection sawtooth (climbs 15 points over
  45 minutes, then drops), 50 + 1 * noise, above 95;
- queue: backlog of a queue with daily seasonality (+-400 around 1000 items, the busy
  hours in the afternoon), 40 * noise, above 3000;
- logs: free percent of a log volume with daily log rotation (logs grow 6 points a day,
  rotated away at 03:00), 30 + 0.5 * noise, below 0.

and per shape: a trend (the fill, leak or backlog growth) that brings the series' underlying
level to the threshold a known time D after it starts: linear at D = 12 h (disk only),
1 d and 3 d, accelerating (quadratic) at D = 2 d; and `none`, the same series with no trend.
Trends start 3.5 days before the end of the 7 days. Before those 7 days come `--history` (3
days by default) of the same series, replayed but not scored: the history a running agent
holds (its store keeps 8 days; a restart warms the models from it), which a model that learns
a daily rhythm needs and `predict_linear` (6 h) does not. The breach time is the first sample at or
past the threshold (for sawtooth and seasonal series earlier than the trend's crossing).

Noise sources are split in two sets: `tune` (the 1st, 3rd, 5th and 7th source) for choosing a
rule's settings (`--sweep` prints the table for several confidences at once), and `report`
(the others) for the figures quoted. The shipped rules were tuned on `tune` only.

Rules (group interval 5m, `for: 15m` for all): forecast {model, lookback, horizon,
threshold, direction, confidence} and `predict_linear(x[6h], horizon) < threshold` (resp. >),
the same horizon for both. Everything runs through `agent.commands.backtest.run_backtest`
(the replay loop of `agent.replay`: Store, RuleManager, evaluate_tick, ProblemManager, refit
worker), with the storm guard lifted (each series is its own host). Metrics per rule:

- lead: for a breach series, (breach - first ticket opened between trend start and breach)
  / horizon; 0 when no ticket opened before the breach (a miss). Median over series.
- false tickets per series-week: tickets opened on `none` series, or on trend series before
  their trend started, per week of such series time; the history is not counted (every rule
  starts cold there), nor, with `--history 0`, the replay's first 6 hours.
- target: at least predict_linear's median lead with at most half its false tickets.

Coverage of the ETA interval. `eta_low..eta_high` is the stated 80 % interval. Every 5
minutes from trend start to breach, the forecast of each breach series (the same
`ForecastBank.breach` the rule runs, with the rule's settings) states an interval; coverage
is the share of those whose actual breach falls inside it, by time to the breach (0-6 h,
6-12 h, 12-24 h, and beyond the horizon: a breach not yet within reach counts as covered
when the interval reaches past the horizon). The tickets' own intervals (at opening) are
scored the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from agent.commands import backtest
from agent.config.decode import parse_duration
from agent.config.schema import TicketingConfig
from agent.models.forecast import ForecastBank, window_buckets
from agent.models.refit import fit_job
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
SETS = {"tune": NOISE_SOURCES[0::2], "report": NOISE_SOURCES[1::2], "all": NOISE_SOURCES}
STEP = 300.0
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DAY = 86400.0
HOUR = 3600.0
NOISE_CLIP = 10.0
WARM_UP = 6 * HOUR  # the replay starts every rule cold: tickets of its first hours are not counted


@dataclass(frozen=True)
class Kind:
    """One family of scenarios: the metric, its level, noise scale and threshold, and its
    regular pattern (a GC sawtooth, a daily season, a daily log rotation)."""

    metric: str
    level: float
    noise: float
    threshold: float
    direction: str
    pattern: str = "none"  # none | gc | daily | rotation
    amplitude: float = 0.0

    def regular(self, t: np.ndarray) -> np.ndarray:
        if self.pattern == "gc":  # heap climbs for 45 minutes, then a collection frees it
            return self.amplitude * np.mod(t - T0, 45 * 60.0) / (45 * 60.0)
        if self.pattern == "daily":  # busiest in the afternoon (UTC)
            return self.amplitude * np.sin(2 * np.pi * (np.mod(t, DAY) - 9 * HOUR) / DAY)
        if self.pattern == "rotation":  # logs grow all day; rotated away at 03:00
            return -self.amplitude * np.mod(t - 3 * HOUR, DAY) / DAY
        return np.zeros_like(t)


KINDS = {
    "disk": Kind("disk_free_percent", 40.0, 1.5, 0.0, "below"),
    "memory": Kind("memory_used_percent", 60.0, 2.5, 95.0, "above"),
    "heap": Kind("jvm_heap_used_percent", 50.0, 1.0, 95.0, "above", "gc", 15.0),
    "queue": Kind("queue_depth", 1000.0, 40.0, 3000.0, "above", "daily", 400.0),
    "logs": Kind("log_disk_free_percent", 30.0, 0.5, 0.0, "below", "rotation", 6.0),
}
# (shape, time from trend start to the trend's crossing); 12 h fills for disks only
SHAPES = [("linear", 0.5 * DAY), ("linear", 1 * DAY), ("linear", 3 * DAY), ("accelerating", 2 * DAY), ("none", 0.0)]
COVERAGE_BINS = ((0.0, 6 * HOUR), (6 * HOUR, 12 * HOUR), (12 * HOUR, 24 * HOUR))


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
    return np.clip((r - np.median(r)) / scale, -NOISE_CLIP, NOISE_CLIP)


@dataclass
class Series:
    labels: dict[str, str]
    kind: str
    shape: str
    trend_start: float | None
    breach: float | None  # the first sample at or past the threshold after the trend started
    t: np.ndarray
    v: np.ndarray


def build(nab: str, sources: list[str], days: float, kinds: list[str],
          history: float = 0.0) -> tuple[Recording, list[Series]]:
    """The scenarios: `days` measured, after `history` seconds of samples a running agent
    would hold (trends start 3.5 days before the end)."""
    days += history / DAY
    n = int(days * DAY / STEP)
    t = T0 + STEP * np.arange(n)
    start = T0 + (days - 3.5) * DAY
    labels, series, chunks_t, chunks_s, chunks_v = [], [], [], [], []
    for src in sources:
        noise = load_noise(os.path.join(nab, "data", src), n)
        name = os.path.splitext(os.path.basename(src))[0]
        for kind_name in kinds:
            k = KINDS[kind_name]
            sign = -1.0 if k.direction == "below" else 1.0
            base = k.level + k.noise * noise + k.regular(t)
            gap = abs(k.threshold - k.level)
            for shape, d in SHAPES:
                if shape == "linear" and d < DAY and kind_name != "disk":
                    continue
                u = np.clip((t - start) / d, 0, None) if d else np.zeros(n)
                drift = gap * (u if shape == "linear" else u * u) if shape != "none" else 0.0
                v = base + sign * drift
                past = (v <= k.threshold) if k.direction == "below" else (v >= k.threshold)
                past &= t >= start
                breach = float(t[np.argmax(past)]) if shape != "none" and past.any() else None
                host = f"{name}/{kind_name}-{shape}-{d / 3600:g}h" if shape != "none" else f"{name}/{kind_name}-none"
                lab = {"host": host, "scenario": kind_name}
                series.append(Series(lab, kind_name, shape, start if shape != "none" else None, breach, t, v))
                labels.append(make_labels(k.metric, lab))
                chunks_t.append(t)
                chunks_s.append(np.full(n, len(labels) - 1))
                chunks_v.append(v)
    rec = Recording.from_arrays(labels, np.concatenate(chunks_t), np.concatenate(chunks_s), np.concatenate(chunks_v))
    return rec, series


@dataclass(frozen=True)
class RuleKind:
    """One rule under test, written for every scenario kind: `name` is its alert suffix."""

    name: str
    label: str
    model: str | None  # None: predict_linear
    confidence: float = 0.0


def rules_yaml(rule_kinds: list[RuleKind], kinds: list[str], horizon: str, lookback: str,
               kind_models: dict[str, str] | None = None) -> str:
    """The rules under test for every scenario kind; `kind_models` gives some kinds another
    forecast model (as a user would configure a queue's rule: `auto`, which learns seasons)."""
    out = ["groups:", "  - name: leadtime", "    interval: 5m", "    rules:"]
    h = parse_duration(horizon)
    for kind_name in kinds:
        k = KINDS[kind_name]
        for rk in rule_kinds:
            out.append(f"      - alert: {kind_name}_{rk.name}")
            if rk.model is None:
                op = "<" if k.direction == "below" else ">"
                out.append(f"        expr: predict_linear({k.metric}[6h], {h:g}) {op} {k.threshold:g}")
            else:
                model = (kind_models or {}).get(kind_name, rk.model)
                out += [f"        expr: {k.metric}",
                        f"        forecast: {{model: {model}, lookback: {lookback}, horizon: {horizon}, "
                        f"threshold: {k.threshold:g}, direction: {k.direction}, confidence: {rk.confidence:g}}}"]
            out.append("        for: 15m")
    return "\n".join(out) + "\n"


@dataclass
class Score:
    leads: list[float] = field(default_factory=list)
    misses: int = 0
    false_tickets: int = 0
    exposure_weeks: float = 0.0
    stated: list[bool] = field(default_factory=list)  # ticket intervals that held the breach

    @property
    def median_lead(self) -> float:
        return float(statistics.median(self.leads)) if self.leads else 0.0

    @property
    def false_per_week(self) -> float:
        return self.false_tickets / self.exposure_weeks if self.exposure_weeks else float("nan")


def score(res: backtest.BacktestResult, series: list[Series], rule: str, horizon: float, start: float, end: float,
          keep: str | None, history: float = 0.0) -> Score:
    opens: dict[str, list[backtest.TicketEvent]] = {}
    for e in res.events:
        if e.action == "open" and e.rule.split("_", 1)[1] == rule:
            opens.setdefault(e.labels.get("host", ""), []).append(e)
    sc = Score()
    for s in series:
        if keep and keep not in (s.kind, s.shape):
            continue
        evs = opens.get(s.labels["host"], [])
        times = [e.time for e in evs]
        warm = start + max(WARM_UP, history)  # every rule starts cold at the replay's start: not counted
        if s.trend_start is None:
            sc.false_tickets += sum(1 for x in times if x >= warm)
            sc.exposure_weeks += (end - warm) / (7 * DAY)
            continue
        sc.false_tickets += sum(1 for x in times if warm <= x < s.trend_start)
        sc.exposure_weeks += (s.trend_start - warm) / (7 * DAY)
        if s.breach is None or s.breach > end:
            continue
        warned = [e for e in evs if s.trend_start <= e.time <= s.breach]
        if warned:
            sc.leads.append((s.breach - warned[0].time) / horizon)
            e = warned[0]
            if e.eta_low is not None:
                high = e.eta_high if e.eta_high is not None else float("inf")
                sc.stated.append(e.time + e.eta_low <= s.breach <= e.time + high)
        else:
            sc.leads.append(0.0)
            sc.misses += 1
    return sc


@dataclass
class Coverage:
    """Per time-to-breach bin: stated intervals and how many held the actual breach."""

    held: list[int]
    total: list[int]

    def share(self, i: int) -> float:
        return self.held[i] / self.total[i] if self.total[i] else float("nan")

    @property
    def overall(self) -> float:
        return sum(self.held) / max(sum(self.total), 1)


def coverage(series: list[Series], model: str, lookback: float, horizon: float, confidence: float,
             kind_models: dict[str, str] | None = None) -> Coverage:
    """The ETA intervals the forecast states every 5 minutes (see the module docstring),
    through one ForecastBank per scenario kind (all its series at once, as a rule holds them).
    A kind whose model refits (`kind_models`) is refitted every 6 h in this process."""
    cov = Coverage([0] * (len(COVERAGE_BINS) + 1), [0] * (len(COVERAGE_BINS) + 1))
    for kind_name in sorted({s.kind for s in series}):
        k = KINDS[kind_name]
        group = [s for s in series if s.kind == kind_name and s.breach is not None]
        if not group:
            continue
        kind_model = (kind_models or {}).get(kind_name, model)
        # the buckets a rule of this model evaluated at the data's step has
        bank = ForecastBank(kind_model, lookback, horizon=horizon,
                            linear_buckets=window_buckets(kind_model, lookback, STEP))
        keys = list(range(len(group)))
        slots = bank.slots_for(keys)
        t = group[0].t
        values = np.stack([s.v for s in group], axis=1)
        breach_at = np.array([s.breach for s in group])
        start = np.array([s.trend_start for s in group])
        def history(key: object, a: float, b: float, t: np.ndarray = t,
                    values: np.ndarray = values) -> tuple[np.ndarray, np.ndarray]:
            sel = (t > a) & (t <= b)
            return t[sel], values[sel, int(str(key))]

        for i, now in enumerate(t):
            bank.update(slots, now, values[i])
            if bank.needs_refit:
                bank.apply_refit([fit_job(j) for j in bank.refit_jobs(now, history=history)])
            live = (now >= start) & (now < breach_at)
            if not live.any():
                continue
            est = bank.breach(slots[live], now, k.threshold, k.direction, horizon, confidence)
            to_go = breach_at[live] - now
            held = (est.eta_low_seconds <= to_go) & (to_go <= est.eta_high_seconds)
            beyond = to_go > horizon  # not within reach yet: an interval reaching past the horizon holds it
            held = np.where(beyond, np.isinf(est.eta_high_seconds), held)
            b = np.searchsorted([hi for _, hi in COVERAGE_BINS], to_go, side="left")
            for j in range(len(cov.total)):
                sel = b == j
                cov.total[j] += int(sel.sum())
                cov.held[j] += int(held[sel].sum())
    return cov


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nab", default=DEFAULT_NAB)
    ap.add_argument("--set", default="report", choices=sorted(SETS), help="noise sources: tune, report or all")
    ap.add_argument("--days", type=float, default=7.0, help="length of each series (trends start 3.5 days before the end)")
    ap.add_argument("--history", default="3d", help="samples before the measured days, standing for the history a "
                    "running agent holds (0: every rule starts cold and only its first 6 h are not counted)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="scenario kinds (comma-separated)")
    ap.add_argument("--models", default="linear", help="forecast models to compare (comma-separated; auto refits "
                    "every series in the refit worker and takes several minutes)")
    ap.add_argument("--confidence", type=float, default=0.8, help="the forecast rules' confidence")
    ap.add_argument("--sweep", default="", help="several confidences at once (comma-separated), for tuning")
    ap.add_argument("--horizon", default="24h", help="horizon of both the forecast rules and predict_linear")
    ap.add_argument("--lookback", default="6h", help="the forecast rules' lookback")
    ap.add_argument("--kind-model", default="", help="another forecast model for some kinds, e.g. queue=auto "
                    "(how a user would configure a seasonal queue's rule; auto refits in the worker: minutes)")
    ap.add_argument("--no-coverage", action="store_true", help="skip the interval coverage replay")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    kinds = [k for k in args.kinds.split(",") if k]
    confidences = [float(c) for c in args.sweep.split(",") if c] or [args.confidence]
    kind_models = dict(item.split("=", 1) for item in args.kind_model.split(",") if item)
    horizon = parse_duration(args.horizon)
    lookback = parse_duration(args.lookback)
    rule_kinds = [RuleKind(f"{m}{round(c * 100)}", f"forecast {m} c={c:g}", m, c) for m in models for c in confidences]
    baseline = RuleKind("predict_linear", f"predict_linear(x[6h], {args.horizon})", None)
    rule_kinds.append(baseline)
    sources = SETS[args.set]
    history = parse_duration(args.history) if args.history not in ("", "0") else 0.0
    rec, series = build(args.nab, sources, args.days, kinds, history)
    ticketing = TicketingConfig(max_new_tickets_per_hour=10**9, max_new_tickets_per_hour_per_rule=10**9)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rules.yml")
        with open(path, "w") as f:
            f.write(rules_yaml(rule_kinds, kinds, args.horizon, args.lookback, kind_models))
        groups = backtest.load_rules([path])
    started = time.monotonic()

    def progress(fraction: float) -> None:
        print(f"\rreplaying: {fraction * 100:5.1f}% ({time.monotonic() - started:.0f} s)", end="", file=sys.stderr,
              flush=True)

    res = backtest.run_backtest(groups, rec, ticketing=ticketing, progress=progress)
    print(file=sys.stderr)
    wall = time.monotonic() - started
    start, end = float(rec.t[0]), float(rec.t[-1])
    views = [("all scenarios", None)] + [(k, k) for k in kinds] + [("linear trends", "linear"),
                                                                     ("accelerating", "accelerating")]
    table = {name: {rk.name: score(res, series, rk.name, horizon, start, end, keep, history) for rk in rule_kinds}
             for name, keep in views}
    load = os.getloadavg()[0]
    n_breach = sum(1 for s in series if s.breach is not None)
    print(f"set '{args.set}': {len(series)} series ({n_breach} with a breach) from {len(sources)} NAB noise sources "
          f"({', '.join(os.path.splitext(os.path.basename(s))[0] for s in sources)}), {args.days:g} days at 5 min "
          f"after {history / DAY:g} days of history; "
          f"horizon {args.horizon} for every rule, forecast lookback {args.lookback}"
          f"{''.join(f', {k} rules model {m}' for k, m in kind_models.items())}; {res.evaluations} evaluations, "
          f"{res.refits} refits, {wall:.0f} s, load average {load:.1f}")
    print(f"\nEqual horizon ({args.horizon}): median lead (fraction of the horizon), misses, false tickets per "
          "series-week")
    width = max(34, max(len(rk.label) for rk in rule_kinds) + 2)
    print(f"{'':<16}" + "".join(f"{rk.label:>{width}}" for rk in rule_kinds))
    for name, sc in table.items():
        cells = [f"{sc[rk.name].median_lead:4.2f} miss {sc[rk.name].misses:2d} false {sc[rk.name].false_per_week:5.2f}"
                 for rk in rule_kinds]
        print(f"{name:<16}" + "".join(f"{c:>{width}}" for c in cells))
    overall = table["all scenarios"]
    pl = overall[baseline.name]
    verdict = 0
    report: dict[str, object] = {}
    for rk in rule_kinds[:-1]:
        s = overall[rk.name]
        ok_false = s.false_per_week * 2 <= pl.false_per_week or (s.false_tickets == 0 and pl.false_tickets == 0)
        ok_lead = s.median_lead >= pl.median_lead
        status = "MET" if ok_false and ok_lead else "MISSED"
        verdict |= status == "MISSED"
        print(f"target for {rk.label}: false tickets {s.false_per_week:.2f} vs {pl.false_per_week:.2f} per series-week "
              f"({'ok' if ok_false else 'not 2x fewer'}), median lead {s.median_lead:.2f} vs {pl.median_lead:.2f} "
              f"({'ok' if ok_lead else 'shorter'}): {status}")
        stated = s.stated
        if stated:
            print(f"  intervals stated in its tickets at opening that held the actual breach: "
                  f"{sum(stated)}/{len(stated)} ({sum(stated) / len(stated):.0%})")
        report[rk.name] = dict(median_lead=s.median_lead, misses=s.misses, false_per_series_week=s.false_per_week,
                               ticket_interval_coverage=(sum(stated) / len(stated)) if stated else None)
    report["predict_linear"] = dict(median_lead=pl.median_lead, misses=pl.misses, false_per_series_week=pl.false_per_week)
    if not args.no_coverage:
        print("\nCoverage of the stated 80 % ETA interval (share of forecasts whose interval held the actual breach), "
              "by time to the breach")
        bins = [f"{lo / HOUR:g}-{hi / HOUR:g} h" for lo, hi in COVERAGE_BINS] + [f"> {args.horizon}"]
        print(f"{'':<28}" + "".join(f"{b:>16}" for b in bins) + f"{'all':>10}")
        for m in models:
            cov = coverage(series, m, lookback, horizon, confidences[0], kind_models)
            cells = [f"{cov.share(i):.0%} (n={cov.total[i]})" for i in range(len(bins))]
            print(f"{'forecast ' + m:<28}" + "".join(f"{c:>16}" for c in cells) + f"{cov.overall:>10.0%}")
            inside = all(0.7 <= cov.share(i) <= 0.9 for i in range(len(COVERAGE_BINS)) if cov.total[i])
            print(f"  within 70-90 % at every horizon bin up to {args.horizon}: {'YES' if inside else 'NO'}")
            report[f"coverage_{m}"] = {b: cov.share(i) for i, b in enumerate(bins)}
    if args.json:
        print(json.dumps(report, indent=2))
    return verdict


if __name__ == "__main__":
    sys.exit(main())
