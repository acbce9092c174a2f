"""A mapping compiled against an object schema once, so each change costs dictionary look-ups.

For every mapped field the plan knows the properties it feeds (an address or a
geolocation feeds one per component), the Salesforce type for conversion and
whether a whole-record change event would carry it: formula fields and system
fields never appear in change events. A mapped field the describe omits (hidden by
field-level security) feeds no property: its type is unknown, so its property is
left alone. For mapped formula fields whose
inputs are all fields of the same record, the plan knows those inputs
(``formula_inputs``): a change to one of them re-reads the formulas at flush time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from pipeline.config.mapping import ObjectMapping
from pipeline.transform.change_event_fields import never_in_change_events
from pipeline.transform.formulas import formula_inputs
from pipeline.transform.schema import ObjectSchema, component_key, component_keys_by_name
from pipeline.transform.values import compound_property

# Plans are looked up by the identity of (mapping, schema); each entry keeps both
# objects alive so an id cannot be reused while its plan is cached. Reloads make
# new mapping objects, so the memo is bounded and simply starts over when full.
_MEMO_LIMIT: Final = 256
_memo: dict[tuple[int, int], MappingPlan] = {}


@dataclass(frozen=True, slots=True)
class Target:
    """One property fed by one flat field."""

    prop: str
    field: str
    sf_type: str | None = None
    parent: str | None = None  # the compound field this one is a component of
    calculated: bool = False
    # Without a schema nobody knows whether a field is compound until it arrives nested.
    maybe_compound: bool = False
    # A CREATE or UNDELETE carries every non-null field it can: for such a field,
    # absent means null. False for formulas, system fields and undescribed fields.
    in_events: bool = True


@dataclass(frozen=True, slots=True)
class MappingPlan:
    mapping: ObjectMapping
    schema: ObjectSchema | None
    targets: tuple[Target, ...]
    name_field: Target
    read_fields: tuple[str, ...]  # a full record's fields, compounds as components
    watched: frozenset[str]  # every mapped field name, group name field included
    dynamic: bool  # some target may turn out compound when it arrives nested
    # flat field -> the targets it feeds; a compound parent -> all its components'
    by_field: Mapping[str, tuple[Target, ...]]
    # the same-record fields the mapped followable formula fields read -> those formulas
    formula_inputs: Mapping[str, tuple[str, ...]]
    # what ``on_delete: unset`` unsets: every property, a field the describe omits included
    deleted_props: tuple[str, ...]


def plan_for(mapping: ObjectMapping, schema: ObjectSchema | None) -> MappingPlan:
    """The compiled plan of ``mapping`` under ``schema``, built on first use."""
    key = (id(mapping), id(schema))
    plan = _memo.get(key)
    if plan is None or plan.mapping is not mapping or plan.schema is not schema:
        if len(_memo) >= _MEMO_LIMIT:
            _memo.clear()
        plan = _memo[key] = compile_plan(mapping, schema)
    return plan


def compile_plan(mapping: ObjectMapping, schema: ObjectSchema | None) -> MappingPlan:
    targets = tuple(
        target
        for mapped in mapping.group_properties
        for target in targets_of(mapped.sfdc_field, mapped.amplitude_property, schema)
    )
    return MappingPlan(
        mapping=mapping,
        schema=schema,
        targets=targets,
        name_field=_target(mapping.group_name_field, mapping.group_name_field, schema),
        read_fields=_read_fields(mapping, schema),
        watched=frozenset(mapping.fields),
        dynamic=any(target.maybe_compound for target in targets),
        by_field=_index(targets),
        formula_inputs=_formula_inputs(mapping, schema),
        deleted_props=_deleted_props(mapping, targets, schema),
    )


def _deleted_props(
    mapping: ObjectMapping, targets: Sequence[Target], schema: ObjectSchema | None
) -> tuple[str, ...]:
    """The targets' properties, then those of mapped fields the describe omits (they feed
    no target): a delete is the mapping's policy, not a read, so it unsets them too. An
    omitted field named like a compound one may have set a property per component while
    it was described: those are unset as well (unsetting one never set does nothing)."""
    omitted: list[str] = []
    for mapped in mapping.group_properties:
        name, prop = mapped.sfdc_field, mapped.amplitude_property
        if schema is None or not schema.omits(name):
            continue
        omitted.append(prop)
        omitted += [compound_property(prop, key) for key in component_keys_by_name(name)]
    return tuple(dict.fromkeys([*(t.prop for t in targets), *omitted]))


def live_targets(plan: MappingPlan, parts: Mapping[str, Mapping[str, str]]) -> Sequence[Target]:
    """The plan's targets, with fields that arrived nested (``parts``) split per component."""
    if not plan.dynamic or not parts:
        return plan.targets
    targets: list[Target] = []
    for target in plan.targets:
        nested = parts.get(target.field) if target.maybe_compound else None
        if nested:
            targets.extend(
                Target(compound_property(target.prop, component), name, parent=target.field)
                for component, name in nested.items()
            )
        else:
            targets.append(target)
    return targets


def targets_of(field: str, prop: str, schema: ObjectSchema | None) -> list[Target]:
    """The properties one mapped field writes under ``schema``: itself, one per component
    of a compound, or none while the describe omits it."""
    if schema is None:
        return [_target(field, prop, None)]
    if schema.omits(field):
        # Not in the describe (hidden by field-level security, or gone): its type is
        # unknown, so a value a change still carries cannot be converted as every other
        # read path converts it. The property is left alone; deliver describes the
        # object again when a change carries the field (SchemaCache.ensure_current).
        return []
    if not schema.is_compound(field):
        return [_target(field, prop, schema)]
    return [
        _target(info.name, compound_property(prop, component_key(field, info.name)), schema)
        for info in schema.components_of(field)
    ]


def _target(field: str, prop: str, schema: ObjectSchema | None) -> Target:
    if schema is None:
        in_events = not never_in_change_events(field)
        return Target(prop, field, maybe_compound=True, in_events=in_events)
    info = schema.field(field)
    if info is None:
        # Not in the describe: unknown, or hidden from this user. Events leave it out.
        return Target(prop, field, maybe_compound=True, in_events=False)
    return Target(
        prop,
        field,
        info.type,
        info.compound_parent,
        info.calculated,
        in_events=info.in_change_events,
    )


def _index(targets: Sequence[Target]) -> dict[str, tuple[Target, ...]]:
    index: dict[str, list[Target]] = {}
    for target in targets:
        index.setdefault(target.field, []).append(target)
        if target.parent is not None:
            index.setdefault(target.parent, []).append(target)
    return {name: tuple(found) for name, found in index.items()}


def _read_fields(mapping: ObjectMapping, schema: ObjectSchema | None) -> tuple[str, ...]:
    """What a read of a whole record selects: the mapped fields the describe lists.

    A field it omits (hidden by field-level security) is left out: Salesforce refuses
    a query that names it (``INVALID_FIELD``), which would take every other field of
    the read down with it, and its property is left alone anyway. The group name field
    stays: without it no group can be named, and the refusal says why.
    """
    names: list[str] = []
    for name in mapping.fields:
        if schema is not None and schema.is_compound(name):
            names.extend(info.name for info in schema.components_of(name))
        elif schema is None or not schema.omits(name) or name == mapping.group_name_field:
            names.append(name)
    return tuple(dict.fromkeys(names))


def _formula_inputs(
    mapping: ObjectMapping, schema: ObjectSchema | None
) -> dict[str, tuple[str, ...]]:
    """Input field -> the mapped followable formula fields that read it."""
    if schema is None:
        return {}
    by_lower = {name.lower(): name for name in schema.fields}
    readers: dict[str, list[str]] = {}
    for name in mapping.fields:
        info = schema.field(name)
        inputs = None if info is None or info.formula is None else formula_inputs(info.formula)
        for written in inputs or ():
            # Salesforce matches formula names case-insensitively; events use the describe's.
            readers.setdefault(by_lower.get(written.lower(), written), []).append(name)
    return {name: tuple(found) for name, found in readers.items()}
