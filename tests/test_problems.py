"""Problems: grouping, dedup keys, open/update/clear, silences, maintenance, storm guard, flaps,
restarts. Driven with a simulated clock and a recording outbox, like a promtool table."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from agent.clock import SimulatedClock
from agent.clock import human_time as iso
from agent.config.decode import Duration
from agent.config.schema import MaintenanceWindow, SilenceConfig, TicketingConfig
from agent.rules.alerting import Alert, AlertState
from agent.rules.detectors import BreachInfo
from agent.tickets.content import approx_duration
from agent.tickets.manager import ProblemManager
from agent.tickets.outbox import Outbox
from agent.tickets.policy import TicketPolicy
from agent.tickets.problems import Reason, dedup_key
from agent.tickets.sinks.local import LocalSink, get_ticket, list_tickets
from agent.tickets.suppress import SilenceStore, Suppressor, compile_window, parse_matchers, silences_from_config

H = 3600.0
T0 = 1_795_000_000.0 - 1_795_000_000.0 % H  # on an hour boundary
EXT = {"host": "db-7"}


@dataclass
class FakeRule:
    name: str
    group: str = "capacity"
    ticket: TicketPolicy = field(default_factory=lambda: TicketPolicy(None, ["alertname", "host"], "comment"))


class RecordingOutbox:
    rebuilt = False

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.accept = True

    def enqueue(self, sink: str, ticket: Any, context: str = "", *, uncertain: bool = False) -> bool:
        if not self.accept:
            return False
        self.sent.append((sink, ticket))
        return True

    def latest_contexts(self) -> list:
        return []

    def actions(self) -> list[tuple[str, int]]:
        return [(t.action, t.sequence) for _, t in self.sent]


def alert(state: str = "firing", eta: float | None = None, severity: str = "warning", **labels: str) -> Alert:
    lab = {"alertname": "FilesystemWillFill", "severity": severity, "mountpoint": "/var", **labels}
    fc = BreachInfo(eta, eta * 0.8, eta * 1.3, 0.9, -1.0) if eta is not None else None
    return Alert(labels=lab, annotations={"summary": f"{lab['mountpoint']} on db-7 fills in {approx_duration(eta or 0)}",
                                          "runbook_url": "https://runbooks.example/disk"},
                 state=AlertState[state.upper()], active_at=T0, value=1e9, forecast=fc)


def make(tmp_path, outbox=None, clock=None, suppressor=None, **cfg: Any) -> tuple[ProblemManager, RecordingOutbox]:
    conf = TicketingConfig(**cfg)
    ob = outbox or RecordingOutbox()
    pm = ProblemManager(conf, str(tmp_path), clock or SimulatedClock(T0), EXT, suppressor, ob,
                        external_url="http://db-7.example:9469")
    return pm, ob


def reasons(decisions) -> list[str]:
    return [str(d.reason) for d in decisions]


def metric_samples(pm: ProblemManager) -> dict[str, float]:
    """forewarn_problems by state, from the manager's collector."""
    return {s.labels["state"]: s.value for family in pm.collect() for s in family.samples}


def test_dedup_key_is_stable():
    k = dedup_key("FilesystemWillFill", {"host": "db-7", "alertname": "FilesystemWillFill"})
    assert k == dedup_key("FilesystemWillFill", {"alertname": "FilesystemWillFill", "host": "db-7"})
    assert len(k) == 32 and k != dedup_key("FilesystemWillFill", {"host": "db-8", "alertname": "FilesystemWillFill"})
    # pinned: the key must not change between processes or releases (tickets carry it)
    canon = '["FilesystemWillFill",[["alertname","FilesystemWillFill"],["host","db-7"]]]'
    assert k == hashlib.sha256(canon.encode()).hexdigest()[:32] == "713ee33f6d0cc38f3e1da41567d76cf3"


def test_open_steady_clear_and_restart(tmp_path):
    rule = FakeRule("FilesystemWillFill")
    pm, ob = make(tmp_path)
    assert reasons(pm.process(rule, [alert("pending", eta=9 * H)], T0)) == []
    (d,) = pm.process(rule, [alert(eta=9 * H), alert(eta=20 * H, mountpoint="/home")], T0 + 60)
    assert d.reason == Reason.FIRST and d.action == "open" and d.sink == "local"
    t = d.ticket
    assert t.dedup_key == dedup_key("FilesystemWillFill", {"alertname": "FilesystemWillFill", "host": "db-7"})
    assert t.sequence == 1
    assert t.labels == {"alertname": "FilesystemWillFill", "host": "db-7", "severity": "warning"}  # common labels
    assert t.title == "[Forewarn] /var on db-7 fills in ~9 h (between 7 and 12 hours, 90% likely)"
    assert "Runbook: https://runbooks.example/disk" in t.body and "http://db-7.example:9469/api/v1/alerts" in t.body
    assert "Predicted: the threshold is crossed in about 9 hours" in t.body
    assert "between 7 and 12 hours from now" in t.body and "90% likely to happen within the forecast's horizon" in t.body
    assert t.starts_at == T0 and f"since {iso(T0)}" in t.body  # when the condition began, not the evaluation
    # the ETA counting down as time passes is not a change
    assert reasons(pm.process(rule, [alert(eta=8 * H), alert(eta=19 * H, mountpoint="/home")], T0 + H + 60)) == [
        "nothing to do"]
    # restart: state comes back from SQLite; no second open
    pm2, ob2 = make(tmp_path)
    assert reasons(pm2.process(rule, [alert(eta=8 * H), alert(eta=19 * H, mountpoint="/home")], T0 + H + 120)) == [
        "nothing to do"]
    # after a restart the rule's alerts are pending again while `for` runs: not a clear
    assert reasons(pm2.process(rule, [alert("pending", eta=8 * H)], T0 + H + 180)) == []
    (d,) = pm2.process(rule, [alert("inactive", eta=8 * H)], T0 + 2 * H)
    assert (d.reason, d.action, d.ticket.sequence, d.ticket.resolve) == (Reason.RESOLVED, "clear", 2, False)
    assert "Cleared at" in d.ticket.body
    pm3, ob3 = make(tmp_path)
    assert pm3.process(rule, [], T0 + 2 * H + 60) == []  # no second clear after a restart
    assert ob2.actions() == [("clear", 2)] and ob3.actions() == []


def test_update_on_material_eta_change_rate_limited(tmp_path):
    rule = FakeRule("FilesystemWillFill")
    pm, ob = make(tmp_path, update_min_interval=Duration(H))
    pm.process(rule, [alert(eta=20 * H)], T0)
    # breach moved from T0+20h to T0+10m+13h: more than 25% of the 20 h that were left (a
    # material change), less than half (not one that goes out at once)
    (d,) = pm.process(rule, [alert(eta=13 * H)], T0 + 600)
    assert d.reason == Reason.REPEAT_INTERVAL and d.action is None and "predicted breach moved earlier" in d.detail
    (d,) = pm.process(rule, [alert(eta=12 * H)], T0 + H)
    assert (d.reason, d.action, d.ticket.sequence) == (Reason.CHANGED, "update", 2)
    assert d.ticket.body.startswith("Update: the predicted breach moved earlier, from")
    # small wobble (1% of the time left) is nothing
    assert reasons(pm.process(rule, [alert(eta=10.8 * H)], T0 + 2.1 * H)) == ["nothing to do"]
    # the breach coming under 6 h after the count-down is an urgency change: update
    (d,) = pm.process(rule, [alert(eta=5.9 * H)], T0 + 7.2 * H)
    assert d.reason == Reason.CHANGED and "less than 6 h" in d.ticket.body
    assert ob.actions() == [("open", 1), ("update", 2), ("update", 3)]


def test_a_large_eta_move_or_the_breach_itself_is_sent_at_once(tmp_path):
    """Within update_min_interval: the predicted breach moving by more than half of the time
    that was left, or the breach happening, goes out at once (a ticket must not keep saying
    "in 1 h 38 m" once the disk is full)."""
    rule = FakeRule("FilesystemWillFill")
    pm, ob = make(tmp_path, update_min_interval=Duration(H))
    pm.process(rule, [alert(eta=20 * H)], T0)
    (d,) = pm.process(rule, [alert(eta=8 * H)], T0 + 600)  # 59% of the 20 h
    assert (d.reason, d.action) == (Reason.CHANGED, "update") and "moved earlier" in d.ticket.body
    (d,) = pm.process(rule, [alert(eta=0.0)], T0 + 1200)  # crossed, 10 minutes after the last update
    assert (d.reason, d.action) == (Reason.CHANGED, "update")
    assert "the threshold was crossed" in d.ticket.body and "Breached: the threshold is crossed now" in d.ticket.body
    assert "breach in" not in d.ticket.body.split("Series:")[1]
    assert reasons(pm.process(rule, [alert(eta=0.0)], T0 + 1300)) == ["nothing to do"]  # said once
    assert ob.actions() == [("open", 1), ("update", 2), ("update", 3)]


def test_severity_change_and_new_series_update(tmp_path):
    rule = FakeRule("DiskErrors")
    pm, ob = make(tmp_path, update_min_interval=Duration(60))
    pm.process(rule, [alert()], T0)
    (d,) = pm.process(rule, [alert(severity="critical")], T0 + 120)
    assert d.reason == Reason.CHANGED and "severity warning -> critical" in d.ticket.body
    assert d.ticket.severity == "critical"
    (d,) = pm.process(rule, [alert(severity="critical"), alert(mountpoint="/srv")], T0 + 240)
    assert d.reason == Reason.CHANGED and "1 more series affected (2 in all)" in d.ticket.body
    assert reasons(pm.process(rule, [alert(severity="critical")], T0 + 360)) == ["nothing to do"]


def test_group_by_and_on_clear_resolve(tmp_path):
    rule = FakeRule("FilesystemWillFill", ticket=TicketPolicy("itsm", ["alertname", "host", "mountpoint"], "resolve"))
    pm, ob = make(tmp_path)
    ds = pm.process(rule, [alert(), alert(mountpoint="/home")], T0)
    assert sorted(d.ticket.labels["mountpoint"] for d in ds) == ["/home", "/var"]
    assert {d.sink for d in ds} == {"itsm"}
    home, d = pm.process(rule, [alert(mountpoint="/home")], T0 + 60)
    assert home.reason == Reason.NOTHING
    assert d.action == "clear" and d.ticket.resolve is True and d.ticket.labels["mountpoint"] == "/var"


def test_flap_reopens_same_ticket_then_new_episode(tmp_path):
    rule = FakeRule("FilesystemWillFill")
    pm, ob = make(tmp_path, flap_window=Duration(H))
    pm.process(rule, [alert()], T0)
    pm.process(rule, [], T0 + 600)
    (d,) = pm.process(rule, [alert()], T0 + 1200)
    assert (d.reason, d.action) == (Reason.REOPENED, "update") and d.ticket.body.startswith("Problem returned")
    pm.process(rule, [], T0 + 1800)
    (d,) = pm.process(rule, [alert()], T0 + 1800 + H + 1)  # beyond the flap window: a new ticket
    assert (d.reason, d.action) == (Reason.FIRST, "open")
    # one key, sequences continue so (dedup_key, sequence) never repeats
    assert ob.actions() == [("open", 1), ("clear", 2), ("update", 3), ("clear", 4), ("open", 5)]
    assert len({t.dedup_key for _, t in ob.sent}) == 1


def test_silences_from_store_and_config(tmp_path):
    rule = FakeRule("FilesystemWillFill")
    store = SilenceStore(str(tmp_path))
    sil = store.add(parse_matchers("host=db-7"), T0, T0 + H, comment="disk swap", now=T0)
    cfg_sil = silences_from_config([SilenceConfig(matchers=["alertname=Other"])])
    pm, ob = make(tmp_path, suppressor=Suppressor(store, cfg_sil))
    (d,) = pm.process(rule, [alert()], T0 + 60)
    assert (d.reason, d.action) == (Reason.SILENCED, None) and sil.id in d.detail and "disk swap" in d.detail
    assert metric_samples(pm)["silenced"] == 1.0  # forewarn_problems{state="silenced"}
    (d,) = pm.process(rule, [alert()], T0 + 120)
    assert d.reason == Reason.SILENCED
    (d,) = pm.process(rule, [alert()], T0 + H)  # silence ended, still firing: open now
    assert (d.reason, d.action) == (Reason.FIRST, "open")
    # a silenced problem that clears leaves nothing behind
    other = FakeRule("Other")
    pm.process(other, [alert(alertname="Other")], T0 + H)
    (d,) = pm.process(other, [], T0 + H + 60)
    assert d.reason == Reason.RESOLVED and d.action is None
    assert ob.actions() == [("open", 1)]


def test_maintenance_window(tmp_path):
    rule = FakeRule("FilesystemWillFill")
    win = compile_window(MaintenanceWindow(name="nightly", cron=f"0 {int(T0 % 86400 // 3600)} * * *",
                                           duration=Duration(1800), matchers=["host=db-7"]))
    pm, ob = make(tmp_path, suppressor=Suppressor(None, [], [win]))
    (d,) = pm.process(rule, [alert()], T0 + 60)
    assert d.reason == Reason.MAINTENANCE and "nightly" in d.detail
    (d,) = pm.process(rule, [alert()], T0 + 1800)
    assert d.reason == Reason.FIRST and d.action == "open"


def test_storm_guard_summary_ticket(tmp_path):
    rule = FakeRule("FilesystemWillFill", ticket=TicketPolicy(None, ["alertname", "host", "mountpoint"], "comment"))
    pm, ob = make(tmp_path, max_new_tickets_per_hour_per_rule=2, max_new_tickets_per_hour=3)
    mounts = [f"/m{i}" for i in range(5)]
    ds = pm.process(rule, [alert(mountpoint=m) for m in mounts], T0 + 10)
    assert sorted(reasons(ds)) == ["first notification"] * 2 + ["storm"] * 3
    summary = [t for _, t in ob.sent if t.rule == "ForewarnTicketStorm"]
    assert len(summary) == 1 and summary[0].action == "open"
    assert "3 problems held back" in summary[0].title and summary[0].body.count("\n- ") == 3
    # a second rule: 1 more allowed overall, then held into the same hour's summary
    r2 = FakeRule("MemoryLeak")
    ds = pm.process(r2, [alert(alertname="MemoryLeak", mountpoint="a", host="h1"),
                         alert(alertname="MemoryLeak", mountpoint="a", host="h2")], T0 + 20)
    assert sorted(reasons(ds)) == ["first notification", "storm"]
    assert len([t for _, t in ob.sent if t.rule == "ForewarnTicketStorm"]) == 1  # updates wait 5 min
    pm.tick(T0 + 400)
    summary = [t for _, t in ob.sent if t.rule == "ForewarnTicketStorm"]
    assert [t.action for t in summary] == ["open", "update"] and summary[1].body.count("\n- ") == 4
    assert len({t.dedup_key for t in summary}) == 1
    # held problems stay held (covered by the summary) while they fire; nothing opens for them
    assert sorted(reasons(pm.process(rule, [alert(mountpoint=m) for m in mounts], T0 + 500))) == [
        "nothing to do"] * 2 + ["storm"] * 3
    # next hour: the caps reset for new problems
    (d,) = [d for d in pm.process(rule, [alert(mountpoint=m) for m in mounts + ["/new"]], T0 + H + 1)
            if d.reason != Reason.NOTHING and d.reason != Reason.STORM]
    assert d.action == "open"
    # when every held problem has cleared, the summary is cleared too
    pm.process(rule, [], T0 + H + 100)
    pm.process(r2, [], T0 + H + 100)
    summary = [t for _, t in ob.sent if t.rule == "ForewarnTicketStorm"]
    assert [t.action for t in summary] == ["open", "update", "clear"]
    opens = [t for _, t in ob.sent if t.action == "open" and t.rule != "ForewarnTicketStorm"]
    assert len(opens) == 4  # 2 + 1 in the first hour, 1 in the second: nothing silently dropped
    assert sum(1 for _ in ob.sent) == len(ob.sent)


def test_outbox_full_is_retried_next_evaluation(tmp_path):
    rule = FakeRule("FilesystemWillFill")
    pm, ob = make(tmp_path)
    ob.accept = False
    (d,) = pm.process(rule, [alert()], T0)
    assert d.reason == Reason.OUTBOX_FULL and d.action is None
    ob.accept = True
    (d,) = pm.process(rule, [alert()], T0 + 60)
    assert (d.reason, d.action, d.ticket.sequence) == (Reason.FIRST, "open", 1)


def test_retired_rule_is_cleared(tmp_path):
    pm, ob = make(tmp_path)
    pm.process(FakeRule("Gone"), [alert(alertname="Gone")], T0)
    pm.process(FakeRule("Kept"), [alert(alertname="Kept")], T0)
    (d,) = pm.retire_rules([FakeRule("Kept")], T0 + 60)
    assert d.action == "clear" and d.rule == "Gone"
    assert pm.retire_rules([FakeRule("Kept")], T0 + 120) == []


def test_same_rule_name_in_two_groups(tmp_path):
    """Prometheus allows it; one group's rule must not clear what the other's fires."""
    pm, ob = make(tmp_path)
    a, b = FakeRule("HighLoad", group="g1"), FakeRule("HighLoad", group="g2")
    pm.process(a, [alert(alertname="HighLoad", host="h1")], T0)
    pm.process(b, [alert(alertname="HighLoad", host="h2")], T0)
    assert pm.process(b, [alert(alertname="HighLoad", host="h2")], T0 + 60)[0].reason == Reason.NOTHING
    assert [d.reason for d in pm.process(a, [alert(alertname="HighLoad", host="h1")], T0 + 60)] == [Reason.NOTHING]
    (d,) = pm.process(b, [], T0 + 120)
    assert d.action == "clear" and d.ticket.labels["host"] == "h2"
    assert ob.actions() == [("open", 1), ("open", 1), ("clear", 2)]


def test_metric_samples(tmp_path):
    pm, ob = make(tmp_path, max_new_tickets_per_hour_per_rule=1)
    rule = FakeRule("FilesystemWillFill", ticket=TicketPolicy(None, ["mountpoint"], "comment"))
    pm.process(rule, [alert(mountpoint="/a"), alert(mountpoint="/b")], T0)
    assert metric_samples(pm) == {"open": 1.0, "silenced": 0.0, "maintenance": 0.0, "held": 1.0, "remediating": 0.0}
    (family,) = pm.collect()
    assert (family.name, family.type, family.documentation) == ("forewarn_problems", "gauge", "Open problems by state.")
    assert all(s.name == "forewarn_problems" and list(s.labels) == ["state"] for s in family.samples)


def test_end_to_end_with_outbox_and_local_sink(tmp_path):
    clock = SimulatedClock(T0)
    sink = LocalSink("local", LocalSink.Config(), state_dir=str(tmp_path))
    outbox = Outbox(str(tmp_path / "outbox.db"), {"local": sink}, clock)
    pm, _ = make(tmp_path, outbox=outbox, clock=clock, update_min_interval=Duration(60))
    rule = FakeRule("FilesystemWillFill")
    pm.process(rule, [alert(eta=20 * H)], T0)
    outbox.deliver_due(T0)
    pm.process(rule, [alert(eta=3 * H)], T0 + 120)
    pm.process(rule, [], T0 + 240)
    clock.set(T0 + 240)
    outbox.deliver_due()
    (t,) = list_tickets(str(tmp_path / "tickets.db"))
    full = get_ticket(str(tmp_path / "tickets.db"), t["id"])
    assert [c["action"] for c in full["comments"]] == ["open", "update", "clear"]
    assert full["status"] == "open"  # on_clear: comment leaves it open
    assert full["labels"]["host"] == "db-7" and full["title"].startswith("[Forewarn] /var on db-7")


@pytest.mark.parametrize("group_by", [None, ["..."]])
def test_without_group_by_one_problem_per_alert(tmp_path, group_by):
    rule = FakeRule("X", ticket=TicketPolicy(None, group_by, "comment"))  # type: ignore[arg-type]
    pm, ob = make(tmp_path)
    ds = pm.process(rule, [alert(mountpoint="/a"), alert(mountpoint="/b")], T0)
    assert len({d.dedup_key for d in ds}) == 2


def test_silence_added_after_open_does_not_hide_the_clear(tmp_path):
    rule = FakeRule("FilesystemWillFill")
    store = SilenceStore(str(tmp_path))
    pm, ob = make(tmp_path, suppressor=Suppressor(store))
    pm.process(rule, [alert()], T0)
    store.add(parse_matchers("host=db-7"), T0, T0 + H, now=T0)
    assert reasons(pm.process(rule, [alert()], T0 + 60)) == ["nothing to do"]
    (d,) = pm.process(rule, [], T0 + 120)
    assert d.action == "clear"


def test_ticket_content_without_summary_and_for_anomalies():
    from agent.rules.detectors import AnomalyInfo
    from agent.tickets.content import make_ticket

    a = Alert(labels={"alertname": "LoadAnomaly", "instance": "db-7:9100"}, annotations={},
              state=AlertState.FIRING, active_at=T0, value=7.5, anomaly=AnomalyInfo(0.97, 1.2, 0.5, 2.5))
    t = make_ticket(action="open", dedup_key="k", sequence=1, rule=FakeRule("LoadAnomaly"), alerts=[a],
                    group_labels={"alertname": "LoadAnomaly", "host": "db-7"}, ticket_labels={}, started_at=T0,
                    now=T0 + 600)
    assert t.title == "[Forewarn] LoadAnomaly on host=db-7: anomaly (score 0.97)"
    assert "value now 7.5" in t.body and "Anomaly: score 0.97; expected 1.2, usual range 0.5 to 2.5." in t.body
    assert "Links:" not in t.body and t.details_url == ""  # no external_url configured
    f = alert(eta=40 * 60.0)
    f.annotations = {}
    f.value = 1.2e9
    t = make_ticket(action="open", dedup_key="k", sequence=1, rule=FakeRule("FilesystemWillFill"), alerts=[f],
                    group_labels={"alertname": "FilesystemWillFill", "host": "db-7"}, ticket_labels={},
                    started_at=T0, now=T0)
    assert t.title == ("[Forewarn] FilesystemWillFill on host=db-7: breach in about 40 minutes "
                       "(between 32 and 52 minutes, 90% likely)")
    assert "value now 1.2G" in t.body
    c = make_ticket(action="clear", dedup_key="k", sequence=2, rule=FakeRule("FilesystemWillFill"), alerts=[f],
                    group_labels={}, ticket_labels={}, started_at=T0, now=T0 + 9000, resolve=True)
    assert c.body.startswith("Cleared at") and "after 2h30m" in c.body and c.ends_at == T0 + 9000 and c.resolve


def _crash_after_enqueue(tmp_path, clock, rule):
    """A manager whose process dies between the outbox's commit and the problem store's."""
    outbox = Outbox(str(tmp_path / "outbox.db"), {}, clock)
    pm, _ = make(tmp_path, outbox=outbox, clock=clock)

    def crash(*a: Any) -> None:
        raise SystemExit("killed")

    pm.store.save = crash  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        pm.process(rule, [alert()], T0)
    return outbox


def test_crash_between_enqueue_and_commit_enqueues_once(tmp_path):
    """The outbox is written first; the problem store after. After a crash in between, the
    record is restored from the outbox at start: the problem is not opened twice."""
    clock = SimulatedClock(T0)
    rule = FakeRule("FilesystemWillFill")
    outbox = _crash_after_enqueue(tmp_path, clock, rule)
    pm2, _ = make(tmp_path, outbox=outbox, clock=clock)
    (p,) = pm2.problems()
    assert (p.state, p.sequence, p.has_ticket, p.owner) == ("open", 1, True, "capacity/FilesystemWillFill")
    assert reasons(pm2.process(rule, [alert()], T0 + 15)) == ["nothing to do"]
    assert [(r["action"], r["sequence"]) for r in outbox.rows()] == [("open", 1)]


def test_crash_between_enqueue_and_commit_then_the_alert_is_gone_clears_the_ticket(tmp_path):
    """The orphan of the adversarial review: the open reached the outbox, the problem store
    never heard of it, and after the restart the alert is gone (its state was not saved
    either). The restored record is cleared like any other: no ticket stays open for ever."""
    clock = SimulatedClock(T0)
    rule = FakeRule("FilesystemWillFill")
    outbox = _crash_after_enqueue(tmp_path, clock, rule)
    pm2, _ = make(tmp_path, outbox=outbox, clock=clock)
    (d,) = pm2.process(rule, [], T0 + 60)
    assert (d.reason, d.action, d.ticket.sequence) == (Reason.RESOLVED, "clear", 2)
    assert [(r["action"], r["sequence"]) for r in outbox.rows()] == [("clear", 2), ("open", 1)]


# ---- review findings (issue 4/5 robustness) ------------------------------------------------------


def _itsm_outbox(tmp_path, clock):
    from tests.test_outbox import FakeTool

    tool = FakeTool()
    return Outbox(str(tmp_path / "outbox.db"), {"local": tool}, clock), tool


def test_problem_forgotten_by_gc_never_reuses_a_sequence(tmp_path):
    """Sink down for a day after the clear, problem back on day 7: the outbox still holds the
    old (key, 1) and (key, 2); the new episode must not reuse them or its actions are lost."""
    from agent.tickets.sinks.base import DeliveryError

    clock = SimulatedClock(T0)
    outbox, tool = _itsm_outbox(tmp_path, clock)
    pm, _ = make(tmp_path, outbox=outbox, clock=clock)
    rule = FakeRule("FilesystemWillFill")
    pm.process(rule, [alert()], T0)
    outbox.deliver_due()
    pm.process(rule, [], T0 + 600)
    clock.set(T0 + 600)
    tool.fail = [DeliveryError("HTTP 503", retryable=True)] * 1000  # down for a day
    outbox.deliver_due()
    tool.fail = []
    clock.set(T0 + 86400 + 600)
    outbox.deliver_due()
    assert [c[0] for c in tool.calls if c[0] != "find"] == ["open", "clear"]
    day7 = T0 + 7 * 86400 + 3 * H
    clock.set(day7)
    pm.tick(day7)  # the cleared problem is forgotten...
    outbox.deliver_due()  # ...while the outbox keeps its rows (done one day later)
    assert pm.problems() == [] and [r["sequence"] for r in outbox.rows(("delivered",))] == [2]
    (d,) = pm.process(rule, [alert()], day7)
    assert (d.action, d.ticket.sequence) == ("open", 3)
    (d,) = pm.process(rule, [], day7 + 600)
    assert (d.action, d.ticket.sequence) == ("clear", 4)
    clock.set(day7 + 600)
    outbox.deliver_due()
    # the first ticket was cleared with a comment and is still open: the new episode goes there
    assert [(c[0], c[2]) for c in tool.calls if c[0] != "find"] == [("open", 1), ("clear", 2), ("update", 3), ("clear", 4)]
    assert tool.tickets["T1"]["notes"] == [1, 2, 3, 4]
    # a restart keeps the sequences too (they live in problems.db, not only in memory)
    pm.close()
    pm2, _ = make(tmp_path, outbox=RecordingOutbox(), clock=clock)
    pm2.tick(day7 + 8 * 86400)
    (d,) = pm2.process(rule, [alert()], day7 + 8 * 86400)
    assert d.ticket.sequence == 5


def test_crash_then_a_different_decision_is_not_deduplicated(tmp_path):
    """Killed between enqueue (update at 2) and the commit; after the restart the problem is
    gone: its clear, also at 2 in the stale state, must still reach the ticket."""
    clock = SimulatedClock(T0)
    outbox, tool = _itsm_outbox(tmp_path, clock)
    pm, _ = make(tmp_path, outbox=outbox, clock=clock, update_min_interval=Duration(60))
    rule = FakeRule("FilesystemWillFill")
    pm.process(rule, [alert()], T0)

    def crash(*a: Any) -> None:
        raise SystemExit("killed")

    pm.store.save = crash  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        pm.process(rule, [alert(severity="critical")], T0 + 120)
    pm2, _ = make(tmp_path, outbox=outbox, clock=clock, update_min_interval=Duration(60))
    (d,) = pm2.process(rule, [], T0 + 180)
    assert (d.action, d.ticket.sequence) == ("clear", 3)
    assert [(r["action"], r["sequence"]) for r in reversed(outbox.rows())] == [("open", 1), ("update", 2), ("clear", 3)]
    assert pm2.get(d.dedup_key).sequence == 3
    clock.set(T0 + 180)
    outbox.deliver_due()
    assert [(c[0], c[2]) for c in tool.calls if c[0] != "find"] == [("open", 1), ("update", 2), ("clear", 3)]
    (d,) = pm2.process(rule, [alert()], T0 + 300)  # and the sequence goes on from there
    assert d.ticket.sequence == 4


def test_problem_held_after_the_summary_cleared_reopens_it(tmp_path):
    rule = FakeRule("FilesystemWillFill", ticket=TicketPolicy(None, ["alertname", "host", "mountpoint"], "comment"))
    pm, ob = make(tmp_path, max_new_tickets_per_hour_per_rule=1)
    pm.process(rule, [alert(mountpoint="/a"), alert(mountpoint="/b")], T0 + 10)  # /b held
    pm.process(rule, [alert(mountpoint="/a")], T0 + 100)  # /b clears: the summary is cleared
    summary = [t for _, t in ob.sent if t.rule == "ForewarnTicketStorm"]
    assert [(t.action, t.sequence) for t in summary] == [("open", 1), ("clear", 2)]
    (d,) = [d for d in pm.process(rule, [alert(mountpoint="/a"), alert(mountpoint="/c")], T0 + 200)
            if d.dedup_key != summary[0].dedup_key and d.reason != Reason.NOTHING]
    assert d.reason == Reason.STORM  # /c, later in the same hour: held, so the summary must say so
    summary = [t for _, t in ob.sent if t.rule == "ForewarnTicketStorm"]
    assert [(t.action, t.sequence) for t in summary] == [("open", 1), ("clear", 2), ("open", 3)]
    assert "/c" in summary[-1].body and "Still firing: 1 of 2" in summary[-1].body
    pm.process(rule, [alert(mountpoint="/a")], T0 + 300)
    summary = [t for _, t in ob.sent if t.rule == "ForewarnTicketStorm"]
    assert [(t.action, t.sequence) for t in summary][-1] == ("clear", 4)
    pm.tick(T0 + 900)
    assert len([t for _, t in ob.sent if t.rule == "ForewarnTicketStorm"]) == 4


def test_flapping_every_evaluation_is_damped(tmp_path):
    """A condition flipping at every 60 s evaluation for 3 hours: at most one reopen note and
    one clear per update_min_interval, never a reopen without a later clear being told."""
    rule = FakeRule("FilesystemWillFill")
    pm, ob = make(tmp_path, flap_window=Duration(H), update_min_interval=Duration(H))
    t = T0
    for i in range(3 * 60):
        pm.process(rule, [alert()] if i % 2 == 0 else [], t)
        t += 60
    # open, clear, then per hour one reopen note and one clear (was: two notes per 2 minutes)
    assert [t.action for _, t in ob.sent] == ["open", "clear", "update", "clear", "update", "clear", "update", "clear"]
    notes = [t for _, t in ob.sent if t.action == "update"]
    assert all(n.body.startswith("Problem returned") for n in notes)
    assert [n.body.split(",")[0] for n in notes] == [f"Problem returned at {iso(T0 + 120 + k * H)}" for k in range(3)]
    assert [t.sequence for _, t in ob.sent] == list(range(1, 9))
    # it stops flapping and stays firing: the owed reopen note comes once the hour is over
    pm2, ob2 = make(tmp_path / "steady", flap_window=Duration(H), update_min_interval=Duration(H))
    pm2.process(rule, [alert()], T0)
    pm2.process(rule, [], T0 + 60)
    assert [d.action for d in pm2.process(rule, [alert()], T0 + 120)] == ["update"]  # first return: at once
    pm2.process(rule, [], T0 + 180)
    (d,) = pm2.process(rule, [alert()], T0 + 240)
    assert (d.reason, d.action) == (Reason.REPEAT_INTERVAL, None)
    assert pm2.get(d.dedup_key).state == "open"
    assert [d.action for d in pm2.process(rule, [alert()], T0 + 120 + H - 1)] == [None]
    (d,) = pm2.process(rule, [alert()], T0 + 120 + H)
    assert (d.reason, d.action) == (Reason.REOPENED, "update")
    assert [t.action for _, t in ob2.sent] == ["open", "clear", "update", "clear", "update"]
