"""The parsed template tree: text, actions (pipelines of commands), `if` and `range`.

Imports nothing of the agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    offset: int


@dataclass
class Text(Node):
    text: str


@dataclass
class Var(Node):
    name: str  # "$" alone is the root data
    fields: list[str] = field(default_factory=list)


@dataclass
class Dot(Node):
    fields: list[str] = field(default_factory=list)


@dataclass
class Lit(Node):
    value: Any


@dataclass
class Ident(Node):
    name: str


@dataclass
class Command(Node):
    args: list[Node]


@dataclass
class Pipeline(Node):
    decl: list[str]
    cmds: list[Command]
    assign: bool = False  # `$x = ...` rather than `$x := ...`


@dataclass
class Sub(Node):
    pipe: Pipeline
    fields: list[str] = field(default_factory=list)


@dataclass
class Action(Node):
    pipe: Pipeline


@dataclass
class If(Node):
    branches: list[tuple[Pipeline, list[Node]]]
    else_body: list[Node] | None


@dataclass
class Range(Node):
    pipe: Pipeline
    body: list[Node]
    else_body: list[Node] | None
