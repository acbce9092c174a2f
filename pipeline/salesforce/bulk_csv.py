"""Bulk API 2.0 CSV result pages as typed rows.

Bulk cannot tell null from empty, and Salesforce stores no empty strings, so an
empty cell is ``None``. Typed columns (numbers, booleans, datetimes) are converted
into what REST JSON would hold (:func:`rest_converters`), so a record read
through Bulk enters the transform exactly as one read through REST.

A page is split and typed a *block* of rows at a time (:data:`ROWS_AT_ONCE`, or a
backfill's batch), column by column: a column of numbers or booleans goes through
``float``, ``int`` or a dict lookup in one list comprehension, with no Python call
per cell. A block of
full-width rows stays a :class:`RowColumns`, whose row dicts are built only when
something reads them; code that works column by column (a backfill's transform)
never builds them.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, cast, overload

from pipeline.salesforce.text import UNDECODABLE

MEMO_TEXTS: Final = 4096  # conversions remembered per typed column of a block
ROWS_AT_ONCE: Final = 1_000  # rows of a page split and converted together by default
_UNSEEN: Any = object()

Convert = Callable[[str], Any]


class RowColumns(Sequence[dict[str, Any]]):
    """Full-width rows of a CSV page held column by column.

    ``header`` names the columns and ``columns`` holds one sequence of typed cells per
    column, all as long as the block. Reading a row (by index or by iterating) gives
    the dict :func:`parse_csv` gives for it; the first iteration builds every row's
    dict and keeps them, so a block read twice builds them once. :meth:`column` hands
    a whole column to code that works column by column, which then builds no dict.
    """

    __slots__ = ("_rows", "columns", "header")

    def __init__(self, header: Sequence[str], columns: Sequence[Sequence[Any]]) -> None:
        self.header = header
        self.columns = columns
        self._rows: list[dict[str, Any]] | None = None

    def column(self, name: str) -> Sequence[Any] | None:
        """The cells of column ``name`` (the last of that name, as a row dict keeps it);
        None when the page has no such column."""
        for index in range(len(self.header) - 1, -1, -1):
            if self.header[index] == name:
                return self.columns[index]
        return None

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> RowColumns: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | RowColumns:
        if isinstance(index, slice):
            return RowColumns(self.header, [cells[index] for cells in self.columns])
        if self._rows is not None:
            return self._rows[index]
        return dict(zip(self.header, [cells[index] for cells in self.columns], strict=False))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._rows is None:
            header = self.header
            # Every column is as long as the block, so no zip checks lengths.
            rows = zip(*self.columns, strict=False)
            self._rows = [dict(zip(header, values, strict=False)) for values in rows]
        return iter(self._rows)

    def __eq__(self, other: object) -> bool:
        """Equal to a list or another block holding equal rows."""
        if isinstance(other, RowColumns | list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable rows, as a list's

    def __repr__(self) -> str:
        return f"RowColumns({len(self)} rows of {list(self.header)!r})"


def parse_csv(
    content: bytes, converters: Mapping[str, Convert] | None = None
) -> Iterator[dict[str, Any]]:
    """Rows of a Bulk CSV page as dicts, header row first, parsed as they are read.

    ``converters`` (column -> function) turn the text of typed columns into what REST
    JSON would hold (see :func:`rest_converters`); an empty cell is ``None``.
    """
    for block in csv_blocks(content, converters):
        yield from block


def csv_blocks(
    content: bytes, converters: Mapping[str, Convert] | None = None, *, rows: int = ROWS_AT_ONCE
) -> Iterator[Sequence[dict[str, Any]]]:
    """The rows of a CSV page (header row first) up to ``rows`` at a time, typed as
    :func:`parse_csv` types them, none empty.

    A block of full-width rows is a :class:`RowColumns`. A block with a blank line, a
    short or a long row is a list of dicts, each naming what its row has (blank lines
    left out), converted row by row.
    """
    text = io.TextIOWrapper(io.BytesIO(content), encoding="utf-8", errors=UNDECODABLE, newline="")
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        return
    converters = converters or {}
    typed = [(i, converters[name]) for i, name in enumerate(header) if name in converters]
    full_width = {len(header)}
    while block := list(itertools.islice(reader, rows)):
        if set(map(len, block)) == full_width:
            if header:  # else blank lines under a blank header: no row to give
                yield RowColumns(header, _typed_columns(block, typed))
            continue
        ragged = [
            _ragged(header, [cell or None for cell in cells], converters)
            for cells in block
            if cells
        ]
        if ragged:
            yield ragged


def _typed_columns(block: list[list[str]], typed: list[tuple[int, Convert]]) -> list[Sequence[Any]]:
    """The block's columns, empty cells ``None`` and typed columns converted.

    Every row is as wide as the header (checked by the caller), so no zip checks lengths.
    """
    columns: list[Sequence[Any]] = list(zip(*block, strict=False))
    empty: set[int] = set()  # the columns with an empty cell
    for index, cells in enumerate(columns):
        if not all(cells):  # an empty text (every cell is text: a truth test, not ==)
            columns[index] = [cell or None for cell in cells]
            empty.add(index)
    for index, convert in typed:
        columns[index] = _column(columns[index], convert, empty=index in empty)
    return columns


def _column(cells: Sequence[str | None], convert: Convert, *, empty: bool = True) -> list[Any]:
    """``convert`` of every cell but the empty ones (``None``); ``empty``: whether
    there may be one."""
    exact = _EXACT_FORMS.get(convert)
    if exact is not None:
        try:
            if not empty:
                return list(map(exact, cast("Sequence[str]", cells)))  # no None in it
            return [None if cell is None else exact(cell) for cell in cells]
        except (ValueError, KeyError):
            pass  # a text only ``convert`` knows (say "1.5E3" in an int column)
    # Booleans, picklist-like numbers and stamps repeat: each text converted once.
    memo: dict[str, Any] = {}
    converted: list[Any] = []
    for cell in cells:
        if cell is None:
            converted.append(None)
            continue
        value = memo.get(cell, _UNSEEN)
        if value is _UNSEEN:
            value = convert(cell)
            if len(memo) < MEMO_TEXTS:
                memo[cell] = value
        converted.append(value)
    return converted


def _ragged(
    header: list[str], values: list[Any], converters: Mapping[str, Convert]
) -> dict[str, Any]:
    record: dict[str, Any] = dict(zip(header, values, strict=False))
    for name, convert in converters.items():
        value = record.get(name)
        if value is not None:
            record[name] = convert(value)
    return record


def column_of(records: Sequence[Mapping[str, Any]], name: str) -> Sequence[Any]:
    """The value of ``name`` in each record (``None`` where absent), as one sequence:
    a :class:`RowColumns`' own column, without building its rows."""
    if isinstance(records, RowColumns):
        cells = records.column(name)
        return [None] * len(records) if cells is None else cells
    return [record.get(name) for record in records]


def after_rows(
    blocks: Iterable[Sequence[dict[str, Any]]], count: int
) -> Iterator[Sequence[dict[str, Any]]]:
    """``blocks`` without their first ``count`` rows (a resumed page's rows done)."""
    for block in blocks:
        if count >= len(block):
            count -= len(block)
            continue
        yield block[count:] if count else block
        count = 0


def batched(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Consecutive lists of up to ``size`` rows."""
    iterator = iter(rows)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def rest_converters(types: Mapping[str, str]) -> dict[str, Convert]:
    """Per-column functions from CSV text to REST JSON values, by describe ``type``.

    The stream path sees REST/CDC JSON; converting here means a backfilled
    record enters the transform exactly as a re-read one would, so both paths
    leave identical properties.
    """
    converters: dict[str, Convert] = {}
    for name, sf_type in types.items():
        convert = _CONVERTERS.get(sf_type)
        if convert is not None:
            converters[name] = convert
    return converters


def _boolean(text: str) -> Any:
    lowered = text.lower()
    return lowered == "true" if lowered in ("true", "false") else text


def _integer(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return _double(text)


def _double(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _datetime(text: str) -> str:
    # Bulk writes 2024-04-09T20:26:27.000Z, REST 2024-04-09T20:26:27.000+0000.
    return text[:-1] + "+0000" if text.endswith("Z") else text


_BOOLEANS: Final = {"true": True, "false": False}
# A C-level function answering what the converter answers for every text it takes,
# and raising ValueError or KeyError for the others.
_EXACT_FORMS: Final[dict[Convert, Convert]] = {
    _boolean: _BOOLEANS.__getitem__,
    _integer: int,
    _double: float,
}

_CONVERTERS: Final[dict[str, Convert]] = {
    "boolean": _boolean,
    "int": _integer,
    "long": _integer,
    "double": _double,
    "currency": _double,
    "percent": _double,
    "datetime": _datetime,
}
