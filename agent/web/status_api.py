"""Prometheus's status endpoints and the agent's own views for its UI, HTTP-free:

    /api/v1/status/buildinfo    version, revision, ... (Grafana's "Save & test" reads it)
    /api/v1/status/runtimeinfo  start time, working directory, last reload, retention
    /api/v1/targets             scrape targets and their health, in Prometheus's shape
    /api/v1/problems            the problem records, with each sink's ticket reference (ours)
    /api/v1/forecasts           every forecast and anomaly rule's live outputs per series (ours)

Each returns (HTTP status, JSON body) in Prometheus's envelope. Imports the sources' and
tickets' public types; never HTTP code, the pipeline or the daemon.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from agent import __version__
from agent.clock import rfc3339
from agent.sources.scrape import ScrapeTarget, TargetStats
from agent.store import Labels, labels_dict

Response = tuple[int, dict[str, Any]]


def _ok(data: Any) -> Response:
    return 200, {"status": "success", "data": data}


def buildinfo() -> Response:
    """`data.features` stays absent: Grafana takes a non-empty one for Mimir."""
    return _ok({"version": __version__, "revision": "", "branch": "", "buildUser": "", "buildDate": "",
                "goVersion": f"python{platform.python_version()}"})


@dataclass(frozen=True)
class RuntimeInfo:
    """What the daemon knows of its own run."""

    start_time: float
    reload_ok: bool
    last_reload: float
    retention: float  # seconds of history per series
    state_dir: str


def _duration(seconds: float) -> str:
    """Seconds as Prometheus prints a model.Duration (`1d`, `15s`, `1h30m`)."""
    s = int(seconds)
    if s == 0:
        return "0s"
    out = []
    for unit, n in (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= n:
            out.append(f"{s // n}{unit}")
            s %= n
    return "".join(out)


def runtimeinfo(info: RuntimeInfo, threads: int) -> Response:
    return _ok({
        "startTime": rfc3339(info.start_time),
        "CWD": os.getcwd(),
        "reloadConfigSuccess": info.reload_ok,
        "lastConfigTime": rfc3339(info.last_reload),
        "corruptionCount": 0,
        "goroutineCount": threads,
        "GOMAXPROCS": os.cpu_count() or 1,
        "GOMEMLIMIT": 0,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": _duration(info.retention),
        "stateDirectory": info.state_dir,
    })


class TargetsView(Protocol):
    """What the targets API reads of the scrape manager."""

    def targets(self) -> list[ScrapeTarget]: ...

    def stats(self) -> list[TargetStats]: ...


def _health(st: TargetStats | None) -> str:
    if st is None or st.up is None:
        return "unknown"
    return "up" if st.up else "down"


def targets(scrapes: TargetsView, params: Mapping[str, Any]) -> Response:
    """GET /api/v1/targets: `state` (active, dropped, any), `scrapePool`."""
    def first(name: str) -> str:
        v = params.get(name, "")
        return str(v[0] if isinstance(v, list) and v else v or "")

    state, pool = first("state").lower(), first("scrapePool")
    stats = {s.key: s for s in scrapes.stats()}
    active = []
    if state in ("", "active", "any"):
        for t in scrapes.targets():
            if pool and t.job != pool:
                continue
            st = stats.get(t.key)
            active.append({
                "discoveredLabels": {"__address__": t.instance, "__metrics_path__": t.config.metrics_path,
                                     "__scheme__": t.config.scheme, "job": t.job},
                "labels": labels_dict(t.labels),
                "scrapePool": t.job,
                "scrapeUrl": t.url,
                "globalUrl": t.url,
                "lastError": st.last_error if st else "",
                "lastScrape": rfc3339(st.last_scrape_timestamp) if st and st.last_scrape_timestamp else "0001-01-01T00:00:00Z",
                "lastScrapeDuration": st.last_duration_seconds if st else 0.0,
                "health": _health(st),
                "scrapeInterval": _duration(t.interval_seconds),
                "scrapeTimeout": _duration(t.timeout_seconds),
            })
    return _ok({"activeTargets": active, "droppedTargets": [], "droppedTargetCounts": {}})


# ---- the agent's own views ----------------------------------------------------------------------


def _finite(v: float) -> float | None:
    """JSON has no infinities: None where no breach is predicted."""
    return v if math.isfinite(v) else None


def problems(records: Iterable[Any], ref_of: Callable[[str, str], str | None],
             attempts: Callable[[int], list[dict[str, Any]]] | None = None) -> Response:
    """GET /api/v1/problems: every remembered problem (open, silenced, in maintenance, held,
    remediating, cleared), newest first, with the ticket reference its sink returned and the
    attempts of its episode's remediation run (`remediation`, empty without one)."""
    out = []
    for p in records:
        d = asdict(p)
        d["state"] = str(p.state)
        d["ticket"] = ref_of(p.sink, p.dedup_key)
        run = d.get("remediation_run")
        d["remediation"] = attempts(run) if attempts is not None and run is not None else []
        out.append(d)
    out.sort(key=lambda d: -d["started_at"])
    return _ok({"problems": out})


@dataclass(frozen=True)
class RuleOutputs:
    """One rule's live detector outputs, as the rules expose them on /metrics."""

    rule: str
    kind: str  # forecast | anomaly
    series: Sequence[tuple[Labels, dict[str, float]]]  # labels (no __name__) -> field -> value


def forecasts(outputs: Iterable[RuleOutputs]) -> Response:
    """GET /api/v1/forecasts: per rule and series, the forecast's ETA with its interval and
    probability, or the anomaly score (`null` where no breach is predicted)."""
    rules = []
    for r in outputs:
        rules.append({"rule": r.rule, "kind": r.kind, "series": [
            {"labels": labels_dict(lab), **{k: _finite(v) for k, v in fields.items()}} for lab, fields in r.series]})
    return _ok({"rules": rules})
