"""Resolves a parsed SOQL query against the org and runs it.

Field references become getters over stored tuples; the WHERE tree becomes one predicate
closure; the result is a list of record tuples (a snapshot: later writes replace tuples and do
not change it).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sfamp_sandbox.salesforce.api_error import ApiError, invalid_field
from sfamp_sandbox.salesforce.ids import to_18
from sfamp_sandbox.salesforce.objects import find_object
from sfamp_sandbox.salesforce.org import Org, Record
from sfamp_sandbox.salesforce.schema import ADDRESS_PARTS, TEXT_TYPES, FieldDef, ObjectDef
from sfamp_sandbox.salesforce.soql import (
    BoolOp,
    Comparison,
    Condition,
    FieldRef,
    Literal,
    Not,
    Query,
    malformed,
    parse,
)
from sfamp_sandbox.salesforce.values import parse_datetime_ms

Predicate = Callable[[Record], bool]
USER_FIELDS = {"Id": "id", "Name": "name", "Username": "username", "Email": "email"}
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


@dataclass(frozen=True, slots=True)
class Column:
    """One selected (or filtered) field: its canonical name, its definition and a getter."""

    name: str
    field: FieldDef
    get: Callable[[Record], Any]
    relationship: str | None = None  # "Account" for Account.Name
    target: str | None = None  # object the relationship points to
    link: Callable[[Record], Any] | None = None  # the parent's id, for its attributes


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    query: Query
    obj: ObjectDef
    columns: tuple[Column, ...]
    predicate: Predicate | None
    sort_keys: tuple[tuple[Column, bool, bool], ...]

    def run(self, org: Org, *, include_deleted: bool) -> list[Record]:
        records = org.stores[self.obj.name].records.values()
        rows: list[Record]
        predicate = self.predicate
        if include_deleted:
            rows = list(records) if predicate is None else [r for r in records if predicate(r)]
        elif predicate is None:
            rows = [r for r in records if not r[1]]
        else:
            rows = [r for r in records if not r[1] and predicate(r)]
        for column, descending, nulls_first in reversed(self.sort_keys):
            rows.sort(key=_sort_key(column, descending, nulls_first), reverse=descending)
        offset = self.query.offset
        end = None if self.query.limit is None else offset + self.query.limit
        return rows[offset:end] if offset or end is not None else rows


def _sort_key(column: Column, descending: bool, nulls_first: bool) -> Callable[[Record], Any]:
    none_rank = 0 if nulls_first == (not descending) else 1
    get = column.get
    # Text sorts case-insensitively; ids keep their case-sensitive (creation) order.
    lower = column.field.type in TEXT_TYPES and column.field.type not in {"id", "reference"}

    def key(record: Record) -> tuple[int, Any]:
        value = get(record)
        if value is None:
            return (none_rank, "")
        return (1 - none_rank, value.lower() if lower else value)

    return key


def compile_query(org: Org, text: str) -> CompiledQuery:
    """Parse and resolve; raises ApiError with MALFORMED_QUERY, INVALID_TYPE or INVALID_FIELD."""
    return compile_parsed(org, parse(text))


def compile_parsed(org: Org, query: Query) -> CompiledQuery:
    """Resolve a parsed query against the org's objects (see :func:`compile_query`)."""
    text = query.text
    obj = find_object(query.object_name)
    if obj is None:
        error = malformed(text, query.object_pos, "")
        raise ApiError(
            400,
            "INVALID_TYPE",
            error.message.rsplit("\n", 1)[0] + "\n" + _invalid_type_text(query.object_name),
        )
    resolver = FieldResolver(org, obj, text)
    columns = tuple(resolver.column(ref) for ref in query.fields)
    names = [c.name.lower() for c in columns]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ApiError(400, "MALFORMED_QUERY", f"duplicate field selected: {duplicate}")
    predicate = None if query.where is None else resolver.predicate(query.where)
    sort_keys = tuple(
        (resolver.column(item.field), item.descending, item.nulls_first) for item in query.order_by
    )
    return CompiledQuery(query, obj, columns, predicate, sort_keys)


def _invalid_type_text(name: str) -> str:
    return (
        f"sObject type '{name}' is not supported. If you are attempting to use a custom object,"
        " be sure to append the '__c' after the entity name. Please reference your WSDL or the"
        " describe call for the appropriate names."
    )


class FieldResolver:
    """Turns field names (plain, compound, derived, parent.field) into getters over records.

    With ``secure`` (every API read) a field hidden by field-level security does not exist;
    the control API resolves without it.
    """

    def __init__(self, org: Org, obj: ObjectDef, text: str, *, secure: bool = True) -> None:
        self.org = org
        self.obj = obj
        self.text = text
        self.secure = secure

    def readable(self, obj: ObjectDef, field: FieldDef | None) -> FieldDef | None:
        """``field`` if the reader may see it, else None."""
        if field is None or (self.secure and self.org.security.hides(obj.name, field.name)):
            return None
        return field

    def visible_fields(self) -> tuple[FieldDef, ...]:
        """The object's fields this reader may see, in describe order."""
        return tuple(f for f in self.obj.fields if self.readable(self.obj, f) is not None)

    def unknown(self, ref: FieldRef, name: str, entity: str) -> ApiError:
        caret = malformed(self.text, ref.pos, "").message.rsplit("\n", 1)[0] + "\n"
        return invalid_field(name, entity, caret)

    def column(self, ref: FieldRef) -> Column:
        head, _, tail = ref.path.partition(".")
        if tail:
            return self.relationship(ref, head, tail)
        field = self.readable(self.obj, self.obj.find(head))
        if field is None:
            raise self.unknown(ref, head, self.obj.name)
        return Column(field.name, field, self.getter(self.obj, field))

    def getter(self, obj: ObjectDef, field: FieldDef) -> Callable[[Record], Any]:
        if field.stored:
            return operator.itemgetter(obj.slots[field.name])
        slots = obj.slots
        if field.type == "address":
            # REST returns an address as a nested object with lowercase keys.
            keys = [
                (slots[p.name], rest_key)
                for p, (_, rest_key) in zip(obj.components(field.name), ADDRESS_PARTS, strict=True)
            ]
            return lambda r: {key: r[slot] for slot, key in keys}
        derive = field.derive
        assert derive is not None
        return lambda r: derive(lambda n: r[slots[n]])

    def relationship(self, ref: FieldRef, head: str, tail: str) -> Column:
        lookup = next(
            (
                f
                for f in self.obj.fields
                if f.relationship_name and f.relationship_name.lower() == head.lower()
            ),
            None,
        )
        if self.readable(self.obj, lookup) is None or "." in tail:
            raise self.unknown(ref, head, self.obj.name)
        assert lookup is not None
        slot = self.obj.slots[lookup.name]
        rel = lookup.relationship_name or head
        target = lookup.reference_to[0]
        if target == "User":
            return self.user_column(ref, rel, slot, tail)
        parent_obj = find_object(target)
        assert parent_obj is not None
        field = self.readable(parent_obj, parent_obj.find(tail))
        if field is None or field.type == "address":
            raise self.unknown(ref, tail, target)
        parents = self.org.stores[target].records
        inner = self.getter(parent_obj, field)

        def get(record: Record) -> Any:
            parent = parents.get(record[slot]) if record[slot] else None
            return None if parent is None else inner(parent)

        def link(record: Record) -> Any:
            parent = parents.get(record[slot]) if record[slot] else None
            return None if parent is None else parent[0]

        return Column(f"{rel}.{field.name}", field, get, rel, target, link)

    def user_column(self, ref: FieldRef, rel: str, slot: int, tail: str) -> Column:
        """``Owner.Name`` and friends: users are not an object of the store."""
        attr = next((v for k, v in USER_FIELDS.items() if k.lower() == tail.lower()), None)
        if attr is None:
            raise self.unknown(ref, tail, "User")
        users = self.org.users
        canonical = next(k for k, v in USER_FIELDS.items() if v == attr)
        user_field = FieldDef(canonical, "id" if attr == "id" else "string", canonical)
        return Column(
            f"{rel}.{canonical}",
            user_field,
            lambda r: _user_attr(users.get(r[slot]), attr),
            rel,
            "User",
            operator.itemgetter(slot),
        )

    def predicate(self, condition: Condition) -> Predicate:
        if isinstance(condition, Not):
            inner = self.predicate(condition.item)
            return lambda r: not inner(r)
        if isinstance(condition, BoolOp):
            parts = [self.predicate(c) for c in condition.items]
            if condition.op == "AND":
                return lambda r: all(p(r) for p in parts)
            return lambda r: any(p(r) for p in parts)
        return self.comparison(condition)

    def comparison(self, cmp: Comparison) -> Predicate:
        column = self.column(cmp.field)
        if column.field.type in {"address", "textarea"}:
            raise ApiError(
                400, "INVALID_FIELD", f"field '{column.name}' can not be filtered in a query call"
            )
        get = column.get
        lower = column.field.type in TEXT_TYPES and column.field.type not in {"id", "reference"}
        if cmp.op in {"in", "notin", "includes", "excludes"}:
            assert isinstance(cmp.value, tuple)
            values = {self.coerce(column, v, lower) for v in cmp.value}
            return _membership(cmp.op, get, values, lower)
        assert isinstance(cmp.value, Literal)
        if cmp.op == "like":
            regex = like_regex(str(cmp.value.value))
            return lambda r: (v := get(r)) is not None and regex.match(v) is not None
        if cmp.value.kind == "dateword" and column.field.type == "datetime":
            return self.datetime_range(cmp, get)
        value = self.coerce(column, cmp.value, lower)
        return _compare(cmp.op, get, value, lower)

    def coerce(self, column: Column, literal: Literal, lower: bool) -> Any:
        kind, field = column.field.type, column.field
        if literal.kind == "null":
            return None
        try:
            if kind in TEXT_TYPES and literal.kind == "string":
                if kind in {"id", "reference"}:
                    return to_18(literal.value)
                return literal.value.lower() if lower else literal.value
            if kind in {"int", "double", "currency", "percent"} and literal.kind == "number":
                return literal.value
            if kind == "boolean" and literal.kind == "boolean":
                return literal.value
            if kind == "date" and literal.kind in {"date", "dateword"}:
                return (
                    literal.value
                    if literal.kind == "date"
                    else _day_range(self.org.now_ms(), *literal.value)[0]
                )
            if kind == "datetime" and literal.kind in {"datetime", "date"}:
                return parse_datetime_ms(
                    literal.value if literal.kind == "datetime" else f"{literal.value}T00:00:00Z"
                )
        except ValueError:
            pass
        raise ApiError(
            400,
            "INVALID_QUERY_FILTER_OPERATOR",
            f"value of filter criterion for field '{field.name}' must be of type {kind}",
        )

    def datetime_range(self, cmp: Comparison, get: Callable[[Record], Any]) -> Predicate:
        assert isinstance(cmp.value, Literal)
        start, end = _day_range(self.org.now_ms(), *cmp.value.value)[1]
        tests: dict[str, Callable[[int], bool]] = {
            "=": lambda v: start <= v < end,
            "!=": lambda v: not start <= v < end,
            "<": lambda v: v < start,
            "<=": lambda v: v < end,
            ">": lambda v: v >= end,
            ">=": lambda v: v >= start,
        }
        test = tests[cmp.op]
        return lambda r: (v := get(r)) is not None and test(v)


def _user_attr(user: Any, attr: str) -> Any:
    return None if user is None else getattr(user, attr)


def _day_range(now_ms: int, word: str, amount: int) -> tuple[str, tuple[int, int]]:
    """A date word as (its date, [start ms, end ms)) in UTC."""
    today = datetime.fromtimestamp(now_ms / 1000, UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    spans = {
        "TODAY": (today, today + timedelta(days=1)),
        "YESTERDAY": (today - timedelta(days=1), today),
        "TOMORROW": (today + timedelta(days=1), today + timedelta(days=2)),
        "LAST_N_DAYS": (today - timedelta(days=amount), today + timedelta(days=1)),
        "NEXT_N_DAYS": (today + timedelta(days=1), today + timedelta(days=amount + 1)),
    }
    start, end = spans[word]
    return start.date().isoformat(), (int(start.timestamp()) * 1000, int(end.timestamp()) * 1000)


def like_regex(pattern: str) -> re.Pattern[str]:
    parts = ("." + "*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile("".join(parts) + r"\Z", re.IGNORECASE | re.DOTALL)


def _membership(op: str, get: Callable[[Record], Any], values: set[Any], lower: bool) -> Predicate:
    def norm(r: Record) -> Any:
        v = get(r)
        return v.lower() if lower and v is not None else v

    if op == "in":
        return lambda r: norm(r) in values
    if op == "notin":
        return lambda r: norm(r) not in values
    wanted = {v for v in values if v is not None}

    def picks(r: Record) -> set[str]:
        v = norm(r)
        return set() if v is None else set(v.split(";"))

    if op == "includes":
        return lambda r: bool(picks(r) & wanted)
    return lambda r: not picks(r) & wanted


def _compare(op: str, get: Callable[[Record], Any], value: Any, lower: bool) -> Predicate:
    def norm(r: Record) -> Any:
        v = get(r)
        return v.lower() if lower and v is not None else v

    if op == "=":
        return lambda r: norm(r) == value
    if op == "!=":
        return lambda r: norm(r) != value
    if value is None:
        return lambda r: False
    test = _OPS[op]
    return lambda r: (v := norm(r)) is not None and test(v, value)
