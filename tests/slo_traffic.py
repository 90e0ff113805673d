"""Synthetic HTTP traffic with known error ratios, replayed through the agent's own replay loop
(the daemon's tick with a simulated clock), for the SLO tests.

Traffic: `rps` requests per second, scraped every `scrape` seconds as Prometheus counters
`http_requests_total{job="checkout", code, route}`; the error ratio is piecewise constant,
changing only at whole minutes, so every 1m `rate()` sees one regime and is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agent.config.schema import TicketingConfig
from agent.promql import Engine
from agent.replay import Tick, replay
from agent.rules.file import load_rule_text
from agent.rules.manager import RuleOptions
from agent.sources.recording import Feeder, Recording, store_for
from agent.store import make_labels

ROUTES = {"/pay": 0.75, "/cart": 0.25}  # share of the errors per route


@dataclass
class Traffic:
    """Requests per second and the error ratio as a step function: `steps` is [(from_t, ratio)]."""

    steps: list[tuple[float, float]]
    rps: float = 10.0

    def ratio(self, t: float) -> float:
        r = 0.0
        for start, value in self.steps:
            if t >= start:
                r = value
        return r

    def error_fraction(self, lo: float, hi: float) -> float:
        """Exact bad/total over (lo, hi] (constant traffic): the mean error ratio."""
        if hi <= lo:
            return float("nan")
        edges = sorted({lo, hi, *(s for s, _ in self.steps if lo < s < hi)})
        return sum(self.ratio(a) * (b - a) for a, b in zip(edges, edges[1:])) / (hi - lo)

    def recording(self, end: float, scrape: float = 15.0) -> Recording:
        times = np.arange(0.0, end + scrape / 2, scrape)
        err = np.array([self.ratio(t) for t in times[:-1]])  # ratio over (t_i, t_i+1]
        bad_step = self.rps * scrape * err
        good_step = self.rps * scrape * (1 - err)
        cum_bad = np.concatenate(([0.0], np.cumsum(bad_step)))
        cum_good = np.concatenate(([0.0], np.cumsum(good_step)))
        labels, ts, idx, vals = [], [], [], []
        series = [("200", "/pay", cum_good * 0.5), ("200", "/cart", cum_good * 0.5)]
        series += [("500", route, cum_bad * share) for route, share in ROUTES.items()]
        for i, (code, route, values) in enumerate(series):
            labels.append(make_labels("http_requests_total", {"job": "checkout", "code": code, "route": route}))
            ts.append(times)
            idx.append(np.full(len(times), i))
            vals.append(values)
        t = np.concatenate(ts)
        order = np.argsort(t, kind="stable")
        return Recording.from_arrays(labels, t[order], np.concatenate(idx)[order], np.concatenate(vals)[order])


def write_csv(traffic: Traffic, path: str, end: float, *, scrape: float = 15.0, t0: float = 0.0) -> None:
    """`traffic`'s counters from 0 to `end` as a wide CSV for `forewarn backtest`, times
    shifted by `t0` (Unix seconds)."""
    rec = traffic.recording(end, scrape)
    names = []
    for lab in rec.labels:
        d = dict(lab)
        name = d.pop("__name__")
        names.append('"' + (name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(d.items())) + "}").replace('"', '""')
                     + '"')
    times = rec.series_values(0)[0]
    cols = [rec.series_values(i)[1] for i in range(len(rec.labels))]
    with open(path, "w", encoding="utf-8") as f:
        f.write("timestamp," + ",".join(names) + "\n")
        for i, t in enumerate(times.tolist()):
            f.write(f"{t0 + t:.0f}," + ",".join(repr(float(c[i])) for c in cols) + "\n")


def replay_slo(rules_text: str, traffic: Traffic, end: float, *, step: float = 60.0, tickets: bool = False,
               on_tick: Callable[[Tick, Engine], None] | None = None, path: str = "slo.yml"):
    """Replay `traffic` through the rule file text every `step` seconds from 0 to `end`."""
    groups = load_rule_text(rules_text, path)
    rec = traffic.recording(end)
    store = store_for(rec, 3600.0)
    engine = Engine(store)

    def tick(t: Tick) -> None:
        if on_tick is not None:
            on_tick(t, engine)

    options = RuleOptions(default_interval=step, interval=step)
    return replay(groups, store, Feeder(rec, store).feed_until, start=0.0, end=end, step=step, options=options,
                  ticketing=TicketingConfig() if tickets else None, on_tick=tick), store


def value(engine: Engine, expr: str, t: float) -> float | None:
    """The single value of `expr` at `t` (None: no result)."""
    r = engine.instant(expr, t)
    vals = np.asarray(r.values).tolist()
    return float(vals[0]) if vals else None
