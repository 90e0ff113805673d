"""`forewarn detect`: score one series from a CSV file, causally, with the daemon's detector.

Input: a CSV with a header containing ``timestamp`` and ``value`` (other columns are
carried through). Timestamps may be ``2014-04-01 00:00:00`` (UTC), RFC 3339
(``2014-04-01T00:00:00Z``, offsets allowed) or Unix seconds. Empty or ``NaN`` values are
gaps: they score 0 and teach the model nothing. Output: the input's columns plus
``anomaly_score`` in [0, 1]; the score of row i depends only on rows 0..i.
Like every command, nothing imports it.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys

import numpy as np

from agent.clock import parse_time
from agent.models.anomaly import DEFAULT_PARAMS, AnomalyParams, score_series

_NAIVE_ISO = re.compile(r"\s*\d{4}-\d\d-\d\d([ T]\d\d:\d\d(:\d\d(\.\d+)?)?)?\s*$")

MODELS: dict[str, AnomalyParams] = {"default": DEFAULT_PARAMS}


class InputError(Exception):
    """A problem in the input file, located as PATH:LINE: message."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")


def parse_timestamps(texts: list[str], path: str = "<input>", first_line: int = 2) -> np.ndarray:
    """Unix seconds for each timestamp text (naive times are UTC). Fast path for a
    column of plain ISO-8601 times; raises InputError naming the first bad line."""
    if all(_NAIVE_ISO.match(x) for x in texts):
        try:
            arr = np.array([x.strip() for x in texts], dtype="datetime64[us]")
            return (arr - np.datetime64(0, "us")).astype(np.int64) / 1e6
        except ValueError:
            pass  # e.g. month 13: located below
    out = np.empty(len(texts))
    for i, text in enumerate(texts):
        try:
            out[i] = parse_time(text)
        except ValueError:
            raise InputError(path, first_line + i,
                             f"bad timestamp {text!r} (want e.g. 2014-04-01 00:00:00, RFC 3339 or Unix seconds)") from None
    return out


def read_series(path: str) -> tuple[list[str], list[list[str]], np.ndarray, np.ndarray]:
    """Header, rows, timestamps (Unix seconds) and values of a detect input file."""
    try:
        fh = open(path, newline="")
    except OSError as e:
        raise InputError(path, 0, f"cannot read: {e.strerror}") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(path, 1, "empty file (want a header with timestamp,value)") from None
        except csv.Error as e:
            raise InputError(path, reader.line_num, f"bad CSV: {e}") from None
        names = [h.strip() for h in header]
        for need in ("timestamp", "value"):
            if need not in names:
                raise InputError(path, 1, f"header has no {need!r} column (got {','.join(names)})")
        ti, vi = names.index("timestamp"), names.index("value")
        rows: list[list[str]] = []
        values: list[float] = []
        lines: list[int] = []
        try:
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(names):
                    raise InputError(path, line, f"expected {len(names)} fields, got {len(row)}")
                text = row[vi].strip()
                if text == "" or text.lower() == "nan":
                    values.append(math.nan)
                else:
                    try:
                        values.append(float(text))
                    except ValueError:
                        raise InputError(path, line, f"bad value {text!r} (want a number)") from None
                rows.append(row)
                lines.append(line)
        except csv.Error as e:
            raise InputError(path, reader.line_num, f"bad CSV: {e}") from None
    t = parse_timestamps([r[ti] for r in rows], path)
    if len(t) and not np.isfinite(t).all():
        i = int(np.nonzero(~np.isfinite(t))[0][0])
        raise InputError(path, lines[i], f"bad timestamp {rows[i][ti]!r}")
    return header, rows, t, np.array(values, dtype=float)


def command(args: argparse.Namespace) -> int:
    params = MODELS.get(args.model)
    if params is None:
        print(f"forewarn detect: unknown model {args.model!r} (known: {', '.join(sorted(MODELS))})", file=sys.stderr)
        return 2
    try:
        header, rows, t, values = read_series(args.input)
    except InputError as e:
        print(str(e), file=sys.stderr)
        return 1
    scores = score_series(t, values, params).score
    try:
        with open(args.output, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(header + ["anomaly_score"])
            for row, s in zip(rows, scores.tolist()):
                w.writerow(row + [repr(s)])
    except OSError as e:
        print(f"{args.output}: cannot write: {e.strerror}", file=sys.stderr)
        return 1
    return 0
