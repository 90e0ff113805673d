"""Seeded, bounded fuzzing with Hypothesis: a corpus of realistic inputs (`corpus/`) mutated by
a few edits each (insert a token that matters to the format, delete or duplicate a span,
splice in another seed), plus arbitrary text. `derandomize=True` makes every run the same
examples (seeded by the test's name), no example database is written, and `max_examples` keeps
the whole fuzz set under a minute on CI's two cores. `FOREWARN_FUZZ_SCALE=8` multiplies the
examples for a longer local run, and `FOREWARN_FUZZ_RANDOM=1` draws new examples on each run
(exploration, not CI). A crash Hypothesis finds is shrunk and printed; it becomes a regression
test in the target's test file (`REGRESSIONS`)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def fuzz_settings(examples: int) -> settings:
    scale = float(os.environ.get("FOREWARN_FUZZ_SCALE", "1"))
    explore = os.environ.get("FOREWARN_FUZZ_RANDOM") == "1"
    return settings(max_examples=max(1, int(examples * scale)), derandomize=not explore, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much], print_blob=True)


def corpus(kind: str, split_lines: bool = False) -> list[str]:
    """The seeds of one kind: each file, or each line of each file."""
    out: list[str] = []
    folder = os.path.join(CORPUS, kind)
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            text = f.read()
        out.extend([x for x in text.splitlines() if x.strip()] if split_lines else [text])
    return out


@st.composite
def mutated(draw: st.DrawFn, seeds: list[str], tokens: list[str], max_edits: int = 6) -> str:
    """A seed with 1..max_edits edits: a token inserted, a span deleted, duplicated or
    replaced by arbitrary characters, or a piece of another seed spliced in."""
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, max_edits))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(("token", "token", "delete", "duplicate", "chars", "splice")))
        if op == "token":
            text = text[:pos] + draw(st.sampled_from(tokens)) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 20)):]
        elif op == "duplicate":
            span = text[pos:pos + draw(st.integers(1, 40))]
            text = text[:pos] + span * draw(st.integers(2, 4)) + text[pos:]
        elif op == "chars":
            text = text[:pos] + draw(st.text(max_size=6)) + text[pos + draw(st.integers(0, 3)):]
        else:
            other = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, len(other)))
            text = text[:pos] + other[start:start + draw(st.integers(1, 80))] + text[pos:]
    return text


def inputs(seeds: list[str], tokens: list[str]) -> st.SearchStrategy[str]:
    """Mostly mutated seeds, some arbitrary text."""
    return st.one_of(mutated(seeds, tokens), mutated(seeds, tokens), mutated(seeds, tokens), st.text(max_size=200))
