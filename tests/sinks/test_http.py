"""The shared HTTP layer of the sinks: TLS with a private CA, proxies from the environment,
bounded answers, timeouts on every call, and secrets that stay secret."""

from __future__ import annotations

import pickle

import pytest
import requests

from agent.tickets.sinks import http as sinkhttp
from agent.tickets.sinks.base import DeliveryError
from agent.tickets.sinks.http import HttpClient, Secret, read_credentials
from agent.tickets.sinks.pagerduty import PagerDutySink
from tests.sinks.fake_pagerduty import FakePagerDuty
from tests.sinks.fakehttp import FakeServer, Recorded, answer, make_ticket, write_credentials

ROUTING_KEY = "R0123456789abcdef0123456789abcde"


def test_tls_is_verified_and_ca_file_adds_a_private_ca(self_signed, tmp_path):
    ctx, cert = self_signed
    fake = FakePagerDuty(ROUTING_KEY)
    fake.tls = ctx
    with fake:
        cred = write_credentials(tmp_path, ROUTING_KEY)
        untrusting = PagerDutySink("pd", PagerDutySink.Config(url=fake.url, credentials_file=cred), state_dir=str(tmp_path))
        with pytest.raises(DeliveryError) as e:
            untrusting.open(make_ticket())
        assert e.value.retryable and "SSLError" in e.value.reason
        assert fake.alerts == []
        trusting = PagerDutySink("pd", PagerDutySink.Config(url=fake.url, credentials_file=cred, ca_file=cert),
                                 state_dir=str(tmp_path))
        trusting.open(make_ticket())
        assert len(fake.alerts) == 1 and fake.url.startswith("https://")


class Proxy(FakeServer):
    """A forward proxy that answers itself: records what it was asked to fetch."""

    def _route(self, req: Recorded):
        return answer(202, {"status": "success", "dedup_key": "via-proxy"})


def test_proxy_comes_from_the_environment(monkeypatch, tmp_path):
    for var in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    with Proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        cfg = PagerDutySink.Config(url="http://events.pagerduty.test", credentials_file=write_credentials(tmp_path, ROUTING_KEY))
        sink = PagerDutySink("pd", cfg, state_dir=str(tmp_path))
        assert sink.open(make_ticket()) == "via-proxy"
        (req,) = proxy.requests
        assert req.headers["host"] == "events.pagerduty.test" and req.path == "/v2/enqueue"


def test_every_call_has_a_timeout_verification_and_no_redirects():
    seen = []

    class Spy(requests.Session):
        def request(self, method, url, **kw):
            seen.append(kw)
            raise requests.ConnectionError("no network in this test")

    client = HttpClient("https://itsm.example", timeout=7, ca_file="/etc/ca.pem", session=Spy())
    with pytest.raises(DeliveryError):
        client.request("GET", "/x", "look-up")
    assert seen[0]["timeout"] == 7.0 and seen[0]["verify"] == "/etc/ca.pem" and seen[0]["allow_redirects"] is False
    assert HttpClient("https://itsm.example", timeout=1, session=Spy())._verify is True


def test_oversized_answer_is_refused(monkeypatch):
    monkeypatch.setattr(sinkhttp, "MAX_RESPONSE_BYTES", 1000)
    with FakeServer() as big:
        big.inject(200, body=b"x" * 5000)
        client = HttpClient(big.url, timeout=5)
        with pytest.raises(DeliveryError) as e:
            client.request("GET", "/", "big answer")
        assert not e.value.retryable and "larger than 1000 bytes" in e.value.reason


def test_secret_hides_its_value(tmp_path):
    s = read_credentials(write_credentials(tmp_path, "user:hunter2-password"))
    assert s.reveal() == "user:hunter2-password"
    assert "hunter2" not in repr(s) + str(s) + f"{s}" + repr([s])
    with pytest.raises(TypeError):
        pickle.dumps(s)
    assert "hunter2-password" in s.fragments()


def test_credentials_file_errors_name_the_path_only(tmp_path):
    with pytest.raises(ValueError, match="cannot read credentials_file .*missing"):
        read_credentials(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_credentials(str(empty))


def test_redact_covers_raw_password_and_basic_forms():
    client = HttpClient("https://x", timeout=1, secrets=[Secret("me@example.com:tok-ABCDEF")])
    import base64

    b64 = base64.b64encode(b"me@example.com:tok-ABCDEF").decode()
    out = client.redact(f"echo: Basic {b64} tok-ABCDEF me@example.com:tok-ABCDEF")
    assert "tok-ABCDEF" not in out and b64 not in out


def test_secret_straddling_the_snippet_cut_leaves_no_prefix():
    """The answer is redacted whole before it is cut to a snippet."""
    from types import SimpleNamespace

    from agent.tickets.sinks.base import DeliveryError, check_response

    secret = "s3cr3t-token-0123456789"
    text = "x" * 290 + secret + " echoed back"
    resp = SimpleNamespace(status_code=401, text=text, headers={})
    try:
        check_response(resp, "open", redact=lambda t: t.replace(secret, "<redacted>"))
    except DeliveryError as e:
        assert "s3cr3t" not in e.reason and not e.retryable
    else:
        raise AssertionError("401 must raise")
