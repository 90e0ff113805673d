"""`GET /api/v1/ha/deliveries`: what this agent's outbox delivered, for the other agents of its
HA pair (`agent.tickets.ha`). Read-only, like Alertmanager's notification log that its peers
gossip: per dedup key of one sink, the ticket reference, whether it is cleared, and the
latest delivered open, update and clear (sequence, enqueued and delivered times).

Parameters: `sink` and `dedup_key` (one key, or several separated by commas; at most
`MAX_KEYS`). The outbox file is opened read-only at each request, so the route works on
whichever outbox the running ticketing has and never blocks delivery. Like the rest of web,
it decides nothing and imports no pipeline or daemon.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import Any

from agent.persistence import connect
from agent.tickets.outbox import OUTBOX_FILE, read_delivery_log
from agent.web.server import Endpoint, Request

MAX_KEYS = 500


def deliveries(state_dir: str, req: Request) -> tuple[int, Any]:
    sink = req.get("sink")
    keys = [k for k in req.get("dedup_key").split(",") if k]
    if not sink or not keys:
        return 400, {"status": "error", "errorType": "bad_data", "error": "sink and dedup_key are required"}
    if len(keys) > MAX_KEYS:
        return 400, {"status": "error", "errorType": "bad_data", "error": f"at most {MAX_KEYS} dedup keys"}
    path = os.path.join(state_dir, OUTBOX_FILE)
    found: dict[str, Any] = {}
    if os.path.exists(path):
        conn = connect(path, readonly=True)
        try:
            found = {k: r.to_json() for k, r in read_delivery_log(conn, sink, keys).items()}
        except sqlite3.Error as e:
            return 503, {"status": "error", "errorType": "unavailable", "error": f"outbox: {e}"}
        finally:
            conn.close()
    return 200, {"status": "success", "data": {"deliveries": [{"sink": sink, "dedup_key": k, **v}
                                                              for k, v in sorted(found.items())]}}


def routes(state_dir: Callable[[], str]) -> dict[str, Endpoint]:
    return {"/api/v1/ha/deliveries": Endpoint(lambda req: deliveries(state_dir(), req), frozenset({"GET"}))}
