"""Records on the wire: REST JSON objects and Bulk API 2.0 CSV pages."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from typing import Any

from sfamp_sandbox.salesforce.org import Record
from sfamp_sandbox.salesforce.query import Column, FieldResolver
from sfamp_sandbox.salesforce.schema import ObjectDef
from sfamp_sandbox.salesforce.soql import FieldRef
from sfamp_sandbox.salesforce.values import datetime_rest, datetime_z, java_double

DELIMITERS = {
    "COMMA": ",",
    "BACKQUOTE": "`",
    "CARET": "^",
    "PIPE": "|",
    "SEMICOLON": ";",
    "TAB": "\t",
}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}


def attributes(object_name: str, record_id: Any, version: str) -> dict[str, str]:
    return {
        "type": object_name,
        "url": f"/services/data/v{version}/sobjects/{object_name}/{record_id}",
    }


def all_columns(resolver: FieldResolver, obj: ObjectDef) -> tuple[Column, ...]:
    """Every field the resolver's reader may see (a record read without a field list)."""
    return tuple(resolver.column(FieldRef(f.name, 0)) for f in resolver.visible_fields())


def record_json(
    obj: ObjectDef, columns: Sequence[Column], record: Record, version: str
) -> dict[str, Any]:
    """One record as REST returns it: ``attributes`` first, datetimes as ``...+0000``,
    parent fields nested under their relationship name (null when there is no parent)."""
    out: dict[str, Any] = {"attributes": attributes(obj.name, record[0], version)}
    for column in columns:
        value = column.get(record)
        if column.field.type == "datetime" and value is not None:
            value = datetime_rest(value)
        if column.relationship is None:
            out[column.name] = value
            continue
        assert column.link is not None
        assert column.target is not None
        parent_id = column.link(record)
        if parent_id is None:
            out[column.relationship] = None
            continue
        nested = out.get(column.relationship)
        if nested is None:
            nested = out[column.relationship] = {
                "attributes": attributes(column.target, parent_id, version)
            }
        nested[column.field.name] = value
    return out


_BOOLEAN_TEXT = {True: "true", False: "false"}


def _csv_cell(column: Column) -> Callable[[Any], Any] | None:
    """How to turn a stored value (not None) into CSV text; None when the csv module's own
    conversion is right (ints and strings as they are)."""
    kind = column.field.type
    if kind == "boolean":
        return lambda v: "true" if v else "false"
    if kind == "datetime":
        return datetime_z
    if kind in {"double", "currency", "percent"}:
        return java_double
    return None


def _column_text(column: Column, rows: Sequence[Record]) -> list[Any]:
    """One column's cells as CSV text ("" for null). A converted column turns each distinct
    value once when values repeat (as booleans, scores and timestamps do); values the table
    does not hold (zeros, whose sign a table cannot keep apart) are turned one by one."""
    values = list(map(column.get, rows))
    convert = _csv_cell(column)
    if convert is not None:
        distinct = set(values)
        if len(distinct) * 2 > len(values):  # mostly unique: a table would not pay
            return [convert(v) if v is not None else "" for v in values]
        table = dict(_BOOLEAN_TEXT) if column.field.type == "boolean" else {}
        table.update((v, convert(v)) for v in distinct if v and v not in table)
        cells = list(map(table.get, values))
        if None in cells:
            cells = [
                c if c is not None else "" if v is None else convert(v)
                for c, v in zip(cells, values, strict=True)
            ]
        return cells
    if None in values:
        values = ["" if v is None else v for v in values]
    if column.field.type == "int":
        values = list(map(str, values))
    return values


def csv_page(
    columns: Sequence[Column],
    rows: Sequence[Record],
    *,
    delimiter: str = ",",
    line_ending: str = "\n",
) -> bytes:
    """A CSV chunk with its own header row, every value quoted (as ``csv.writer`` with
    ``QUOTE_ALL`` writes it). Built column by column and joined line by line in C; a value
    that is not text after conversion (never stored by the org) takes the csv module."""
    try:
        cells = [_quoted_column([c.name, *_column_text(c, rows)]) for c in columns]
    except TypeError:
        return _csv_page_writer(columns, rows, delimiter, line_ending)
    separator, newline = f'"{delimiter}"', f'"{line_ending}"'
    lines = newline.join(map(separator.join, zip(*cells, strict=True)))
    return f'"{lines}"{line_ending}'.encode()


def _quoted_column(cells: Sequence[str]) -> Sequence[str]:
    """The column's cells with quotes doubled; TypeError when one is not a string."""
    if '"' in "".join(cells):
        return [cell.replace('"', '""') for cell in cells]
    return cells


def _csv_page_writer(
    columns: Sequence[Column], rows: Sequence[Record], delimiter: str, line_ending: str
) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(
        buffer, delimiter=delimiter, lineterminator=line_ending, quoting=csv.QUOTE_ALL
    )
    writer.writerow([c.name for c in columns])
    cells: list[list[Any]] = []
    for column in columns:
        convert = _csv_cell(column)
        get = column.get
        if convert is None:
            cells.append(list(map(get, rows)))
        else:
            cells.append([None if (v := get(r)) is None else convert(v) for r in rows])
    writer.writerows(zip(*cells, strict=True))
    return buffer.getvalue().encode()
