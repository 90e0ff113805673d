"""Lexing: a template's text split into text and action segments (`{{ ... }}` with trim
markers and comments), and an action's body into tokens with their offsets.

Imports only the template package's `errors`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.rules.templates.errors import TemplateError

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
class Token:
    kind: str
    text: str
    offset: int


def _lex_action(src: str, start: int, end: int) -> list[Token]:
    toks: list[Token] = []
    pos = start
    while pos < end:
        m = _TOKEN_RE.match(src, pos, end)
        if not m:
            raise TemplateError(f"unexpected {src[pos]!r} in command", pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            toks.append(Token(kind, m.group(), pos))
        pos = m.end()
    return toks


@dataclass
class Segment:
    """A run of plain text (`tokens` empty), or one action's tokens (`text` empty), starting
    at character `offset`."""

    offset: int
    text: str = ""
    tokens: list[Token] = field(default_factory=list)
    is_action: bool = False


def split_segments(src: str) -> list[Segment]:
    """The text and action segments of `src`, trim markers applied, comments dropped."""
    out: list[Segment] = []
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
            out.append(Segment(pos, text=text))
        if i < 0:
            return out
        body_start = i + 2 + (2 if trim_prev else 0)
        if src.startswith("/*", body_start):
            trim_next, pos = _comment_end(src, body_start, i)
            continue
        j = _action_end(src, body_start, i)
        body_end = j
        trim_next = body_end - 2 >= body_start and src[body_end - 2:body_end] in (" -", "\t-", "\n-")
        if trim_next:
            body_end -= 2
        out.append(Segment(i, tokens=_lex_action(src, body_start, body_end), is_action=True))
        pos = j + 2


def _comment_end(src: str, body_start: int, opened: int) -> tuple[bool, int]:
    """After the comment that starts at `body_start`: (trim the next text, where it starts)."""
    close = src.find("*/", body_start + 2)
    if close < 0:
        raise TemplateError("unclosed comment", opened)
    j = close + 2
    if src.startswith(" -}}", j):
        return True, j + 4
    if src.startswith("}}", j):
        return False, j + 2
    raise TemplateError("comment ends before closing delimiter", j)


def _action_end(src: str, body_start: int, opened: int) -> int:
    """Where the action's closing `}}` is, skipping string literals."""
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
            return j
        j += 1
    raise TemplateError("unclosed action", opened)
