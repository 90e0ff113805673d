"""Trend statistics per cluster and the ranking of problem candidates.

Owns: the numbers reported for each cluster (count, first/last, typical interval, trend with
its significance, time to restore, effort, coverage) and which clusters are problem
candidates, in which order.

Trend: weekly counts of the cluster over the analysis window (daily when the window is under
four weeks) are fitted with a Poisson regression, log E[count] = a + b * t (IRLS; the last,
partial bin enters with its exposure). The Wald test of b = 0 uses a quasi-Poisson variance
(scaled by the Pearson dispersion when it is over 1: incidents come in bursts, and a plain
Poisson test would call every burst a trend). p-values of all tested clusters are adjusted
with Benjamini-Hochberg (many clusters are tested at once); a cluster is `growing` or
`fading` when its adjusted p is under `alpha` (0.05) and `stable` otherwise, including
clusters with fewer than `MIN_TREND_COUNT` incidents (too few to show a change).

Effort: the hours each incident was open (resolved - opened; still open: until the end of the
window), each capped at `MAX_EFFORT_HOURS_PER_INCIDENT` so one forgotten ticket does not
dominate; or, for priorities listed in `cost_per_priority`, that many hours per incident.

Candidates: clusters with at least `min_count` incidents and no covering problem record,
ranked by the effort they are expected to cost in the next 13 weeks if nothing changes
(the rate at the end of the window, from the trend fit when the trend is significant, times
the cluster's mean effort per incident), then by total effort, count and id.

numpy only (no scipy, no statsmodels: this module may run inside the daemon).
It may import agent.tickets and agent.config only (ARCHITECTURE.md): never agent.rules,
agent.promql, agent.models, agent.web, agent.daemon or agent.pipeline.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from agent.trends.cluster import Cluster, ClusterParams, cluster_incidents
from agent.trends.history import Incident

WEEK = 7 * 86400.0
DAY = 86400.0
MIN_TREND_COUNT = 4
DEFAULT_ALPHA = 0.05
DEFAULT_MIN_COUNT = 3
PROJECTION_WEEKS = 13.0
MAX_EFFORT_HOURS_PER_INCIDENT = 30 * 24.0
MAX_RATE_GROWTH = 4.0  # a projected rate is at most this multiple of the mean rate


@dataclass
class Trend:
    """Result of the trend test of one cluster.

    `rate_ratio_per_30d`: multiplicative change of the rate per 30 days (1.0: flat).
    `p_value` / `p_adjusted`: two-sided Wald test of no change (None when not tested)."""

    label: str = "stable"  # growing | stable | fading
    rate_ratio_per_30d: float = 1.0
    p_value: float | None = None
    p_adjusted: float | None = None
    rate_end_per_week: float = 0.0  # fitted rate at the end of the window (mean rate if not tested)
    mean_rate_per_week: float = 0.0


@dataclass
class ClusterReport:
    """One cluster with its statistics. Times are Unix seconds, durations hours."""

    cluster: Cluster
    first: float
    last: float
    interval_median_hours: float | None
    trend: Trend
    mttr_median_hours: float | None
    mttr_p90_hours: float | None
    effort_hours: float
    projected_effort_hours: float
    services: list[str]
    groups: list[str]
    categories: list[str]
    priorities: list[str]
    covered_by: str | None = None

    @property
    def id(self) -> str:
        return self.cluster.id

    @property
    def count(self) -> int:
        return self.cluster.count


@dataclass
class Analysis:
    """Everything `forewarn trends` reports: clusters (largest first) and candidate ids in
    rank order, over the window [since, until)."""

    since: float
    until: float
    clusters: list[ClusterReport] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    incidents: int = 0

    def by_id(self) -> dict[str, ClusterReport]:
        return {c.id: c for c in self.clusters}

    @property
    def recurring_share(self) -> float:
        """Share of incidents that belong to a cluster of at least two incidents."""
        if not self.incidents:
            return 0.0
        return sum(c.count for c in self.clusters if c.count >= 2) / self.incidents


# ---- small statistics ------------------------------------------------------------------------


def quantile(values: Iterable[float], q: float) -> float | None:
    """The q-quantile (linear interpolation, numpy's default) or None for no values."""
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.quantile(np.array(v), q)) if v else None


def median_interval_hours(times: list[float]) -> float | None:
    """Median time between consecutive occurrences (None with fewer than two)."""
    if len(times) < 2:
        return None
    gaps = np.diff(np.sort(np.array(times)))
    return float(np.median(gaps)) / 3600.0


def _chi2_1_sf(x: float) -> float:
    """Survival function of chi-square with 1 degree of freedom (= two-sided normal p)."""
    return math.erfc(math.sqrt(max(x, 0.0) / 2.0))


def poisson_trend(times: list[float], since: float, until: float) -> Trend:
    """Poisson regression of binned counts on time; see the module docstring."""
    span = until - since
    n = len(times)
    weeks = max(span / WEEK, 1e-9)
    mean_rate = n / weeks
    flat = Trend(rate_end_per_week=mean_rate, mean_rate_per_week=mean_rate)
    if n < MIN_TREND_COUNT or span <= 0:
        return flat
    width = WEEK if span >= 4 * WEEK else DAY
    nbins = int(math.ceil(span / width - 1e-9))
    if nbins < 4:
        return flat
    idx = np.clip(((np.array(times) - since) // width).astype(int), 0, nbins - 1)
    y = np.bincount(idx, minlength=nbins).astype(float)
    exposure = np.ones(nbins)
    exposure[-1] = max((span - (nbins - 1) * width) / width, 1e-3)
    t = (np.arange(nbins) + 0.5) * width / WEEK  # bin centres in weeks
    t_mean = float(np.average(t, weights=exposure))
    x = np.column_stack([np.ones(nbins), t - t_mean])
    offset = np.log(exposure)
    beta = np.array([math.log(max(y.sum() / exposure.sum(), 1e-9)), 0.0])
    for _ in range(50):
        eta = x @ beta + offset
        mu = np.exp(np.clip(eta, -30, 30))
        z = eta - offset + (y - mu) / mu
        xtw = x.T * mu
        try:
            new = np.linalg.solve(xtw @ x, xtw @ z)
        except np.linalg.LinAlgError:
            return flat
        new[1] = float(np.clip(new[1], -5.0, 5.0))  # a rate cannot change e^5-fold a week in data
        if np.max(np.abs(new - beta)) < 1e-8:
            beta = new
            break
        beta = new
    mu = np.exp(np.clip(x @ beta + offset, -30, 30))
    info = (x.T * mu) @ x
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return flat
    dof = max(nbins - 2, 1)
    pearson = float(np.sum((y - mu) ** 2 / np.maximum(mu, 1e-9))) / dof
    cov *= max(1.0, pearson)
    se = math.sqrt(max(cov[1, 1], 1e-300))
    b = float(beta[1])
    p = _chi2_1_sf((b / se) ** 2)
    t_end = span / WEEK - t_mean
    rate_end = float(math.exp(min(beta[0] + b * t_end, 30.0)))
    return Trend(label="stable", rate_ratio_per_30d=float(math.exp(b * 30 / 7)), p_value=p,
                 rate_end_per_week=rate_end, mean_rate_per_week=mean_rate)


def benjamini_hochberg(pvalues: list[float]) -> list[float]:
    """Adjusted p-values (step-up, monotone), in the order given."""
    m = len(pvalues)
    if not m:
        return []
    order = sorted(range(m), key=lambda i: pvalues[i])
    adj = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, pvalues[i] * m / rank)
        adj[i] = min(running, 1.0)
    return adj


# ---- per cluster ----------------------------------------------------------------------------


@dataclass
class EffortPolicy:
    """How effort is counted: hours per incident by priority (exact, case-insensitive match),
    else the time it was open."""

    cost_per_priority: Mapping[str, float] = field(default_factory=dict)

    def hours(self, inc: Incident, until: float) -> float:
        if self.cost_per_priority:
            cost = self.cost_per_priority.get(inc.priority.strip().lower())
            if cost is not None:
                return float(cost)
        end = inc.resolved if inc.resolved is not None else until
        return min(max(end - inc.opened, 0.0) / 3600.0, MAX_EFFORT_HOURS_PER_INCIDENT)


def _top(values: Iterable[str]) -> list[str]:
    """Distinct non-empty values, most common first."""
    c = Counter(v for v in values if v)
    return [k for k, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))]


def _linked_problem(cluster: Cluster) -> str | None:
    """The problem record the tool links to the cluster's incidents: the one most members
    link to (ties: the one linked by the latest incident)."""
    linked = [(i.opened, i.problem) for i in cluster.incidents if i.problem]
    if not linked:
        return None
    counts = Counter(p for _, p in linked)
    latest = {p: t for t, p in linked}
    return max(counts, key=lambda p: (counts[p], latest[p]))


def report_cluster(cluster: Cluster, since: float, until: float, effort: EffortPolicy) -> ClusterReport:
    incs = cluster.incidents
    times = [i.opened for i in incs]
    restore = [i.restore_seconds / 3600.0 for i in incs if i.restore_seconds is not None]
    total_effort = float(sum(effort.hours(i, until) for i in incs))
    return ClusterReport(
        cluster=cluster,
        first=min(times),
        last=max(times),
        interval_median_hours=median_interval_hours(times),
        trend=poisson_trend(times, since, until),
        mttr_median_hours=quantile(restore, 0.5),
        mttr_p90_hours=quantile(restore, 0.9),
        effort_hours=total_effort,
        projected_effort_hours=0.0,
        services=_top(i.service for i in incs),
        groups=_top(i.group for i in incs),
        categories=_top(i.category for i in incs),
        priorities=_top(i.priority for i in incs),
        covered_by=_linked_problem(cluster),
    )


def analyse(
    incidents: list[Incident],
    since: float,
    until: float,
    *,
    params: ClusterParams | None = None,
    effort: EffortPolicy | None = None,
    alpha: float = DEFAULT_ALPHA,
    min_count: int = DEFAULT_MIN_COUNT,
    covered: Callable[[ClusterReport], str | None] | None = None,
) -> Analysis:
    """Cluster the incidents opened in [since, until) and report on every cluster.

    `covered(report)` may name a problem record covering a cluster that the incidents do not
    link themselves (a problem Forewarn opened for the same signature); it is asked only for
    clusters with no linked problem."""
    effort = effort or EffortPolicy()
    incs = [i for i in incidents if since <= i.opened < until]
    clusters = cluster_incidents(incs, params)
    reports = [report_cluster(c, since, until, effort) for c in clusters]
    tested = [r for r in reports if r.trend.p_value is not None]
    for r, adj in zip(tested, benjamini_hochberg([r.trend.p_value for r in tested])):  # type: ignore[misc]
        r.trend.p_adjusted = adj
        if adj < alpha:
            r.trend.label = "growing" if r.trend.rate_ratio_per_30d > 1 else "fading"
    for r in reports:
        mean = r.trend.mean_rate_per_week
        rate = r.trend.rate_end_per_week if r.trend.label != "stable" else mean
        rate = min(rate, MAX_RATE_GROWTH * mean) if mean > 0 else rate
        r.projected_effort_hours = rate * PROJECTION_WEEKS * (r.effort_hours / max(r.count, 1))
        if r.covered_by is None and covered is not None:
            r.covered_by = covered(r)
    ranked = sorted(
        (r for r in reports if r.count >= min_count and not r.covered_by),
        key=lambda r: (-r.projected_effort_hours, -r.effort_hours, -r.count, r.id),
    )
    return Analysis(since=since, until=until, clusters=reports, candidates=[r.id for r in ranked],
                    incidents=len(incs))
