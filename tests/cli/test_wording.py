"""Counts read as words ("1 entry", "2 entries"), and summary lines wrap between clauses."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from pipeline.cli.common import clause_lines, print_clauses
from pipeline.wording import plural


@pytest.mark.parametrize(
    ("count", "words", "shown"),
    [
        (1, ("entry", "entries"), "1 entry"),
        (2, ("entry", "entries"), "2 entries"),
        (0, ("entry", "entries"), "0 entries"),
        (1, ("property", "properties"), "1 property"),
        (1, ("Salesforce API call",), "1 Salesforce API call"),
        (1_204, ("Salesforce API call",), "1,204 Salesforce API calls"),
        (1, ("try", "tries"), "1 try"),
    ],
)
def test_plural(count: int, words: tuple[str, ...], shown: str) -> None:
    assert plural(count, *words) == shown


FOOTER = [
    "1,234 Salesforce API calls",
    "12 Bulk jobs",
    "1,234,567 digests of sent values known",
    "12.3 s",
]


def test_clauses_fit_on_one_line_when_they_can() -> None:
    assert clause_lines(FOOTER[:2], 80) == ["1,234 Salesforce API calls, 12 Bulk jobs"]


def test_a_long_summary_breaks_between_clauses_only() -> None:
    assert clause_lines(FOOTER, 80) == [
        "1,234 Salesforce API calls, 12 Bulk jobs,",
        "1,234,567 digests of sent values known, 12.3 s",
    ]


@pytest.mark.parametrize("width", range(40, 100, 3))
def test_printed_at_any_width_every_line_holds_whole_clauses(width: int) -> None:
    """Rich alone would break "12.3 s" at its space when the line ends there."""
    out = io.StringIO()
    print_clauses(FOOTER, to=Console(file=out, width=width))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= width for line in lines), lines
    clauses = [c for line in lines for c in line.removesuffix(",").split(", ")]
    assert clauses == FOOTER
