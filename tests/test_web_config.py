"""`--web.config.file` in the exporter toolkit's format: TLS with a certificate from openssl
and basic auth with a bcrypt hash; health stays open for the service manager; bad files stop
the start with a message naming the file."""

from __future__ import annotations

import subprocess

import bcrypt
import pytest
import requests

from tests.helpers import wait_for


@pytest.fixture
def tls_files(tmp_path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_and_basic_auth(agent_factory, tmp_path, tls_files):
    cert, key = tls_files
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\nbasic_auth_users:\n  grafana: '{hashed}'\n")
    agent = agent_factory("system:\n  collectors: [load]\n", start=False)
    agent.start(wait_ready=False, extra_args=("--web.config.file", str(web)))
    base = f"https://127.0.0.1:{agent.port}"
    wait_for(lambda: requests.get(base + "/-/ready", verify=str(cert), timeout=2).status_code == 200, timeout=60,
             what=f"agent ready over TLS ({agent.log()[-1000:]})")
    r = requests.get(base + "/api/v1/query", params={"query": "1"}, verify=str(cert), timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    r = requests.get(base + "/metrics", auth=("grafana", "wrong"), verify=str(cert), timeout=10)
    assert r.status_code == 401
    r = requests.get(base + "/api/v1/query", params={"query": "1"}, auth=("grafana", "s3cret"), verify=str(cert), timeout=10)
    assert r.status_code == 200 and r.json()["data"]["result"][1] == "1"
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{agent.port}/-/healthy", timeout=5)


@pytest.mark.parametrize("body,fragment", [
    ("http_server_config: {http2: false}\n", "unsupported keys"),
    ("tls_server_config: {cert_file: /nonexistent.crt}\n", "both cert_file and key_file"),
    ("basic_auth_users: {a: plain}\n", "bcrypt hash"),
    ("tls_server_config: {cert_file: /nonexistent.crt, key_file: /nonexistent.key}\n", "No such file"),
])
def test_bad_web_config_stops_the_start(agent_factory, tmp_path, body, fragment):
    web = tmp_path / "web.yml"
    web.write_text(body)
    agent = agent_factory("system:\n  collectors: [load]\n", start=False)
    agent.start(wait_ready=False, extra_args=("--web.config.file", str(web)))
    assert agent.proc.wait(timeout=60) == 1
    assert fragment in agent.log() and "cannot start" in agent.log()
