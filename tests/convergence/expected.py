"""Expected groups: the mapping applied to the Salesforce sandbox's current records, by the
documented rules (see :mod:`tests.convergence.oracle`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from pipeline.config.mapping import MappingConfig, ObjectMapping
from sfamp_sandbox.salesforce import SalesforceSandbox
from sfamp_sandbox.salesforce.org import Org, Record
from sfamp_sandbox.salesforce.query import FieldResolver
from sfamp_sandbox.salesforce.schema import FieldDef, ObjectDef, cdc_component
from sfamp_sandbox.salesforce.soql import FieldRef

GroupKey = tuple[str, str]
Getter = Callable[[Record], Any]
DELETED_PROPERTY: Final = "sfdc_deleted"
MAX_STRING: Final = 1024
MAX_EXACT: Final = 2**53
NUMBER_TYPES: Final = frozenset({"int", "long", "double", "currency", "percent"})


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Final = _Absent()


@dataclass(slots=True)
class ExpectedGroup:
    """What one group must hold: per property the values it may have (``ABSENT``: the
    property must not exist), and the records it comes from."""

    group_type: str
    group_value: str
    properties: dict[str, list[Any]] = field(default_factory=dict)
    required: bool = False
    sources: list[str] = field(default_factory=list)


# -- expected values ------------------------------------------------------------------------


def iso_datetime(epoch_ms: int) -> str:
    seconds, millis = divmod(int(epoch_ms), 1000)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


def _number(value: float) -> int | float:
    if isinstance(value, float) and value.is_integer() and abs(value) < MAX_EXACT:
        return int(value)
    return value


def expected_value(kind: str, stored: Any) -> Any:
    """The property Amplitude must hold for a stored sandbox value of Salesforce type
    ``kind``; ``ABSENT`` for null."""
    if stored is None or stored == "":
        return ABSENT
    if kind in NUMBER_TYPES:
        return _number(stored)
    if kind == "datetime":
        return iso_datetime(stored)
    if kind == "multipicklist":
        return [item for item in str(stored).split(";") if item]
    if kind == "boolean":
        return bool(stored)
    return str(stored)[:MAX_STRING]


def expected_group_value(kind: str, stored: Any) -> str | None:
    """The group a record names through its group name field; None when it names none."""
    if stored is None or stored == "":
        return None
    if kind == "multipicklist":
        return str(stored)
    value = expected_value(kind, stored)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- reading Salesforce ---------------------------------------------------------------------


def _field(obj: ObjectDef, name: str) -> FieldDef:
    found = obj.find(name)
    if found is None:
        raise ValueError(f"the mapping names {obj.name}.{name}, which the sandbox does not have")
    return found


def _property_getters(
    org: Org, obj: ObjectDef, mapping: ObjectMapping, unchecked: frozenset[str]
) -> list[tuple[str, str, Getter]]:
    """(property, field type, getter over stored records) per mapped property; an address
    gives one entry per component."""
    resolver = FieldResolver(org, obj, "", secure=False)
    found: list[tuple[str, str, Getter]] = []
    for prop in mapping.group_properties:
        field_def = _field(obj, prop.sfdc_field)
        if f"{obj.name}.{field_def.name}" in unchecked:
            continue
        if field_def.type != "address":
            column = resolver.column(FieldRef(field_def.name, 0))
            found.append((prop.amplitude_property, field_def.type, column.get))
            continue
        for part in obj.components(field_def.name):
            name = f"{prop.amplitude_property}.{cdc_component(part)}"
            found.append((name, part.type, resolver.column(FieldRef(part.name, 0)).get))
    return found


def _record_properties(
    record: Record, getters: list[tuple[str, str, Getter]], on_delete: str
) -> dict[str, Any]:
    deleted = bool(record[1])
    props = {name: expected_value(kind, get(record)) for name, kind, get in getters}
    if deleted and on_delete == "unset":
        props = dict.fromkeys(props, ABSENT)
    if on_delete == "mark":
        props[DELETED_PROPERTY] = deleted
    return props


def _add(
    groups: dict[GroupKey, ExpectedGroup],
    key: GroupKey,
    props: dict[str, Any],
    required: bool,
    source: str,
) -> None:
    group = groups.get(key)
    if group is None:
        group = groups[key] = ExpectedGroup(key[0], key[1])
    for name, value in props.items():
        candidates = group.properties.setdefault(name, [])
        if not any(matches(c, value) for c in candidates):
            candidates.append(value)
    # A group with nothing to set may never have been sent at all.
    has_value = any(value is not ABSENT for value in props.values())
    group.required = group.required or (required and has_value)
    group.sources.append(source)


def expected_groups(
    salesforce: SalesforceSandbox | Org,
    mapping: MappingConfig | Mapping[str, Any],
    *,
    unchecked: Iterable[str] = (),
) -> dict[GroupKey, ExpectedGroup]:
    """Every group the mapping makes of the org's current records (deleted ones included,
    as optional groups). ``unchecked``: ``"Object.Field"`` names whose properties are not
    compared (for example a field hidden by field-level security, whose last value stays)."""
    org = salesforce.org if isinstance(salesforce, SalesforceSandbox) else salesforce
    config = (
        mapping if isinstance(mapping, MappingConfig) else MappingConfig.model_validate(mapping)
    )
    skip = frozenset(unchecked)
    groups: dict[GroupKey, ExpectedGroup] = {}
    for object_mapping in config.mappings:
        store = org.store(object_mapping.sfdc_object)
        obj = store.obj
        name_field = _field(obj, object_mapping.group_name_field)
        name_get = FieldResolver(org, obj, "", secure=False).column(FieldRef(name_field.name, 0))
        getters = _property_getters(org, obj, object_mapping, skip)
        for record in store.records.values():
            value = expected_group_value(name_field.type, name_get.get(record))
            if value is None:
                continue
            props = _record_properties(record, getters, object_mapping.on_delete)
            source = f"{obj.name} {record[0]}{' (deleted)' if record[1] else ''}"
            _add(groups, (object_mapping.group_type, value), props, not record[1], source)
    return groups


def same_value(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    numbers = (int, float)
    if isinstance(expected, numbers) and isinstance(actual, numbers):
        return expected == actual
    return type(expected) is type(actual) and expected == actual


def matches(candidate: Any, value: Any) -> bool:
    if candidate is ABSENT or value is ABSENT:
        return candidate is value
    return same_value(candidate, value)
