from __future__ import annotations

import pytest

from tests.helpers import AgentProcess


@pytest.fixture
def agent_factory(tmp_path):
    """Start real `forewarn run` processes; all are stopped at the end of the test."""
    started: list[AgentProcess] = []

    def make(config_body: str = "", env: dict[str, str] | None = None, start: bool = True,
             subdir: str = "agent") -> AgentProcess:
        d = tmp_path / f"{subdir}{len(started)}"
        d.mkdir()
        a = AgentProcess(str(d), config_body, env)
        started.append(a)
        if start:
            a.start()
        return a

    yield make
    for a in started:
        if a.proc is not None:
            a.kill()


@pytest.fixture(scope="session")
def rt_server(tmp_path_factory):
    """A throw-away Request Tracker 5 on 127.0.0.1 (SQLite, DedupKey custom field, auth token),
    shared by every test of the session that needs one (sinks, trends)."""
    from tests.rt_server import RTServer

    server = RTServer(str(tmp_path_factory.mktemp("rt"))).setup()
    try:
        yield server
    finally:
        server.stop()
