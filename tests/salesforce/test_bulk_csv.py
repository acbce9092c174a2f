"""Bulk CSV pages typed column by column (pipeline/salesforce/bulk_csv.py) mean what each cell
converted alone means: every kind of text in every typed column, blank lines and ragged
rows among full ones, pages longer than the rows converted at once; a block held column by
column gives the rows parse_csv gives."""

from __future__ import annotations

import csv
import io
import random
from typing import Any

import pytest

from pipeline.salesforce import bulk_csv
from pipeline.salesforce.bulk_csv import (
    ROWS_AT_ONCE,
    RowColumns,
    after_rows,
    column_of,
    csv_blocks,
    parse_csv,
    rest_converters,
)

TYPES = {
    "Active": "boolean",
    "Seats": "int",
    "Count": "long",
    "Score": "double",
    "Revenue": "currency",
    "Share": "percent",
    "Modified": "datetime",
}
HEADER = ["Id", "Name", *TYPES]
TEXTS: dict[str, list[str]] = {
    "Name": ["Acme", "", "Zoë", "1.5"],
    "Active": ["true", "false", "", "TRUE", "False", "yes"],
    "Seats": ["12", "", "-3", "1.5E3", "12.0", "n/a", "007"],
    "Count": ["9007199254740993", "", "1e2"],
    "Score": ["1.5", "", "1.5448614E10", "nan", "x", "-0.0"],
    "Revenue": ["100", "", "2.5", "1,000"],
    "Share": ["0.5", "", "inf"],
    "Modified": ["2024-04-09T20:26:27.000Z", "", "2024-04-09T20:26:27.000+0000", "Z"],
}


def cell_by_cell(content: bytes, types: dict[str, str]) -> list[dict[str, Any]]:
    """What the parse means, one cell at a time: empty -> None, typed text -> its converter."""
    converters = rest_converters(types)
    reader = csv.reader(io.StringIO(content.decode(), newline=""))
    header = next(reader)
    records = []
    for cells in reader:
        if not cells:
            continue
        record = dict(zip(header, [cell or None for cell in cells], strict=False))
        for name, convert in converters.items():
            if record.get(name) is not None:
                record[name] = convert(record[name])
        records.append(record)
    return records


def page(rows: list[list[str]]) -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows([HEADER, *rows])
    return out.getvalue().encode()


def full_row(rng: random.Random, number: int, *, typical: bool, whole: bool = False) -> list[str]:
    """A row of every column; ``typical``: texts the fast forms take (no odd spelling);
    ``whole``: no empty cell."""
    row = [f"001{number:015d}"]
    for name in HEADER[1:]:
        choices = TEXTS[name][:3] if typical else TEXTS[name]
        row.append(rng.choice([text for text in choices if text or not whole]))
    return row


@pytest.mark.parametrize(
    ("typical", "whole"),
    [(True, False), (False, False), (True, True), (False, True)],
    ids=["fast-forms", "odd-texts", "fast-forms-no-empty-cell", "odd-texts-no-empty-cell"],
)
@pytest.mark.parametrize("ragged", [False, True], ids=["full-rows", "ragged-rows"])
def test_a_page_means_what_its_cells_mean_one_by_one(
    typical: bool, whole: bool, ragged: bool
) -> None:
    rng = random.Random(f"{typical}-{whole}-{ragged}")
    rows = [full_row(rng, n, typical=typical, whole=whole) for n in range(ROWS_AT_ONCE * 2 + 17)]
    if ragged:
        for at in sorted(rng.sample(range(len(rows)), 5), reverse=True):
            rows.insert(at, rng.choice([[], rows[at][:3], [*rows[at], "extra"]]))
    content = page(rows)

    parsed = list(parse_csv(content, rest_converters(TYPES)))

    # Compared as text: 1 == 1.0 == True but their reprs differ, and nan != nan.
    assert repr(parsed) == repr(cell_by_cell(content, TYPES))


def test_a_column_with_a_text_the_fast_form_refuses_is_converted_cell_by_cell() -> None:
    rows = [["001A", "Acme", "true", "12", "1", "1.5", "1", "1", ""]] * 3
    rows.append(["001B", "Acme", "TRUE", "1.5E3", "1", "x", "1", "1", ""])
    parsed = list(parse_csv(page(rows), rest_converters(TYPES)))

    assert [r["Seats"] for r in parsed] == [12, 12, 12, 1500.0]
    assert [r["Active"] for r in parsed] == [True, True, True, True]
    assert [r["Score"] for r in parsed] == [1.5, 1.5, 1.5, "x"]


def test_only_converters_with_an_exact_form_skip_the_call_per_cell() -> None:
    # The C-level forms answer exactly what the converters answer, or raise.
    for convert, exact in bulk_csv._EXACT_FORMS.items():
        for texts in TEXTS.values():
            for text in filter(None, texts):
                try:
                    fast = exact(text)
                except (ValueError, KeyError):
                    continue
                assert repr(fast) == repr(convert(text)), text


def test_blocks_hold_the_rows_column_by_column_and_give_them_as_parse_csv_does() -> None:
    rng = random.Random("blocks")
    rows = [full_row(rng, n, typical=True) for n in range(25)]  # no nan: compared by ==
    rows.insert(12, [])  # a blank line: its block is a list of dicts
    content = page(rows)
    converters = rest_converters(TYPES)
    expected = list(parse_csv(content, converters))

    blocks = list(csv_blocks(content, converters, rows=10))

    assert [type(b).__name__ for b in blocks] == ["RowColumns", "list", "RowColumns"]
    assert [len(b) for b in blocks] == [10, 9, 6]
    assert [row for b in blocks for row in b] == expected
    first = blocks[0]
    assert isinstance(first, RowColumns)
    assert first[3] == expected[3]
    assert first[-1] == expected[9]
    assert first[2:4] == expected[2:4]
    assert list(first.column("Seats") or []) == [r["Seats"] for r in expected[:10]]
    assert first.column("Missing") is None
    assert column_of(first, "Missing") == [None] * 10
    assert column_of(blocks[1], "Seats") == [r["Seats"] for r in expected[10:19]]
    assert first == expected[:10]
    assert first != expected[:9]
    assert [row for b in after_rows(blocks, 12) for row in b] == expected[12:]
    assert [len(b) for b in after_rows(blocks, 10)] == [9, 6]


def test_a_row_of_a_block_read_twice_is_the_same_dict() -> None:
    content = page([full_row(random.Random(n), n, typical=True) for n in range(3)])
    (block,) = csv_blocks(content, rest_converters(TYPES))

    first = list(block)
    assert [id(row) for row in block] == [id(row) for row in first]


@pytest.mark.parametrize("content", [b"", b"\n\n\n", b'"Id","Name"\n'])
def test_a_page_without_rows_gives_no_block(content: bytes) -> None:
    assert list(csv_blocks(content, rest_converters(TYPES))) == []
