"""The template function library: Prometheus's `humanize*`, `toUpper`, `match`, ... and Go's
`printf`, `eq`, `lt`, `len`, `index`, ..., each with its arity (`FUNCTIONS`); `and` / `or`
short-circuit and are run by the executor (`LOGIC`).

Imports only the template package's `errors` and `gofmt`.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.rules.templates.errors import TemplateRuntimeError
from agent.rules.templates.gofmt import go_float, go_printf, go_sprintf_g, go_str, go_type


def to_float(v: Any) -> float:
    if isinstance(v, bool):
        raise TemplateRuntimeError(f"can't convert {go_str(v)} to float")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip()) if v.strip().lower() not in ("inf", "+inf", "-inf", "nan") else float(v.strip())
        except ValueError:
            raise TemplateRuntimeError(f"strconv.ParseFloat: parsing {v!r}: invalid syntax") from None
    if v is None:
        raise TemplateRuntimeError("can't convert <no value> to float")
    raise TemplateRuntimeError(f"can't convert {go_type(v)} to float")


def humanize(x: Any) -> str:
    v = to_float(x)
    if v == 0 or math.isnan(v) or math.isinf(v):
        return go_sprintf_g(v, 4)
    prefix = ""
    if abs(v) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix, v = p, v / 1000
        return go_sprintf_g(v, 4) + prefix
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return go_sprintf_g(v, 4) + prefix


def humanize1024(x: Any) -> str:
    v = to_float(x)
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return go_sprintf_g(v, 4)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix, v = p, v / 1024
    return go_sprintf_g(v, 4) + prefix


def humanize_duration(x: Any) -> str:
    v = to_float(x)
    if math.isnan(v) or math.isinf(v):
        return go_sprintf_g(v, 4)
    if v == 0:
        return go_sprintf_g(v, 4) + "s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        d = int(v)
        seconds, minutes, hours, days = d % 60, (d // 60) % 60, (d // 3600) % 24, d // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{go_sprintf_g(v, 4)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return f"{go_sprintf_g(v, 4)}{prefix}s"


def humanize_percentage(x: Any) -> str:
    return go_sprintf_g(to_float(x) * 100, 4) + "%"


def humanize_timestamp(x: Any) -> str:
    """Unix seconds as Go prints a UTC time; millisecond precision, as Prometheus converts
    through model.Time."""
    v = to_float(x)
    if math.isnan(v) or math.isinf(v):
        return go_sprintf_g(v, 4)
    if not -(2.0**63) <= v * 1e9 < 2.0**63:
        # Prometheus's floatToTime: a time is int64 nanoseconds (years 1677 to 2262); a
        # millisecond timestamp read as seconds lands here.
        raise TemplateRuntimeError(f"{go_float(v)} cannot be represented as a nanoseconds timestamp since it "
                                   "overflows int64")
    ns = int(v * 1e9)
    ms = abs(ns) // 1_000_000 * (1 if ns >= 0 else -1)
    sec, msec = divmod(ms, 1000)
    t = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC) + _dt.timedelta(seconds=sec)
    frac = f"{msec:03d}".rstrip("0")
    return t.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + " +0000 UTC"


def _go_regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise TemplateRuntimeError(f"error parsing regexp: {e}") from None


def _re_replace_all(pattern: str, repl: str, text: str) -> str:
    # Go expands $1 / ${1} / ${name}; Python wants \g<1>.
    py_repl = re.sub(r"\$\{?(\w+)\}?", lambda m: f"\\g<{m.group(1)}>", repl.replace("\\", "\\\\"))
    return _go_regex(pattern).sub(py_repl, text)


def _match(pattern: str, text: str) -> bool:
    return _go_regex(pattern).search(text) is not None


def _strip_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _title(s: str) -> str:
    return re.sub(r"(^|[^\w])(\w)", lambda m: m.group(1) + m.group(2).upper(), s)


def truth(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, (bool, int, float)):
        return bool(v)
    if isinstance(v, (str, list, tuple, dict)):
        return len(v) > 0
    return True


def _cmp_args(a: Any, b: Any) -> tuple[Any, Any]:
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a), float(b)
    if type(a) is not type(b):
        raise TemplateRuntimeError("incompatible types for comparison")
    return a, b


def _eq(a: Any, *bs: Any) -> bool:
    for b in bs:
        x, y = _cmp_args(a, b)
        if x == y:
            return True
    return False


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def f(a: Any, b: Any) -> bool:
        x, y = _cmp_args(a, b)
        if isinstance(x, (bool,)) or x is None:
            raise TemplateRuntimeError("invalid type for comparison")
        return op(x, y)

    return f


def _index(v: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(v, dict):
            v = v.get(k, "")
        elif isinstance(v, (list, tuple, str)):
            if not isinstance(k, int) or not 0 <= k < len(v):
                raise TemplateRuntimeError(f"index out of range: {go_str(k)}")
            v = v[k]
        else:
            raise TemplateRuntimeError(f"can't index item of type {go_type(v)}")
    return v


def _len(v: Any) -> int:
    if isinstance(v, (str, list, tuple, dict)):
        return len(v)
    raise TemplateRuntimeError(f"len of type {go_type(v)}")


def _print(*args: Any) -> str:
    # Go's fmt.Sprint: spaces between operands when neither is a string.
    out = ""
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += go_str(a)
    return out


@dataclass(frozen=True)
class Func:
    fn: Callable[..., Any]
    min_args: int
    max_args: int | None  # None: variadic


FUNCTIONS: dict[str, Func] = {
    "humanize": Func(humanize, 1, 1),
    "humanize1024": Func(humanize1024, 1, 1),
    "humanizeDuration": Func(humanize_duration, 1, 1),
    "humanizePercentage": Func(humanize_percentage, 1, 1),
    "humanizeTimestamp": Func(humanize_timestamp, 1, 1),
    "toUpper": Func(lambda s: str(s).upper(), 1, 1),
    "toLower": Func(lambda s: str(s).lower(), 1, 1),
    "title": Func(lambda s: _title(str(s)), 1, 1),
    "match": Func(_match, 2, 2),
    "reReplaceAll": Func(_re_replace_all, 3, 3),
    "stripPort": Func(_strip_port, 1, 1),
    "printf": Func(lambda f, *a: go_printf(f, *a), 1, None),
    "print": Func(_print, 0, None),
    "println": Func(lambda *a: " ".join(go_str(x) for x in a) + "\n", 0, None),
    "eq": Func(_eq, 2, None),
    "ne": Func(lambda a, b: not _eq(a, b), 2, 2),
    "lt": Func(_ordered(lambda a, b: a < b), 2, 2),
    "le": Func(_ordered(lambda a, b: a <= b), 2, 2),
    "gt": Func(_ordered(lambda a, b: a > b), 2, 2),
    "ge": Func(_ordered(lambda a, b: a >= b), 2, 2),
    "not": Func(lambda a: not truth(a), 1, 1),
    "len": Func(_len, 1, 1),
    "index": Func(_index, 1, None),
}
# `and` / `or` short-circuit, so they are evaluated specially.
LOGIC = {"and", "or"}
