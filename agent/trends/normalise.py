"""Title normalisation: incident titles with their volatile tokens replaced by placeholders.

Owns: the rules that make "Disk /var/log 95% full on db-07.prod (INC0012345)" and "disk
/data 91% full on db-11.prod" the same words: `disk <path> <num> full on <host>`. Replaced,
in this order (earlier ones protect their text from later ones): URLs, e-mail addresses,
UUIDs, timestamps and dates, IPv4/IPv6 addresses (with a port), ticket references
(INC0012345, CHG..., PROJ-123), hex ids (commit hashes, pod suffixes), file paths,
host names (dotted names, and name-number names such as db-07, web12, ip-10-0-0-1), numbers
with or without units (95%, 300ms, 12GB, 1.5). What is left is lower-cased, split into words,
and words are reduced to a crude stem (plural and -ing/-ed endings dropped) so that "timeouts"
and "timed out" meet "timeout"; CamelCase
words are split (OOMKilled: oom killed).

It may import agent.tickets and agent.config only (ARCHITECTURE.md): never agent.rules,
agent.promql, agent.models, agent.web, agent.daemon or agent.pipeline.
"""

from __future__ import annotations

import re
from functools import lru_cache

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(rx, re.IGNORECASE))
    for name, rx in (
        ("url", r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>]+"),
        ("email", r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
        ("uuid", r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"),
        ("ts", r"\b\d{4}-\d{2}-\d{2}(?:[ t]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:z|[+-]\d{2}:?\d{2})?)?\b"),
        ("ts", r"\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}(?:\s+\d{1,2}:\d{2}(?::\d{2})?)?\b"),
        ("ts", r"\b(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*,?\s+(?:\d{1,2}\s+)?(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|"
               r"nov|dec)[a-z]*(?:\s+\d{1,2}\b)?(?:\s+\d{4})?"),
        ("ts", r"\b\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s*[ap]m)?\b"),
        ("ip", r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"),
        ("ip", r"(?<![\w:])(?:[0-9a-f]{1,4}:){2,7}[0-9a-f]{1,4}(?![\w:])"),
        ("id", r"\b(?:inc|chg|prb|ritm|req|task|sctask|alert|ticket)[-_#]?\d{3,}\b"),
        ("host", r"\b[a-z0-9-]+-[a-z0-9]{6,10}-[a-z0-9]{5}\b"),  # a Kubernetes pod: deployment-hash-suffix
        ("id", r"#\d+\b"),
        ("id", r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,64}\b"),
        ("path", r"(?<![\w/])(?:[a-z]:\\|~?/)(?:[\w.@%+-]+[/\\]?)+"),
        ("host", r"\b(?=[a-z0-9-]*[a-z])[a-z0-9-]+(?:\.[a-z0-9-]+){1,}\.(?:com|net|org|io|local|internal|lan|corp|"
                 r"prod|stg|dev|test|example|cloud|svc|cluster|int|aws|gcp|eu|us)\b"),
        ("host", r"\b[a-z][a-z0-9]*(?:-[a-z0-9]+)*-\d+[a-z]?(?:\.[a-z0-9-]+)*\b"),
        ("host", r"\b(?:[a-z]{2,}\d{2,}[a-z]?)(?:\.[a-z0-9-]+)*\b"),
        ("id", r"\b(?!\d+[a-z]{1,4}\b)(?=(?:[a-z]*\d){2})(?=(?:\d*[a-z]){2})[a-z0-9]{5,}\b"),  # x2x9z, a1b2c3: generated names
        ("num", r"[+-]?\b\d+(?:[.,]\d+)?\s*(?:%|ms|s|sec|secs|m|min|mins|h|hrs?|d|days?|kb|mb|gb|tb|kib|mib|gib|"
                r"tib|b|k|x|rps|qps)?\b"),
    )
)

_WORD_RE = re.compile(r"<[a-z]+>|[a-z0-9][a-z0-9_']*")  # numbers are placeholders by now: 5xx, 2fa stay
STOPWORDS = frozenset(
    "a an the on in at of for to from and or is are was were be been has have had with by via its it this that "
    "as into after before while during due please pls".split()
    # ticket noise rather than failure words: reply/forward prefixes, priority tags, nagging
    + "re fw fwd aw tr urgent asap again still check ref p1 p2 p3 p4 p5 sev1 sev2 sev3 sev4".split()
)
PLACEHOLDERS = frozenset({"<url>", "<email>", "<uuid>", "<ts>", "<ip>", "<id>", "<path>", "<host>", "<num>"})


def normalise(title: str) -> str:
    """The title with volatile tokens replaced by `<kind>` placeholders, lower case, single
    spaces (punctuation other than placeholders dropped)."""
    return " ".join(_words(title))


def tokens(title: str) -> tuple[str, ...]:
    """Words of the normalised title, stemmed, without stop words; placeholders kept."""
    return _tokens_cached(title)


@lru_cache(maxsize=65536)
def _tokens_cached(title: str) -> tuple[str, ...]:
    return tuple(stem(w) for w in _words(title) if w not in STOPWORDS)


@lru_cache(maxsize=65536)
def tokens_without(title: str, drop: frozenset[str]) -> tuple[str, ...]:
    """`tokens(title)` without the words in `drop`, compared before stemming (so dropping the
    service name "print-service" drops "print" but keeps "printer")."""
    return tuple(stem(w) for w in _words(title) if w not in STOPWORDS and w not in drop)


# Jira-style issue keys are upper case (PROJ-123); matched before lower-casing, so that host
# names such as db-07 are not taken for them.
_ISSUE_KEY_RE = re.compile(r"\b[A-Z][A-Z0-9]{1,9}-\d{1,7}\b")
# CamelCase words are split (OOMKilled -> OOM Killed, CrashLoopBackOff -> Crash Loop Back Off),
# so alert names meet the same words written out.
_CAMEL_RE = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _words(title: str) -> list[str]:
    s = _ISSUE_KEY_RE.sub(" <id> ", title)
    s = _CAMEL_RE.sub(" ", s).lower()
    for name, rx in _PATTERNS:
        s = rx.sub(f" <{name}> ", s)
    return _WORD_RE.findall(s)


# British spellings meet American ones ("licence key invalid" and "license expired" are one
# word to the clustering); -isation becomes -ization below. Only unambiguous words: "-ise" is
# left alone (raise, noise, promise, enterprise).
_SPELLING = {"licence": "license", "licences": "licenses", "licenced": "licensed", "behaviour": "behavior",
             "colour": "color", "catalogue": "catalog", "centre": "center", "cancelled": "canceled",
             "cancelling": "canceling", "utilise": "utilize", "utilised": "utilized", "analyse": "analyze",
             "authorise": "authorize", "authorised": "authorized", "unauthorised": "unauthorized",
             "initialise": "initialize", "synchronise": "synchronize", "optimise": "optimize"}


def stem(word: str) -> str:
    """A crude suffix stripper (not Porter): enough to meet plural and tense variants, and
    British and American spellings."""
    if word.startswith("<"):
        return word
    word = _SPELLING.get(word, word)
    if "isation" in word:
        word = word.replace("isation", "ization")
    if len(word) <= 4:
        return word
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("er", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: len(word) - len(suffix)] + repl
            break
    if len(word) > 4 and word[-1] == word[-2] and word[-1] not in "aeiousl":
        word = word[:-1]  # "stopped" -> "stopp" -> "stop"
    return word
