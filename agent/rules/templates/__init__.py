"""Label and annotation templates: the subset of Go's text/template that Prometheus rules use.

Templates are parsed once, when the rule file is loaded, so a bad template is a `check`
error with its position; rendering is then a walk over a small tree. Supported:

- text, `{{ pipeline }}`, trim markers `{{-` / `-}}`, comments `{{/* ... */}}`;
- variables `$labels`, `$externalLabels`, `$externalURL`, `$value`, `$forecast`, `$anomaly`,
  the dot fields `.Labels`, `.ExternalLabels`, `.ExternalURL`, `.Value`, field chains
  (`$labels.instance`, `$forecast.eta`), declarations `{{ $x := pipeline }}`;
- pipelines `a | f | g`, parenthesised pipelines, string/number/bool literals;
- `{{ if }}` / `{{ else if }}` / `{{ else }}` / `{{ end }}`, `{{ range [$k, $v :=] x }}`;
- functions: Prometheus's `humanize`, `humanize1024`, `humanizeDuration`, `humanizePercentage`,
  `humanizeTimestamp`, `toUpper`, `toLower`, `title`, `match`, `reReplaceAll`, `stripPort`,
  and Go's `printf`, `print`, `eq`, `ne`, `lt`, `le`, `gt`, `ge`, `and`, `or`, `not`, `len`, `index`.

Numbers print the way Go prints a float64 (`1e+06`, `0.1`, `NaN`, `+Inf`), so rendered text
matches Prometheus's byte for byte and promtool test files pass unchanged.

The package: `lex` and `parse` (text to tree, with load-time checks), `execute` (the walk),
`functions` (the library), `gofmt` (Go's number and printf formatting), `errors`. This module
is the public face: `parse_template`, `Template`, `TemplateData`, `expand`. Like the rest of
`agent.rules.templates`, it imports nothing of the agent outside this package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.rules.templates.errors import TemplateError, TemplateRuntimeError, UndefinedVariableError
from agent.rules.templates.execute import Executor, StrictFields
from agent.rules.templates.functions import (
    humanize,
    humanize1024,
    humanize_duration,
    humanize_percentage,
    humanize_timestamp,
)
from agent.rules.templates.gofmt import go_float, go_format_e, go_printf, go_str
from agent.rules.templates.nodes import Node
from agent.rules.templates.parse import Parser

# Variables every rule template can use; `$forecast` and `$anomaly` only in rules with that detector.
BASE_VARIABLES = frozenset({"$labels", "$externalLabels", "$externalURL", "$value"})


@dataclass
class Template:
    """A parsed template. Render with `render(...)`; parse errors are raised by `parse_template`."""

    source: str
    nodes: list[Node]
    is_static: bool  # no actions at all: render is the text itself

    def render(self, dot: Any, variables: dict[str, Any]) -> str:
        if self.is_static:
            return self.source
        out: list[str] = []
        Executor(dot, variables).run(self.nodes, out)
        return "".join(out)


def parse_template(text: str, variables: frozenset[str] | set[str] = BASE_VARIABLES) -> Template:
    """Parse `text`; raises TemplateError(message, offset). `variables` are the names usable."""
    nodes = Parser(text, set(variables)).parse()
    static = "{{" not in text
    return Template(text, nodes, static)


@dataclass
class TemplateData:
    """What a rule's templates see at one evaluation."""

    labels: dict[str, str]
    value: float
    external_labels: dict[str, str] = field(default_factory=dict)
    external_url: str = ""
    forecast: dict[str, float] | None = None
    anomaly: dict[str, float] | None = None


@dataclass(frozen=True)
class Expansion:
    """A rendered template: the text (Prometheus's `<error expanding template: ...>` on a
    failure) and the failure itself (None: rendered)."""

    text: str
    error: str | None = None


def expand(tmpl: Template, data: TemplateData) -> str:
    """Render like Prometheus: a runtime failure becomes `<error expanding template: ...>`."""
    return expand_checked(tmpl, data).text


def expand_checked(tmpl: Template, data: TemplateData) -> Expansion:
    """Render like `expand`, and say whether it failed (rules report it as their error).
    Never raises: templates run on scraped data, and a rendering is bounded (output size,
    loop iterations; see `execute`)."""
    if tmpl.is_static:
        return Expansion(tmpl.source)
    dot = StrictFields(Labels=data.labels, ExternalLabels=data.external_labels,
                       ExternalURL=data.external_url, Value=data.value)
    variables: dict[str, Any] = {
        "$labels": data.labels,
        "$externalLabels": data.external_labels,
        "$externalURL": data.external_url,
        "$value": data.value,
    }
    if data.forecast is not None:
        variables["$forecast"] = StrictFields(data.forecast)
    if data.anomaly is not None:
        variables["$anomaly"] = StrictFields(data.anomaly)
    try:
        return Expansion(tmpl.render(dot, variables))
    except TemplateRuntimeError as e:
        message = str(e)
    except RecursionError:
        message = "too deeply nested"
    except Exception as e:  # a failure on data nobody foresaw is still this template's error only
        message = f"{type(e).__name__}: {e}"
    return Expansion(f"<error expanding template: {message}>", message)


__all__ = [
    "BASE_VARIABLES",
    "Expansion",
    "Template",
    "TemplateData",
    "TemplateError",
    "TemplateRuntimeError",
    "UndefinedVariableError",
    "expand",
    "expand_checked",
    "go_float",
    "go_format_e",
    "go_printf",
    "go_str",
    "humanize",
    "humanize1024",
    "humanize_duration",
    "humanize_percentage",
    "humanize_timestamp",
    "parse_template",
]
