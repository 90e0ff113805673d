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
"""

from __future__ import annotations

import datetime as _dt
import decimal
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# ---- errors -----------------------------------------------------------------------------------


class TemplateError(Exception):
    """A template that does not parse. `offset` is the 0-based character offset in the text."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class TemplateRuntimeError(Exception):
    """A template that parsed but failed on the data (wrong type, missing field)."""


# ---- Go value formatting ----------------------------------------------------------------------


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
    return "%.*g" % (prec, v)


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


def _go_type(v: Any) -> str:
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
        spec = f"%{flags}{width or ''}{'.' + prec if prec is not None else ''}"
        out.append(_format_one(spec, verb, a, prec))
    out.append(fmt[pos:])
    if argi < len(args):
        extra = ", ".join(f"{_go_type(a)}={go_str(a)}" for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _format_one(spec: str, verb: str, a: Any, prec: str | None) -> str:
    bad = f"%!{verb}({_go_type(a)}={go_str(a)})"
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


# ---- Prometheus template functions ------------------------------------------------------------


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
    raise TemplateRuntimeError(f"can't convert {_go_type(v)} to float")


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


def _truth(v: Any) -> bool:
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
            raise TemplateRuntimeError(f"can't index item of type {_go_type(v)}")
    return v


def _len(v: Any) -> int:
    if isinstance(v, (str, list, tuple, dict)):
        return len(v)
    raise TemplateRuntimeError(f"len of type {_go_type(v)}")


def _print(*args: Any) -> str:
    # Go's fmt.Sprint: spaces between operands when neither is a string.
    out = ""
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += go_str(a)
    return out


@dataclass(frozen=True)
class _Func:
    fn: Callable[..., Any]
    min_args: int
    max_args: int | None  # None: variadic


FUNCTIONS: dict[str, _Func] = {
    "humanize": _Func(humanize, 1, 1),
    "humanize1024": _Func(humanize1024, 1, 1),
    "humanizeDuration": _Func(humanize_duration, 1, 1),
    "humanizePercentage": _Func(humanize_percentage, 1, 1),
    "humanizeTimestamp": _Func(humanize_timestamp, 1, 1),
    "toUpper": _Func(lambda s: str(s).upper(), 1, 1),
    "toLower": _Func(lambda s: str(s).lower(), 1, 1),
    "title": _Func(lambda s: _title(str(s)), 1, 1),
    "match": _Func(_match, 2, 2),
    "reReplaceAll": _Func(_re_replace_all, 3, 3),
    "stripPort": _Func(_strip_port, 1, 1),
    "printf": _Func(lambda f, *a: go_printf(f, *a), 1, None),
    "print": _Func(_print, 0, None),
    "println": _Func(lambda *a: " ".join(go_str(x) for x in a) + "\n", 0, None),
    "eq": _Func(_eq, 2, None),
    "ne": _Func(lambda a, b: not _eq(a, b), 2, 2),
    "lt": _Func(_ordered(lambda a, b: a < b), 2, 2),
    "le": _Func(_ordered(lambda a, b: a <= b), 2, 2),
    "gt": _Func(_ordered(lambda a, b: a > b), 2, 2),
    "ge": _Func(_ordered(lambda a, b: a >= b), 2, 2),
    "not": _Func(lambda a: not _truth(a), 1, 1),
    "len": _Func(_len, 1, 1),
    "index": _Func(_index, 1, None),
}
# `and` / `or` short-circuit, so they are evaluated specially.
_LOGIC = {"and", "or"}

# ---- tree -------------------------------------------------------------------------------------


@dataclass
class _Node:
    offset: int


@dataclass
class _Text(_Node):
    text: str


@dataclass
class _Var(_Node):
    name: str  # "$" alone is the root data
    fields: list[str] = field(default_factory=list)


@dataclass
class _Dot(_Node):
    fields: list[str] = field(default_factory=list)


@dataclass
class _Lit(_Node):
    value: Any


@dataclass
class _Ident(_Node):
    name: str


@dataclass
class _Command(_Node):
    args: list[_Node]


@dataclass
class _Pipeline(_Node):
    decl: list[str]
    cmds: list[_Command]
    assign: bool = False  # `$x = ...` rather than `$x := ...`


@dataclass
class _Sub(_Node):
    pipe: _Pipeline
    fields: list[str] = field(default_factory=list)


@dataclass
class _Action(_Node):
    pipe: _Pipeline


@dataclass
class _If(_Node):
    branches: list[tuple[_Pipeline, list[_Node]]]
    else_body: list[_Node] | None


@dataclass
class _Range(_Node):
    pipe: _Pipeline
    body: list[_Node]
    else_body: list[_Node] | None


# ---- lexer ------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<num>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<field>\.[A-Za-z_][A-Za-z0-9_]*)
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<punct>[|(),])
    """,
    re.VERBOSE,
)


@dataclass
class _Tok:
    kind: str
    text: str
    offset: int


def _lex_action(src: str, start: int, end: int) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = start
    while pos < end:
        m = _TOKEN_RE.match(src, pos, end)
        if not m:
            raise TemplateError(f"unexpected {src[pos]!r} in command", pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            toks.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    return toks


def _split(src: str) -> list[tuple[str, Any, int]]:
    """Text and action segments: ("text", str, offset) and ("action", [tokens], offset)."""
    out: list[tuple[str, Any, int]] = []
    pos = 0
    trim_next = False
    while True:
        i = src.find("{{", pos)
        text = src[pos:] if i < 0 else src[pos:i]
        trim_prev = i >= 0 and src[i + 2:i + 4] in ("- ", "-\t", "-\n", "-\r")
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if trim_prev:
            text = text.rstrip(" \t\r\n")
        if text:
            out.append(("text", text, pos))
        if i < 0:
            return out
        body_start = i + 2 + (2 if trim_prev else 0)
        if src.startswith("/*", body_start):
            close = src.find("*/", body_start + 2)
            if close < 0:
                raise TemplateError("unclosed comment", i)
            j = close + 2
            if src.startswith(" -}}", j):
                trim_next, pos = True, j + 4
            elif src.startswith("}}", j):
                trim_next, pos = False, j + 2
            else:
                raise TemplateError("comment ends before closing delimiter", j)
            continue
        # find the closing delimiter outside string literals
        j = body_start
        in_str = ""
        while j < len(src):
            c = src[j]
            if in_str:
                if c == "\\" and in_str == '"':
                    j += 2
                    continue
                if c == in_str:
                    in_str = ""
            elif c in "\"`":
                in_str = c
            elif src.startswith("}}", j):
                break
            j += 1
        else:
            raise TemplateError("unclosed action", i)
        body_end = j
        trim_next = body_end - 2 >= body_start and src[body_end - 2:body_end] in (" -", "\t-", "\n-")
        if trim_next:
            body_end -= 2
        out.append(("action", _lex_action(src, body_start, body_end), i))
        pos = j + 2


# ---- parser -----------------------------------------------------------------------------------

_ROOT_VARS = {"$"}


class _Parser:
    def __init__(self, src: str, variables: set[str]) -> None:
        self.src = src
        self.segments = _split(src)
        self.i = 0
        self.scopes: list[set[str]] = [set(variables) | _ROOT_VARS]

    # variables
    def _declared(self, name: str) -> bool:
        return any(name in s for s in self.scopes)

    def parse(self) -> list[_Node]:
        body, end = self._list(top=True)
        return body

    def _list(self, top: bool = False) -> tuple[list[_Node], tuple[str, list[_Tok], int] | None]:
        """Nodes up to a closing `end`/`else` (returned as the terminator) or end of input."""
        nodes: list[_Node] = []
        while self.i < len(self.segments):
            kind, val, off = self.segments[self.i]
            self.i += 1
            if kind == "text":
                nodes.append(_Text(off, val))
                continue
            toks: list[_Tok] = val
            if not toks:
                raise TemplateError("missing value for command", off)
            head = toks[0]
            if head.kind == "ident" and head.text in ("end", "else"):
                if top:
                    raise TemplateError(f"unexpected {{{{{head.text}}}}}", off)
                return nodes, (head.text, toks, off)
            if head.kind == "ident" and head.text == "if":
                nodes.append(self._if(toks[1:], off))
            elif head.kind == "ident" and head.text == "range":
                nodes.append(self._range(toks[1:], off))
            elif head.kind == "ident" and head.text in ("with", "define", "template", "block", "break", "continue"):
                raise TemplateError(f"{{{{{head.text}}}}} is not supported in rule templates", off)
            else:
                nodes.append(_Action(off, self._pipeline(toks, off, allow_decl=True)))
        if not top:
            raise TemplateError("unexpected EOF (missing {{end}})", len(self.src))
        return nodes, None

    def _if(self, toks: list[_Tok], off: int) -> _If:
        branches: list[tuple[_Pipeline, list[_Node]]] = []
        cond_toks, cond_off = toks, off
        while True:
            cond = self._pipeline(cond_toks, cond_off, allow_decl=True)
            self.scopes.append(set())
            body, term = self._list()
            self.scopes.pop()
            branches.append((cond, body))
            assert term is not None
            word, ttoks, toff = term
            if word == "end":
                if len(ttoks) > 1:
                    raise TemplateError("unexpected token after end", ttoks[1].offset)
                return _If(off, branches, None)
            # else / else if
            if len(ttoks) > 1 and ttoks[1].kind == "ident" and ttoks[1].text == "if":
                cond_toks, cond_off = ttoks[2:], toff
                continue
            if len(ttoks) > 1:
                raise TemplateError("unexpected token after else", ttoks[1].offset)
            self.scopes.append(set())
            else_body, term2 = self._list()
            self.scopes.pop()
            assert term2 is not None
            if term2[0] != "end":
                raise TemplateError("expected {{end}} after {{else}}", term2[2])
            return _If(off, branches, else_body)

    def _range(self, toks: list[_Tok], off: int) -> _Range:
        self.scopes.append(set())
        pipe = self._pipeline(toks, off, allow_decl=True, range_decl=True)
        body, term = self._list()
        assert term is not None
        self.scopes.pop()
        else_body = None
        if term[0] == "else":
            self.scopes.append(set())
            else_body, term2 = self._list()
            self.scopes.pop()
            assert term2 is not None
            if term2[0] != "end":
                raise TemplateError("expected {{end}} after {{else}}", term2[2])
        return _Range(off, pipe, body, else_body)

    def _pipeline(self, toks: list[_Tok], off: int, allow_decl: bool = False, range_decl: bool = False) -> _Pipeline:
        if not toks:
            raise TemplateError("missing value for command", off)
        decl: list[str] = []
        assign = False
        # `$x :=`, `$k, $v :=` (range), `$x =`
        if allow_decl and toks[0].kind == "var":
            if len(toks) > 1 and toks[1].kind in ("declare", "assign"):
                decl, assign = [toks[0].text], toks[1].kind == "assign"
                toks = toks[2:]
            elif (range_decl and len(toks) > 3 and toks[1].text == "," and toks[2].kind == "var"
                  and toks[3].kind == "declare"):
                decl = [toks[0].text, toks[2].text]
                toks = toks[4:]
            if assign and not self._declared(decl[0]):
                raise TemplateError(f"undefined variable: {decl[0]}", off)
            if decl and not toks:
                raise TemplateError("missing value for command", off)
        cmds: list[_Command] = []
        cur: list[_Tok] = []
        depth = 0
        for t in toks:
            if t.kind == "punct" and t.text == "|" and depth == 0:
                cmds.append(self._command(cur, off))
                cur = []
                continue
            if t.text == "(":
                depth += 1
            elif t.text == ")":
                depth -= 1
            cur.append(t)
        cmds.append(self._command(cur, off))
        for k, c in enumerate(cmds):
            self._check_arity(c, piped=k > 0)
        if decl and not assign:
            self.scopes[-1].update(decl)
        return _Pipeline(off, decl, cmds, assign)

    def _check_arity(self, c: _Command, piped: bool) -> None:
        first = c.args[0]
        n = len(c.args) - 1 + (1 if piped else 0)
        if isinstance(first, _Ident):
            if first.name in _LOGIC:
                if n < 1:
                    raise TemplateError(f"wrong number of args for {first.name}: want at least 1 got {n}", first.offset)
                return
            f = FUNCTIONS[first.name]
            if n < f.min_args or (f.max_args is not None and n > f.max_args):
                want = f"{f.min_args}" if f.max_args == f.min_args else f"at least {f.min_args}"
                raise TemplateError(f"wrong number of args for {first.name}: want {want} got {n}", first.offset)
        else:
            if len(c.args) > 1:
                raise TemplateError("can't give argument to non-function", c.args[1].offset)
            if piped:
                raise TemplateError("non-function in a pipeline stage cannot take the piped value", first.offset)

    def _command(self, toks: list[_Tok], off: int) -> _Command:
        if not toks:
            raise TemplateError("missing value for command", off)
        args: list[_Node] = []
        i = 0
        while i < len(toks):
            node, i = self._operand(toks, i)
            args.append(node)
        return _Command(toks[0].offset, args)

    def _fields(self, toks: list[_Tok], i: int) -> tuple[list[str], int]:
        out = []
        while i < len(toks) and toks[i].kind == "field" and toks[i].offset == toks[i - 1].offset + len(toks[i - 1].text):
            out.append(toks[i].text[1:])
            i += 1
        return out, i

    def _operand(self, toks: list[_Tok], i: int) -> tuple[_Node, int]:
        t = toks[i]
        if t.kind == "var":
            if not self._declared(t.text):
                raise TemplateError(f"undefined variable: {t.text}", t.offset)
            fields, j = self._fields(toks, i + 1)
            return _Var(t.offset, t.text, fields), j
        if t.kind == "field":
            fields, j = self._fields(toks, i + 1)
            return _Dot(t.offset, [t.text[1:]] + fields), j
        if t.kind == "dot":
            return _Dot(t.offset, []), i + 1
        if t.kind == "str":
            try:
                value = bytes(t.text[1:-1], "utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")
            except (UnicodeDecodeError, UnicodeEncodeError):
                value = t.text[1:-1]
            return _Lit(t.offset, value), i + 1
        if t.kind == "raw":
            return _Lit(t.offset, t.text[1:-1]), i + 1
        if t.kind == "num":
            txt = t.text
            try:
                value: Any = int(txt, 0) if re.fullmatch(r"[-+]?(0[xX][0-9a-fA-F]+|\d+)", txt) else float(txt)
            except ValueError:
                raise TemplateError(f"bad number syntax: {txt!r}", t.offset) from None
            return _Lit(t.offset, value), i + 1
        if t.kind == "ident":
            if t.text in ("true", "false"):
                return _Lit(t.offset, t.text == "true"), i + 1
            if t.text == "nil":
                raise TemplateError("nil is not a command", t.offset)
            if t.text not in FUNCTIONS and t.text not in _LOGIC:
                raise TemplateError(f'function "{t.text}" not defined', t.offset)
            return _Ident(t.offset, t.text), i + 1
        if t.kind == "punct" and t.text == "(":
            depth, j = 1, i + 1
            while j < len(toks) and depth:
                if toks[j].text == "(":
                    depth += 1
                elif toks[j].text == ")":
                    depth -= 1
                j += 1
            if depth:
                raise TemplateError("unclosed left paren", t.offset)
            pipe = self._pipeline(toks[i + 1:j - 1], t.offset)
            fields, k = self._fields(toks, j)
            return _Sub(t.offset, pipe, fields), k
        raise TemplateError(f"unexpected {t.text!r} in operand", t.offset)


# ---- evaluation -------------------------------------------------------------------------------


def _field(v: Any, name: str) -> Any:
    if isinstance(v, dict):
        if name in v:
            return v[name]
        # A missing label is the empty string, as with Prometheus's map[string]string.
        if getattr(v, "strict", False):
            raise TemplateRuntimeError(f"can't evaluate field {name}")
        return ""
    if v is None:
        raise TemplateRuntimeError(f"nil pointer evaluating .{name}")
    if hasattr(v, name):
        return getattr(v, name)
    raise TemplateRuntimeError(f"can't evaluate field {name} in type {_go_type(v)}")


class StrictFields(dict):
    """A mapping whose missing keys are errors (for `$forecast`, `$anomaly`, the dot)."""

    strict = True


class _Exec:
    def __init__(self, dot: Any, variables: dict[str, Any]) -> None:
        self.dot = dot
        self.vars = [dict(variables, **{"$": dot})]

    def lookup(self, name: str) -> Any:
        for scope in reversed(self.vars):
            if name in scope:
                return scope[name]
        raise TemplateRuntimeError(f"undefined variable: {name}")

    def run(self, nodes: list[_Node], out: list[str]) -> None:
        for n in nodes:
            if isinstance(n, _Text):
                out.append(n.text)
            elif isinstance(n, _Action):
                v = self.pipeline(n.pipe)
                if not n.pipe.decl:
                    out.append(go_str(v))
            elif isinstance(n, _If):
                for cond, body in n.branches:
                    self.vars.append({})
                    try:
                        if _truth(self.pipeline(cond)):
                            self.run(body, out)
                            break
                    finally:
                        self.vars.pop()
                else:
                    if n.else_body is not None:
                        self.vars.append({})
                        self.run(n.else_body, out)
                        self.vars.pop()
            elif isinstance(n, _Range):
                self._range(n, out)

    def _range(self, n: _Range, out: list[str]) -> None:
        self.vars.append({})
        try:
            decl = n.pipe.decl
            coll = self.pipeline(_Pipeline(n.pipe.offset, [], n.pipe.cmds))
            if isinstance(coll, dict):
                items = [(k, coll[k]) for k in sorted(coll)]
            elif isinstance(coll, (list, tuple)):
                items = list(enumerate(coll))
            elif isinstance(coll, int) and not isinstance(coll, bool):
                items = [(i, i) for i in range(coll)]
            elif coll is None:
                items = []
            else:
                raise TemplateRuntimeError(f"range can't iterate over {go_str(coll)}")
            if not items:
                if n.else_body is not None:
                    self.run(n.else_body, out)
                return
            saved = self.dot
            for k, v in items:
                self.dot = v
                if len(decl) == 1:
                    self.vars[-1][decl[0]] = v
                elif len(decl) == 2:
                    self.vars[-1][decl[0]], self.vars[-1][decl[1]] = k, v
                self.run(n.body, out)
            self.dot = saved
        finally:
            self.vars.pop()

    def pipeline(self, p: _Pipeline) -> Any:
        value: Any = _NOTHING
        for c in p.cmds:
            value = self.command(c, value)
        if p.decl:
            if p.assign:
                for scope in reversed(self.vars):
                    if p.decl[0] in scope:
                        scope[p.decl[0]] = value
                        break
            else:
                self.vars[-1][p.decl[0]] = value
        return value

    def command(self, c: _Command, piped: Any) -> Any:
        first = c.args[0]
        if isinstance(first, _Ident):
            if first.name in _LOGIC:
                return self._logic(first.name, c.args[1:], piped)
            args = [self.operand(a) for a in c.args[1:]]
            if piped is not _NOTHING:
                args.append(piped)
            try:
                return FUNCTIONS[first.name].fn(*args)
            except TemplateRuntimeError as e:
                raise TemplateRuntimeError(f"error calling {first.name}: {e}") from None
            except (TypeError, ValueError, re.error) as e:
                raise TemplateRuntimeError(f"error calling {first.name}: {e}") from None
        return self.operand(first)

    def _logic(self, name: str, arg_nodes: list[_Node], piped: Any) -> Any:
        thunks: list[Callable[[], Any]] = [lambda a=a: self.operand(a) for a in arg_nodes]
        if piped is not _NOTHING:
            thunks.append(lambda: piped)
        v: Any = None
        for th in thunks:
            v = th()
            if name == "and" and not _truth(v):
                return v
            if name == "or" and _truth(v):
                return v
        return v

    def operand(self, n: _Node) -> Any:
        if isinstance(n, _Lit):
            return n.value
        if isinstance(n, _Var):
            v = self.lookup(n.name)
            for f in n.fields:
                v = _field(v, f)
            return v
        if isinstance(n, _Dot):
            v = self.dot
            for f in n.fields:
                v = _field(v, f)
            return v
        if isinstance(n, _Sub):
            v = self.pipeline(n.pipe)
            for f in n.fields:
                v = _field(v, f)
            return v
        if isinstance(n, _Ident):
            f = FUNCTIONS[n.name]
            if f.min_args:
                raise TemplateRuntimeError(f"wrong number of args for {n.name}: want {f.min_args} got 0")
            return f.fn()
        raise TemplateRuntimeError(f"cannot evaluate {n!r}")


class _Nothing:
    pass


_NOTHING: Any = _Nothing()

# ---- public API -------------------------------------------------------------------------------

# Variables every rule template can use; `$forecast` and `$anomaly` only in rules with that detector.
BASE_VARIABLES = frozenset({"$labels", "$externalLabels", "$externalURL", "$value"})


@dataclass
class Template:
    """A parsed template. Render with `render(...)`; parse errors are raised by `parse_template`."""

    source: str
    nodes: list[_Node]
    is_static: bool  # no actions at all: render is the text itself

    def render(self, dot: Any, variables: dict[str, Any]) -> str:
        if self.is_static:
            return self.source
        out: list[str] = []
        _Exec(dot, variables).run(self.nodes, out)
        return "".join(out)


def parse_template(text: str, variables: frozenset[str] | set[str] = BASE_VARIABLES) -> Template:
    """Parse `text`; raises TemplateError(message, offset). `variables` are the names usable."""
    nodes = _Parser(text, set(variables)).parse()
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


def expand(tmpl: Template, data: TemplateData) -> str:
    """Render like Prometheus: a runtime failure becomes `<error expanding template: ...>`."""
    if tmpl.is_static:
        return tmpl.source
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
        return tmpl.render(dot, variables)
    except TemplateRuntimeError as e:
        return f"<error expanding template: {e}>"
    except RecursionError:
        return "<error expanding template: too deeply nested>"
