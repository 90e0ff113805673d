"""HA pairs against the SaaS fakes: two agents' outboxes with the same actions, each serving
its delivery log over HTTP (the daemon's `GET /api/v1/ha/deliveries`) and asking the other
(`agent.tickets.ha.HttpPeers`). One ticket per problem in every tool, through:

1. both agents up: the first (position 0) sends, the second waits peer_timeout, asks, and
   records the first's ticket;
2. the first agent dies inside the create window (its create reached the tool, the answer
   did not): the second hears nothing from it, so it looks the ticket up in the tool for the
   sink's lookup lag before creating (Jira's fake search lags 40 s here);
3. the first agent comes back: its pending open finds the second's delivery and sends nothing;
4. the problems clear: one clear each.

The real daemons against the real RT are in tests/sinks/test_request_tracker.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from agent.clock import SimulatedClock
from agent.config.schema import HAConfig
from agent.metrics import Registry
from agent.tickets.ha import HttpPeers
from agent.tickets.outbox import Outbox
from agent.tickets.sinks.jira import JiraSink
from agent.tickets.sinks.opsgenie import OpsgenieSink
from agent.tickets.sinks.pagerduty import PagerDutySink
from agent.tickets.sinks.servicenow import ServiceNowSink
from agent.tickets.sinks.webhook import WebhookSink
from agent.web import ha_api
from agent.web.server import ReloadOutcome, WebHooks, WebServer
from tests.helpers import free_port
from tests.sinks.fake_jira import FakeJira, adf_text
from tests.sinks.fake_opsgenie import FakeOpsgenie
from tests.sinks.fake_pagerduty import FakePagerDuty
from tests.sinks.fake_servicenow import FakeServiceNow
from tests.sinks.fake_webhook import FakeWebhook
from tests.sinks.fakehttp import LOST_ANSWER, FakeServer, make_ticket, write_credentials

T0 = 1_700_000_000.0
PEER_TIMEOUT = 15.0


@dataclass
class Tool:
    """One SaaS fake, how to point a sink at it, and how to read its tickets back."""

    name: str
    fake: Callable[[], FakeServer]
    sink: Callable[[FakeServer, Any], Any]
    create_path_re: str
    tickets: Callable[[FakeServer, str], list[str]]  # the texts of each ticket of a key (one entry per ticket)
    # False where the tool cannot be asked (PagerDuty's Events API): a silent peer's trigger
    # may then be repeated, which PagerDuty folds into the same alert's log
    text_once: bool = True


def _sn_tickets(f: Any, key: str) -> list[str]:
    return [r["description"] + "".join(f.work_notes[r["sys_id"]]) for r in f.records() if r["correlation_id"] == key]


def _jira_tickets(f: Any, key: str) -> list[str]:
    return [adf_text(i["fields"]["description"]) + "".join(c["text"] for c in f.comments[k])
            for k, i in f.issues.items() if f"forewarn-{key}" in i["fields"]["labels"]]


def _og_tickets(f: Any, key: str) -> list[str]:
    f.process()
    return [a["description"] + "".join(a["notes"]) for a in f.alerts if a["alias"] == key]


def _pd_tickets(f: Any, key: str) -> list[str]:
    return ["".join(e["payload"]["custom_details"]["details"] for e in a["events"] if e["event_action"] == "trigger")
            for a in f.alerts if a["dedup_key"] == key]


def _hook_tickets(f: Any, key: str) -> list[str]:
    events = f.events.get(key, [])
    return ["".join(e["body"] for e in events)] if events else []


def _cred(state_dir: str, text: str) -> str:
    return write_credentials(pathlib.Path(state_dir), text)


TOOLS = [
    Tool("servicenow", lambda: FakeServiceNow(user="svc", password="pw"),
         lambda f, tmp: ServiceNowSink("itsm", ServiceNowSink.Config(url=f.url, credentials_file=_cred(tmp, "svc:pw"),
                                                                     fields={"assigned_to": "alice"}), state_dir=str(tmp)),
         r"/api/now/table/problem$", _sn_tickets),
    Tool("jira", lambda: FakeJira(email="bot@example.com", api_token="tok"),
         lambda f, tmp: JiraSink("itsm", JiraSink.Config(url=f.url, credentials_file=_cred(tmp, "bot@example.com:tok"),
                                                         project="OPS", search_lag=60), state_dir=str(tmp)),
         r"/rest/api/3/issue$", _jira_tickets),
    Tool("opsgenie", lambda: FakeOpsgenie("genie-key"),
         lambda f, tmp: OpsgenieSink("itsm", OpsgenieSink.Config(url=f.url, credentials_file=_cred(tmp, "genie-key")),
                                     state_dir=str(tmp)),
         r"/v2/alerts$", _og_tickets),
    Tool("pagerduty", lambda: FakePagerDuty(),
         lambda f, tmp: PagerDutySink("itsm", PagerDutySink.Config(url=f.url, credentials_file=_cred(
             tmp, "R0123456789abcdef0123456789abcde")), state_dir=str(tmp)),
         r"/v2/enqueue$", _pd_tickets, text_once=False),
    Tool("webhook", lambda: FakeWebhook(),
         lambda f, tmp: WebhookSink("itsm", WebhookSink.Config(url=f.url + "/hook"), state_dir=str(tmp)),
         r"/hook$", _hook_tickets),
]


class Agent:
    """One agent of the pair: an outbox in its own state dir and its web server's HA route."""

    def __init__(self, tool: Tool, fake: FakeServer, state_dir: str, clock: SimulatedClock, ports: list[int],
                 position: int) -> None:
        self.tool, self.fake, self.state_dir, self.clock = tool, fake, state_dir, clock
        self.ports, self.position = ports, position
        os.makedirs(state_dir, exist_ok=True)
        self.outbox: Outbox | None = None
        self.web: WebServer | None = None

    def start(self) -> Agent:
        peers = HttpPeers(HAConfig(peers=[f"http://127.0.0.1:{p}" for p in self.ports], position=self.position,
                                   peer_timeout=PEER_TIMEOUT), self.clock)
        self.outbox = Outbox(os.path.join(self.state_dir, "outbox.db"),
                             {"itsm": self.tool.sink(self.fake, self.state_dir)}, self.clock, rng=random.Random(1),
                             peers=peers)
        self.web = WebServer(("127.0.0.1", self.ports[self.position]), Registry(), WebHooks(
            reload=lambda: ReloadOutcome(True, ""), ready=lambda: True,
            api=ha_api.routes(lambda: self.state_dir)))
        self.web.start()
        return self

    def kill(self) -> None:
        assert self.outbox is not None and self.web is not None
        self.web.stop()
        self.outbox.close()
        self.outbox = self.web = None

    def enqueue(self, action: str, key: str, seq: int, **kw: Any) -> None:
        assert self.outbox is not None
        self.outbox.enqueue("itsm", make_ticket(action, key, sequence=seq, body=f"{action} {key} #{seq}", **kw))

    def deliver(self) -> None:
        if self.outbox is not None:
            self.outbox.deliver_due()

    def outcomes(self) -> list[tuple[str, str, str]]:
        assert self.outbox is not None
        return sorted((r["dedup_key"], r["action"], r["outcome"]) for r in self.outbox.rows(("delivered",), 1000))


@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t.name)
def test_an_ha_pair_makes_one_ticket_per_problem_through_a_crash_of_the_first(tool, tmp_path):
    clock = SimulatedClock(T0)
    ports = [free_port(), free_port()]
    with tool.fake() as fake:
        if isinstance(fake, FakeJira):
            fake.clock, fake.search_lag_seconds = clock.now, 40.0
        first = Agent(tool, fake, str(tmp_path / "first"), clock, ports, 0).start()
        second = Agent(tool, fake, str(tmp_path / "second"), clock, ports, 1).start()
        pair = (first, second)
        try:
            def run(seconds: float) -> None:
                for _ in range(int(seconds // 5)):
                    for a in pair:
                        a.deliver()
                    clock.advance(5)

            # 1. both up
            for a in pair:
                a.enqueue("open", "p1", 1)
            run(30)
            # 2. the first dies inside the create window of p2
            for a in pair:
                a.enqueue("open", "p2", 1)
            fake.inject(LOST_ANSWER, method="POST", path_re=tool.create_path_re)
            first.deliver()
            first.kill()
            run(120)
            # 3. it comes back
            first.start()
            run(60)
            # 4. everything clears
            for a in pair:
                for key in ("p1", "p2"):
                    a.enqueue("clear", key, 2, resolve=True)
            run(60)
            for key in ("p1", "p2"):
                tickets = tool.tickets(fake, key)
                assert len(tickets) == 1, (key, tickets)
                said = tickets[0].count(f"open {key} #1")
                assert said == 1 or not tool.text_once and said == 2, (key, tickets, first.outcomes(), second.outcomes())
            assert ("p1", "open", "peer") in second.outcomes() and ("p2", "open", "peer") in first.outcomes()
            assert sum(o == ("p1", "clear", "peer") for o in second.outcomes()) == 1
            for a in pair:
                assert a.outbox is not None and a.outbox.pending_count() == 0 and a.outbox.dead_letters() == []
        finally:
            for a in pair:
                if a.outbox is not None:
                    a.kill()


def test_the_deliveries_route_answers_what_the_outbox_delivered(tmp_path):
    clock = SimulatedClock(T0)
    with FakeWebhook() as fake:
        tool = next(t for t in TOOLS if t.name == "webhook")
        agent = Agent(tool, fake, str(tmp_path / "a"), clock, [free_port(), free_port()], 0).start()
        try:
            agent.enqueue("open", "k", 1)
            agent.deliver()
            route = ha_api.routes(lambda: agent.state_dir)["/api/v1/ha/deliveries"]
            status, body = route({"sink": "itsm", "dedup_key": "k,other"})
            assert status == 200
            (d,) = body["data"]["deliveries"]
            assert (d["dedup_key"], d["ref"], d["cleared"], d["last"]["open"]["sequence"]) == ("k", "k", False, 1)
            assert json.loads(json.dumps(body)) == body
            assert ha_api.routes(lambda: agent.state_dir)["/api/v1/ha/deliveries"]({"sink": "itsm"})[0] == 400
        finally:
            agent.kill()
