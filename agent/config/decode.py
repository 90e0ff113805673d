"""YAML loading that keeps line and column of every node, and dataclass-driven validation.

Every config and rule-file structure is a dataclass whose fields carry defaults and
docstring-like `metadata["doc"]`; `decode()` turns a marked YAML tree into it, collecting
every problem as a `ConfigError(path, line, column, message)` instead of stopping at
the first, like Prometheus's rule-file parser.

A foundation: it knows YAML and dataclasses, and imports nothing of the agent.
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import os
import re
import stat
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args, get_origin, runtime_checkable
from urllib.parse import urlparse

import yaml


@dataclass(frozen=True)
class ConfigError(Exception):
    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        if self.line <= 0:  # the file as a whole (missing, unreadable): no position to invent
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


class ConfigErrors(Exception):
    """All problems found in one or more files."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


Mark = tuple[int, int]  # 1-based line, column


class MarkedDict(dict[str, Any]):
    """A mapping that remembers where each key and value stood in the file."""

    mark: Mark = (1, 1)
    key_marks: dict[str, Mark]
    value_marks: dict[str, Mark]


class MarkedList(list[Any]):
    mark: Mark = (1, 1)
    item_marks: list[Mark]


class MarkedStr(str):
    mark: Mark = (1, 1)


def node_mark(node: object, default: Mark) -> Mark:
    """Where a loaded YAML node stood; `default` for a value that was not loaded from a file."""
    return node.mark if isinstance(node, MarkedDict | MarkedList | MarkedStr) else default


def key_marks(node: object) -> dict[str, Mark]:
    """Where each key of a loaded mapping stood (empty for anything else)."""
    return node.key_marks if isinstance(node, MarkedDict) else {}


def value_marks(node: object) -> dict[str, Mark]:
    """Where each value of a loaded mapping stood (empty for anything else)."""
    return node.value_marks if isinstance(node, MarkedDict) else {}


def item_marks(node: list[Any], default: Mark) -> list[Mark]:
    """Where each item of a loaded list stood; `default` for each when not loaded from a file."""
    return node.item_marks if isinstance(node, MarkedList) else [default] * len(node)


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def line_starts(text: str) -> list[int]:
    """Offsets where each line of `text` starts. Lines end at \\n, \\r\\n or \\r only, as in YAML
    1.2 and editors: PyYAML's own marks also break lines at U+0085, U+2028 and U+2029 (YAML
    1.1), which would point past the line an editor shows."""
    return [0] + [m.end() for m in _LINE_BREAK.finditer(text)]


def position(starts: list[int], index: int) -> Mark:
    """The 1-based line and column of a character offset, given `line_starts`."""
    line = bisect.bisect_right(starts, index)
    return (line, index - starts[line - 1] + 1)


# ---- YAML 1.2 scalars ---------------------------------------------------------------------------
#
# PyYAML resolves plain scalars by YAML 1.1, where `on`, `off`, `yes`, `no`, `y` and `n` are
# booleans, `1:30` is the integer 90, `017` is octal, `1_000` is a thousand and `2026-01-02` a
# date. Prometheus reads its rule files with Go's yaml.v3 (YAML 1.2) and its config with
# yaml.v2, and both hand a string field the text as written. So this loader resolves plain
# scalars by the YAML 1.2 core schema: only `true`/`false` (and their `True`/`TRUE` forms) are
# booleans, `null`/`~`/nothing is null, decimal, `0o` octal and `0x` hex integers and decimal
# floats (with `.inf`, `.nan`) are numbers, everything else is a string. A string field gets a
# number's text as written (`version: 1.10` stays "1.10"); a boolean field also takes YAML 1.1's
# `yes`/`no`/`on`/`off`, as yaml.v3 does for typed booleans.

_YAML12_RESOLVERS: tuple[tuple[str, str, str], ...] = (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     "-+.0123456789"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", "~nN"),
    ("tag:yaml.org,2002:merge", r"^<<$", "<"),  # yaml.v3 keeps merge keys; so do we
)

YAML11_TRUE = frozenset({"y", "Y", "yes", "Yes", "YES", "on", "On", "ON"})
YAML11_FALSE = frozenset({"n", "N", "no", "No", "NO", "off", "Off", "OFF"})


class MarkedInt(int):
    """An integer loaded from a file, with its text as written (for string fields)."""

    text: str = ""


class MarkedFloat(float):
    """A float loaded from a file, with its text as written (for string fields)."""

    text: str = ""


def scalar_text(value: Any) -> str:
    """The text a string field takes from a loaded scalar: a number as written in the file
    (`1.10`, `0x1F`), a boolean as `true`/`false`, a string as it is."""
    if isinstance(value, MarkedInt | MarkedFloat):
        return value.text
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# ---- bounds ---------------------------------------------------------------------------------------
#
# Aliases let a few KB of YAML stand for billions of nodes (the "billion laughs"): the loader
# counts, while composing, how many nodes the document stands for once every alias is expanded,
# and refuses excessive aliasing with yaml.v2/v3's own rule (Prometheus's config and rule
# loaders): up to 400,000 nodes 99% may come from aliases, from 4,000,000 only 10%, scaled in
# between. Nesting is capped too (yaml.v3 stops at 10,000 levels; the Python stack far sooner,
# so the cap is lower here and no real config comes near it).

MAX_FILE_BYTES = 1024 * 1024  # parsing costs ~115 bytes of memory per byte: ~120 MB at most, inside MemoryMax
MAX_NESTING = 100
_ALIAS_RATIO_LOW, _ALIAS_RATIO_HIGH = 400_000, 4_000_000


def allowed_alias_ratio(decode_count: int) -> float:
    """The share of a document's expanded nodes that may come from aliases (yaml.v3's rule)."""
    if decode_count <= _ALIAS_RATIO_LOW:
        return 0.99
    if decode_count >= _ALIAS_RATIO_HIGH:
        return 0.10
    return 0.99 - 0.89 * (decode_count - _ALIAS_RATIO_LOW) / (_ALIAS_RATIO_HIGH - _ALIAS_RATIO_LOW)


class _MarkedLoader(yaml.SafeLoader):
    """A safe loader: YAML 1.2 scalars (its own resolvers, none of SafeLoader's YAML 1.1 ones),
    marks on every mapping, list and string, and a composer that counts the nodes the document
    expands to and its nesting."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}

    def mark(self, node: yaml.Node) -> Mark:
        """Where a node starts, as an editor shows it (see `line_starts`)."""
        starts = getattr(self, "_line_starts", None)
        if starts is None:
            starts = self._line_starts = line_starts(str(self.buffer))
        return position(starts, node.start_mark.index)

    def compose_document(self) -> Any:
        self._decode_count = 0  # nodes once aliases are expanded (yaml.v3's decodeCount)
        self._alias_count = 0  # of which came from aliases
        self._expanded: dict[str, int] = {}  # anchor -> nodes its value expands to
        self._open: set[str] = set()  # anchors whose value is being composed
        self._depth = 0
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise yaml.composer.ComposerError(
                    None, None, f"alias {event.anchor!r} refers to a value that contains it", _error_mark(event))
            node = super().compose_node(parent, index)  # an undefined alias raises here
            size = self._expanded.get(str(event.anchor), 1)
            self._decode_count += size
            self._alias_count += size
            self._check_aliasing(_error_mark(event))
            return node
        self._depth += 1
        if self._depth > MAX_NESTING:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_NESTING} levels", _error_mark(event))
        anchor = getattr(event, "anchor", None)
        before = self._decode_count
        self._decode_count += 1
        if anchor is not None:
            self._open.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open.discard(anchor)
        if anchor is not None:
            self._expanded[anchor] = self._decode_count - before
        return node

    def _check_aliasing(self, mark: yaml.error.Mark | None) -> None:
        n, a = self._decode_count, self._alias_count
        if a > 100 and n > 1000 and a / n > allowed_alias_ratio(n):
            raise yaml.composer.ComposerError(
                None, None, f"excessive aliasing: aliases expand the document to more than {n:,} nodes, "
                f"{a:,} of them copies (at most {allowed_alias_ratio(n):.0%} may be)", mark)


for _tag, _pattern, _first in _YAML12_RESOLVERS:
    # an empty plain scalar is looked up under "" (PyYAML's own null resolver does the same)
    _MarkedLoader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first) + ([""] if _tag.endswith("null") else []))


def _error_mark(event: yaml.Event) -> yaml.error.Mark | None:
    mark = event.start_mark
    return mark if isinstance(mark, yaml.error.Mark) else None


def _construct_mapping(loader: _MarkedLoader, node: yaml.MappingNode) -> MarkedDict:
    loader.flatten_mapping(node)
    out = MarkedDict()
    out.mark = loader.mark(node)
    out.key_marks = {}
    out.value_marks = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "mapping keys must be scalars", key_node.start_mark
            )
        if loader.construct_object(key_node, deep=True) is None:
            raise yaml.constructor.ConstructorError(None, None, "mapping keys must not be null", key_node.start_mark)
        key = str(key_node.value)  # the key as written, as Go's yaml gives a string-keyed map
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_marks[key] = loader.mark(key_node)
        out.value_marks[key] = loader.mark(value_node)
    return out


def _construct_sequence(loader: _MarkedLoader, node: yaml.SequenceNode) -> MarkedList:
    out = MarkedList(loader.construct_object(child, deep=True) for child in node.value)
    out.mark = loader.mark(node)
    out.item_marks = [loader.mark(child) for child in node.value]
    return out


def _construct_str(loader: _MarkedLoader, node: yaml.ScalarNode) -> MarkedStr:
    out = MarkedStr(loader.construct_scalar(node))
    out.mark = loader.mark(node)
    return out


def _construct_int(loader: _MarkedLoader, node: yaml.ScalarNode) -> MarkedInt:
    text = str(loader.construct_scalar(node))
    try:  # Python's own bound on digits (4300) stands: a longer integer is an error, located
        if text.startswith("0o"):
            value = int(text[2:], 8)
        elif text.startswith("0x"):
            value = int(text[2:], 16)
        else:
            value = int(text, 10)
    except ValueError:
        raise yaml.constructor.ConstructorError(
            None, None, f"not an integer, or too long: {text[:40]!r}", node.start_mark) from None
    out = MarkedInt(value)
    out.text = text
    return out


def _construct_float(loader: _MarkedLoader, node: yaml.ScalarNode) -> MarkedFloat:
    text = str(loader.construct_scalar(node))
    lowered = text.lower()
    try:
        value = float(lowered.replace(".inf", "inf").replace(".nan", "nan"))
    except ValueError:
        raise yaml.constructor.ConstructorError(None, None, f"not a number: {text[:40]!r}", node.start_mark) from None
    out = MarkedFloat(value)
    out.text = text
    return out


def _construct_bool(loader: _MarkedLoader, node: yaml.ScalarNode) -> bool:
    text = str(loader.construct_scalar(node))
    if text.lower() not in ("true", "false"):  # an explicit !!bool tag on another text
        raise yaml.constructor.ConstructorError(None, None, f"not a boolean: {text[:40]!r}", node.start_mark)
    return text.lower() == "true"


_MarkedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_MarkedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_MarkedLoader.add_constructor("tag:yaml.org,2002:str", _construct_str)
_MarkedLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_MarkedLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_MarkedLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)


def load_marked(text: str, path: str) -> Any:
    """Parse YAML safely (YAML 1.2 scalars, bounded aliases and nesting), keeping marks.
    Every problem becomes a ConfigError at its position."""
    try:
        return yaml.load(text, Loader=_MarkedLoader)
    except yaml.MarkedYAMLError as e:
        m = e.problem_mark or e.context_mark
        line, col = position(line_starts(text), min(m.index, len(text))) if m else (1, 1)
        raise ConfigErrors([ConfigError(path, line, col, f"YAML: {e.problem or e}")]) from None
    except yaml.YAMLError as e:
        raise ConfigErrors([ConfigError(path, 1, 1, f"YAML: {e}")]) from None
    except RecursionError:  # the nesting cap should come first; never a traceback if not
        raise ConfigErrors([ConfigError(path, 1, 1, "YAML: nested too deeply")]) from None


def read_text_file(path: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """A config or rule file's text. Only a regular file of at most `max_bytes` is read: a
    FIFO, a device (a glob that reaches /dev/zero), a directory or a larger file is refused
    with a ConfigError, so a reload can neither hang nor fill memory. Unreadable or non-UTF-8
    files become a ConfigError too."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it would hang reload and SIGTERM).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise ConfigErrors([ConfigError(path, 0, 0, f"cannot read file: {e.strerror}")]) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigErrors([ConfigError(path, 0, 0, f"not a regular file ({_file_kind(st.st_mode)}); "
                                                        "config and rule files must be regular files")])
        if st.st_size > max_bytes:
            raise ConfigErrors([ConfigError(path, 0, 0, f"file too large: {st.st_size:,} bytes "
                                                        f"(at most {max_bytes:,})")])
        chunks: list[bytes] = []
        size = 0
        while True:  # the file may grow between fstat and read: never read past the bound
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise ConfigErrors([ConfigError(path, 0, 0, f"file too large: more than {max_bytes:,} bytes")])
        data = b"".join(chunks)
    except OSError as e:
        raise ConfigErrors([ConfigError(path, 0, 0, f"cannot read file: {e.strerror}")]) from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigErrors([ConfigError(path, line, col, "not valid UTF-8")]) from None


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def load_marked_file(path: str) -> Any:
    return load_marked(read_text_file(path), path)


# ---- value types -----------------------------------------------------------------------------

_DURATION_RE = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")
_DURATION_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def parse_duration(text: str) -> float:
    """Prometheus duration (`1h30m`, `15s`, `500ms`, `7d`) in seconds. Raises ValueError."""
    text = str(text).strip()
    m = _DURATION_RE.match(text)
    if text == "0":
        return 0.0
    groups = m.groups()[1::2] if m else ()
    if not m or all(g is None for g in groups):
        raise ValueError(f"not a valid duration: {text!r} (use e.g. 30s, 5m, 6h, 7d)")
    return float(sum(int(g) * u for g, u in zip(groups, _DURATION_UNITS) if g is not None))


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    ms = int(round(seconds * 1000))
    out = []
    for unit, size in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(out)


class Duration(float):
    """Seconds, written in config as a Prometheus duration."""

    def __repr__(self) -> str:
        return f"Duration({format_duration(self)})"

    def __str__(self) -> str:
        return format_duration(self)


def doc(text: str, **kw: Any) -> Any:
    """A dataclass field with documentation (used by `check` hints and generated docs)."""
    meta = {"doc": text}
    if "default_factory" in kw:
        return field(default_factory=kw.pop("default_factory"), metadata=meta, **kw)
    return field(metadata=meta, **kw)


# ---- decoding ---------------------------------------------------------------------------------


class Decoder:
    """Turns a marked YAML tree into dataclasses, collecting errors for one file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[ConfigError] = []

    def error(self, mark: Mark, message: str) -> None:
        self.errors.append(ConfigError(self.path, mark[0], mark[1], message))

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ConfigErrors(sorted(self.errors, key=lambda e: (e.path, e.line, e.column)))

    def decode(self, tp: Any, value: Any, mark: Mark, where: str) -> Any:
        """Decode `value` as type `tp`; on error record it and return a sentinel `INVALID`."""
        origin = get_origin(tp)
        if tp is Any:
            return value
        if origin in (typing.Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if value is None:
                return None
            return self.decode(args[0], value, mark, where)
        if origin is Literal:
            allowed = get_args(tp)
            if value not in allowed:
                self.error(mark, f"{where}: {value!r} is not one of {', '.join(map(str, allowed))}")
                return INVALID
            return str(value) if isinstance(value, str) else value
        if origin is list or origin is dict:
            return self._decode_collection(tp, value, mark, where)
        if isinstance(tp, DecodesItself):
            return tp.from_yaml(self, value, mark, where)
        if dataclasses.is_dataclass(tp):
            return self.decode_dataclass(tp, value, mark, where)
        return self._decode_scalar(tp, value, mark, where)

    def _decode_collection(self, tp: Any, value: Any, mark: Mark, where: str) -> Any:
        """A `list[T]` or `dict[str, T]`: each item decoded at its own mark, invalid ones left out."""
        origin = get_origin(tp)
        if origin is list:
            (item_tp,) = get_args(tp)
            if value is None:
                return []
            if not isinstance(value, list):
                self.error(mark, f"{where}: expected a list, got {_kind(value)}")
                return INVALID
            marks = item_marks(value, mark)
            items = [self.decode(item_tp, v, m, f"{where}[{i}]") for i, (v, m) in enumerate(zip(value, marks))]
            return [v for v in items if v is not INVALID]
        _, val_tp = get_args(tp)  # keys are always strings
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(mark, f"{where}: expected a mapping, got {_kind(value)}")
            return INVALID
        vmarks = value_marks(value)
        entries = {}
        for k, v in value.items():
            dv = self.decode(val_tp, v, vmarks.get(k, mark), f"{where}.{k}")
            if dv is not INVALID:
                entries[str(k)] = dv
        return entries

    def _decode_scalar(self, tp: Any, value: Any, mark: Mark, where: str) -> Any:
        """A Duration, bool, int, float or str (a schema with another type is a bug: TypeError)."""
        if tp is Duration:
            if isinstance(value, bool) or value is None:
                self.error(mark, f"{where}: expected a duration, got {_kind(value)}")
                return INVALID
            try:
                return Duration(parse_duration(scalar_text(value)))
            except ValueError as e:
                self.error(mark, f"{where}: {e}")
                return INVALID
        if tp is bool:
            if isinstance(value, str) and value in YAML11_TRUE | YAML11_FALSE:
                return value in YAML11_TRUE  # YAML 1.1's forms, for a typed boolean only (as yaml.v3)
            if not isinstance(value, bool):
                self.error(mark, f"{where}: expected true or false, got {_kind(value)}")
                return INVALID
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.error(mark, f"{where}: expected an integer, got {_kind(value)}")
                return INVALID
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.error(mark, f"{where}: expected a number, got {_kind(value)}")
                return INVALID
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list)) or value is None:
                self.error(mark, f"{where}: expected a string, got {_kind(value)}")
                return INVALID
            return scalar_text(value)
        raise TypeError(f"unsupported config type {tp!r}")

    def decode_dataclass(self, cls: Any, value: Any, mark: Mark, where: str) -> Any:
        if value is None:
            value = MarkedDict()
            value.mark, value.key_marks, value.value_marks = mark, {}, {}
        if not isinstance(value, dict):
            self.error(mark, f"{where}: expected a mapping, got {_kind(value)}")
            return INVALID
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        yaml_names: dict[str, str] = {str(f.metadata.get("yaml", f.name)): f.name for f in fields.values()}
        kmarks = key_marks(value)
        vmarks = value_marks(value)
        kwargs: dict[str, Any] = {}
        ok = True
        for key, raw in value.items():
            km = kmarks.get(key, mark)
            if key not in yaml_names:
                hint = difflib.get_close_matches(key, list(yaml_names), n=1)
                suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.error(km, f"{where + ': ' if where else ''}unknown field {key!r}{suffix}")
                ok = False
                continue
            name = yaml_names[key]
            sub = f"{where}.{key}" if where else key
            dv = self.decode(hints[name], raw, vmarks.get(key, km), sub)
            if dv is INVALID:
                ok = False
                continue
            kwargs[name] = dv
        for name, f in fields.items():
            if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.error(mark, f"{where + ': ' if where else ''}missing required field {f.metadata.get('yaml', name)!r}")
                ok = False
        if not ok:
            return INVALID
        obj = cls(**kwargs)
        attach_marks(obj, mark, {yaml_names.get(str(k), str(k)): vmarks.get(str(k), mark) for k in value})
        if isinstance(obj, Validated):
            obj.validate(FieldErrors(self, obj, mark, where))
        return obj


@runtime_checkable
class DecodesItself(Protocol):
    """A config type that decodes its own YAML (e.g. a sink entry, whose settings' type depends
    on its `type` key): the decoder calls `from_yaml` on the class instead of its fields."""

    def from_yaml(self, decoder: Decoder, value: Any, mark: Mark, where: str) -> Any: ...


@runtime_checkable
class Validated(Protocol):
    """A config dataclass that checks itself once decoded, reporting through `err`."""

    def validate(self, err: FieldErrors) -> None: ...


class FieldErrors:
    """What a dataclass's `validate(errs)` hook receives: report problems at a field's mark."""

    def __init__(self, decoder: Decoder, obj: Any, mark: Mark, where: str) -> None:
        self.decoder, self.obj, self.mark, self.where = decoder, obj, mark, where

    def __call__(self, field_name: str | None, message: str) -> None:
        marks = getattr(self.obj, "_marks", {})
        m = marks.get(field_name, self.mark) if field_name else self.mark
        label = f"{self.where}.{field_name}" if field_name and self.where else (field_name or self.where)
        self.decoder.error(m, f"{label}: {message}" if label else message)

    @property
    def path(self) -> str:
        return self.decoder.path


def attach_marks(obj: object, mark: Mark, field_marks: dict[str, Mark] | None = None) -> None:
    """Remember where a decoded object (and each of its fields) stood in its file, for
    `mark_of`. Objects without a `__dict__` (slots) keep no marks."""
    if hasattr(obj, "__dict__"):
        object.__setattr__(obj, "_mark", mark)  # object's: frozen dataclasses too
        if field_marks is not None:
            object.__setattr__(obj, "_marks", field_marks)


def mark_of(obj: Any, field_name: str | None = None) -> Mark:
    """Where a decoded dataclass (or one of its fields) stood in its file."""
    if field_name is not None:
        return getattr(obj, "_marks", {}).get(field_name, getattr(obj, "_mark", (0, 0)))
    return getattr(obj, "_mark", (0, 0))


class _Invalid:
    def __repr__(self) -> str:
        return "<invalid>"


INVALID: Any = _Invalid()


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def decode_file(cls: Any, path: str, text: str | None = None) -> Any:
    """Load `path` (or `text`) and decode it as dataclass `cls`; raise ConfigErrors on any problem."""
    data = load_marked(text, path) if text is not None else load_marked_file(path)
    d = Decoder(path)
    obj = d.decode_dataclass(cls, data, node_mark(data, (1, 1)), "")
    d.raise_if_errors()
    return obj


def check_url(text: str) -> str | None:
    """An error message if `text` is not an absolute http(s) URL, else None."""
    u = urlparse(text)
    if u.scheme not in ("http", "https") or not u.netloc:
        return f"not a valid URL: {text!r} (want http:// or https:// and a host)"
    return None
