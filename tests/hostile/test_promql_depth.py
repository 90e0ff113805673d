"""A PromQL expression nested 10,000 deep (or chaining 5,000 operators) once killed the native
parser with a segfault: in a rule file it must be a located `forewarn check` error and a
rejected reload, never a traceback or a crash."""

from __future__ import annotations

import subprocess
import sys

import requests

from agent.promql import MAX_NESTING, PromQLError, parse
from tests.helpers import REPO

DEEP = "(" * 10000 + "up" + ")" * 10000
CHAIN = " + ".join(["up"] * 5000)


def rule_file(expr: str) -> str:
    return f"groups:\n  - name: deep\n    rules:\n      - alert: Deep\n        expr: {expr}\n"


def test_parser_limits_follow_the_text():
    for text in (DEEP, CHAIN, "-" * 50000 + "1", "x" + " or x" * (MAX_NESTING + 1)):
        try:
            parse(text)
        except PromQLError as e:
            assert "nests deeper" in str(e) or "operators" in str(e)
        else:
            raise AssertionError(f"accepted {text[:40]}...")
    parse("(" * (MAX_NESTING - 1) + "x" + ")" * (MAX_NESTING - 1))  # within the limit: fine
    parse('x{a="' + "(" * 5000 + '"}')  # brackets in strings do not count


def test_check_reports_it_located(tmp_path):
    for name, expr in (("deep", DEEP), ("chain", CHAIN)):
        path = tmp_path / f"{name}.yml"
        path.write_text(rule_file(expr))
        p = subprocess.run([sys.executable, "-m", "agent", "check", str(path)], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 1, p.stderr
        assert "Traceback" not in p.stderr and "RecursionError" not in p.stderr
        first = p.stderr.splitlines()[0]
        assert first.startswith(f"{path}:5:") and 'rule "Deep": expr:' in first, first


def test_reload_rejects_it_and_the_agent_lives(agent_factory, tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(rule_file("up"))
    agent = agent_factory(f"system:\n  collectors: [load]\nrule_files: ['{rules}']\n", start=False)
    agent.start(extra_args=("--web.enable-lifecycle",))
    rules.write_text(rule_file(DEEP))
    r = requests.post(agent.url + "/-/reload", timeout=30)
    assert r.status_code == 500 and "nests deeper" in r.text
    assert agent.get("/-/healthy").status_code == 200
    assert agent.get("/api/v1/rules").json()["data"]["groups"][0]["rules"][0]["query"] == "up"
