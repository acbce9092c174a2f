"""A mapping config compiled once per revision, so that most changes cost a few look-ups.

:func:`~pipeline.transform.apply.changes_for_config` follows every rule of the
transform for every change: a view of the record, a step per mapping, and an
outcome that the coalescer takes apart again. Nearly every change of a stream or
a backfill takes the same short road through those rules: a create, update,
delete or undelete (from a change event or a read) of an object whose mappings

* name their groups by ``Id``, so the group is the record id and needs no lookup,
* are planned under a describe, so every field's type and compounds are known, and
* map no formula field that follows other fields, so nothing is read at flush time,

carrying neither a large-text diff nor a person name sent as parts. What such a
change means depends only on which mapped fields it carries. A
:class:`CompiledConfig` answers it from tables built once per (config, describe):
it flattens the change's fields once, converts each mapped value once, and hands
the properties straight to the coalescer. Every other change goes through
``changes_for_config`` itself. Both roads give the same answers; the tests compare
them on random changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from pipeline.config.mapping import MappingConfig, ObjectMapping
from pipeline.transform.apply import (
    DELETE_IGNORED,
    DELETED_PROPERTY,
    NO_MAPPED_FIELD,
    WHOLE_RECORD_OPS,
    NothingToDo,
    Order,
    Outcome,
    PropertyChanges,
    changes_for_config,
)
from pipeline.transform.coalesce import Coalescer, Stamped, stamp
from pipeline.transform.envelope import ChangeEnvelope
from pipeline.transform.group_update import PropertyValue
from pipeline.transform.plan import Target, plan_for
from pipeline.transform.schema import COMPOUND_TYPES, ObjectSchema, normalise_component
from pipeline.transform.update_tables import (
    NAMES_LIMIT,
    Targets,
    UpdateTables,
)
from pipeline.transform.values import kept_types, to_property_value

# The ops of the short road; gap events and wildcard ids ask Salesforce first.
_SHORT_OPS: Final = frozenset(("create", "update", "delete", "undelete"))
_NO_UNSET: Final[frozenset[str]] = frozenset()
# Like plan_for's memo: entries keep their config alive, so an id is never reused meanwhile.
_MEMO_LIMIT: Final = 64
_memo: dict[int, CompiledConfig] = {}

# What one change does to one group: the properties it sets, and those it unsets; or, as
# a string, why it does nothing.
_Properties = tuple[dict[str, PropertyValue], list[str]]
_Answer = _Properties | str
_ABSENT: Final[Any] = object()
# What a change event means on the one-pass road, stamped; None: flatten it first.
_Stamper = Callable[[ChangeEnvelope, Order], "dict[str, Stamped] | None"]


def compiled(config: MappingConfig) -> CompiledConfig:
    """The compiled form of ``config``, built on first use (configs are immutable)."""
    found = _memo.get(id(config))
    if found is None or found.config is not config:
        if len(_memo) >= _MEMO_LIMIT:
            _memo.clear()
        found = _memo[id(config)] = CompiledConfig(config)
    return found


class CompiledConfig:
    """``config`` compiled per object and describe; use :func:`compiled` to share one."""

    __slots__ = ("_objects", "config")

    def __init__(self, config: MappingConfig) -> None:
        self.config = config
        self._objects: dict[str, _ObjectRoad] = {}

    def changes(
        self, envelope: ChangeEnvelope, schema: ObjectSchema | None
    ) -> list[tuple[ObjectMapping, Outcome]]:
        """Exactly what ``changes_for_config(envelope, config, schema)`` answers."""
        found = self._road(envelope.object, schema).properties(envelope)
        if found is None:
            return changes_for_config(envelope, self.config, schema)
        order, record_id = envelope.ordering, envelope.record_id
        return [
            (rule.mapping, _outcome(rule.group_type, record_id, order, answer))
            for rule, answer in zip(
                self._road(envelope.object, schema).rules or (), found, strict=True
            )
        ]

    def fold(
        self, envelope: ChangeEnvelope, schema: ObjectSchema | None, coalescer: Coalescer
    ) -> Sequence[tuple[ObjectMapping, Outcome]]:
        """Add what ``envelope`` sets and unsets to ``coalescer``.

        Returns the outcomes a coalescer cannot take (lookups, gap events), in config
        order, for the caller to hold; outcomes that mean nothing are left out.
        """
        try:
            road = self._objects[envelope.object]
        except KeyError:  # the object's first change
            road = self._road(envelope.object, schema)
        if road.schema is not schema:  # a new describe
            road = self._road(envelope.object, schema)
        order = (envelope.commit_ts, envelope.commit_number, envelope.sequence_number)
        stamp_op = road.one_pass.get(envelope.op)
        if stamp_op is not None and not envelope.full and "*" not in envelope.record_id:
            # Most changes: one pass from the change's fields to what the coalescer keeps
            # (a wildcard id, "*", takes the general rules).
            stamped = stamp_op(envelope, order)
            if stamped is not None:  # None: the general rules below
                if stamped:
                    key = (road.group_type, envelope.record_id)
                    coalescer.add_stamped(key, order, stamped)
                return ()
        values = road.values_of(envelope)
        if values is None:
            return self._fold_by_rules(envelope, schema, coalescer)
        for rule in road.rules or ():
            answer = _rule_properties(rule, envelope, values)
            if type(answer) is tuple:
                key = (rule.group_type, envelope.record_id)
                coalescer.add_stamped(key, order, stamp(*answer, order))
        return ()

    def _fold_by_rules(
        self, envelope: ChangeEnvelope, schema: ObjectSchema | None, coalescer: Coalescer
    ) -> list[tuple[ObjectMapping, Outcome]]:
        rest: list[tuple[ObjectMapping, Outcome]] = []
        for mapping, outcome in changes_for_config(envelope, self.config, schema):
            if type(outcome) is PropertyChanges:
                coalescer.add(outcome)
            elif type(outcome) is not NothingToDo:
                rest.append((mapping, outcome))
        return rest

    def on_short_road(self, envelope: ChangeEnvelope, schema: ObjectSchema | None) -> bool:
        """Whether the tables answer ``envelope`` (rather than ``changes_for_config``)."""
        return self._road(envelope.object, schema).properties(envelope) is not None

    def _road(self, sfdc_object: str, schema: ObjectSchema | None) -> _ObjectRoad:
        road = self._objects.get(sfdc_object)
        if road is None or road.schema is not schema:
            road = self._objects[sfdc_object] = _ObjectRoad(
                self.config.for_object(sfdc_object), schema
            )
        return road


class _WholeTarget(NamedTuple):
    """What a whole record needs of one target (a tuple: read in the per-record loop)."""

    field: str
    prop: str
    sf_type: str | None
    kept: frozenset[type]  # value types its conversion returns unchanged
    parent: str | None  # the compound field it is a component of
    in_events: bool  # whether change events carry it (absent from a create: null)


@dataclass(frozen=True, slots=True)
class _Rule:
    """One mapping on the short road."""

    mapping: ObjectMapping
    group_type: str
    on_delete: str
    # flat field -> (property, Salesforce type, types kept as they are) of each target it
    # feeds; a compound parent feeds all its components' targets
    by_field: Mapping[str, Targets]
    # flat field -> the targets of the field itself: what a (non-null) value of it sets
    own: Mapping[str, Targets]
    targets: tuple[Target, ...]
    whole: tuple[_WholeTarget, ...]  # per target, what a whole record needs of it
    deleted_props: tuple[str, ...]  # what ``on_delete: unset`` unsets (MappingPlan's)


class _ObjectRoad:
    """The short road for one object under one describe; ``rules`` None: there is none."""

    __slots__ = ("_components", "_nulled", "group_type", "one_pass", "rules", "schema")

    def __init__(self, mappings: Sequence[ObjectMapping], schema: ObjectSchema | None) -> None:
        self.schema = schema
        self.rules = _rules(mappings, schema)
        # nested field -> its components' flat fields as met so far; None: not split (a
        # person name: the general rules compose it)
        self._components: dict[str, dict[str, str] | None] = {}
        self._nulled: dict[str, str] = {}  # a nulled name (Parent.Component) -> flat field
        # The single rule's one pass per op (none for several rules), and its group type.
        self.one_pass: dict[str, _Stamper] = {}
        self.group_type = ""
        if self.rules is not None and len(self.rules) == 1:
            single = _OnePass(self.rules[0], schema)
            self.one_pass, self.group_type = single.by_op, single.rule.group_type

    def properties(self, envelope: ChangeEnvelope) -> list[_Answer] | None:
        """Per rule, what the change sets and unsets; None when it is not for this road."""
        values = self.values_of(envelope)
        if values is None:
            return None
        return [_rule_properties(rule, envelope, values) for rule in self.rules or ()]

    def values_of(self, envelope: ChangeEnvelope) -> dict[str, Any] | None:
        """The change's fields flat, as :func:`~pipeline.transform.view.view_of` makes them;
        None when the change is not for this road (a large-text diff, a person name sent
        as parts, a gap event...)."""
        if self.rules is None or envelope.op not in _SHORT_OPS or envelope.record_id.endswith("*"):
            return None
        values: dict[str, Any] = {}
        known = self._components
        for key, value in envelope.fields.items():
            if type(value) is not dict:
                if "." not in key:  # else a Bulk relationship column such as Owner.Name
                    values[key] = value
            elif "." not in key and "attributes" not in value:  # else a REST relationship
                names = known.get(key, _ABSENT)
                if names is _ABSENT:
                    names = self._learn(key)
                if names is None or (len(value) == 1 and "diff" in value):
                    return None
                for component, inner in value.items():
                    flat = names.get(component)
                    values[self._component(key, component) if flat is None else flat] = inner
        if envelope.op in WHOLE_RECORD_OPS and "Id" not in envelope.fields:
            values["Id"] = envelope.record_id  # events name the record in the header only
        for name in envelope.nulled:
            flat = self._nulled.get(name)
            if flat is None:
                flat = self._nulled_name(name)
            values[flat] = None
        return values

    def _learn(self, key: str) -> dict[str, str] | None:
        """Whether a nested value of ``key`` splits into components (an address or a
        geolocation, not a person name): an empty table of them if so."""
        names: dict[str, str] | None = {} if _splits_into_components(self.schema, key) else None
        if len(self._components) < NAMES_LIMIT:
            self._components[key] = names
        return names

    def _component(self, parent: str, component: str) -> str:
        assert self.schema is not None  # the short road needs a describe
        flat = self.schema.component_field(parent, normalise_component(component))
        names = self._components.get(parent)
        if names is not None and len(names) < NAMES_LIMIT:
            names[component] = flat
        return flat

    def _nulled_name(self, name: str) -> str:
        parent, dot, component = name.partition(".")
        assert self.schema is not None
        flat = self.schema.component_field(parent, normalise_component(component)) if dot else name
        if len(self._nulled) < NAMES_LIMIT:
            self._nulled[name] = flat
        return flat


class _OnePass:
    """A single rule's one pass over a change event (not a read): per op, what the event
    sets and unsets, stamped for the coalescer.

    :attr:`by_op` holds a function per op it answers (not gap events), looked up once per
    change rather than tested op by op. Each answers None when the event needs
    :meth:`_ObjectRoad.values_of` (a field named both flat and nested, a field not in the
    describe nested, a diff, a person name...).
    """

    __slots__ = ("_id_props", "_in_events", "_marks", "_tables", "by_op", "rule")

    def __init__(self, rule: _Rule, schema: ObjectSchema | None) -> None:
        self.rule = rule
        self._marks = rule.on_delete == "mark"
        self._id_props = tuple(prop for prop, _, _ in rule.own.get("Id", ()))
        # the properties of the fields change events carry: a create without one unsets it
        self._in_events = tuple(target.prop for target in rule.whole if target.in_events)
        self._tables = UpdateTables(rule.by_field, rule.own, schema)
        self.by_op: dict[str, _Stamper] = {
            "update": self._tables.stamp,
            "delete": self.deleted,
            **dict.fromkeys(WHOLE_RECORD_OPS, self.whole),
        }

    def deleted(self, envelope: ChangeEnvelope, order: Order) -> dict[str, Stamped]:
        """A delete: what the rule's ``on_delete`` says."""
        rule = self.rule
        if rule.on_delete == "ignore":
            return {}
        if rule.on_delete == "mark":
            return {DELETED_PROPERTY: Stamped(True, order)}
        return {prop: Stamped(None, order) for prop in rule.deleted_props}

    def whole(self, envelope: ChangeEnvelope, order: Order) -> dict[str, Stamped] | None:
        """A create or undelete: its fields, and every property it lacks unset."""
        if envelope.nulled:
            # A whole record keeps a component it carries under a parent named null: the
            # general rules sort that out (creates name no nulls in practice).
            return None
        stamped = self._tables.stamp(envelope, order)
        if stamped is None:
            return None
        if "Id" not in envelope.fields:  # events name the record in the header only
            for prop in self._id_props:
                stamped[prop] = Stamped(envelope.record_id, order)
        for prop in self._in_events:
            if prop not in stamped:  # absent from a create: null
                stamped[prop] = Stamped(None, order)
        if self._marks:
            stamped[DELETED_PROPERTY] = Stamped(False, order)
        return stamped


def _rules(
    mappings: Sequence[ObjectMapping], schema: ObjectSchema | None
) -> tuple[_Rule, ...] | None:
    if schema is None:
        return None
    rules: list[_Rule] = []
    for mapping in mappings:
        plan = plan_for(mapping, schema)
        if mapping.group_name_field != "Id" or plan.dynamic or plan.formula_inputs:
            return None
        by_field = {
            name: tuple((t.prop, t.sf_type, kept_types(t.sf_type)) for t in targets)
            for name, targets in plan.by_field.items()
        }
        own = {
            name: tuple(
                (t.prop, t.sf_type, kept_types(t.sf_type)) for t in targets if t.field == name
            )
            for name, targets in plan.by_field.items()
        }
        whole = tuple(
            _WholeTarget(t.field, t.prop, t.sf_type, kept_types(t.sf_type), t.parent, t.in_events)
            for t in plan.targets
        )
        rules.append(
            _Rule(
                mapping,
                mapping.group_type,
                mapping.on_delete,
                by_field,
                own,
                plan.targets,
                whole,
                plan.deleted_props,
            )
        )
    return tuple(rules)


def _splits_into_components(schema: ObjectSchema | None, key: str) -> bool:
    """``not view._is_person_name``: a nested value under a field that is not a person name."""
    if schema is not None:
        if schema.is_person_name(key):
            return False
        sf_type = schema.type_of(key)
        if sf_type is not None:
            return sf_type in COMPOUND_TYPES
    return key != "Name"


def _rule_properties(rule: _Rule, envelope: ChangeEnvelope, values: dict[str, Any]) -> _Answer:
    """What :mod:`pipeline.transform.apply` answers for a mapping on the short road."""
    if envelope.op == "delete":
        if rule.on_delete == "ignore":
            return _whole(rule, values, absent_is_null=False) if envelope.full else DELETE_IGNORED
        if rule.on_delete == "mark":
            found = _whole(rule, values, absent_is_null=False) if envelope.full else ({}, [])
            return _with(found, DELETED_PROPERTY, True)
        unset = list(rule.deleted_props)
        return ({}, unset) if unset else NO_MAPPED_FIELD
    if envelope.full or envelope.op in WHOLE_RECORD_OPS:
        found = _whole(rule, values, absent_is_null=not envelope.full)
        return _with(found, DELETED_PROPERTY, False) if rule.on_delete == "mark" else found
    sets: dict[str, PropertyValue] = {}
    unset = []
    by_field, own = rule.by_field, rule.own
    for name, value in values.items():
        # a compound's null unsets its components; a value sets only the field's own
        for prop, sf_type, kept in (by_field if value is None else own).get(name, ()):
            converted = value if type(value) in kept else to_property_value(value, sf_type)
            if converted is None or converted == "":
                unset.append(prop)
            else:
                sets[prop] = converted
    return (sets, unset) if sets or unset else NO_MAPPED_FIELD


def _whole(rule: _Rule, values: dict[str, Any], *, absent_is_null: bool) -> _Answer:
    """Every mapped field of a whole record; absent ones unset when ``absent_is_null``."""
    sets: dict[str, PropertyValue] = {}
    unset: list[str] = []
    for field, prop, sf_type, kept, parent, in_events in rule.whole:
        value = values.get(field, _ABSENT)
        if value is _ABSENT and parent is not None and values.get(parent, 0) is None:
            value = None  # the whole compound field was nulled
        if value is not _ABSENT:
            converted = value if type(value) in kept else to_property_value(value, sf_type)
            if converted is None or converted == "":
                unset.append(prop)
            else:
                sets[prop] = converted
        elif absent_is_null and in_events:
            unset.append(prop)
    return (sets, unset) if sets or unset else NO_MAPPED_FIELD


def _with(found: _Answer, prop: str, value: PropertyValue) -> _Properties:
    """``found`` and then ``prop`` set to ``value``."""
    sets, unset = found if type(found) is tuple else ({}, [])
    sets[prop] = value
    return sets, unset


def _outcome(group_type: str, record_id: str, order: Order, answer: _Answer) -> Outcome:
    if isinstance(answer, str):
        return NothingToDo(answer)
    values, unset = answer
    return PropertyChanges(
        group_type, record_id, order, values, frozenset(unset) if unset else _NO_UNSET, record_id
    )
