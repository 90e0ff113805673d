"""Charts for tickets: drawn from the store when a problem opens, carried through the outbox."""

from __future__ import annotations

from agent.store import make_labels
from agent.tickets.sinks.base import Ticket
from tests.helpers import disk_low_pipeline


def test_ticket_json_round_trip_keeps_the_chart():
    t = Ticket(dedup_key="k", action="open", sequence=1, title="t", body="b", rule="R", chart_png=b"\x89PNG\r\nxyz")
    back = Ticket.from_json(t.to_json())
    assert back.chart_png == b"\x89PNG\r\nxyz" and back == t
    assert "chart_png" not in t.to_json()  # bytes never go into JSON as such


def test_opening_ticket_gets_a_png_of_its_series(tmp_path):
    p, store, clock = disk_low_pipeline(tmp_path, 1_700_000_000)
    p.start()
    try:
        for i in range(400):
            clock.advance(60)
            store.append_samples([(make_labels("disk_free_bytes", {"mount": "/var"}), 500 - i * 1.5),
                                  (make_labels("disk_free_bytes", {"mount": "/srv"}), 1000.0)], clock.now())
            decisions = p.evaluate(clock.now())
            opened = [d for d in decisions if d.action == "open"]
            if opened:
                break
        assert len(opened) == 1
        png = opened[0].ticket.chart_png
        assert png is not None and png.startswith(b"\x89PNG")
        # The outbox keeps it until delivery: the sink receives the same picture.
        received = []

        class Recorder:
            def find(self, key):
                return None

            def open(self, ticket):
                received.append(ticket)
                return "REF-1"

        p.ticketing.outbox.sinks["local"] = Recorder()
        p.ticketing.outbox.deliver_due(clock.now())
        assert [t.chart_png for t in received] == [png]
    finally:
        p.stop()
