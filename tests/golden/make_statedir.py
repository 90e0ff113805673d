"""Regenerate tests/golden/statedir_v1/ and statedir_v1.expected.json with the code as it is.

    python tests/golden/make_statedir.py

Runs the golden scenario (tests/test_golden.py) in a daemon `Agent` on a simulated clock up
to minute STATEDIR_MINUTE, with the webhook sink's receiver refusing everything (so the
ExporterDown open becomes a dead letter) and the last minute's ticket actions left
undelivered (pending), adds a silence, then writes the state directory as the daemon does on
SIGTERM (store snapshot, rule state) and copies it here. What the agent held just before it
stopped is written to statedir_v1.expected.json; test_statedir_v1_is_read_back checks that an
agent started on a copy of the directory holds the same.

Only regenerate when the on-disk format changes on purpose: the point of statedir_v1 is that
it was written by the code of its time and must stay readable by later code.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from tests.test_golden import (  # noqa: E402
    CHART_STAND_IN,
    STATEDIR,
    STATEDIR_EXPECTED,
    STATEDIR_MINUTE,
    STATEDIR_SILENCE,
    T0,
    AcceptAll,
    Recorder,
    Refuse,
    add_silence,
    as_json,
    build_agent,
    minute,
    prepare_scenario,
    run_scenario,
    simulated_clock,
    start_agent,
    stop_agent,
    summarise_state,
)


def make_statedir() -> None:
    work = tempfile.mkdtemp(prefix="forewarn-statedir-")
    try:
        with Recorder(AcceptAll()) as am, Recorder(Refuse()) as hook:
            agent = build_agent(prepare_scenario(work, am.url, hook.url + "/hook"), simulated_clock(T0))
            # The opens' charts are matplotlib drawings of ~30 kB each; a tiny PNG keeps the
            # outbox small while its tickets still carry a chart.
            agent.pipeline.chart = lambda rule, alerts, now: CHART_STAND_IN
            start_agent(agent)
            run_scenario(agent, until=STATEDIR_MINUTE + 1, deliver_last=False)
            matchers, comment, author = STATEDIR_SILENCE
            add_silence(agent.cfg.state_dir, matchers, minute(STATEDIR_MINUTE), minute(STATEDIR_MINUTE) + 7 * 86400,
                        comment, author)
            expected = summarise_state(agent, am)
            sinks = dict(agent.pipeline.ticketing.sinks)
            stop_agent(agent)
            # `Ticketing.close` leaves the local sink's connection open (the daemon's process
            # exit closes it); close it so tickets.db is checkpointed and has no -wal/-shm file.
            if getattr(sinks["local"], "_conn", None) is not None:
                sinks["local"]._conn.close()
        state = agent.cfg.state_dir
        leftovers = [n for n in os.listdir(state) if n.endswith(("-wal", "-shm", ".tmp"))]
        assert not leftovers, f"files still open: {leftovers}"
        shutil.rmtree(STATEDIR, ignore_errors=True)
        shutil.copytree(state, STATEDIR)
        with open(STATEDIR_EXPECTED, "w", encoding="utf-8") as f:
            f.write(as_json(expected))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name in sorted(os.listdir(STATEDIR)):
        print(f"{os.path.getsize(os.path.join(STATEDIR, name)):8d}  statedir_v1/{name}")
    print(json.dumps({k: len(v) if isinstance(v, list) else v for k, v in expected.items()
                      if k in ("series", "problems", "local_tickets", "silences", "dead_letters")}))


if __name__ == "__main__":
    make_statedir()
