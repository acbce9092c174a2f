"""Bulk CSV pages are built by joining text column by column; they must stay byte for byte
what ``csv.writer`` with ``QUOTE_ALL`` writes, and doubles what Java's ``Double.toString``
prints, whatever the values."""

from __future__ import annotations

import csv
import io
import operator
import random
import struct
from decimal import Decimal
from typing import Any

import pytest

from sfamp_sandbox.salesforce.query import Column
from sfamp_sandbox.salesforce.render import DELIMITERS, LINE_ENDINGS, csv_page
from sfamp_sandbox.salesforce.schema import FieldDef
from sfamp_sandbox.salesforce.values import datetime_z, java_double

KINDS = ("id", "string", "textarea", "int", "double", "currency", "boolean", "date", "datetime")
AWKWARD_TEXT = ('say "hi"', '"', "a,b", "a`b^c|d;e\tf", "line\nbreak", "cr\rlf\r\n", "nul\x00", "")


def decimal_java_double(value: float) -> str:
    """Java's ``Double.toString`` read through ``Decimal`` (the plain, slow reading)."""
    if value == 0 or 1e-3 <= abs(value) < 1e7:
        return repr(value)
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    return f"{'-' if sign else ''}{text[0]}.{text[1:] or '0'}E{len(text) - 1 + exponent}"


def test_java_double_matches_the_decimal_reading_on_many_doubles() -> None:
    rng = random.Random(17)
    values = [float(rng.randint(1, 2**53)) for _ in range(5000)]
    values += [float(rng.randint(2**53, 2**70)) for _ in range(2000)]
    values += [rng.uniform(-1e20, 1e20) for _ in range(5000)]
    values += [struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0] for _ in range(20000)]
    values += [sign * 10.0**k for k in range(-320, 309) for sign in (1, -1)]
    values += [1e7, -1e7, 9_999_999.999, 0.001, 0.000999, 5e-324, 1.7976931348623157e308]
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    assert [java_double(v) for v in finite] == [decimal_java_double(v) for v in finite]


def writer_page(
    rows: list[tuple[Any, ...]], kinds: tuple[str, ...], delimiter: str, end: str
) -> bytes:
    """The page as the csv module writes it, with the sandbox's conversions."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=end, quoting=csv.QUOTE_ALL)
    writer.writerow([f"F{i}" for i in range(len(kinds))])
    for row in rows:
        cells: list[Any] = []
        for kind, value in zip(kinds, row, strict=True):
            if value is not None and kind == "boolean":
                value = "true" if value else "false"
            elif value is not None and kind == "datetime":
                value = datetime_z(value)
            elif value is not None and kind in {"double", "currency"}:
                value = java_double(value)
            cells.append(value)
        writer.writerow(cells)
    return buffer.getvalue().encode()


def value_of(kind: str, rng: random.Random) -> Any:
    if rng.random() < 0.15:
        return None
    if kind == "int":
        return rng.choice((0, -5, 7, rng.randint(-(2**40), 2**40)))
    if kind in {"double", "currency"}:
        return rng.choice((0.0, -0.0, 1.5, 89.2, 15_000_000.0, rng.uniform(-1e12, 1e12)))
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "datetime":
        return rng.choice((0, 1_700_000_000_123, rng.randint(0, 2**41)))
    if kind == "date":
        return rng.choice(("2024-01-31", "2027-12-01"))
    return rng.choice((*AWKWARD_TEXT, "Ünïcødé ✓", f"plain {rng.randint(0, 9)}"))


@pytest.mark.parametrize("delimiter", sorted(DELIMITERS))
@pytest.mark.parametrize("line_ending", sorted(LINE_ENDINGS))
def test_csv_page_is_what_csv_writer_writes(delimiter: str, line_ending: str) -> None:
    rng = random.Random(f"{delimiter}{line_ending}")
    columns = [
        Column(f"F{i}", FieldDef(f"F{i}", kind, kind), operator.itemgetter(i))
        for i, kind in enumerate(KINDS)
    ]
    # Few rows (values repeat) and many (mostly distinct), so both conversions run.
    for count in (0, 1, 7, 600):
        rows = [tuple(value_of(kind, rng) for kind in KINDS) for _ in range(count)]
        expected = writer_page(rows, KINDS, DELIMITERS[delimiter], LINE_ENDINGS[line_ending])
        page = csv_page(
            columns, rows, delimiter=DELIMITERS[delimiter], line_ending=LINE_ENDINGS[line_ending]
        )
        assert page == expected


def test_a_value_that_is_not_text_in_a_text_column_is_written_as_the_csv_module_does() -> None:
    columns = [Column("Name", FieldDef("Name", "string", "Name"), operator.itemgetter(0))]
    rows = [("Acme",), (42,), (None,), (2.5,)]
    assert csv_page(columns, rows) == b'"Name"\n"Acme"\n"42"\n""\n"2.5"\n'
