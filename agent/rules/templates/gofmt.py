"""Go's fmt for the values templates print: `%v` of a float64 (`1e+06`, `NaN`, `+Inf`),
strconv's 'e' format, and `Sprintf` for the verbs templates use. Rendered text matches
Prometheus's byte for byte because numbers print exactly as Go prints them.

Imports nothing of the agent.
"""

from __future__ import annotations

import decimal
import math
import re
from typing import Any


def go_float(v: float) -> str:
    """A float64 as Go's `%v` prints it: shortest digits that round-trip, in exponent form
    when the decimal exponent is < -4 or >= 6 (`1e+06`, `123456`, `1.5e-05`), `NaN`, `+Inf`."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    sign, digits_t, exp = decimal.Decimal(repr(float(v))).as_tuple()
    digits = list(digits_t)
    exp = int(exp)
    while len(digits) > 1 and digits[-1] == 0:
        digits.pop()
        exp += 1
    ds = "".join(map(str, digits))
    nd = len(ds)
    dp = nd + exp  # position of the decimal point relative to the digits
    x = dp - 1
    s = "-" if sign else ""
    if x < -4 or x >= 6:
        mant = ds[0] + ("." + ds[1:] if nd > 1 else "")
        return f"{s}{mant}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if dp <= 0:
        return f"{s}0.{'0' * -dp}{ds}"
    if dp >= nd:
        return f"{s}{ds}{'0' * (dp - nd)}"
    return f"{s}{ds[:dp]}.{ds[dp:]}"


def go_format_e(v: float, upper: bool = False) -> str:
    """strconv.FormatFloat(v, 'e', -1, 64): shortest digits in exponent form (`1e+00`,
    `2.5e-01`); 'E' with `upper`. Prometheus uses it for alert values, promtool for samples."""
    e = "E" if upper else "e"
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return f"0{e}+00"
    sign, digits_t, exp = decimal.Decimal(repr(float(v))).as_tuple()
    raw = "".join(map(str, digits_t))
    ds = raw.rstrip("0") or "0"
    x = len(raw) + int(exp) - 1
    m = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
    return f"{'-' if sign else ''}{m}{e}{'-' if x < 0 else '+'}{abs(x):02d}"


def go_sprintf_g(v: float, prec: int) -> str:
    """Go's `%.<prec>g`."""
    if math.isnan(v) or math.isinf(v):
        return go_float(v)
    return f"{v:.{prec}g}"


def go_str(v: Any) -> str:
    """How Go's fmt prints a value with `%v` (what `{{ x }}` outputs)."""
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, str):
        return v
    if isinstance(v, dict):
        return "map[" + " ".join(f"{go_str(k)}:{go_str(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_str(x) for x in v) + "]"
    return str(v)


def go_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dict):
        return "map[string]string"
    return type(v).__name__


GO_MAX_WIDTH = 1_000_000  # Go's fmt: larger widths and precisions print %!(BADWIDTH) / %!(BADPREC)
_VERB_RE = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])")


def go_printf(fmt: str, *args: Any) -> str:
    """Go's fmt.Sprintf for the verbs templates use: %v %s %d %f %e %g %q %x %t %%."""
    out: list[str] = []
    pos = 0
    argi = 0
    for m in _VERB_RE.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        if argi >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        a = args[argi]
        argi += 1
        # Go refuses widths and precisions past a million (fmt's tooLarge): a template cannot
        # ask for a gigabyte of padding.
        if width is not None and int(width) > GO_MAX_WIDTH:
            out.append("%!(BADWIDTH)")
            continue
        if prec is not None and int(prec) > GO_MAX_WIDTH:
            out.append("%!(BADPREC)")
            continue
        spec = f"%{flags}{width or ''}{'.' + prec if prec is not None else ''}"
        out.append(_format_one(spec, verb, a, prec))
    out.append(fmt[pos:])
    if argi < len(args):
        extra = ", ".join(f"{go_type(a)}={go_str(a)}" for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _format_one(spec: str, verb: str, a: Any, prec: str | None) -> str:
    bad = f"%!{verb}({go_type(a)}={go_str(a)})"
    if verb == "v":
        return (spec + "s") % go_str(a)
    if verb == "s":
        return (spec + "s") % a if isinstance(a, str) else bad
    if verb == "q":
        if not isinstance(a, str):
            return bad
        return '"' + a.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
    if verb == "t":
        return ("true" if a else "false") if isinstance(a, bool) else bad
    if verb in "dxXob":
        if isinstance(a, bool):
            return bad
        if isinstance(a, int):
            return (spec + verb) % a if verb != "b" else format(a, "b")
        if isinstance(a, str) and verb in "xX":
            h = a.encode().hex()
            return h.upper() if verb == "X" else h
        return bad
    if verb in "feEgG":
        if isinstance(a, bool) or not isinstance(a, (int, float)):
            return bad
        v = float(a)
        if math.isnan(v) or math.isinf(v):
            return go_float(v)
        if verb in "gG" and prec is None:
            return go_float(v) if verb == "g" else go_float(v).upper()
        return (spec + verb) % v
    return bad
