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


def _csv_cell(column: Column) -> Callable[[Record], Any] | None:
    """How to turn a value into CSV text; None when the csv module's own conversion is right
    (it writes None as an empty cell, ints and strings as they are)."""
    kind = column.field.type
    get = column.get
    if kind == "boolean":
        return lambda r: None if (v := get(r)) is None else ("true" if v else "false")
    if kind == "datetime":
        return lambda r: None if (v := get(r)) is None else datetime_z(v)
    if kind in {"double", "currency", "percent"}:
        return lambda r: None if (v := get(r)) is None else java_double(v)
    return None


def csv_page(
    columns: Sequence[Column],
    rows: Sequence[Record],
    *,
    delimiter: str = ",",
    line_ending: str = "\n",
) -> bytes:
    """A CSV chunk with its own header row, every value quoted. Built column by column, so the
    per-row work stays inside C code (itemgetter, zip, csv.writer)."""
    buffer = io.StringIO()
    writer = csv.writer(
        buffer, delimiter=delimiter, lineterminator=line_ending, quoting=csv.QUOTE_ALL
    )
    writer.writerow([c.name for c in columns])
    cells: list[list[Any]] = []
    for column in columns:
        convert = _csv_cell(column)
        cells.append(list(map(convert or column.get, rows)))
    writer.writerows(zip(*cells, strict=True))
    return buffer.getvalue().encode()
