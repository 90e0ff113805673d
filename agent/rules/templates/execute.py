"""Execution: a walk over the node tree with the dot, variables in scopes and the function
library; a failure raises TemplateRuntimeError, which `expand` turns into Prometheus's text.

Templates come from rule files but run on scraped data, so a rendering is bounded: at most
MAX_OUTPUT characters of output (and of any one value a function makes), at most
MAX_ITERATIONS loop iterations, and fields only of mappings (labels, `$forecast`, ...): no
Python attribute is reachable (`.__class__`, `._private`), as Go reaches no unexported field.

Imports only the template package's `errors`, `functions`, `gofmt` and `nodes`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from agent.rules.templates.errors import TemplateRuntimeError
from agent.rules.templates.functions import FUNCTIONS, LOGIC, truth
from agent.rules.templates.gofmt import go_str, go_type
from agent.rules.templates.nodes import Action, Command, Dot, Ident, If, Lit, Node, Pipeline, Range, Sub, Text, Var

MAX_OUTPUT = 64 * 1024  # characters one rendering (and any one value in it) may make
MAX_ITERATIONS = 10_000  # `range` iterations of one rendering, nested loops counted together


class StrictFields(dict[str, Any]):
    """A mapping whose missing keys are errors (for `$forecast`, `$anomaly`, the dot)."""


def _field(v: Any, name: str) -> Any:
    if isinstance(v, dict):
        if name in v:
            return v[name]
        if isinstance(v, StrictFields):
            raise TemplateRuntimeError(f"can't evaluate field {name}")
        return ""  # a missing label is the empty string, as with Prometheus's map[string]string
    if v is None:
        raise TemplateRuntimeError(f"nil pointer evaluating .{name}")
    # Only mappings have fields: getattr on a value would open Python's internals to rule files.
    raise TemplateRuntimeError(f"can't evaluate field {name} in type {go_type(v)}")


class Executor:
    """One rendering: the dot, a stack of variable scopes, and the output being built."""

    def __init__(self, dot: Any, variables: dict[str, Any]) -> None:
        self.dot = dot
        self.vars = [dict(variables, **{"$": dot})]
        self.size = 0  # characters written so far
        self.iterations = 0  # range iterations so far

    def emit(self, text: str, out: list[str]) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT:
            raise TemplateRuntimeError(f"output exceeds {MAX_OUTPUT} characters")
        out.append(text)

    def lookup(self, name: str) -> Any:
        for scope in reversed(self.vars):
            if name in scope:
                return scope[name]
        raise TemplateRuntimeError(f"undefined variable: {name}")

    def run(self, nodes: list[Node], out: list[str]) -> None:
        for n in nodes:
            if isinstance(n, Text):
                self.emit(n.text, out)
            elif isinstance(n, Action):
                v = self.pipeline(n.pipe)
                if not n.pipe.decl:
                    self.emit(go_str(v), out)
            elif isinstance(n, If):
                for cond, body in n.branches:
                    self.vars.append({})
                    try:
                        if truth(self.pipeline(cond)):
                            self.run(body, out)
                            break
                    finally:
                        self.vars.pop()
                else:
                    if n.else_body is not None:
                        self.vars.append({})
                        self.run(n.else_body, out)
                        self.vars.pop()
            elif isinstance(n, Range):
                self._range(n, out)

    def _range(self, n: Range, out: list[str]) -> None:
        self.vars.append({})
        try:
            decl = n.pipe.decl
            coll = self.pipeline(Pipeline(n.pipe.offset, [], n.pipe.cmds))
            if isinstance(coll, dict):
                items = [(k, coll[k]) for k in sorted(coll)]
            elif isinstance(coll, (list, tuple)):
                items = list(enumerate(coll))
            elif isinstance(coll, int) and not isinstance(coll, bool):
                items = [(i, i) for i in range(min(coll, MAX_ITERATIONS + 1))]
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
                self.iterations += 1
                if self.iterations > MAX_ITERATIONS:
                    raise TemplateRuntimeError(f"range: more than {MAX_ITERATIONS} iterations")
                self.dot = v
                if len(decl) == 1:
                    self.vars[-1][decl[0]] = v
                elif len(decl) == 2:
                    self.vars[-1][decl[0]], self.vars[-1][decl[1]] = k, v
                self.run(n.body, out)
            self.dot = saved
        finally:
            self.vars.pop()

    def pipeline(self, p: Pipeline) -> Any:
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

    def command(self, c: Command, piped: Any) -> Any:
        first = c.args[0]
        if isinstance(first, Ident):
            if first.name in LOGIC:
                return self._logic(first.name, c.args[1:], piped)
            args = [self.operand(a) for a in c.args[1:]]
            if piped is not _NOTHING:
                args.append(piped)
            try:
                result = FUNCTIONS[first.name].fn(*args)
            except RecursionError:
                raise
            except Exception as e:  # a function failing on scraped data is the template's error, not the rule's crash
                raise TemplateRuntimeError(f"error calling {first.name}: {e or type(e).__name__}") from None
            if isinstance(result, str) and len(result) > MAX_OUTPUT:
                raise TemplateRuntimeError(f"error calling {first.name}: result exceeds {MAX_OUTPUT} characters")
            return result
        return self.operand(first)

    def _logic(self, name: str, arg_nodes: list[Node], piped: Any) -> Any:
        # Operands are evaluated one by one, so `and` / `or` stop at the first that decides.
        operands: list[Callable[[], Any]] = [partial(self.operand, a) for a in arg_nodes]
        if piped is not _NOTHING:
            operands.append(lambda: piped)
        v: Any = None
        for operand in operands:
            v = operand()
            if name == "and" and not truth(v):
                return v
            if name == "or" and truth(v):
                return v
        return v

    def operand(self, n: Node) -> Any:
        if isinstance(n, Lit):
            return n.value
        if isinstance(n, Var):
            v = self.lookup(n.name)
            for f in n.fields:
                v = _field(v, f)
            return v
        if isinstance(n, Dot):
            v = self.dot
            for f in n.fields:
                v = _field(v, f)
            return v
        if isinstance(n, Sub):
            v = self.pipeline(n.pipe)
            for f in n.fields:
                v = _field(v, f)
            return v
        if isinstance(n, Ident):
            fn = FUNCTIONS[n.name]
            if fn.min_args:
                raise TemplateRuntimeError(f"wrong number of args for {n.name}: want {fn.min_args} got 0")
            return fn.fn()
        raise TemplateRuntimeError(f"cannot evaluate {n!r}")


class _Nothing:
    pass


_NOTHING: Any = _Nothing()
