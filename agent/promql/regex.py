"""PromQL's regular expressions, as Prometheus 3.x compiles them: RE2 syntax (inline flags
anywhere, e.g. `((?i)PRO).*`), fully anchored, `.` matching newlines, and RE2's linear-time
matching, so no label value can make a matcher backtrack for ever.

Label matchers (`=~`, `!~`) and `label_replace()` both go through `compile_anchored`, which
compiles `^(?s:PATTERN)$` once per pattern (a bounded cache) with the `google-re2` binding.
`expand` applies a Go `regexp.Expand` template (`$1`, `${1}`, `$name`, `${name}`, `$$`) to a
match, as `label_replace()` does."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import re2

# RE2 logs every compile error to stderr unless told not to; 64 MiB lets big alternations of
# literal values (Grafana's multi-value variables) compile, where RE2's 8 MiB default refuses.
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_OPTIONS.max_mem = 64 << 20

CACHE_SIZE = 4096


class RegexError(ValueError):
    """A pattern RE2 does not accept; the message is RE2's."""


class Regex:
    """A compiled, fully anchored PromQL regular expression."""

    __slots__ = ("_rx", "group_count", "group_index", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        try:
            self._rx: Any = re2.compile(f"^(?s:{pattern})$", options=_OPTIONS)
        except re2.error as e:
            detail = e.args[0] if e.args else ""
            if isinstance(detail, bytes):
                detail = detail.decode("utf-8", "replace")
            raise RegexError(f"error parsing regexp: {detail}") from None
        self.group_count: int = int(self._rx.groups)
        self.group_index: dict[str, int] = dict(self._rx.groupindex)

    def matches(self, value: str) -> bool:
        """Whether the whole of `value` matches."""
        return self._rx.match(value) is not None

    def groups(self, value: str) -> list[str] | None:
        """Group 0 and every capture group of a whole-value match ("" for groups that did not
        take part), or None without a match."""
        m = self._rx.match(value)
        if m is None:
            return None
        return [g if g is not None else "" for g in (m.group(i) for i in range(self.group_count + 1))]


@lru_cache(maxsize=CACHE_SIZE)
def compile_anchored(pattern: str) -> Regex:
    """The compiled `^(?s:pattern)$`, cached. Raises RegexError."""
    return Regex(pattern)


_GO_VARIABLE = re.compile(r"\$(?:(\$)|\{(\w+)\}|(\w+))")


def expand(template: str, rx: Regex, groups: list[str]) -> str:
    """Go's `regexp.Expand`: `$1`/`${1}` and `$name`/`${name}` become the group's text (nothing
    for a group that does not exist; `$1x` names the group `1x`), `$$` is a dollar, and a `$`
    that starts no variable stays as it is."""
    def variable(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(3)
        if name.isascii() and name.isdigit():
            i = int(name)
            return groups[i] if i < len(groups) else ""
        j = rx.group_index.get(name)
        return groups[j] if j is not None else ""
    return _GO_VARIABLE.sub(variable, template)
