"""The evaluation set of `forewarn trends`: a synthetic incident history with known clusters.

`generate(seed, incidents=5000)` makes a year of incidents over dozens of services, as an
ITSM tool would hold them:

- planted clusters: (service, failure kind) pairs, each recurring with its own pattern:
  stable (Poisson at a steady rate), growing (rate rising through the year, or starting in
  the middle of it), fading (falling to nothing), bursty (a steady rate with clumps);
  rates from a few a year to several a week;
- titles paraphrased from 5-7 templates per failure kind (different words and word order
  for the same failure), filled with volatile tokens (host names, paths, percentages,
  durations, ids, timestamps, IPs), and made noisy: typos, case, prefixes such as
  "[P2]" or "RE:", trailing words ("again", "- urgent");
- failure kinds that share words on purpose (latency vs error rate on the same API, disk
  full vs disk latency), which is what makes precision hard;
- one-off noise: incidents whose title names a failure seen nowhere else (each its own
  truth cluster);
- times to restore drawn per failure kind (log-normal), priorities, assignment groups.

Every incident carries its truth label (`truth`: cluster name, or a unique name for a one-off)
and every planted cluster its pattern, so benchmarks/trends.py can score clustering and
candidate ranking. Deterministic per seed. Used by the benchmark and by tests (small sizes).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import random
from dataclasses import dataclass, field

from agent.trends.history import Incident

YEAR = 365 * 86400.0
START = dt.datetime(2025, 1, 6, tzinfo=dt.UTC).timestamp()  # a Monday

SERVICES = [
    "checkout-api", "payments-gateway", "orders-db", "inventory-svc", "search-cluster", "auth-service",
    "user-profile", "notification-svc", "email-relay", "billing-batch", "reporting-dwh", "cdn-edge",
    "mobile-bff", "web-frontend", "recommendation-ml", "fraud-scoring", "shipping-svc", "warehouse-wms",
    "erp-sap", "hr-portal", "vpn-gateway", "corp-wifi", "ldap-directory", "kafka-cluster", "redis-cache",
    "k8s-prod", "ci-jenkins", "artifact-repo", "monitoring-stack", "backup-vault", "dns-internal",
    "file-share", "print-service", "telephony-pbx", "crm-salesforce", "data-lake",
]
GROUPS = ["SRE", "Platform", "DBA", "Network", "Service Desk", "App Support", "Security", "Data Eng"]
PRIORITIES = ["P1", "P2", "P3", "P4"]

# Failure kinds: templates with placeholders {host} {path} {pct} {ms} {n} {id} {ts} {ip} {svc}
# {dur}. Kinds in the same family share words on purpose.
KINDS: dict[str, list[str]] = {
    "latency": [
        "{svc} latency above {ms}ms", "High latency on {svc} ({ms} ms p99)", "{svc} slow responses - latency p95 {ms}ms",
        "High latency reported on {svc}", "{svc}: request latency SLO breach", "Users report {svc} latency very high",
        "Latency spike {svc}",
    ],
    "errors5xx": [
        "{svc} 5xx error rate {pct}%", "Spike of HTTP 500 errors on {svc}", "{svc} returning 5xx server errors",
        "Error rate above threshold for {svc}", "{svc}: elevated 502/503 errors", "Many failed requests (5xx) on {svc}",
    ],
    "disk_full": [
        "Disk full on {host} {path}", "{host}: filesystem {path} {pct}% full", "Low disk space on {host}",
        "Disk usage above {pct}% on {host} ({path})", "No space left on device {path} {host} - disk full",
        "Filesystem almost full {host}:{path}",
    ],
    "disk_latency": [
        "High disk latency on {host}", "{host}: disk IO wait {pct}%", "Slow disk I/O on {host} {path}",
        "Storage latency {ms}ms on {host} disk", "IO saturation on {host} disk {path}",
    ],
    "cpu": [
        "High CPU on {host}", "{host} CPU utilisation {pct}%", "CPU usage critical on {host}",
        "Processor load above {pct}% on {host} (CPU)", "{host}: load average {n}, CPU saturated",
    ],
    "oom": [
        "{svc} pod OOMKilled on {host}", "Out of memory: {svc} killed", "{host}: oom-killer terminated java ({svc})",
        "Memory exhausted on {host}, {svc} out of memory", "{svc} container killed for exceeding memory limit",
    ],
    "cert": [
        "TLS certificate for {fqdn} expires in {n} days", "SSL cert expiring soon on {fqdn}",
        "Certificate expiry warning {fqdn}", "{fqdn}: x509 certificate has expired",
        "Expired certificate causing handshake failures on {fqdn}",
    ],
    "deploy": [
        "Deployment of {svc} {ver} failed", "{svc} deploy {ver} rolled back", "Failed deploy {svc} build {n}",
        "Pipeline failed deploying {svc} to prod", "{svc}: deployment rollout stuck at {pct}%",
    ],
    "backup": [
        "Backup job failed on {host}", "Nightly backup of {host} did not complete", "{host}: backup error code {n}",
        "Backup missing for {host} ({ts})", "Snapshot backup failed {host} {path}",
    ],
    "replication": [
        "Replication lag {dur} on {host}", "{host} replica behind primary by {n} seconds (replication)",
        "Database replication delay on {host}", "Replica {host} out of sync, replication broken",
        "High replication lag replica {host}",
    ],
    "connpool": [
        "{svc} connection pool exhausted", "Too many connections to database from {svc}",
        "{svc}: cannot get JDBC connection (pool {n}/{n})", "DB connection timeout in {svc}",
        "{svc} max connections reached", "Connection pool saturation on {svc} ({host})",
    ],
    "queue": [
        "{svc} queue backlog {n} messages", "Message queue growing for {svc}", "{svc}: consumer lag {n} on queue",
        "Backlog on {svc} queue not draining", "Queue consumer group {svc} lagging by {n}",
    ],
    "crashloop": [
        "Pod {pod} CrashLoopBackOff", "{svc} pods restarting repeatedly (crash loop)", "CrashLoopBackOff for {svc} in prod",
        "{svc} container keeps crashing ({pod})", "Crash loop {pod}",
    ],
    "dns": [
        "DNS resolution failing for {fqdn}", "Cannot resolve {fqdn} (DNS)", "NXDOMAIN for {fqdn} from {host}",
        "{host}: DNS lookup timeout", "DNS name resolution errors on {host}",
    ],
    "login": [
        "Users unable to login to {svc}", "Login failures on {svc}", "{svc}: login errors for users",
        "SSO login broken for {svc}", "Cannot sign in to {svc} - login invalid session", "{svc} login page error",
    ],
    "batch_late": [
        "{svc} nightly batch late", "Batch job {job} did not finish by {ts}", "{job} batch overran its window",
        "{svc}: end of day batch delayed {dur}", "Late completion of batch {job}",
    ],
    "vendor_rate": [
        "{svc} rate limited by vendor API (429)", "Vendor API throttling {svc}", "HTTP 429 Too Many Requests from vendor ({svc})",
        "{svc}: vendor quota exceeded, rate limit", "Vendor API rejecting calls from {svc}: rate limit",
    ],
    "node_notready": [
        "Node {host} NotReady", "Kubernetes node {host} not ready", "{host} kubelet stopped posting node status",
        "k8s worker node {host} unreachable", "Node pressure: {host} NotReady",
    ],
    "network": [
        "Network packet loss between {host} and {ip}", "{host}: network unreachable to {ip}",
        "High network packet loss on {host}",
        "Network latency to {ip} from {host}", "Network link flapping on {host}",
    ],
    "password_reset": [
        "Password reset request for {user}", "{user} locked out, reset password", "Reset password for user {user}",
        "Account {user} locked, password expired", "User {user} forgot password",
    ],
    "printer": [
        "Printer {host} offline", "Cannot print to {host} printer", "Print queue stuck on printer {host}",
        "{host} printer paper jam", "Printing fails from floor {n} ({host})",
    ],
    "vpn": [
        "VPN connection drops for {user}", "Cannot connect to VPN ({user})", "VPN tunnel down {host}",
        "Remote access VPN failing", "{user}: VPN disconnects every {n} minutes",
    ],
    "cache_miss": [
        "{svc} cache hit ratio dropped to {pct}%", "Cache misses high on {svc}", "{svc}: redis cache evictions {n}/s",
        "Low cache hit rate {svc}", "{svc} cache stampede",
    ],
    "license": [
        "{svc} license expires in {n} days", "License limit reached for {svc}", "{svc}: licence key invalid",
        "License server unreachable from {host}", "{svc} license seats exhausted",
    ],
}

# Which failure kinds a service can have (by the words in its name), so the history looks like
# a real estate: databases get replication, desktops get printers.
_FAMILY = {
    "api": ["latency", "errors5xx", "connpool", "oom", "crashloop", "deploy", "cert", "login", "vendor_rate", "cache_miss"],
    "db": ["disk_full", "disk_latency", "replication", "backup", "cpu", "connpool"],
    "infra": ["disk_full", "cpu", "node_notready", "network", "dns", "cert", "backup", "disk_latency"],
    "batch": ["batch_late", "disk_full", "cpu", "oom", "queue", "backup"],
    "desk": ["password_reset", "printer", "vpn", "login", "network", "license"],
}


def _family(service: str) -> str:
    if any(w in service for w in ("db", "dwh", "vault", "lake", "sap", "ldap")):
        return "db"
    if any(w in service for w in ("batch", "ml", "kafka", "reporting", "jenkins")):
        return "batch"
    if any(w in service for w in ("wifi", "vpn", "print", "hr-", "telephony", "file-share", "crm")):
        return "desk"
    if any(w in service for w in ("k8s", "cdn", "dns", "monitoring", "redis", "artifact", "search")):
        return "infra"
    return "api"


@dataclass
class Planted:
    """A planted cluster: its truth name, service, failure kind and pattern."""

    name: str
    service: str
    kind: str
    pattern: str  # stable | growing | fading | bursty
    count: int = 0


@dataclass
class EvaluationSet:
    incidents: list[Incident]
    truth: dict[str, str]  # incident id -> truth cluster name
    planted: dict[str, Planted] = field(default_factory=dict)
    since: float = START
    until: float = START + YEAR

    def growing(self) -> list[str]:
        """Names of planted growing clusters with enough incidents to be told apart."""
        return sorted(p.name for p in self.planted.values() if p.pattern == "growing" and p.count >= 8)

    def to_csv(self, dialect: str = "servicenow") -> bytes:
        """The history as an export: ServiceNow's or Jira's column names and date formats."""
        out = io.StringIO()
        w = csv.writer(out)
        if dialect == "jira":
            w.writerow(["Issue key", "Summary", "Created", "Resolved", "Component/s", "Priority", "Issue Type"])
            for i in self.incidents:
                w.writerow([i.id, i.title, _jira_date(i.opened), _jira_date(i.resolved), i.service, i.priority,
                            "Incident"])
        else:
            w.writerow(["number", "short_description", "opened_at", "resolved_at", "cmdb_ci", "category",
                        "assignment_group", "priority", "problem_id"])
            for i in self.incidents:
                w.writerow([i.id, i.title, _sn_date(i.opened), _sn_date(i.resolved), i.service, i.category,
                            i.group, i.priority, i.problem])
        return out.getvalue().encode("utf-8")


def _sn_date(t: float | None) -> str:
    return "" if t is None else dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _jira_date(t: float | None) -> str:
    return "" if t is None else dt.datetime.fromtimestamp(t, dt.UTC).strftime("%d/%b/%y %I:%M %p")


# ---- volatile tokens and noise ------------------------------------------------------------------


def _fill(template: str, rng: random.Random, service: str, hosts: list[str]) -> str:
    short = service.split("-")[0]
    values = {
        "svc": rng.choice([service, service, short, service.replace("-", " "), service.upper()]),
        "host": rng.choice(hosts),
        "fqdn": rng.choice([f"{short}.example.com", f"api.{short}.example.com", f"{service}.corp.example.com"]),
        "path": rng.choice(["/var", "/var/log", "/data", "/opt/app/logs", "/u01/oradata", "/tmp", "/home",
                            "/var/lib/postgresql", "/mnt/backup"]),
        "pct": str(rng.choice([85, 90, 91, 93, 95, 97, 98, 99, 100, rng.randint(50, 100)])),
        "ms": str(rng.choice([250, 300, 500, 800, 1200, 2000, rng.randint(200, 5000)])),
        "n": str(rng.randint(2, 20000) if rng.random() < 0.5 else rng.randint(2, 60)),
        "id": f"{rng.getrandbits(40):010x}",
        "ts": rng.choice(["02:00", "06:30", "2025-03-04 01:00", "23:59", "04:15 UTC"]),
        "ip": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        "dur": rng.choice(["5m", "12 min", "1h", "45s", "2h30m", "300 seconds"]),
        "ver": rng.choice(["v1.2.3", "2.14.0", "release-412", "1.9.7-hotfix", "v3.0.0-rc2"]),
        "pod": f"{service}-{rng.getrandbits(36):09x}-{''.join(rng.choice('bcdfghjklmnpqrstvwxz2456789') for _ in range(5))}",
        "job": rng.choice([f"{short}_eod", f"{short.upper()}_NIGHTLY", f"{short}-export", f"job_{short}_{rng.randint(1, 9)}"]),
        "user": rng.choice(["jdoe", "a.smith", "mgarcia", "t.nguyen", "kpatel", "lchen", "r.okafor", "s.muller"])
        + rng.choice(["", "", "@example.com"]),
    }
    return template.format(**values)


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 5 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 2)
    op = rng.random()
    if op < 0.4:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]  # swap
    if op < 0.7:
        return word[:i] + word[i + 1 :]  # drop
    return word[:i] + word[i] + word[i:]  # double


def _noisy(title: str, rng: random.Random) -> str:
    words = title.split()
    if rng.random() < 0.25:
        j = rng.randrange(len(words))
        words[j] = _typo(words[j], rng)
    t = " ".join(words)
    r = rng.random()
    if r < 0.08:
        t = t.upper()
    elif r < 0.25:
        t = t.lower()
    r = rng.random()
    if r < 0.06:
        t = f"[{rng.choice(PRIORITIES)}] {t}"
    elif r < 0.10:
        t = f"RE: {t}"
    elif r < 0.13:
        t = f"FW: {t}"
    r = rng.random()
    if r < 0.06:
        t += " again"
    elif r < 0.10:
        t += " - urgent"
    elif r < 0.13:
        t += f" (ref INC{rng.randint(1000000, 9999999)})"
    elif r < 0.15:
        t += " !!"
    return t


_ONE_OFF_WORDS = (
    "fire alarm test in datacenter hall|projector broken in meeting room {n}|new starter laptop request|"
    "coffee machine network port|request access to shared mailbox|wrong invoice template in {svc}|"
    "typo on {svc} landing page|elevator badge reader fault|teams meeting recording missing|"
    "monitor flickering desk {n}|license plate camera offline|ups battery replacement due|"
    "office move cabling floor {n}|salesforce dashboard filter wrong|excel macro broken after update|"
    "calendar invites duplicated|phone extension {n} forwarding|barcode scanner pairing|"
    "intranet news page image missing|expense report export wrong currency|gdpr data export request|"
    "audit log retention question|font rendering glitch in {svc}|legacy report column misaligned|"
    "translation missing in {svc} checkout|timezone shown wrong in {svc}|webhook signature mismatch {svc}|"
    "duplicate customer record in crm|warehouse label printer alignment|api doc link broken|"
    "sandbox environment refresh request|firewall rule request for {host}|onboarding vendor sftp account|"
    "decommission server {host}|ssl inspection breaks {svc} upload|unexpected charge on cloud bill|"
    "survey tool embed broken|scheduled email sent twice|mobile app push icon wrong|"
    "kiosk browser stuck fullscreen|meeting room display input switch"
).split("|")


def _rate_curve(pattern: str, rng: random.Random) -> tuple[callable, float]:
    """(relative rate as a function of the year fraction x in [0,1), mean of that function)."""
    if pattern == "growing":
        if rng.random() < 0.5:
            start = rng.uniform(0.3, 0.6)  # a new failure that appears and keeps coming more often
            f = lambda x, s=start: 0.0 if x < s else 0.3 + 2.7 * (x - s) / (1 - s)
            return f, (1 - start) * 1.65
        k = rng.uniform(1.6, 2.6)  # e-fold growth factor over the year
        return (lambda x, k=k: math.exp(k * x)), (math.exp(k) - 1) / k
    if pattern == "fading":
        end = rng.uniform(0.45, 0.8)  # fixed at some point: stops
        return (lambda x, e=end: max(0.0, 1.0 - x / e) * 2), end
    return (lambda x: 1.0), 1.0


def generate(seed: int = 1, incidents: int = 5000, services: int = 36) -> EvaluationSet:
    """A year of incident history; see the module docstring. `incidents` is the expected size
    (the actual number varies a little with the seed)."""
    rng = random.Random(seed)
    svcs = SERVICES[:services] if services <= len(SERVICES) else [
        f"{SERVICES[i % len(SERVICES)]}-{i // len(SERVICES)}" for i in range(services)]
    planted: list[tuple[Planted, callable, float, float]] = []  # (cluster, curve, curve mean, weight)
    for svc in svcs:
        kinds = _FAMILY[_family(svc)]
        for kind in rng.sample(kinds, k=min(len(kinds), rng.randint(2, 5))):
            pattern = rng.choices(["stable", "growing", "fading", "bursty"], weights=[5, 2, 2, 1])[0]
            curve, mean = _rate_curve(pattern, rng)
            weight = math.exp(rng.gauss(0.0, 1.1))  # rates span ~2 orders of magnitude
            planted.append((Planted(f"{svc}/{kind}", svc, kind, pattern), curve, mean, weight))
    noise_share = 0.06
    total_weight = sum(w for *_, w in planted)
    per_weight = incidents * (1 - noise_share) / total_weight
    hosts_of = {svc: [_host(svc, i, rng) for i in range(rng.randint(2, 8))] for svc in svcs}
    group_of = {svc: rng.choice(GROUPS) for svc in svcs}
    out: list[tuple[float, Incident, str]] = []
    for p, curve, mean, weight in planted:
        expected = weight * per_weight
        peak = max(curve(x / 200) for x in range(200)) or 1.0
        # thinning: candidate times at the peak rate, kept with probability curve(x)/peak
        n_cand = _poisson(rng, expected * peak / max(mean, 1e-9))
        times = []
        for _ in range(n_cand):
            x = rng.random()
            if rng.random() < curve(x) / peak:
                times.append(START + x * YEAR)
        if p.pattern == "bursty" and times:
            extra = []
            for t in times[: max(1, len(times) // 4)]:
                extra += [t + rng.uniform(600, 6 * 3600) for _ in range(rng.randint(1, 3))]
            times += [t for t in extra if t < START + YEAR]
        templates = KINDS[p.kind]
        mu = math.log(rng.choice([0.5, 1, 2, 4, 8, 24]) * 3600)
        for t in times:
            title = _noisy(_fill(rng.choice(templates), rng, p.service, hosts_of[p.service]), rng)
            out.append((t, _incident(t, title, p.service, group_of[p.service], p.kind, mu, rng), p.name))
        p.count = len(times)
    n_noise = int(incidents * noise_share)
    pairs = [(svc, base) for svc in svcs for base in _ONE_OFF_WORDS]
    rng.shuffle(pairs)  # each one-off text at most once per service: a one-off does not recur
    for k, (svc, base) in enumerate(pairs[:n_noise]):
        t = START + rng.random() * YEAR
        title = _noisy(_fill(base, rng, svc, hosts_of[svc]), rng) + f" {rng.choice(['', '', 'asap', 'pls check'])}"
        out.append((t, _incident(t, title.strip(), svc, group_of[svc], "request", math.log(4 * 3600), rng),
                    f"one-off/{k}"))
    out.sort(key=lambda r: r[0])
    incs, truth = [], {}
    for n, (_, inc, name) in enumerate(out, 1):
        inc.id = f"INC{n:07d}"
        incs.append(inc)
        truth[inc.id] = name
    return EvaluationSet(incs, truth, {p.name: p for p, *_ in planted})


def _host(svc: str, i: int, rng: random.Random) -> str:
    short = "".join(w[:3] for w in svc.split("-"))
    return rng.choice([f"{short}-{i + 1:02d}", f"{short}{i + 1:02d}.prod.example.com", f"{short}-prod-{i + 1}",
                       f"ip-10-{rng.randint(0, 9)}-{rng.randint(0, 255)}-{rng.randint(1, 254)}"])


def _incident(t: float, title: str, svc: str, group: str, kind: str, mu: float, rng: random.Random) -> Incident:
    restore = min(math.exp(rng.gauss(mu, 0.9)), 20 * 86400)
    resolved = t + restore if t + restore < START + YEAR or rng.random() < 0.5 else None
    return Incident(id="", opened=t, title=title, resolved=resolved, service=svc, category=kind.split("_")[0],
                    group=group, priority=rng.choices(PRIORITIES, weights=[1, 3, 8, 4])[0], source="eval")


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 50:
        return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p < limit:
            return k
        k += 1
