"""Ticketing from the config: the sinks, the outbox, the suppression stage and the problem
manager, built together by `build_ticketing` and closed together by `Ticketing.close`; and
the remediation runner (`build_remediation`), which outlives a reload (a run in progress
goes on) and is handed to each new problem manager.

Like the rest of tickets, this module never imports rules, models, PromQL, sources or web.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.clock import Clock
from agent.config.schema import Config, read_secret_file
from agent.tickets.ha import HttpPeers
from agent.tickets.manager import ChartFn, ExpandFn, ProblemManager, SeriesProbe
from agent.tickets.outbox import OUTBOX_FILE, Outbox
from agent.tickets.remediation import REMEDIATION_TYPES
from agent.tickets.remediation.base import Kind
from agent.tickets.remediation.runner import RemediationRunner, RemediationSettings
from agent.tickets.sinks import SINK_TYPES
from agent.tickets.sinks.base import Sink
from agent.tickets.sinks.http import HttpSinkConfig
from agent.tickets.sinks.local import LocalSink
from agent.tickets.suppress import Suppressor

if TYPE_CHECKING:
    import requests


@dataclass
class Ticketing:
    """Everything between rules and ITSM tools, built from the config by `build_ticketing`."""

    sinks: dict[str, Sink]
    outbox: Outbox
    suppressor: Suppressor
    problems: ProblemManager

    def close(self) -> None:
        self.problems.close()
        self.outbox.close()


def resolved_settings(cfg: Config, settings: object) -> object:
    """A sink's settings with file paths made relative to the config file, as `check` reads them."""
    if not isinstance(settings, HttpSinkConfig):
        return settings
    if not settings.credentials_file and not settings.ca_file:
        return settings
    return dataclasses.replace(
        settings,
        credentials_file=cfg.resolve_path(settings.credentials_file) if settings.credentials_file else "",
        ca_file=cfg.resolve_path(settings.ca_file) if settings.ca_file else "",
    )


def build_sink(cfg: Config, name: str, *, session: requests.Session | None = None) -> Sink:
    """The configured sink `name` (`local` exists without being listed). Raises KeyError for a
    sink the config does not have, ValueError when its credentials cannot be read."""
    entry = next((e for e in cfg.ticketing.sinks if e.name == name), None)
    if entry is None:
        if name != "local":
            raise KeyError(name)
        return LocalSink("local", LocalSink.Config(), state_dir=cfg.state_dir)
    return SINK_TYPES[entry.type](name, resolved_settings(cfg, entry.settings), state_dir=cfg.state_dir,
                                  session=session)


def remediation_kinds(cfg: Config) -> tuple[RemediationSettings, dict[str, Kind]]:
    """The config's remediations, built (their secrets read from files, relative to the
    config). Raises OSError or ValueError when a file cannot be read."""
    kinds: dict[str, Kind] = {}
    for d in cfg.remediation.definitions:
        settings = d.settings
        moved = {f.name: cfg.resolve_path(getattr(settings, f.name)) for f in dataclasses.fields(settings)
                 if f.name in ("credentials_file", "ca_file") and getattr(settings, f.name)}
        if moved:
            settings = dataclasses.replace(settings, **moved)
        kinds[d.name] = REMEDIATION_TYPES[d.type](d.name, settings,
                                                   read_file=lambda p: read_secret_file(cfg.resolve_path(p)))
    r = cfg.remediation
    return RemediationSettings(r.enabled, r.dry_run, r.max_concurrent, {n: k.config for n, k in kinds.items()}), kinds


HA_NOT_EXECUTED = "run by the HA pair's first agent, not by this one (position {position}); its result is not known here"


def build_remediation(cfg: Config, clock: Clock) -> RemediationRunner:
    """The runner of the config's remediations, its record in state_dir (threads start with the
    first run). In an HA pair only the first agent (position 0) executes: the others record
    each run as done and verify the rule like it (see `agent.tickets.remediation.runner`)."""
    settings, kinds = remediation_kinds(cfg)
    ha = cfg.ticketing.ha
    if ha.peers and ha.position > 0:
        return RemediationRunner(settings, kinds, cfg.state_dir, clock, execute=False,
                                 not_executed=HA_NOT_EXECUTED.format(position=ha.position))
    return RemediationRunner(settings, kinds, cfg.state_dir, clock)


def build_ticketing(cfg: Config, clock: Clock, *, session: requests.Session | None = None,
                    chart: ChartFn | None = None, probe: SeriesProbe | None = None,
                    remediation: RemediationRunner | None = None, expand: ExpandFn | None = None) -> Ticketing:
    """Sinks (the `local` one always exists), outbox, silences and problems from an
    `agent.config.schema.Config`. Raises ValueError on a bad silence or maintenance window."""
    state_dir = cfg.state_dir
    t = cfg.ticketing
    names = ([] if any(e.name == "local" for e in t.sinks) else ["local"]) + [e.name for e in t.sinks]
    sinks: dict[str, Sink] = {n: build_sink(cfg, n, session=session) for n in names}
    # an agent of an HA pair asks its peers what they sent (agent.tickets.ha)
    peers = HttpPeers(t.ha, clock) if t.ha.peers else None
    outbox = Outbox(f"{state_dir.rstrip('/')}/{OUTBOX_FILE}", sinks, clock, t.outbox_max_pending, peers=peers)
    suppressor = Suppressor.from_config(t, state_dir)
    pm = ProblemManager(t, state_dir, clock, cfg.external_labels(), suppressor, outbox,
                        external_url=cfg.web.external_url, chart=chart, probe=probe, remediation=remediation,
                        expand=expand)
    return Ticketing(sinks, outbox, suppressor, pm)
