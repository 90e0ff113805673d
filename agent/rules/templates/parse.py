"""Parsing: segments and tokens into the node tree, with Go's checks made at load time
(undefined variables, unknown functions, wrong arity), so a bad template is a `check` error.

Imports only the template package's `errors`, `functions` (names and arities), `lex` and `nodes`.
"""

from __future__ import annotations

import re

from agent.rules.templates.errors import TemplateError, UndefinedVariableError
from agent.rules.templates.functions import FUNCTIONS, LOGIC
from agent.rules.templates.lex import Token, split_segments
from agent.rules.templates.nodes import Action, Command, Dot, Ident, If, Lit, Node, Pipeline, Range, Sub, Text, Var

_ROOT_VARS = {"$"}


class Parser:
    def __init__(self, src: str, variables: set[str]) -> None:
        self.src = src
        self.segments = split_segments(src)
        self.i = 0
        self.scopes: list[set[str]] = [set(variables) | _ROOT_VARS]

    # variables
    def _declared(self, name: str) -> bool:
        return any(name in s for s in self.scopes)

    def parse(self) -> list[Node]:
        body, end = self._list(top=True)
        return body

    def _list(self, top: bool = False) -> tuple[list[Node], tuple[str, list[Token], int] | None]:
        """Nodes up to a closing `end`/`else` (returned as the terminator) or end of input."""
        nodes: list[Node] = []
        while self.i < len(self.segments):
            seg = self.segments[self.i]
            self.i += 1
            off = seg.offset
            if not seg.is_action:
                nodes.append(Text(off, seg.text))
                continue
            toks = seg.tokens
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
                nodes.append(Action(off, self._pipeline(toks, off, allow_decl=True)))
        if not top:
            raise TemplateError("unexpected EOF (missing {{end}})", len(self.src))
        return nodes, None

    def _if(self, toks: list[Token], off: int) -> If:
        branches: list[tuple[Pipeline, list[Node]]] = []
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
                return If(off, branches, None)
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
            return If(off, branches, else_body)

    def _range(self, toks: list[Token], off: int) -> Range:
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
        return Range(off, pipe, body, else_body)

    def _pipeline(self, toks: list[Token], off: int, allow_decl: bool = False, range_decl: bool = False) -> Pipeline:
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
                raise UndefinedVariableError(decl[0], off)
            if decl and not toks:
                raise TemplateError("missing value for command", off)
        cmds: list[Command] = []
        cur: list[Token] = []
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
        return Pipeline(off, decl, cmds, assign)

    def _check_arity(self, c: Command, piped: bool) -> None:
        first = c.args[0]
        n = len(c.args) - 1 + (1 if piped else 0)
        if isinstance(first, Ident):
            if first.name in LOGIC:
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

    def _command(self, toks: list[Token], off: int) -> Command:
        if not toks:
            raise TemplateError("missing value for command", off)
        args: list[Node] = []
        i = 0
        while i < len(toks):
            node, i = self._operand(toks, i)
            args.append(node)
        return Command(toks[0].offset, args)

    def _fields(self, toks: list[Token], i: int) -> tuple[list[str], int]:
        out = []
        while i < len(toks) and toks[i].kind == "field" and toks[i].offset == toks[i - 1].offset + len(toks[i - 1].text):
            out.append(toks[i].text[1:])
            i += 1
        return out, i

    def _operand(self, toks: list[Token], i: int) -> tuple[Node, int]:
        t = toks[i]
        if t.kind == "var":
            if not self._declared(t.text):
                raise UndefinedVariableError(t.text, t.offset)
            fields, j = self._fields(toks, i + 1)
            return Var(t.offset, t.text, fields), j
        if t.kind == "field":
            fields, j = self._fields(toks, i + 1)
            return Dot(t.offset, [t.text[1:]] + fields), j
        if t.kind == "dot":
            return Dot(t.offset, []), i + 1
        if t.kind == "str":
            return Lit(t.offset, _unquote(t.text)), i + 1
        if t.kind == "raw":
            return Lit(t.offset, t.text[1:-1]), i + 1
        if t.kind == "num":
            return Lit(t.offset, _number(t)), i + 1
        if t.kind == "ident":
            if t.text in ("true", "false"):
                return Lit(t.offset, t.text == "true"), i + 1
            if t.text == "nil":
                raise TemplateError("nil is not a command", t.offset)
            if t.text not in FUNCTIONS and t.text not in LOGIC:
                raise TemplateError(f'function "{t.text}" not defined', t.offset)
            return Ident(t.offset, t.text), i + 1
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
            return Sub(t.offset, pipe, fields), k
        raise TemplateError(f"unexpected {t.text!r} in operand", t.offset)


def _unquote(text: str) -> str:
    """A double-quoted literal's value (Go escapes); undecodable escapes are kept as written."""
    try:
        return bytes(text[1:-1], "utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return text[1:-1]


def _number(t: Token) -> int | float:
    try:
        return int(t.text, 0) if _INT_RE.fullmatch(t.text) else float(t.text)
    except ValueError:
        raise TemplateError(f"bad number syntax: {t.text!r}", t.offset) from None


_INT_RE = re.compile(r"[-+]?(0[xX][0-9a-fA-F]+|\d+)")
