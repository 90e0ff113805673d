"""What a ticket says, for a problem manager to act on (issue 12, item 5): the host named,
intervals and probability in words, binary units, no negative bytes, updates that follow the
forecast's direction, clear notes that say why with the value now, and the chart."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.clock import SimulatedClock
from agent.config.decode import Duration
from agent.config.schema import TicketingConfig, load_config
from agent.pipeline import Pipeline
from agent.rules.alerting import Alert, AlertState
from agent.rules.detectors import BreachInfo
from agent.store import Store, make_labels
from agent.tickets.chart import forecast_fan, render_chart
from agent.tickets.content import about, between, format_value, likelihood, make_ticket, value_unit
from agent.tickets.manager import ProblemManager
from agent.tickets.outbox import MemoryOutbox
from agent.tickets.policy import TicketPolicy
from agent.tickets.suppress import SilenceStore, Suppressor, parse_matchers
from tests.helpers import REPO

T0 = 1_795_000_000.0
H = 3600.0
GiB = 1024.0**3


@dataclass
class DiskRule:
    """An alerting rule as tickets read it, with the expression its unit comes from."""

    name: str = "FilesystemWillFill"
    group: str = "capacity"
    query_text: str = 'node_filesystem_avail_bytes{fstype!~"tmpfs"}'
    ticket: TicketPolicy = field(default_factory=lambda: TicketPolicy(None, ["alertname", "host"], "comment"))


def disk_alert(state: str = "firing", eta: float | None = 9 * H, value: float = 12.1 * GiB,
               predicted: float = -3 * GiB, probability: float = 0.9, **labels: str) -> Alert:
    fc = BreachInfo(eta, eta * 0.8, eta * 1.4, probability, predicted) if eta is not None else \
        BreachInfo(math.inf, math.inf, math.inf, 0.1, 30 * GiB)
    return Alert(labels={"alertname": "FilesystemWillFill", "severity": "warning", "mountpoint": "/var",
                         "host": "db-7", **labels},
                 annotations={"summary": "/var on db-7 fills in 9h 2m 0s", "description": "stale forecast text"},
                 state=AlertState[state.upper()], active_at=T0, value=value, forecast=fc)


def test_intervals_and_probability_in_words():
    assert between(9 * H, 14 * H) == "between 9 and 14 hours"
    assert between(10.6 * H, 11.4 * H) == "between 10.6 and 11.4 hours"  # not "11-11 h"
    assert between(11 * H, 11.02 * H) == "about 11 hours"
    assert between(40 * 60, 75 * 60) == "between 40 and 75 minutes"
    assert between(2.5 * 86400, 4 * 86400) == "between 2.5 and 4 days"
    assert likelihood(0.9) == "90% likely" and likelihood(1.0) == "over 99% likely" and likelihood(0.001) == "under 1% likely"
    assert about(0) == "now" and about(9.4 * H) == "about 9 hours" and about(3600) == "about 60 minutes"


def test_values_in_binary_units_and_never_a_negative_byte_count():
    t = make_ticket(action="open", dedup_key="k", sequence=1, rule=DiskRule(), alerts=[disk_alert()],
                    group_labels={"alertname": "FilesystemWillFill", "host": "db-7"}, ticket_labels={},
                    started_at=T0, now=T0)
    assert t.title == "[Forewarn] /var on db-7 fills in 9h 2m 0s (between 7 and 13 hours, 90% likely)"
    assert "value now 12.1 GiB" in t.body and "value 12.1 GiB" in t.body
    assert "The forecast reaches 0 B, the lowest possible value, before the end of its horizon." in t.body
    assert "-3" not in t.body and "GiB" in t.body and "13G" not in t.body  # no SI gigabytes beside GiB
    assert format_value(940 * 1024**2, "bytes") == "940 MiB" and format_value(0.934, "ratio") == "93.4%"


def test_the_unit_comes_from_the_ticket_block_or_the_one_metric_of_the_expression():
    assert value_unit(DiskRule()) == "bytes"
    assert value_unit(DiskRule(query_text="avg_over_time(app_latency_seconds[5m])")) == "seconds"
    assert value_unit(DiskRule(query_text="node_filesystem_avail_bytes / node_filesystem_size_bytes < 0.05")) == "none"
    assert value_unit(DiskRule(query_text="rate(node_network_receive_bytes_total[5m])")) == "none"
    assert value_unit(DiskRule(query_text="x / y", ticket=TicketPolicy(unit="ratio"))) == "ratio"


def make_manager(tmp_path: Any, probe: Any = None, suppressor: Any = None, **cfg: Any) -> tuple[ProblemManager, MemoryOutbox]:
    ob = MemoryOutbox()
    pm = ProblemManager(TicketingConfig(**cfg), str(tmp_path), SimulatedClock(T0), {"host": "db-7"}, suppressor, ob,
                        probe=probe)
    return pm, ob


def test_updates_follow_the_forecast(tmp_path):
    """After a cleanup the breach moves later (and the note says so); a forecast that recovers
    while keep_firing_for holds the alert is said to no longer predict a breach."""
    pm, ob = make_manager(tmp_path, update_min_interval=Duration(60))
    rule = DiskRule()
    pm.process(rule, [disk_alert(eta=9 * H)], T0)
    (d,) = pm.process(rule, [disk_alert(eta=16 * H, value=20 * GiB)], T0 + 600)
    assert "the predicted breach moved later" in d.ticket.body and "eased" in d.ticket.body
    (d,) = pm.process(rule, [disk_alert(eta=None, value=35 * GiB)], T0 + 1200)
    assert d.ticket.body.startswith("Update: the forecast no longer predicts a breach within its horizon")
    assert "breach in" not in d.ticket.body and "Predicted:" not in d.ticket.body


def test_clear_notes_say_why_with_the_value_now(tmp_path):
    values: dict[str, float | None] = {"v": 37.3 * GiB}

    def probe(rule: Any, alerts: Any, now: float) -> list[float | None]:
        return [values["v"]] * len(alerts)

    pm, ob = make_manager(tmp_path, probe=probe)
    rule = DiskRule()
    pm.process(rule, [disk_alert()], T0)
    (d,) = pm.process(rule, [disk_alert("inactive")], T0 + H)
    body = d.ticket.body
    assert body.startswith("Cleared at ") and ": the forecast no longer predicts a breach within its horizon." in body
    assert "Value now: 37.3 GiB (it was 12.1 GiB while the rule fired)." in body
    assert "stale forecast text" not in body and "breach in" not in body and "Predicted" not in body
    # the series gone from the expression
    values["v"] = None
    pm.process(rule, [disk_alert(host="db-8")], T0 + 2 * H)
    (d,) = pm.process(rule, [disk_alert("inactive", host="db-8")], T0 + 3 * H)
    assert ": the series is gone: it has no recent samples." in d.ticket.body and "Value now" not in d.ticket.body
    # a threshold rule: its condition no longer holds
    threshold = DiskRule(name="QueueBacklog", query_text="app_queue_depth > 100")
    plain = Alert(labels={"alertname": "QueueBacklog", "queue": "orders"}, annotations={}, state=AlertState.FIRING,
                  active_at=T0, value=150.0)
    pm.process(threshold, [plain], T0)
    plain.state = AlertState.INACTIVE
    (d,) = pm.process(threshold, [plain], T0 + 60)
    assert ": the rule's condition no longer holds." in d.ticket.body
    # the rule removed from the rule files
    pm.process(DiskRule(name="Gone"), [disk_alert(host="db-9")], T0 + 4 * H)
    (d,) = [x for x in pm.retire_rules([rule, threshold], T0 + 5 * H) if x.action == "clear"]
    assert ": its rule was removed from the rule files." in d.ticket.body


def test_a_clear_while_a_silence_covers_the_problem_says_so(tmp_path):
    store = SilenceStore(str(tmp_path))
    pm, ob = make_manager(tmp_path, suppressor=Suppressor(store, []))
    rule = DiskRule()
    pm.process(rule, [disk_alert()], T0)
    store.add(parse_matchers('{mountpoint="/var"}'), T0, T0 + 2 * H, "disk swap", "ops", now=T0)
    (d,) = pm.process(rule, [disk_alert("inactive")], T0 + H)
    assert "It is covered by silence" in d.ticket.body and "(disk swap)" in d.ticket.body


def test_the_fan_stops_at_the_physical_bound_and_the_chart_is_drawn():
    fc = BreachInfo(9 * H, 7 * H, 12 * H, 0.9, -3 * GiB)
    fan = forecast_fan(T0, 12 * GiB, fc, 0.0, 36 * H, "bytes")
    assert fan is not None
    crossed = fan.t - T0 > 9 * H + 1
    assert np.all(np.isnan(fan.mean[crossed])) and np.all(np.nanmin(fan.mean) >= 0)
    assert np.all((fan.low <= fan.high) | np.isnan(fan.low) | np.isnan(fan.high))
    assert not np.isnan(fan.high[fan.t - T0 < 11 * H]).any()  # the latest breach's path runs longer
    t = T0 - 6 * H + np.arange(0, 6 * H, 300)
    png = render_chart(t, 15 * GiB - (t - t[0]) * 0.1, forecast_t=fan.t, forecast_mean=fan.mean, forecast_low=fan.low,
                       forecast_high=fan.high, threshold=0.0, title="FilesystemWillFill: /var on db-7", now=T0,
                       unit="bytes")
    assert png is not None and png.startswith(b"\x89PNG") and len(png) > 10_000
    assert forecast_fan(T0, 12 * GiB, BreachInfo(math.inf, math.inf, math.inf, 0.0, math.nan), 0.0, H, "bytes") is None


class FakeHost:
    """The host collector's output: one filesystem whose free space falls 1 GiB an hour."""

    def __init__(self, clock: SimulatedClock) -> None:
        self.clock = clock

    def collect(self, now: float) -> list:
        free = 40 * GiB - (now - T0) / H * GiB
        labels = {"mountpoint": "/var", "device": "sda1", "fstype": "ext4"}
        return [(make_labels("node_filesystem_avail_bytes", labels), free)]


def test_the_shipped_rules_name_the_host_of_local_series(tmp_path):
    """Series collected on this machine carry `host` (the configured external `host`, else the
    hostname), so the shipped rules' titles say "/var on db-test", never "/var on  ..."."""
    cfg_path = tmp_path / "f.yml"
    cfg_path.write_text(textwrap.dedent(f"""\
        global: {{state_dir: {tmp_path / 'state'}, external_labels: {{host: db-test}}}}
        rule_files: ['{REPO}/config/rules/host.yml']
        """))
    cfg = load_config(str(cfg_path))
    clock = SimulatedClock(T0)
    store = Store(raw_capacity=2000)
    p = Pipeline(cfg, store, clock)
    p.system = FakeHost(clock)
    p.start()
    try:
        opened = []
        for _ in range(20 * 60):  # the calibrated forecast is 90 % sure about 24 h ahead: ~16 h in
            clock.advance(60)
            p._collect_system()
            opened = [d for d in p.evaluate(clock.now()) if d.action == "open"]
            if opened:
                break
        (d,) = opened
        assert d.ticket.title.startswith("[Forewarn] /var on db-test fills in "), d.ticket.title
        assert d.ticket.title.endswith("likely)")  # the interval and probability in words
        assert "value now 32.9 GiB" in d.ticket.body or "GiB" in d.ticket.body.split("\n")[0], d.ticket.body
        assert "At its recent trend it reaches zero in" in d.ticket.body
        series = dict(next(iter(store.iter_series()))[1])
        assert series["host"] == "db-test"
    finally:
        p.stop()
