"""Real servers shared by the sink tests of one session (started once, stopped at the end)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def alertmanager_server(tmp_path_factory):
    """The real prometheus-alertmanager on 127.0.0.1, cluster disabled; its notifications
    (webhook, send_resolved) are recorded by `server.notifications` (a FakeServer)."""
    from tests.alertmanager_server import AlertmanagerServer
    from tests.sinks.fakehttp import FakeServer, answer

    class Notifications(FakeServer):
        routes = [("POST", r"/notify", "notify")]

        def notify(self, req, *_):
            return answer(200)

    with Notifications() as notifications:
        server = AlertmanagerServer(str(tmp_path_factory.mktemp("alertmanager")),
                                    webhook_url=notifications.url + "/notify").start()
        server.notifications = notifications
        try:
            yield server
        finally:
            server.stop()
