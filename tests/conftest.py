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


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory):
    """A TLS server context for 127.0.0.1 with a self-signed certificate, and the certificate's
    path (a private CA a client must be told to trust)."""
    import ssl
    import subprocess

    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx, str(cert)
