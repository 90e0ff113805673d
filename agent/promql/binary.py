"""Binary operators: arithmetic, comparisons (filtering or `bool`), set operators, and vector
matching with on/ignoring/group_left/group_right, following Prometheus's engine.go."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import promql_parser as pp

from agent.store import Labels

from .parse import EvaluationError
from .values import NAME, Scalar, Vector, all_distinct, drop_name, labels_str

ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "^", "atan2"})
COMPARISON = frozenset({"==", "!=", ">", "<", ">=", "<="})
SET = frozenset({"and", "or", "unless"})


def arith(op: str, a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    with np.errstate(all="ignore"):
        if op == "+":
            return np.add(a, b)
        if op == "-":
            return np.subtract(a, b)
        if op == "*":
            return np.multiply(a, b)
        if op == "/":
            return np.true_divide(a, b)
        if op == "%":
            return np.fmod(a, b)  # Go's math.Mod: the sign of the dividend
        if op == "^":
            return np.power(np.asarray(a, dtype=np.float64), b)
        if op == "atan2":
            return np.arctan2(a, b)
    raise EvaluationError(f"operator {op} is not supported")


def compare(op: str, a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    with np.errstate(all="ignore"):
        return {
            "==": np.equal, "!=": np.not_equal, ">": np.greater,
            "<": np.less, ">=": np.greater_equal, "<=": np.less_equal,
        }[op](a, b)


def scalar_scalar(op: str, a: float, b: float) -> Scalar:
    if op in COMPARISON:
        return Scalar(float(bool(compare(op, a, b))))
    return Scalar(float(arith(op, a, b)))


def vector_scalar(op: str, vec: Vector, scalar: float, scalar_on_left: bool, return_bool: bool) -> Vector:
    v = vec.values
    if op in ARITHMETIC:
        values = arith(op, scalar, v) if scalar_on_left else arith(op, v, scalar)
        return Vector([drop_name(l) for l in vec.labels] if vec.named else vec.labels, values,
                      named=False).with_ids_of(vec)
    keep = compare(op, scalar, v) if scalar_on_left else compare(op, v, scalar)
    if return_bool:
        return Vector([drop_name(l) for l in vec.labels] if vec.named else vec.labels, keep.astype(np.float64),
                      named=False).with_ids_of(vec)
    idx = np.nonzero(keep)[0]
    return Vector([vec.labels[i] for i in idx], v[idx], named=vec.named).with_ids_of(vec, idx)


def _signature_fn(matching: pp.LabelModifier | None) -> Callable[[Labels], Labels]:
    if matching is not None and matching.type == pp.LabelModifierType.Include:
        names = frozenset(matching.labels)
        return lambda lab: tuple(p for p in lab if p[0] in names)
    names = frozenset(matching.labels if matching is not None else ()) | {NAME}
    return lambda lab: tuple(p for p in lab if p[0] not in names)


def set_operation(op: str, lhs: Vector, rhs: Vector, matching: pp.LabelModifier | None) -> Vector:
    sig = _signature_fn(matching)
    if op == "and":
        if len(lhs) == 0 or len(rhs) == 0:
            return Vector.empty()
        right = {sig(l) for l in rhs.labels}
        idx = [i for i, l in enumerate(lhs.labels) if sig(l) in right]
        return Vector([lhs.labels[i] for i in idx], lhs.values[idx])
    if op == "unless":
        right = {sig(l) for l in rhs.labels}
        idx = [i for i, l in enumerate(lhs.labels) if sig(l) not in right]
        return Vector([lhs.labels[i] for i in idx], lhs.values[idx])
    left = {sig(l) for l in lhs.labels}
    ridx = [i for i, l in enumerate(rhs.labels) if sig(l) not in left]
    return Vector(lhs.labels + [rhs.labels[i] for i in ridx], np.concatenate((lhs.values, rhs.values[ridx])))


def vector_vector(op: str, lhs: Vector, rhs: Vector, modifier: pp.BinModifier | None) -> Vector:
    card = modifier.card if modifier is not None else pp.VectorMatchCardinality.OneToOne
    matching = modifier.matching if modifier is not None else None
    return_bool = bool(modifier.return_bool) if modifier is not None else False
    include = list(modifier.group_labels or []) if modifier is not None else []
    if op in SET:
        return set_operation(op, lhs, rhs, matching)
    if len(lhs) == 0 or len(rhs) == 0:
        return Vector.empty()
    one_to_many = card == pp.VectorMatchCardinality.OneToMany
    one_to_one = card == pp.VectorMatchCardinality.OneToOne
    many, one = (rhs, lhs) if one_to_many else (lhs, rhs)
    many.resolve_ids()
    one.resolve_ids()
    by_ids = (matching is None and many.match_ids is not None and one.match_ids is not None
              and many.match_epoch == one.match_epoch)
    if by_ids:
        # Default matching compares label sets without __name__: their interned ids.
        assert many.match_ids is not None and one.match_ids is not None
        if len(one.match_ids) != len(one) or not all_distinct(one.match_ids):
            _raise_duplicate(one, _signatures(one, matching), matching, "left" if one_to_many else "right")
        order = np.argsort(one.match_ids, kind="stable")
        srt = one.match_ids[order]
        pos = np.searchsorted(srt, many.match_ids).clip(max=srt.size - 1)
        oi_all = np.where(srt[pos] == many.match_ids, order[pos], -1)
        many_sigs = many.labels if not many.named else _signatures(many, matching)
    else:
        many_sigs = _signatures(many, matching)
        one_sigs = _signatures(one, matching)
        one_by_sig = dict(zip(one_sigs, range(len(one_sigs))))
        if len(one_by_sig) != len(one_sigs):
            _raise_duplicate(one, one_sigs, matching, "left" if one_to_many else "right")
        get = one_by_sig.get
        oi_all = np.fromiter((get(s, -1) for s in many_sigs), dtype=np.int64, count=len(many_sigs))
    mi = np.nonzero(oi_all >= 0)[0]
    if mi.size == 0:
        return Vector.empty()
    oi = oi_all[mi]
    mv, ov = many.values[mi], one.values[oi]
    left, right = (ov, mv) if one_to_many else (mv, ov)
    if op in ARITHMETIC:
        values = arith(op, left, right)
        keep = None
    else:
        cmp = compare(op, left, right)
        if return_bool:
            values, keep = cmp.astype(np.float64), None
        else:
            values, keep = left, cmp
    if keep is not None:
        sel = np.nonzero(keep)[0]
        mi, oi, values = mi[sel], oi[sel], values[sel]
    drop = op in ARITHMETIC or return_bool
    on_labels = matching is not None and matching.type == pp.LabelModifierType.Include
    name_on = on_labels and matching is not None and NAME in matching.labels
    if one_to_one and (drop or on_labels) and not include and not (drop and name_on):
        # The result's labels are the match signature: one tuple per output, no rebuilding.
        out = many_sigs if mi.size == len(many_sigs) else [many_sigs[i] for i in mi.tolist()]
        if by_ids:
            assert many.match_ids is not None
            unique = all_distinct(many.match_ids[mi])
        else:
            unique = len(set(out)) == len(out)
        if not unique:
            raise EvaluationError(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)")
        result = Vector(out, values, named=False)
        return result.with_ids_of(many, mi) if by_ids else result
    out_labels: list[Labels] = []
    matched: dict[Labels, set[Labels] | None] = {}
    for i, j in zip(mi.tolist(), oi.tolist()):
        lab = _result_labels(many.labels[i], one.labels[j], drop, one_to_one, matching, include)
        s = many_sigs[i]
        if one_to_one:
            if s in matched:
                raise EvaluationError(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)")
            matched[s] = None
        else:
            inserted = matched.setdefault(s, set())
            assert inserted is not None
            if lab in inserted:
                raise EvaluationError("multiple matches for labels: grouping labels must ensure unique matches")
            inserted.add(lab)
        out_labels.append(lab)
    return Vector(out_labels, values)


def _signatures(vec: Vector, matching: pp.LabelModifier | None) -> list[Labels]:
    if matching is None and not vec.named:
        return vec.labels  # nothing to ignore but the (absent) metric name
    sig = _signature_fn(matching)
    return [sig(l) for l in vec.labels]


def _raise_duplicate(one: Vector, sigs: list[Labels], matching: pp.LabelModifier | None, side: str) -> None:
    seen: dict[Labels, int] = {}
    for j, s in enumerate(sigs):
        prev = seen.get(s)
        if prev is not None:
            lab = one.labels[j]
            raise EvaluationError(
                f"found duplicate series for the match group {labels_str(_match_labels(lab, matching))} on the "
                f"{side} hand-side of the operation: [{labels_str(lab)}, {labels_str(one.labels[prev])}];"
                "many-to-many matching not allowed: matching labels must be unique on one side")
        seen[s] = j


def _match_labels(lab: Labels, matching: pp.LabelModifier | None) -> Labels:
    return _signature_fn(matching)(lab)


def _result_labels(many: Labels, one: Labels, drop: bool, one_to_one: bool,
                   matching: pp.LabelModifier | None, include: list[str]) -> Labels:
    d = dict(many)
    if drop:
        d.pop(NAME, None)
    if one_to_one:
        names = matching.labels if matching is not None else []
        if matching is not None and matching.type == pp.LabelModifierType.Include:
            keep = set(names)
            d = {k: v for k, v in d.items() if k in keep}
        else:
            for k in names:
                d.pop(k, None)
    if include:
        od = dict(one)
        for k in include:
            v = od.get(k, "")
            if v:
                d[k] = v
            else:
                d.pop(k, None)
    return tuple(sorted(d.items()))
