"""Comments and docstrings of the task agents say why, never a measured number or ratio
(those go stale; the measurements live in docs/benchmarks.md)."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import dagger_nb

PACKAGE = Path(dagger_nb.__file__).parent
CHECKED = [*sorted((PACKAGE / "agents").glob("*.py")), PACKAGE / "dag" / "events.py"]

#: How a measurement reads in prose: "3x more", "four times as much", "half as much again",
#: "a third of its cost", "about 3,300 instructions", "tens of milliseconds".
MEASURED = re.compile(
    r"(?<![{:])\b\d+(\.\d+)?x\b|\b(two|three|four|five|ten|\d+) times\b|\bhalf as much\b|\ba third of\b"
    r"|\bless than half\b|\b[\d,]+ instructions\b|\b(tens|hundreds) of (milli|micro)seconds\b"
    r"|\b\d+(\.\d+)? ?(ms|µs|us)\b",
    re.IGNORECASE,
)


def prose(path: Path) -> list[tuple[int, str]]:
    """The comments and string literals (docstrings among them) of ``path``, with their lines."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline):
        if token.type in (tokenize.COMMENT, tokenize.STRING):
            found.append((token.start[0], token.string))
    return found


def test_comments_quote_no_measured_numbers() -> None:
    assert len(CHECKED) > 15
    offending = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {match.group(0)!r}"
        for path in CHECKED
        for line, text in prose(path)
        for match in [MEASURED.search(" ".join(text.split()))]
        if match is not None
    ]
    assert not offending, offending


def test_the_check_sees_what_it_forbids() -> None:
    for text in ("a memory stream costs 3x more", "costs four times as much", "costs half as much again",
                 "a third of its cost", "about 3,300 instructions each", "tens of milliseconds"):
        assert MEASURED.search(text), text
    assert not MEASURED.search("a plain attribute read is cheaper than a model's")
    assert not MEASURED.search('f"task-{bits:012x}"')  # a format, not a ratio
