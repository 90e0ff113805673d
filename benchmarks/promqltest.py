"""Pass rate of the agent's PromQL engine on Prometheus's own PromQL test files.

Prometheus's `promql/testdata/*.test` (the `promqltest` language: `load`, `clear`, `eval`,
`eval_fail`, `eval_ordered`) are data: this script reads them from a directory given on the
command line, runs every `eval` against `agent.promql.Engine` over a fresh store, and prints
the pass rate per file and in total. The files are not part of this repository; take them from
a Prometheus source tree of the version you want to compare with (e.g. Debian's source package
of `prometheus`).

Comparison follows promqltest: values equal within 1e-6 relative (NaN equals NaN), label sets
exact, result sizes equal, order checked for `eval_ordered`, any error for `eval_fail`. Only
instant evaluations are run (`eval range` blocks of newer files are counted as skipped).

Files written for Prometheus 2.x evaluate at sample timestamps, where 2.x's closed windows
[t - range, t] differ from 3.x's left-open (t - range, t] (the engine follows 3.x).
`--closed-windows` emulates 2.x's windows for a second figure: every range, subquery range and
the lookback delta grows by 1 ms, so a sample exactly on the lower bound is taken again.
Failures left then are other differences (or bugs).

Usage: python benchmarks/promqltest.py DIR [--show-failures N] [--closed-windows]
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import promql_parser as pp

from agent.promql import Engine, Matrix, PromQLError, Scalar, String, Vector
from agent.promql.notation import expand_values, parse_metric
from agent.store import Labels, Store

EPSILON = 1e-6
MIN_NORMAL = 2.2250738585072014e-308

_EVAL = re.compile(r"^eval(?P<kind>_fail|_ordered|_warn|_info)?\s+instant\s+at\s+(?P<at>\S+)\s+(?P<expr>.+)$")
_RANGE = re.compile(r"\[([0-9][0-9a-z]*)(?=[:\]])")
_EVAL_RANGE = re.compile(r"^eval(_fail|_ordered|_warn|_info)?\s+range\b")


def almost_equal(a: float, b: float) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    diff = abs(a - b)
    if a == 0 or b == 0 or diff < MIN_NORMAL:
        return diff < EPSILON * MIN_NORMAL
    return diff / (abs(a) + abs(b)) < EPSILON


def seconds(text: str) -> float:
    if re.fullmatch(r"0+[a-z]*", text):
        return 0.0
    try:
        return float(pp.parse_duration(text).total_seconds())
    except ValueError:
        return float(text)


@dataclass
class Case:
    file: str
    line: int
    kind: str  # "", "_fail", "_ordered"
    at: float
    expr: str
    expected: list[tuple[Labels | None, float]] = field(default_factory=list)  # None: a scalar


@dataclass
class Load:
    interval: float
    series: list[tuple[Labels, list[float | None]]]


def parse_file(path: str) -> tuple[list[object], int]:
    """Commands in order (Load, Case, "clear") and the number of skipped range evals."""
    with open(path) as f:
        lines = f.read().split("\n")
    out: list[object] = []
    skipped = 0
    i = 0
    while i < len(lines):
        raw = lines[i]
        line = raw.strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line == "clear":
            out.append("clear")
            continue
        if line.startswith("load"):
            interval = seconds(line.split()[1])
            series = []
            while i < len(lines) and lines[i].strip() and not lines[i].lstrip().startswith("#") and lines[i][:1] in " \t":
                body = lines[i].strip()
                i += 1
                metric, _, values = _split_series(body)
                series.append((parse_metric(metric), expand_values(values)))
            out.append(Load(interval, series))
            continue
        if _EVAL_RANGE.match(line):
            skipped += 1
            while i < len(lines) and lines[i][:1] in " \t" and lines[i].strip():
                i += 1
            continue
        m = _EVAL.match(line)
        if m:
            case = Case(path, i, m.group("kind") or "", seconds(m.group("at")), m.group("expr"))
            while i < len(lines) and lines[i].strip() and lines[i][:1] in " \t":
                body = lines[i].strip()
                i += 1
                if body.startswith("#"):
                    continue
                if body.startswith(("expect ", "error", "warn", "info")):
                    continue  # newer files' annotations of expected errors/warnings
                metric, _, value = _split_series(body)
                if not metric:
                    case.expected.append((None, _num(value)))
                else:
                    case.expected.append((parse_metric(metric), _num(value)))
            out.append(case)
            continue
        # Anything else (e.g. newer commands): skip its block.
        skipped += 1
        while i < len(lines) and lines[i][:1] in " \t" and lines[i].strip():
            i += 1
    return out, skipped


def _num(text: str) -> float:
    t = text.strip()
    low = t.lower().lstrip("+")
    if low in ("inf", "-inf", "nan"):
        return float(low)
    return float(t)


def _split_series(body: str) -> tuple[str, str, str]:
    """`metric{labels} values` -> (metric, ' ', values); a bare value -> ('', '', value)."""
    depth = 0
    quote = False
    for j, ch in enumerate(body):
        if quote:
            if ch == "\\":
                continue
            if ch == '"':
                quote = False
        elif ch == '"':
            quote = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch in " \t" and depth == 0:
            return body[:j], " ", body[j:].strip()
    if re.fullmatch(r"[-+]?(\d|\.|[eE]|Inf|inf|NaN|nan)+", body):
        return "", "", body
    return body, "", ""


def build_store(loads: list[Load]) -> Store:
    longest = max((len(v) for ld in loads for _, v in ld.series), default=1)
    store = Store(raw_capacity=longest + 2, max_series=100_000, retention=10 * 365 * 86400.0,
                  downsample_interval=86400.0)
    for ld in loads:
        # A series given twice in one block: the later line wins, as in promqltest.
        for labels, values in dict(ld.series).items():
            sid = store.series_id(labels)
            ts = [j * ld.interval for j, v in enumerate(values) if v is not None]
            vs = [v for v in values if v is not None]
            if ts:
                store.extend(sid, np.array(ts), np.array(vs))
    return store


def widen_ranges(expr: str) -> str:
    """Every `[5m]` / `[5m:1m]` range 1 ms longer (`[300001ms]`, `[300001ms:1m]`)."""
    return _RANGE.sub(lambda m: f"[{round(seconds(m.group(1)) * 1000) + 1}ms", expr)


CLOSED_WINDOWS = False


def check(case: Case, engine: Engine) -> str | None:
    """None when the case passes, else why not."""
    try:
        r = engine.instant(widen_ranges(case.expr) if CLOSED_WINDOWS else case.expr, case.at)
    except PromQLError as e:
        return None if case.kind == "_fail" else f"error: {e}"
    except Exception as e:  # a crash is a failure to report, not a reason to stop
        return f"crash: {type(e).__name__}: {e}"
    if case.kind == "_fail":
        return "expected an error"
    if isinstance(r, Matrix):
        return "range result on instant evaluation"
    if isinstance(r, String):
        return "string result"
    if isinstance(r, Scalar):
        if len(case.expected) != 1 or case.expected[0][0] is not None:
            return f"got scalar {r.value}, expected {case.expected}"
        return None if almost_equal(case.expected[0][1], r.value) else f"scalar {r.value} != {case.expected[0][1]}"
    assert isinstance(r, Vector)
    got = list(zip(r.labels, r.values.tolist()))
    want = [(lab if lab is not None else (), v) for lab, v in case.expected]
    if len(got) != len(want):
        return f"{len(got)} samples, expected {len(want)}: got {got[:4]}"
    wmap = dict(want)
    for pos, (lab, v) in enumerate(got):
        if lab not in wmap:
            return f"unexpected {dict(lab)} {v}"
        if not almost_equal(wmap[lab], v):
            return f"{dict(lab)}: {v} != {wmap[lab]}"
        if case.kind == "_ordered" and want[pos][0] != lab:
            return f"order: {dict(lab)} at {pos}, expected {dict(want[pos][0])}"
    return None


def run_file(path: str) -> tuple[int, int, int, list[str]]:
    commands, skipped = parse_file(path)
    loads: list[Load] = []
    engine: Engine | None = None
    passed = total = 0
    failures: list[str] = []
    for c in commands:
        if c == "clear":
            loads, engine = [], None
        elif isinstance(c, Load):
            loads.append(c)
            engine = None
        elif isinstance(c, Case):
            if engine is None:
                engine = Engine(build_store(loads), lookback_delta=300.001 if CLOSED_WINDOWS else 300.0)
            total += 1
            why = check(c, engine)
            if why is None:
                passed += 1
            else:
                failures.append(f"{os.path.basename(c.file)}:{c.line}: {c.expr}  -> {why}")
    return passed, total, skipped, failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="directory holding Prometheus's *.test files")
    ap.add_argument("--show-failures", type=int, default=0, help="print up to N failures per file")
    ap.add_argument("--closed-windows", action="store_true", help="emulate Prometheus 2.x's closed windows")
    args = ap.parse_args()
    global CLOSED_WINDOWS
    CLOSED_WINDOWS = args.closed_windows
    files = sorted(glob.glob(os.path.join(args.dir, "*.test")))
    if not files:
        print(f"no *.test files in {args.dir}", file=sys.stderr)
        return 2
    all_passed = all_total = all_skipped = 0
    for path in files:
        try:
            passed, total, skipped, failures = run_file(path)
        except (ValueError, PromQLError) as e:
            print(f"{os.path.basename(path):28s} unreadable: {e}")
            continue
        all_passed += passed
        all_total += total
        all_skipped += skipped
        rate = 100.0 * passed / total if total else 100.0
        note = f"  ({skipped} skipped)" if skipped else ""
        print(f"{os.path.basename(path):28s} {passed:4d}/{total:<4d} {rate:5.1f}%{note}")
        for f in failures[: args.show_failures]:
            print("   FAIL", f)
    rate = 100.0 * all_passed / all_total if all_total else 0.0
    print(f"{'total':28s} {all_passed:4d}/{all_total:<4d} {rate:5.1f}%" + (f"  ({all_skipped} skipped)" if all_skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
