"""What an operator reads and graphs around a reload: the log line says what changed, the
ticket counters carry on (a reset would read as a counter reset in rate()), and each snapshot
is logged."""

from __future__ import annotations

import textwrap

import requests

from tests.helpers import wait_for

RULE = """\
      - alert: {name}
        expr: node_load1 >= 0
"""


def rules(*names: str) -> str:
    return "groups:\n  - name: g\n    interval: 1s\n    rules:\n" + "".join(RULE.format(name=n) for n in names)


def actions(agent) -> float:
    return sum(v for lab, v in agent.metrics().get("forewarn_ticket_actions_total", []) if lab["outcome"] == "delivered")


def test_reload_says_what_changed_and_keeps_counters(agent_factory, tmp_path):
    path = tmp_path / "rules.yml"
    path.write_text(rules("Busy"))
    agent = agent_factory(textwrap.dedent(f"""\
        system: {{collectors: [load]}}
        rule_files: ["{path}"]
        """), start=False)
    with open(agent.config_path, encoding="utf-8") as f:
        text = f.read().replace("global:\n", "global:\n  snapshot_interval: 1s\n", 1)
    with open(agent.config_path, "w", encoding="utf-8") as f:
        f.write(text)
    agent.start(extra_args=("--web.enable-lifecycle",))
    wait_for(lambda: actions(agent) >= 1, timeout=30, what="a ticket delivered")
    before = actions(agent)
    path.write_text(rules("Busy", "Busier"))
    r = requests.post(agent.url + "/-/reload", timeout=30)
    assert r.status_code == 200, r.text
    line = [x for x in agent.log().splitlines() if "configuration reloaded" in x][-1]
    assert "rules 1 -> 2 (+g/Busier)" in line, line
    assert actions(agent) >= before, "forewarn_ticket_actions_total went down on reload"
    wait_for(lambda: actions(agent) >= before + 1, timeout=30, what="the new rule's ticket counted on top")
    requests.post(agent.url + "/-/reload", timeout=30)
    line = [x for x in agent.log().splitlines() if "configuration reloaded" in x][-1]
    assert "no rule, target, query source or sink changed" in line, line
    wait_for(lambda: "snapshot of " in agent.log(), timeout=30, what="a snapshot log line")
    snap = [x for x in agent.log().splitlines() if "snapshot of " in x][-1]
    assert "series written to" in snap and "store.snapshot" in snap
