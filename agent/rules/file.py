"""Rule files (`rules/*.yml`): schema, loading and validation (DESIGN.md, contract: rule files).

Prometheus's rule-file shape (groups of alerting and recording rules) with `forecast:`,
`anomaly:` and `ticket:` added. Like Prometheus's parser, every problem in every file is
collected, each as `PATH:LINE:COL: group "G", rule "R": message`; PromQL and template
errors point at the character inside the YAML value, not only at the key.

Imports `agent.config` (decoding), `agent.promql` (parsing), `agent.tickets.policy` and the
rules package's templates; never the rest of tickets, web, sources, the pipeline or the daemon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.config.decode import (
    INVALID,
    ConfigError,
    ConfigErrors,
    Decoder,
    Duration,
    Mark,
    doc,
    format_duration,
    item_marks,
    load_marked,
    mark_of,
    parse_duration,
    read_text_file,
)
from agent.models.anomaly import seasonality_from_spec
from agent.promql import PromQLError, check_supported, parse
from agent.rules.slospec import SloSpec, contributors_query, fill_window, sli_queries
from agent.rules.templates import BASE_VARIABLES, Template, TemplateError, UndefinedVariableError, parse_template
from agent.tickets.policy import LABEL_NAME_RE, TicketPolicy

_METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

# Labels the rule machinery sets itself; a rule may not set them.
RESERVED_LABELS = frozenset({"__name__", "alertname", "alertstate"})

@dataclass
class ForecastSpec:
    """`forecast:` - alert when the series is predicted to cross `threshold` within `horizon`."""

    threshold: float = doc("The level whose crossing is predicted (same unit as expr).")
    model: Literal["linear", "holt", "holt_winters", "auto"] = doc("Forecasting model.", default="auto")
    lookback: Duration = doc("History the model is fitted on.", default=Duration(6 * 3600))
    horizon: Duration = doc("How far ahead a breach counts.", default=Duration(24 * 3600))
    direction: Literal["below", "above"] = doc("Breach when the series goes below or above threshold.",
                                               default="above")
    confidence: float = doc("Probability the breach happens inside the horizon for the rule to be active.",
                            default=0.9)
    season: Duration | None = doc(
        "Season length (e.g. 1d): holt_winters' period. Unset: auto detects an hourly, daily or weekly season per "
        "series, and linear takes out a daily profile where a series has one; a period other than 1d turns "
        "linear's daily profile off.", default=None)
    recovery_confidence: float | None = doc(
        "Probability below which an active series clears (hysteresis, so a breach near the horizon's edge does "
        "not flap); default 2 * confidence - 1, at least half the confidence.", default=None)

    def validate(self, err: Any) -> None:
        if self.lookback <= 0:
            err("lookback", "must be greater than zero")
        if self.horizon <= 0:
            err("horizon", "must be greater than zero")
        if not 0 < self.confidence < 1:
            err("confidence", "must be between 0 and 1 (exclusive)")
        if self.recovery_confidence is not None and not 0 < self.recovery_confidence <= self.confidence:
            err("recovery_confidence", "must be greater than 0 and at most confidence")
        if self.season is not None and self.season <= 0:
            err("season", "must be greater than zero")
        if self.model == "holt_winters" and self.season is None:
            err("model", "holt_winters needs a season (e.g. season: 1d)")


@dataclass
class AnomalySpec:
    """`anomaly:` - alert when the series looks unusual against its own history."""

    sensitivity: Literal["low", "medium", "high"] = doc("How easily a value counts as unusual.", default="medium")
    direction: Literal["above", "below", "both"] = doc("Which side of the expected band counts.", default="both")
    seasonality: str = doc("auto (detected per series), none, 1d (daily) or 1w (weekly, on top of daily).",
                           default="auto")
    until: Literal["recovered", "score"] = doc(
        "How long an alert lasts: recovered: until the series is back in the band it left (or the change is "
        "accepted); score: while the score stays at the threshold.", default="recovered")
    accept_after: Duration = doc("A change that lasts this long is accepted as the new normal and its alert "
                                 "clears (0: never).", default=Duration(86400))

    def validate(self, err: Any) -> None:
        if self.seasonality not in ("auto", "none"):
            try:
                seconds = parse_duration(self.seasonality)
            except ValueError:
                err("seasonality", f"want auto, none or a duration, got {self.seasonality!r}")
                return
            try:
                seasonality_from_spec(self.seasonality)
            except ValueError:
                err("seasonality", f"the detector's seasons are daily and weekly: want 1d or 1w, got "
                                   f"{format_duration(seconds)}" if seconds > 0 else "must be greater than zero")
        if self.accept_after < 0:
            err("accept_after", "must not be negative")


@dataclass
class RuleSpec:
    """One alerting (`alert:`) or recording (`record:`) rule as written in the file."""

    expr: str = doc("PromQL expression.")
    alert: str = doc("Name of the alert (alerting rules).", default="")
    record: str = doc("Name of the series written (recording rules).", default="")
    for_: Duration = field(default=Duration(0), metadata={"yaml": "for", "doc": "Pending time before firing."})
    keep_firing_for: Duration = doc("Keep firing this long after the condition clears.", default=Duration(0))
    labels: dict[str, str] = doc("Labels added to each alert or series (templated).", default_factory=dict)
    annotations: dict[str, str] = doc("Annotations of each alert (templated).", default_factory=dict)
    forecast: ForecastSpec | None = doc("Forecast detector.", default=None)
    anomaly: AnomalySpec | None = doc("Anomaly detector.", default=None)
    ticket: TicketPolicy | None = doc("Ticketing of this rule's problems.", default=None)
    remediate: list[str] = doc(
        "Remediations (defined by name in the main config's `remediation:` section) run, in order, when a "
        "problem of this rule first fires; see the remediation docs.", default_factory=list)


@dataclass
class GroupSpec:
    name: str = doc("Group name, unique in the file.")
    interval: Duration | None = doc("Evaluation interval (default: global.evaluation_interval).", default=None)
    limit: int = doc("Most alerts (or series) per rule; more fail the evaluation (0: no limit).", default=0)
    rules: Any = doc("The rules, evaluated in order.", default=None)


# ---- loaded, validated form -------------------------------------------------------------------


@dataclass
class RuleDef:
    """A validated rule: the spec plus its parsed expression and templates."""

    spec: RuleSpec
    group: str
    file: str
    expr: Any  # parsed PromQL (agent.promql Expr)
    label_templates: dict[str, Template]
    annotation_templates: dict[str, Template]
    mark: Mark = (0, 0)

    @property
    def name(self) -> str:
        return self.spec.alert or self.spec.record

    @property
    def is_alert(self) -> bool:
        return bool(self.spec.alert)

    @property
    def kind(self) -> str:
        if self.spec.forecast is not None:
            return "forecast"
        if self.spec.anomaly is not None:
            return "anomaly"
        return "threshold"


@dataclass
class SloDef:
    """A validated `slo:` rule; the group expands it (`agent.rules.slo`) once its interval is known."""

    spec: SloSpec
    group: str
    file: str
    mark: Mark = (0, 0)

    @property
    def name(self) -> str:
        return self.spec.slo


# An SLO's group runs its window sums at the group interval; past this the 5m window is too short.
SLO_MAX_INTERVAL = 150.0


@dataclass
class RuleGroupDef:
    name: str
    file: str
    interval: float | None  # None: the global evaluation interval
    limit: int
    rules: list[RuleDef | SloDef]
    mark: Mark = (0, 0)

    def rule_defs(self) -> list[RuleDef]:
        """The alerting and recording rules written as such (not the SLOs)."""
        return [r for r in self.rules if isinstance(r, RuleDef)]

    def slo_defs(self) -> list[SloDef]:
        return [r for r in self.rules if isinstance(r, SloDef)]


def load_rule_files(paths: list[str], sinks: set[str] | None = None,
                    remediations: set[str] | None = None) -> list[RuleGroupDef]:
    """Load and validate rule files; raise ConfigErrors listing every problem in every file.

    `sinks` is the set of configured sink names (None: do not check `ticket.sink`);
    `remediations` the names the config defines (None: do not check `remediate`)."""
    groups: list[RuleGroupDef] = []
    errors: list[ConfigError] = []
    for path in paths:
        try:
            groups.extend(load_rule_text(read_text_file(path), path, sinks, remediations))
        except ConfigErrors as e:
            errors.extend(e.errors)
    if errors:
        raise ConfigErrors(errors)
    return groups


def load_rule_text(text: str, path: str, sinks: set[str] | None = None,
                   remediations: set[str] | None = None) -> list[RuleGroupDef]:
    """Load one rule file's text (see `load_rule_files`)."""
    data = load_marked(text, path)
    if data is None:
        return []  # an empty file is a valid file with no groups, as in Prometheus
    v = _Validator(path, text, sinks, remediations)
    groups: list[RuleGroupDef] = []
    if not isinstance(data, dict):
        v.decoder.error(getattr(data, "mark", (1, 1)), "expected a mapping with 'groups'")
        v.decoder.raise_if_errors()
    kmarks = getattr(data, "key_marks", {})
    for key in data:
        if key != "groups":
            hint = " (did you mean 'groups'?)" if key in ("group", "rules", "Groups") else ""
            v.decoder.error(kmarks.get(key, (1, 1)), f"unknown field {key!r}{hint}")
    raw_groups = data.get("groups")
    gmark = getattr(data, "value_marks", {}).get("groups", (1, 1))
    if raw_groups is not None and not isinstance(raw_groups, list):
        v.decoder.error(gmark, "groups: expected a list")
    elif raw_groups:
        marks = getattr(raw_groups, "item_marks", [gmark] * len(raw_groups))
        seen: dict[str, Mark] = {}
        for raw, m in zip(raw_groups, marks):
            g = v.group(raw, m)
            if g is None:
                continue
            if g.name and g.name in seen:
                v.decoder.error(mark_of_raw(raw, "name", m),
                                f'group "{g.name}": duplicate group name (first at line {seen[g.name][0]})')
            else:
                seen[g.name] = m
            groups.append(g)
    v.decoder.raise_if_errors()
    return groups


def mark_of_raw(raw: Any, key: str, default: Mark) -> Mark:
    return getattr(raw, "value_marks", {}).get(key, default) if isinstance(raw, dict) else default


class _Validator:
    def __init__(self, path: str, text: str, sinks: set[str] | None, remediations: set[str] | None) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.sinks = sinks
        self.remediations = remediations
        self.decoder = Decoder(path)

    def _sub(self, cls: Any, raw: Any, mark: Mark, context: str) -> Any:
        """Decode with a fresh decoder, then file its errors prefixed with `context`."""
        sub = Decoder(self.path)
        obj = sub.decode_dataclass(cls, raw, mark, "")
        for e in sub.errors:
            msg = e.message[2:] if e.message.startswith(": ") else e.message
            m = re.match(r"missing required field '(\w+)'$", msg)
            if m and isinstance(raw, dict) and m.group(1) in raw:
                continue  # present but invalid: that error is already in the list
            self.decoder.errors.append(ConfigError(e.path, e.line, e.column, f"{context}: {msg}"))
        return obj

    def _partial(self, cls: Any, raw: Any, mark: Mark, filler: dict[str, Any]) -> Any:
        """After a failed decode (already reported), decode the keys that are fine on their own,
        so the remaining checks (expr, templates, sink) still run and report their problems."""
        if not isinstance(raw, dict):
            return None
        good = type(raw)()
        for attr in ("mark", "key_marks", "value_marks"):
            setattr(good, attr, getattr(raw, attr, {} if attr != "mark" else mark))
        for k, v in raw.items():
            probe = dict(filler)
            probe[k] = v
            if Decoder(self.path).decode_dataclass(cls, probe, mark, "") is not INVALID:
                good[k] = v
        for k, v in filler.items():
            good.setdefault(k, v)
        obj = Decoder(self.path).decode_dataclass(cls, good, mark, "")
        if obj is INVALID:
            return None
        for k in filler:
            if k not in raw or good[k] is not raw[k]:
                getattr(obj, "_marks", {}).pop(k, None)  # a filler, not what the file says
        return obj

    def group(self, raw: Any, mark: Mark) -> RuleGroupDef | None:
        name = raw.get("name") if isinstance(raw, dict) else None
        ctx = f'group "{name}"' if name else "group"
        spec = self._sub(GroupSpec, raw, mark, ctx)
        if spec is INVALID:
            spec = self._partial(GroupSpec, raw, mark, {"name": name or ""})
            if spec is None:
                return None
        if not spec.name and "name" in getattr(spec, "_marks", {}):
            self.decoder.error(mark_of(spec, "name"), f"{ctx}: name must not be empty")
        if spec.interval is not None and spec.interval <= 0:
            self.decoder.error(mark_of(spec, "interval"), f"{ctx}: interval must be greater than zero")
        if spec.limit < 0:
            self.decoder.error(mark_of(spec, "limit"), f"{ctx}: limit must not be negative")
        rules: list[RuleDef | SloDef] = []
        raw_rules = spec.rules
        if raw_rules is None:
            raw_rules = []
        if not isinstance(raw_rules, list):
            self.decoder.error(mark_of(spec, "rules"), f"{ctx}: rules: expected a list")
            raw_rules = []
        rmarks = getattr(raw_rules, "item_marks", [mark] * len(raw_rules))
        for raw_rule, rm in zip(raw_rules, rmarks):
            if isinstance(raw_rule, dict) and "slo" in raw_rule:
                s = self.slo(raw_rule, rm, str(spec.name), spec.interval)
                if s is not None:
                    rules.append(s)
                continue
            r = self.rule(raw_rule, rm, str(spec.name))
            if r is not None:
                rules.append(r)
        return RuleGroupDef(str(spec.name), self.path, spec.interval, spec.limit, rules, mark)

    def rule(self, raw: Any, mark: Mark, group: str) -> RuleDef | None:
        rname = ""
        if isinstance(raw, dict):
            rname = str(raw.get("alert") or raw.get("record") or "")
        ctx = f'group "{group}", rule "{rname}"' if rname else f'group "{group}", rule at line {mark[0]}'
        spec = self._sub(RuleSpec, raw, mark, ctx)
        if spec is INVALID:
            spec = self._partial(RuleSpec, raw, mark, {"expr": ""})
            if spec is None:
                return None

        def err(fld: str | None, msg: str, at: Mark | None = None) -> None:
            m = at or (mark_of(spec, fld) if fld else mark)
            shown = "for" if fld == "for_" else fld
            self.decoder.error(m, f"{ctx}: {shown + ': ' if shown else ''}{msg}")

        if spec.alert and spec.record:
            err("record", "a rule is either an alert or a record, not both")
        elif not spec.alert and not spec.record:
            err(None, "a rule needs 'alert' or 'record'")
        if spec.record:
            if not _METRIC_NAME_RE.match(spec.record):
                err("record", f"invalid recording rule name {spec.record!r}")
            for fld in ("annotations", "forecast", "anomaly", "ticket", "remediate"):
                if getattr(spec, fld):
                    err(fld, "only alerting rules can have " + fld)
            if spec.for_:
                err("for_", "only alerting rules can have 'for'")
            if spec.keep_firing_for:
                err("keep_firing_for", "only alerting rules can have 'keep_firing_for'")
        if spec.for_ < 0:
            err("for_", "must not be negative")
        if spec.keep_firing_for < 0:
            err("keep_firing_for", "must not be negative")
        if spec.forecast is not None and spec.anomaly is not None:
            err("anomaly", "a rule has one detector: use either 'forecast' or 'anomaly', not both")
        variables = set(BASE_VARIABLES)
        if spec.forecast is not None:
            variables.add("$forecast")
        if spec.anomaly is not None:
            variables.add("$anomaly")

        expr = self._expr(spec, ctx)
        label_t = self._templates(spec, raw, "labels", variables, ctx)
        annot_t = self._templates(spec, raw, "annotations", variables, ctx)
        self._check_sink(raw, ctx)
        self._check_remediate(spec, raw, mark, ctx)
        return RuleDef(spec, group, self.path, expr, label_t, annot_t, mark)

    def slo(self, raw: Any, mark: Mark, group: str, interval: float | None) -> SloDef | None:
        name = str(raw.get("slo") or "")
        ctx = f'group "{group}", slo "{name}"'
        spec = self._sub(SloSpec, raw, mark, ctx)
        if spec is INVALID:
            return None

        def err(obj: Any, fld: str, msg: str, at: Mark | None = None) -> None:
            self.decoder.error(at or mark_of(obj, fld), f"{ctx}: {fld}: {msg}")

        if interval is not None and interval > SLO_MAX_INTERVAL:
            self.decoder.error(mark, f"{ctx}: the group's interval must be at most 2m30s for an SLO "
                                     "(its shortest window is 5m)")
        bad, total = sli_queries(spec)
        for fld, text in (("bad", bad), ("total", total)):
            at = mark_of(spec.sli.latency if spec.sli.latency is not None else spec.sli,
                         "metric" if spec.sli.latency is not None else fld)
            self._promql(fill_window(text, 300.0), at, f"{ctx}: sli.{fld}")
        c = spec.contributors
        if c is not None:
            breakdown = contributors_query(spec)
            if breakdown is None:
                err(c, "by", "the SLI's bad query is not a sum(...), so it cannot be broken down: give "
                             "contributors.expr")
            else:
                self._promql(fill_window(breakdown, float(c.window)), mark_of(c, "expr" if c.expr else "by"),
                             f"{ctx}: contributors")
        fvars = set(BASE_VARIABLES) | {"$forecast"}
        for obj, fld, variables in ((spec, "annotations", fvars), (spec.alerting, "labels", BASE_VARIABLES),
                                    (spec.alerting, "annotations", BASE_VARIABLES),
                                    (spec.alerting.page, "labels", BASE_VARIABLES),
                                    (spec.alerting.page, "annotations", BASE_VARIABLES),
                                    (spec.alerting.ticket, "labels", BASE_VARIABLES),
                                    (spec.alerting.ticket, "annotations", BASE_VARIABLES)):
            for k, text in getattr(obj, fld).items():
                if fld == "labels" and (not LABEL_NAME_RE.match(k) or k in RESERVED_LABELS):
                    err(obj, fld, f"invalid or reserved label name {k!r}")
                    continue
                try:
                    parse_template(text, variables)
                except TemplateError as e:
                    err(obj, fld, f"{k}: bad template: {e.message}")
        for w in spec.alerting.windows or ():
            if w.long > spec.window:
                err(w, "long", "must not be longer than the SLO window")
        self._check_sink(raw, ctx)
        return SloDef(spec, group, self.path, mark)

    def _promql(self, text: str, at: Mark, ctx: str) -> None:
        try:
            expr = parse(text)
        except PromQLError as e:
            self.decoder.error(at, f"{ctx}: {e.message}")
            return
        for problem in check_supported(expr):
            self.decoder.error(at, f"{ctx}: {problem}")

    def _check_sink(self, raw: Any, ctx: str) -> None:
        # From the raw mapping, so a rule whose ticket block has other errors is still checked.
        ticket = raw.get("ticket") if isinstance(raw, dict) else None
        sink = ticket.get("sink") if isinstance(ticket, dict) else None
        if not isinstance(sink, str) or not sink or self.sinks is None or sink in self.sinks:
            return
        m = getattr(ticket, "value_marks", {}).get("sink", (0, 0))
        known = ", ".join(sorted(self.sinks)) or "none"
        self.decoder.error(m, f"{ctx}: ticket.sink: unknown sink {sink!r} (configured: {known})")

    def _check_remediate(self, spec: RuleSpec, raw: Any, mark: Mark, ctx: str) -> None:
        """Every name in `remediate` defined in the config, once: rule files can only point
        at what the host's administrator defined."""
        items = raw.get("remediate") if isinstance(raw, dict) else None
        if not isinstance(items, list):
            return
        marks = item_marks(items, mark_of(spec, "remediate") if spec is not INVALID else mark)
        seen: set[str] = set()
        for name, m in zip(items, marks):
            if not isinstance(name, str) or not name:
                continue  # the decoder already said what is wrong with it
            if name in seen:
                self.decoder.error(m, f"{ctx}: remediate: {name!r} is listed twice")
            seen.add(name)
            if self.remediations is not None and name not in self.remediations:
                known = ", ".join(sorted(self.remediations)) or "none"
                self.decoder.error(m, f"{ctx}: remediate: undefined remediation {name!r} (the config's "
                                      f"remediation.definitions has: {known})")

    def _expr(self, spec: RuleSpec, ctx: str) -> Any:
        mark = mark_of(spec, "expr")
        if not str(spec.expr).strip():
            if "expr" not in getattr(spec, "_marks", {}):
                return None  # missing: already reported by the decoder
            self.decoder.error(mark, f"{ctx}: expr: must not be empty")
            return None
        try:
            expr = parse(spec.expr)
        except PromQLError as e:
            at = self.offset_mark(mark, spec.expr, e.position) if e.position is not None else mark
            self.decoder.error(at, f"{ctx}: expr: {e.message}")
            return None
        for problem in check_supported(expr):
            self.decoder.error(mark, f"{ctx}: expr: {problem}")
        return expr

    def _templates(self, spec: RuleSpec, raw: Any, fld: str, variables: set[str],
                   ctx: str) -> dict[str, Template]:
        values: dict[str, str] = getattr(spec, fld)
        out: dict[str, Template] = {}
        base = mark_of(spec, fld)
        raw_map = raw.get(fld) if isinstance(raw, dict) else None
        vmarks: dict[str, Mark] = getattr(raw_map, "value_marks", {})
        kmarks: dict[str, Mark] = getattr(raw_map, "key_marks", {})
        for k, text in values.items():
            km = vmarks.get(k, base)
            if fld == "labels":
                km = kmarks.get(k, km)
                if not LABEL_NAME_RE.match(k):
                    self.decoder.error(km, f"{ctx}: {fld}: invalid label name {k!r}")
                    continue
                if k in RESERVED_LABELS:
                    self.decoder.error(km, f"{ctx}: {fld}: label {k!r} is set by the rule itself")
                    continue
                km = vmarks.get(k, base)
            try:
                out[k] = parse_template(text, variables)
            except TemplateError as e:
                hint = ""
                if isinstance(e, UndefinedVariableError) and e.name.startswith(("$forecast", "$anomaly")):
                    hint = " (only rules with that detector can use it)"
                self.decoder.error(self.offset_mark(km, text, e.offset),
                                   f"{ctx}: {fld}.{k}: bad template: {e.message}{hint}")
        return out

    def offset_mark(self, mark: Mark, value: str, offset: int) -> Mark:
        """Line and column of character `offset` of the YAML scalar `value` that starts at `mark`.

        Exact for plain and quoted one-line scalars and for `|`/`>` block scalars; for other
        shapes (escapes before the offset, folded plain scalars) it falls back to the mark."""
        line, col = mark
        if not 1 <= line <= len(self.lines):
            return mark
        src = self.lines[line - 1][col - 1:]
        offset = max(0, min(offset, len(value)))
        if src[:1] in ("|", ">"):
            before = value[:offset]
            n = before.count("\n")
            body_line = line + 1 + n
            # Block content: the indentation of its first non-empty line.
            indent = None
            for ln in self.lines[line:]:
                if ln.strip():
                    indent = len(ln) - len(ln.lstrip(" "))
                    break
            if indent is None or body_line > len(self.lines):
                return mark
            if src[0] == ">":
                # folded: a single newline became a space; map by counting source lines instead
                return self._search_mark(line + 1, value, offset, indent) or mark
            return (body_line, indent + len(before) - (before.rfind("\n") + 1) + 1)
        if src[:1] in ('"', "'"):
            q = src[0]
            inner = src[1:]
            if "\\" not in inner[:offset + 1] and (q != "'" or "''" not in inner[:offset + 1]):
                if inner[:offset] == value[:offset]:
                    return (line, col + 1 + offset)
            return mark
        if src[:offset] == value[:offset]:
            return (line, col + offset)
        return mark

    def _search_mark(self, first_line: int, value: str, offset: int, indent: int) -> Mark | None:
        consumed = 0
        for i in range(first_line - 1, len(self.lines)):
            ln = self.lines[i][indent:]
            if consumed + len(ln) >= offset:
                return (i + 1, indent + (offset - consumed) + 1)
            consumed += len(ln) + 1
        return None
