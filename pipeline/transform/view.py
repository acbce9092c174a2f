"""A flat view of a change or a record: field name -> raw value, compound components unnested.

CDC sends ``BillingAddress: {"City": "Oakland"}`` and ``changedFields`` entries
like ``BillingAddress.City``; REST sends ``BillingAddress: {"city": ...}``; Bulk
sends ``BillingCity``. In the view all three are ``values["BillingCity"]``, and
``parts["BillingAddress"]["City"] == "BillingCity"`` remembers which components
of a compound field the change carried.

A person name is different: REST and Bulk return ``Name`` composed, CDC nests its
parts (``Name: {"FirstName": "Ada", "LastName": "Lovelace"}``). The parts become
flat values as above, and ``Name`` itself is a value the change does not hold
(like a large-text diff) until :meth:`RecordView.with_composed_names` composes it
for a change that carries the whole record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.transform.schema import (
    COMPOUND_TYPES,
    ObjectSchema,
    component_field_name,
    compose_person_name,
    normalise_component,
)

# What `RecordView.value_of` answers for a field the change says nothing about.
MISSING: Any = object()


@dataclass(slots=True)
class RecordView:
    """Raw values by flat field name; ``None`` is an explicit null."""

    values: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, dict[str, str]] = field(default_factory=dict)
    # changedFields as sent; flattened only if someone asks (most mappings never do).
    changed: tuple[str, ...] = ()
    # Fields whose new value is not in the change: large text sent as a unified diff,
    # a person name sent as some of its parts.
    diffs: set[str] = field(default_factory=set)
    schema: ObjectSchema | None = None
    # Person names composed from the parts a change carried; whole only in a whole record.
    composed: dict[str, str | None] = field(default_factory=dict)
    _changed_flat: set[str] | None = None

    def has(self, name: str) -> bool:
        """True when the change says something about ``name`` (a value or a null)."""
        return name in self.values or self._parent_nulled(name)

    def value_of(self, name: str, parent: str | None) -> Any:
        """The raw value of ``name`` (a component of ``parent``), or :data:`MISSING`."""
        value = self.values.get(name, MISSING)
        if value is MISSING and parent is not None and self.values.get(parent, 0) is None:
            return None  # the whole compound field was nulled
        return value

    def get(self, name: str) -> Any:
        return self.values.get(name)

    def was_changed(self, name: str) -> bool:
        """Per ``changedFields`` when the change lists them, else by presence."""
        if not self.changed:
            return name in self.values
        if self._changed_flat is None:
            self._changed_flat = _flat_changed(self)
        return name in self._changed_flat

    def with_values_from(self, base: RecordView, also: Iterable[str] = ()) -> RecordView:
        """A copy whose fields sent as diffs (and the fields ``also`` names, such as
        formulas) take their value from a record read later."""
        values = dict(self.values)
        for name in (*self.diffs, *also):
            if base.has(name):
                values[name] = base.get(name)
        return RecordView(values, self.parts, self.changed, set(), self.schema)

    def with_composed_names(self) -> RecordView:
        """A copy in which person names are composed from their parts (whole records only:
        a CREATE or UNDELETE carries every part that has a value)."""
        if not self.composed:
            return self
        values = {**self.values, **self.composed}
        diffs = self.diffs - self.composed.keys()
        return RecordView(values, self.parts, self.changed, diffs, self.schema)

    def overlaid_on(self, base: RecordView) -> RecordView:
        """``base`` (a full record) with this change's values on top."""
        merged = RecordView(
            values={**base.values, **self.values},
            parts={key: dict(parts) for key, parts in base.parts.items()},
            changed=self.changed,
            schema=self.schema,
        )
        for parent, parts in self.parts.items():
            merged.parts.setdefault(parent, {}).update(parts)
        return merged

    def _parent_nulled(self, name: str) -> bool:
        if self.schema is None:
            return False
        info = self.schema.field(name)
        parent = None if info is None else info.compound_parent
        return parent is not None and parent in self.values and self.values[parent] is None


def view_of(
    fields: Mapping[str, Any],
    schema: ObjectSchema | None,
    *,
    nulled: Iterable[str] = (),
    changed: Iterable[str] = (),
) -> RecordView:
    """Flatten a CDC body or a REST/Bulk record, then apply nulled and changed names."""
    view = RecordView(schema=schema)
    for key, value in fields.items():
        if "." in key:
            continue  # a Bulk relationship column such as Owner.Name: never a field of ours
        if type(value) is dict:
            _add_nested(view, key, value)
        else:
            view.values[key] = value
    for name in nulled:
        view.values[_flat_name(view, name)] = None
    view.changed = tuple(changed)
    return view


def _flat_changed(view: RecordView) -> set[str]:
    """Changed names as flat fields, with each changed component's parent too."""
    names = {_flat_name(view, name, register=False) for name in view.changed}
    names.update(name.partition(".")[0] for name in view.changed)
    return names


def _add_nested(view: RecordView, key: str, value: dict[str, Any]) -> None:
    if "attributes" in value:
        return  # a REST relationship object (Owner: {...}), not record data
    if len(value) == 1 and "diff" in value:
        view.diffs.add(key)
        return
    person = _is_person_name(view.schema, key)
    for component, inner in value.items():
        view.values[_component_name(view, key, component, register=not person)] = inner
    if person:
        view.diffs.add(key)
        view.composed[key] = compose_person_name(
            {normalise_component(part): inner for part, inner in value.items()}
        )


def _is_person_name(schema: ObjectSchema | None, key: str) -> bool:
    """A nested value under a field that is not an address or a geolocation: a person name."""
    if schema is not None:
        if schema.is_person_name(key):
            return True
        sf_type = schema.type_of(key)
        if sf_type is not None:
            return sf_type not in COMPOUND_TYPES
    return key == "Name"


def _flat_name(view: RecordView, name: str, *, register: bool = True) -> str:
    parent, dot, component = name.partition(".")
    if not dot:
        return name
    register = register and not _is_person_name(view.schema, parent)
    return _component_name(view, parent, component, register=register)


def _component_name(view: RecordView, parent: str, component: str, *, register: bool = True) -> str:
    key = normalise_component(component)
    if view.schema is not None:
        flat = view.schema.component_field(parent, key)
    else:
        flat = component_field_name(parent, key)
    if register:
        view.parts.setdefault(parent, {})[key] = flat
    return flat
