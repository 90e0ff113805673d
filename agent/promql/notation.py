"""promtool's series notation, shared by `forewarn test` (input series), backtest recordings
and anything else that names a series in text: `name{a="b"}` label sets and the expanding
value notation (`1+2x3`, `5-1x4`, `7x2`, `_`, `_x3`, `stale`)."""

from __future__ import annotations

import re
from typing import Any

import promql_parser as pp

from agent.store import STALE_NAN, Labels, make_labels

from .parse import PromQLError, parse

_NUM = r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[Ii]nf|NaN|nan)"
_ITEM_RE = re.compile(rf"^(?P<a>{_NUM})(?:(?P<b>[-+](?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[Ii]nf))?x(?P<n>\d+))?$")

OMITTED = None  # a `_` in the notation: no sample at that step


def to_float(text: Any) -> float:
    """A value as promtool's notation writes it (numbers, Inf, NaN; never a bool)."""
    if isinstance(text, bool):
        raise ValueError(text)
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text).strip()
    low = s.lower().lstrip("+")
    if low in ("inf", "-inf", "nan"):
        return float(low)
    return float(s)


def expand_values(text: str) -> list[float | None]:
    """promtool's expanding notation -> one entry per step (None: omitted, STALE_NAN: stale).

    `a+bxN` and `a-bxN` give N+1 values, added up step by step as Prometheus does; `axN`
    gives N+1 copies; `_xN` gives N omitted steps. Raises ValueError."""
    out: list[float | None] = []
    for item in str(text).split():
        if item == "_":
            out.append(OMITTED)
            continue
        if item == "stale":
            out.append(STALE_NAN)
            continue
        m = re.fullmatch(r"_x(\d+)", item)
        if m:
            out.extend([OMITTED] * int(m.group(1)))
            continue
        m = _ITEM_RE.match(item)
        if not m:
            raise ValueError(f"bad value {item!r} (want a number, a+bxN, a-bxN, axN, _, _xN or stale)")
        a = to_float(m.group("a"))
        if m.group("n") is None:
            out.append(a)
            continue
        step = to_float(m.group("b")) if m.group("b") else 0.0
        for _ in range(int(m.group("n")) + 1):
            out.append(a)
            a += step
    return out


def parse_metric(text: str) -> Labels:
    """`name{a="b"}` or `{__name__="x"}` -> canonical labels. Raises ValueError."""
    text = text.strip()
    if not text or re.fullmatch(r"\{\s*\}", text):
        return ()
    try:
        e = parse(text)
    except PromQLError as ex:
        raise ValueError(f"{text!r}: {ex}") from None
    if not isinstance(e, pp.VectorSelector) or e.offset or e.at:
        raise ValueError(f"{text!r}: not a series (want name{{label=\"value\", ...}})")
    labels: dict[str, str] = {}
    for m in e.matchers.matchers:
        if str(m.op).split(".")[-1].lower() not in ("equal", "=", "matchop.equal"):
            raise ValueError(f"{text!r}: only = matchers describe a series")
        labels[m.name] = m.value
    return make_labels(e.name or None, labels)
