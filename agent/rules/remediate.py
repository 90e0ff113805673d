"""The rule side of remediation: rendering a remediation's templates with a problem's alert,
and checking them in the config.

A remediation's arguments (a command's arguments and environment, a webhook's body) may be
rule templates, with the variables of annotations: `$labels` (the first firing alert's
labels, with `alertname`), `$value`, `$externalLabels`, `$externalURL`, and `$forecast` or
`$anomaly` for detector rules. Each template renders to exactly one string, whatever the
labels hold: a label value can never add an argument, a JSON field or a shell construct. A
template that fails to render fails the attempt (it never runs with a partial argument).

Imports the templates and the config; never tickets beyond the remediation types, web or
the daemon.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields
from typing import Any

from agent.config.decode import ConfigError, mark_of
from agent.config.schema import Config
from agent.rules.alerting import Alert, AlertingRule
from agent.rules.templates import BASE_VARIABLES, Template, TemplateData, TemplateError, expand_checked, parse_template
from agent.tickets.remediation.base import ExpansionError

VARIABLES = frozenset(BASE_VARIABLES | {"$forecast", "$anomaly"})


@functools.lru_cache(maxsize=512)
def _parsed(text: str) -> Template:
    return parse_template(text, VARIABLES)


def expander(alert_labels: Mapping[str, str], value: float, *, external_labels: Mapping[str, str],
             external_url: str = "", forecast: dict[str, float] | None = None,
             anomaly: dict[str, float] | None = None) -> Callable[[str], str]:
    """A function rendering one template with this alert's data; raises `ExpansionError`."""
    data = TemplateData(labels=dict(alert_labels), value=float(value), external_labels=dict(external_labels),
                        external_url=external_url, forecast=forecast, anomaly=anomaly)

    def expand(text: str) -> str:
        if "{{" not in text:
            return text
        try:
            r = expand_checked(_parsed(text), data)
        except TemplateError as e:
            raise ExpansionError(f"template {text!r}: {e.message}") from e
        if r.error is not None:
            raise ExpansionError(f"template {text!r}: {r.error}")
        return r.text

    return expand


def alert_expander(rule: object, alerts: Sequence[object]) -> Callable[[str], str]:
    """The expander of a problem's first alert (the pipeline's and the replay's `expand`)."""
    a = next((x for x in alerts if isinstance(x, Alert)), None)
    ext = rule.external_labels if isinstance(rule, AlertingRule) else {}
    url = rule.external_url if isinstance(rule, AlertingRule) else ""
    if a is None:
        return expander({}, float("nan"), external_labels=ext, external_url=url)
    return expander(a.labels, a.value, external_labels=ext, external_url=url,
                    forecast=a.forecast.as_template() if a.forecast is not None else None,
                    anomaly=a.anomaly.as_template() if a.anomaly is not None else None)


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every string inside a setting's value (lists and mappings walked), with where it is."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(value, Sequence):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")


TEMPLATED_FIELDS = ("command", "env", "body")  # the settings whose strings are templates


def check_templates(cfg: Config) -> list[ConfigError]:
    """A located error for each remediation template that does not parse."""
    errors = []
    for i, d in enumerate(cfg.remediation.definitions):
        names = {f.name for f in fields(d.settings)}
        for fld in TEMPLATED_FIELDS:
            if fld not in names:
                continue
            for where, text in _strings(getattr(d.settings, fld), fld):
                if "{{" not in text:
                    continue
                try:
                    _parsed(text)
                except TemplateError as e:
                    line, col = mark_of(d.settings, fld)
                    errors.append(ConfigError(cfg.path, line, col, f"remediation.definitions[{i}]({d.name}).{where}: "
                                                                   f"invalid template: {e.message}"))
    return errors
