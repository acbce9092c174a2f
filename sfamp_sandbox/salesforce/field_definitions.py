"""``FieldDefinition`` through the REST query endpoint: every field of an object, readable or not.

Describe, SOQL and change events leave out a field hidden from the API user by field-level
security, so a hidden field looks exactly like a misspelt one. ``FieldDefinition`` (metadata,
queryable with SOQL since API 32.0) lists every field of an object whatever the user's field
access, which is how a client tells the two apart::

    SELECT QualifiedApiName FROM FieldDefinition
    WHERE EntityDefinition.QualifiedApiName = 'Account' AND QualifiedApiName IN ('Industry')

As in Salesforce, the WHERE clause must filter the entity (``EntityDefinition.QualifiedApiName``,
``EntityDefinitionId`` or ``DurableId``, with ``=`` or ``IN``) at its top level, else the query
fails with ``EXTERNAL_OBJECT_UNSUPPORTED_EXCEPTION``; an unknown entity matches no row. Rows
carry a subset of the real columns (``COLUMNS``); string comparisons ignore case, as SOQL's do.
``DurableId`` is ``Object.Field`` (Salesforce uses the field's own id for custom fields).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from sfamp_sandbox.salesforce.api_error import ApiError, invalid_field
from sfamp_sandbox.salesforce.objects import OBJECTS
from sfamp_sandbox.salesforce.query import like_regex
from sfamp_sandbox.salesforce.schema import FieldDef, ObjectDef
from sfamp_sandbox.salesforce.soql import (
    BoolOp,
    Comparison,
    Condition,
    FieldRef,
    Literal,
    Not,
    Query,
    malformed,
)

ENTITY = "FieldDefinition"
PARENT = "EntityDefinition"
PARENT_NAME = f"{PARENT}.QualifiedApiName"
FIELD_DEFINITION_ID = "000000000000000AAA"  # every FieldDefinition row has this Id
REIFIED = frozenset({PARENT_NAME.lower(), "entitydefinitionid", "durableid"})
REIFIED_MESSAGE = f"{ENTITY}: a filter on a reified column is required."

Row = tuple[ObjectDef, FieldDef]
COLUMNS: dict[str, Callable[[ObjectDef, FieldDef], Any]] = {
    "Id": lambda o, f: FIELD_DEFINITION_ID,
    "DurableId": lambda o, f: f"{o.name}.{f.name}",
    "QualifiedApiName": lambda o, f: f.name,
    "DeveloperName": lambda o, f: f.name.removesuffix("__c"),
    "Label": lambda o, f: f.label,
    "MasterLabel": lambda o, f: f.label,
    "NamespacePrefix": lambda o, f: None,
    "EntityDefinitionId": lambda o, f: o.name,
    "Length": lambda o, f: f.length,
    "Precision": lambda o, f: f.precision,
    "Scale": lambda o, f: f.scale,
    "IsCalculated": lambda o, f: f.calculated,
    "IsNillable": lambda o, f: f.nillable,
    "IsNameField": lambda o, f: f.name_field,
    PARENT_NAME: lambda o, f: o.name,
}
_BY_LOWER = {name.lower(): name for name in COLUMNS}
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


def is_field_definition(query: Query) -> bool:
    return query.object_name.lower() == ENTITY.lower()


def answer(query: Query, version: str) -> dict[str, Any]:
    """The REST query result of a parsed ``... FROM FieldDefinition`` query (one page)."""
    columns = [_column(query.text, ref) for ref in query.fields]
    lowered = [c.lower() for c in columns]
    if len(set(lowered)) != len(lowered):
        duplicate = next(c for c in lowered if lowered.count(c) > 1)
        raise ApiError(400, "MALFORMED_QUERY", f"duplicate field selected: {duplicate}")
    if query.where is None or not _filters_entity(query.where):
        raise ApiError(400, "EXTERNAL_OBJECT_UNSUPPORTED_EXCEPTION", REIFIED_MESSAGE)
    keep = _predicate(query.text, query.where)
    rows = [(o, f) for o in OBJECTS.values() for f in o.fields if keep((o, f))]
    for item in reversed(query.order_by):
        rows.sort(key=_order_key(COLUMNS[_column(query.text, item.field)]), reverse=item.descending)
    end = None if query.limit is None else query.offset + query.limit
    rows = rows[query.offset : end]
    if query.count:
        return {"totalSize": len(rows), "done": True, "records": []}
    records = [_record(columns, row, version) for row in rows]
    return {"totalSize": len(records), "done": True, "records": records}


def _column(text: str, ref: FieldRef) -> str:
    name = _BY_LOWER.get(ref.path.lower())
    if name is not None:
        return name
    head, _, tail = ref.path.partition(".")
    entity, missing = (PARENT, tail) if tail and head.lower() == PARENT.lower() else (ENTITY, head)
    caret = malformed(text, ref.pos, "").message.rsplit("\n", 1)[0] + "\n"
    raise invalid_field(missing, entity, caret)


def _record(columns: list[str], row: Row, version: str) -> dict[str, Any]:
    obj, field = row
    base = f"/services/data/v{version}/sobjects"
    out: dict[str, Any] = {
        "attributes": {"type": ENTITY, "url": f"{base}/{ENTITY}/{obj.name}.{field.name}"}
    }
    for name in columns:
        if name == PARENT_NAME:
            out[PARENT] = {
                "attributes": {"type": PARENT, "url": f"{base}/{PARENT}/{obj.name}"},
                "QualifiedApiName": obj.name,
            }
        else:
            out[name] = COLUMNS[name](obj, field)
    return out


def _filters_entity(condition: Condition) -> bool:
    """Whether the top-level conjunction pins the entity with ``=`` or ``IN``."""
    items = condition.items if isinstance(condition, BoolOp) and condition.op == "AND" else ()
    return any(
        isinstance(c, Comparison) and c.op in {"=", "in"} and c.field.path.lower() in REIFIED
        for c in (items or (condition,))
    )


def _order_key(get: Callable[[ObjectDef, FieldDef], Any]) -> Callable[[Row], tuple[int, Any]]:
    """Nulls first, text without regard to case."""

    def key(row: Row) -> tuple[int, Any]:
        value = get(*row)
        return (0, "") if value is None else (1, _norm(value))

    return key


def _norm(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _value(literal: Literal) -> Any:
    return _norm(literal.value)


def _predicate(text: str, condition: Condition) -> Callable[[Row], bool]:
    if isinstance(condition, Not):
        inner = _predicate(text, condition.item)
        return lambda row: not inner(row)
    if isinstance(condition, BoolOp):
        parts = [_predicate(text, c) for c in condition.items]
        combine = all if condition.op == "AND" else any
        return lambda row: combine(p(row) for p in parts)
    return _comparison(text, condition)


def _comparison(text: str, cmp: Comparison) -> Callable[[Row], bool]:
    get = COLUMNS[_column(text, cmp.field)]

    def value(row: Row) -> Any:
        return _norm(get(*row))

    if isinstance(cmp.value, tuple):
        wanted = {_value(v) for v in cmp.value}
        if cmp.op == "in":
            return lambda row: value(row) in wanted
        if cmp.op == "notin":
            return lambda row: value(row) not in wanted
        raise ApiError(400, "INVALID_QUERY_FILTER_OPERATOR", f"invalid operator on {ENTITY}")
    literal = _value(cmp.value)
    if cmp.op == "like":
        regex = like_regex(str(cmp.value.value))
        return lambda row: isinstance(v := get(*row), str) and regex.match(v) is not None
    if cmp.op == "=":
        return lambda row: value(row) == literal
    if cmp.op == "!=":
        return lambda row: value(row) != literal
    test = _ORDER[cmp.op]

    def ordered(row: Row) -> bool:
        v = value(row)
        try:
            return v is not None and literal is not None and test(v, literal)
        except TypeError:  # a text column against a number, or the other way round
            return False

    return ordered
