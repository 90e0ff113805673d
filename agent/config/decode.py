"""YAML loading that keeps line and column of every node, and dataclass-driven validation.

Every config and rule-file structure is a dataclass whose fields carry defaults and
docstring-like `metadata["doc"]`; `decode()` turns a marked YAML tree into it, collecting
every problem as a `ConfigError(path, line, column, message)` instead of stopping at
the first, like Prometheus's rule-file parser.

A foundation: it knows YAML and dataclasses, and imports nothing of the agent.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
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


def _mark(node: yaml.Node) -> Mark:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _MarkedLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _MarkedLoader, node: yaml.MappingNode) -> MarkedDict:
    loader.flatten_mapping(node)
    out = MarkedDict()
    out.mark = _mark(node)
    out.key_marks = {}
    out.value_marks = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise yaml.constructor.ConstructorError(
                None, None, "mapping keys must be scalars", key_node.start_mark
            )
        key = str(key)
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_marks[key] = _mark(key_node)
        out.value_marks[key] = _mark(value_node)
    return out


def _construct_sequence(loader: _MarkedLoader, node: yaml.SequenceNode) -> MarkedList:
    out = MarkedList(loader.construct_object(child, deep=True) for child in node.value)
    out.mark = _mark(node)
    out.item_marks = [_mark(child) for child in node.value]
    return out


def _construct_str(loader: _MarkedLoader, node: yaml.ScalarNode) -> MarkedStr:
    out = MarkedStr(loader.construct_scalar(node))
    out.mark = _mark(node)
    return out


_MarkedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_MarkedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_MarkedLoader.add_constructor("tag:yaml.org,2002:str", _construct_str)


def load_marked(text: str, path: str) -> Any:
    """Parse YAML safely, keeping marks. Syntax errors become a ConfigError."""
    try:
        return yaml.load(text, Loader=_MarkedLoader)
    except yaml.MarkedYAMLError as e:
        m = e.problem_mark or e.context_mark
        line, col = (m.line + 1, m.column + 1) if m else (1, 1)
        raise ConfigErrors([ConfigError(path, line, col, f"YAML: {e.problem or e}")]) from None
    except yaml.YAMLError as e:
        raise ConfigErrors([ConfigError(path, 1, 1, f"YAML: {e}")]) from None


def read_text_file(path: str) -> str:
    """A config or rule file's text; unreadable or non-UTF-8 files become a ConfigError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigErrors([ConfigError(path, 0, 0, f"cannot read file: {e.strerror}")]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigErrors([ConfigError(path, line, col, "not valid UTF-8")]) from None


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
                return Duration(parse_duration(str(value)))
            except ValueError as e:
                self.error(mark, f"{where}: {e}")
                return INVALID
        if tp is bool:
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
            return str(value) if not isinstance(value, bool) else str(value).lower()
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
