"""What the property tests of the text steps share (tests/test_text_properties.py,
tests/test_dedup_properties.py): generated texts up to 1 MB, the named bait of text/bait.py
as explicit examples, hypothesis's settings, and the hang guard.

The bound. Every test asserts a bound on the step's output that does not depend on the
machine: sizes and counts, and the two quantities that drive a known super-linear cost, the
combining marks in a row after normalize_text (Unicode normalisation sorts them) and the
attributes of a parsed tag (libxml2 compares each with the others). The work itself cannot be
counted: the super-linear risks are inside C code (the `re` engine, unicodedata, lxml), which
offers no step counter, and a timed assertion would only measure the machine. So a hang
guard stands in for it (tests/conftest.py's `hang_guard`, which both modules use): a test
still running after GUARD_S seconds ends the run with every thread's stack, generous for a busy
machine and far below what a quadratic step needs on these inputs (the old alphabetic
filter: hours on 300 KB; NFC on 1 MB of combining marks: 14 to 60 minutes; libxml2 on 400 KB
of attributes in one tag: 44 s, here capped at 3,000 attributes so that an escaped tag shows
as a count, not a wait). The seconds per MB are measured in benchmarks/text_steps.py and
recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, example, settings
from hypothesis import strategies as st

from text import bait

MB = 1_000_000
TEXT = Path(__file__).resolve().parent.parent / "data" / "text"
PROSE = (TEXT / "milton/areopagitica.txt").read_text(encoding="utf-8")
PARAGRAPHS = [p for p in PROSE.split("\n\n") if len(p) > 200][:40]

PROPERTY = settings(max_examples=12, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])

# Units a text is made of: the named bait, hostile characters, prose, anything.
UNITS = [unit for prefix, unit in bait.TEXT_UNITS.values() if unit] + [
    "-", ".", "'", "\u2019", "#", "\u2026", " ", "\t", "\n\n", "\r\n", "\r", "\x07", "\x1b",
    "\x7f", "\ufeff", "\u2028", "\u0344", "\u0301", "e\u0301", "\x00\u0301", "the ", "word. ",
    "Sign up. ", "\U0001f600"]
unit = st.one_of(st.sampled_from(UNITS), st.sampled_from(PARAGRAPHS), st.text(min_size=1,
                                                                             max_size=8))
# A run: a unit repeated to a drawn length, built in one multiplication whatever the size.
run = st.builds(bait.repeat, unit, st.integers(0, MB))
texts = st.lists(run, min_size=1, max_size=4).map(lambda runs: "".join(runs)[:MB])
BAIT_TEXTS = {name: bait.text_bait(name, MB) for name in bait.TEXT_UNITS} | {
    name: bait.repeat(pii, MB) for name, pii in bait.PII_UNITS.items()}


def with_bait(*rest, only=tuple(bait.TEXT_UNITS)):
    """The test also on each named bait text of 1 MB (then `rest`), every run."""
    def decorate(test):
        for name in only:
            test = example(BAIT_TEXTS[name], *rest)(test)
        return test
    return decorate
