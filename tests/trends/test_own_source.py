"""--source forewarn: the agent's local tickets (and problems without one) as incidents."""

from __future__ import annotations

import json
import time

from agent.cli import main
from agent.tickets.sinks.local import LocalSink
from tests.sinks.fakehttp import make_ticket


def test_local_tickets_are_incidents_and_trend_records_are_not(tmp_path, capsys):
    state = tmp_path / "state"
    sink = LocalSink("local", LocalSink.Config(), state_dir=str(state))
    now = time.time()
    refs = []
    for k in range(4):
        t = make_ticket("open", f"key{k}", title=f"/var on db-{k} will be full in ~{k + 2}h",
                        labels={"service": "orders-db", "host": f"db-{k}"}, starts_at=now - (k + 1) * 86400)
        refs.append(sink.open(t))
    sink.clear(refs[0], make_ticket("clear", "key0", resolve=True))
    sink.open(make_ticket("open", "trend-x", title="Recurring incidents: x", rule="forewarn-trends"))
    cfg = tmp_path / "forewarn.yml"
    cfg.write_text(f"global: {{state_dir: {state}}}\n")
    code = main(["trends", "--source", "forewarn", "--config", str(cfg), "--json", "--since", "30d"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    (c,) = doc["clusters"]
    assert c["service"] == "orders-db" and sorted(c["incidents"]) == [f"local-{r}" for r in refs]
    assert c["count"] == 4 and doc["candidates"] == [c["id"]]
