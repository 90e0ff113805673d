"""Exposition of the agent's metric families: Prometheus text format 0.0.4 and OpenMetrics 1.0,
chosen by the scraper's Accept header. Collection lives in `agent.metrics`; this module only
writes what collectors yield, and imports nothing else of the agent."""

from __future__ import annotations

from collections.abc import Callable

from agent.metrics import LabelPairs, Metric, Registry, format_value

OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape_label(v: str) -> str:
    # most values need nothing: three scans are cheaper than three copies
    if '"' in v or "\\" in v or "\n" in v:
        return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return v


def _escape_help(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n")


def _labels(labels: dict[str, str] | LabelPairs) -> str:
    """`{name="value",...}` sorted by name; pairs come sorted already (`__name__` among them
    is the sample's name, not a label)."""
    if not labels:
        return ""
    pairs = sorted(labels.items()) if isinstance(labels, dict) else labels
    text = ",".join([f'{k}="{_escape_label(v)}"' for k, v in pairs if k != "__name__"])
    return "{" + text + "}" if text else ""


def _family(header: str, m: Metric) -> bytes:
    """One family's lines, encoded: the text of one family at a time is held, not of all
    (at 100,000 series that is some 45 MB of strings less at the peak of a scrape)."""
    lines = [header]
    lines.extend(f"{s}{_labels(lab)} {format_value(v)}\n" for s, lab, v in m.samples)
    return "".join(lines).encode()


def encode_text(registry: Registry) -> bytes:
    """Prometheus text format 0.0.4 (counters are named with `_total` in HELP/TYPE, as
    client_python writes them)."""
    out: list[bytes] = []
    for m in registry.collect():
        name = m.name + "_total" if m.type == "counter" else m.name
        typ = "gauge" if m.type == "info" else m.type
        out.append(_family(f"# HELP {name} {_escape_help(m.documentation)}\n# TYPE {name} {typ}\n", m))
    return b"".join(out)


def encode_openmetrics(registry: Registry) -> bytes:
    out: list[bytes] = []
    for m in registry.collect():
        typ = "unknown" if m.type == "untyped" else m.type
        out.append(_family(f"# HELP {m.name} {_escape_help(m.documentation)}\n# TYPE {m.name} {typ}\n", m))
    out.append(b"# EOF\n")
    return b"".join(out)


def choose_encoder(accept: str) -> tuple[Callable[[Registry], bytes], str]:
    """OpenMetrics when the scraper asks for it (Prometheus does), else text 0.0.4."""
    for part in (accept or "").split(","):
        if part.split(";")[0].strip() == "application/openmetrics-text":
            return encode_openmetrics, OPENMETRICS_CONTENT_TYPE
    return encode_text, TEXT_CONTENT_TYPE
