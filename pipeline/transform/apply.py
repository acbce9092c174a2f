"""A change envelope and one object mapping in, property changes for one group out.

:func:`changes_for` answers with exactly one :data:`Outcome`:

``PropertyChanges``
    set/unset these properties of group ``(group_type, group_value)``, ordered by
    the commit key ``(commit_ts, commit_number, sequence_number)``. Feed it to
    :class:`~pipeline.transform.coalesce.Coalescer`.
``NothingToDo``
    only unmapped fields changed, the delete is ignored (``on_delete=ignore``), or
    the record names no group (its group name field is empty).
``NeedsLookup``
    the answer depends on Salesforce data the envelope does not carry. Read
    ``fields`` of ``record_id`` (batched retrieve by ids; with ``queryAll`` when
    ``deleted``) and call :func:`changes_for` again with the same envelope and
    either ``group_value=`` (``full_record=False``: only the group name is
    missing; pass ``""`` if the record has none) or ``full_record=`` the record
    as read (``full_record=True``: the group name field changed, so the new
    group gets every mapped property; or the new value of a mapped field is not
    in the change: a large-text diff, a part of a person name; or the change changed
    a field a mapped formula field reads, and the formula's new value is read
    with the record). ``full_record``
    also answers a group-name lookup.
``NeedsReread``
    a ``gap_*`` event: re-read the record and feed the full envelope made by
    :func:`~pipeline.transform.reads.envelope_from_record` (or
    :func:`~pipeline.transform.reads.deleted_envelope` when it is gone).
``NeedsResync``
    ``gap_overflow`` or a wildcard record id (``001*``): re-sync the whole object
    (a backfill of records changed since ``since_ms``).

Rules: only mapped fields produce properties; a null becomes an unset. An
``update`` touches the fields it carries. ``create``, ``undelete`` and full
envelopes describe the whole record: every mapped field they hold is set, or
unset when null. Absent is not null: a full envelope (a REST or Bulk read) that
lacks a mapped field did not read it, so the property is left alone; a ``create``
or ``undelete`` lacks the fields that are null, so those are unset, except fields
change events never carry (formulas, ``SystemModstamp``...) and fields the
describe omits (hidden by field-level security). A person ``Name`` that a change
event sends as its parts is composed as Salesforce composes it. Group names go
through the same conversion as property values, by the field's type. ``delete``
follows ``on_delete``: ``ignore`` does nothing, ``unset`` unsets every mapped
property, ``mark`` sets :data:`DELETED_PROPERTY` to ``true``; under ``mark``
every whole-record change sets it to ``false``, so an undelete clears the mark.
A full ``delete`` (a read of a deleted record) also carries the values the record
was deleted with: ``ignore`` and ``mark`` set them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from pipeline.config.mapping import MappingConfig, ObjectMapping
from pipeline.transform.envelope import GAP_OPS, ChangeEnvelope
from pipeline.transform.group_update import PropertyValue
from pipeline.transform.plan import MappingPlan, Target, live_targets, plan_for
from pipeline.transform.schema import ObjectSchema
from pipeline.transform.values import to_group_value, to_property_value
from pipeline.transform.view import MISSING, RecordView, view_of

# The property `on_delete: mark` writes: true once deleted, false while the record exists.
DELETED_PROPERTY: Final = "sfdc_deleted"

# Why a change means nothing, in the words both the rules here and the compiled config use.
NO_MAPPED_FIELD: Final = "no mapped field in the change"
DELETE_IGNORED: Final = "delete ignored (on_delete=ignore)"

Order = tuple[int, int, int]
_Pair = tuple[str, PropertyValue | None]
WHOLE_RECORD_OPS: Final = frozenset(("create", "undelete"))
_NO_UNSET: Final[frozenset[str]] = frozenset()
_NOT_IN_CHANGE: Final = "the new value of a mapped field is not in the change"
_FORMULA_READ: Final = "a mapped formula field reads a field the change changed"
_UNCARRIED_READ: Final = (
    "the group, named by another field than Id, may hold another record's values of "
    "mapped fields change events never carry"
)


class PropertyChanges(msgspec.Struct, frozen=True, gc=False):
    """Properties of one group to set and unset, as of one commit.

    A frozen msgspec Struct, as :class:`GroupUpdate` (one per record read or change).
    """

    group_type: str
    group_value: str
    order: Order
    set: Mapping[str, PropertyValue]
    unset: frozenset[str]
    record_id: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.group_type, self.group_value)


@dataclass(frozen=True, slots=True)
class NothingToDo:
    reason: str


@dataclass(frozen=True, slots=True)
class NeedsLookup:
    sfdc_object: str
    record_id: str
    fields: tuple[str, ...]
    full_record: bool
    deleted: bool
    reason: str


@dataclass(frozen=True, slots=True)
class NeedsReread:
    sfdc_object: str
    record_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class NeedsResync:
    sfdc_object: str
    since_ms: int
    reason: str


Outcome = PropertyChanges | NothingToDo | NeedsLookup | NeedsReread | NeedsResync


@dataclass(frozen=True, slots=True)
class _Step:
    envelope: ChangeEnvelope
    plan: MappingPlan

    @property
    def mapping(self) -> ObjectMapping:
        return self.plan.mapping


def changes_for(
    envelope: ChangeEnvelope,
    mapping: ObjectMapping,
    schema: ObjectSchema | None,
    *,
    group_value: str | None = None,
    full_record: Mapping[str, Any] | None = None,
) -> Outcome:
    """What ``envelope`` means for the groups of ``mapping`` (see the module docstring)."""
    if envelope.object != mapping.sfdc_object:
        raise ValueError(f"a {envelope.object} change given a {mapping.sfdc_object} mapping")
    early = _needs_salesforce(envelope)
    if early is not None:
        return early
    view, base = _views(envelope, schema, full_record)
    return _outcome(_Step(envelope, plan_for(mapping, schema)), view, base, group_value)


def changes_for_config(
    envelope: ChangeEnvelope,
    config: MappingConfig,
    schema: ObjectSchema | None,
    *,
    full_record: Mapping[str, Any] | None = None,
) -> list[tuple[ObjectMapping, Outcome]]:
    """One outcome per mapping of the envelope's object, in config order.

    Gap and overflow outcomes repeat per mapping; deduplicate them by record id.
    """
    mappings = config.for_object(envelope.object)
    early = _needs_salesforce(envelope)
    if early is not None:
        return [(mapping, early) for mapping in mappings]
    view, base = _views(envelope, schema, full_record)
    return [
        (mapping, _outcome(_Step(envelope, plan_for(mapping, schema)), view, base, None))
        for mapping in mappings
    ]


def _needs_salesforce(envelope: ChangeEnvelope) -> NeedsReread | NeedsResync | None:
    if envelope.op == "gap_overflow" or envelope.record_id.endswith("*"):
        reason = f"{envelope.op} names no single record: re-sync the object"
        return NeedsResync(envelope.object, envelope.commit_ts, reason)
    if envelope.op in GAP_OPS:
        reason = f"{envelope.op} carries no fields: re-read the record"
        return NeedsReread(envelope.object, envelope.record_id, reason)
    return None


def _views(
    envelope: ChangeEnvelope, schema: ObjectSchema | None, full_record: Mapping[str, Any] | None
) -> tuple[RecordView, RecordView | None]:
    # Both views are shared by every mapping of the object: from here on they are only
    # read or copied, never changed (bar the view's own lazy cache).
    fields = envelope.fields
    if envelope.op in WHOLE_RECORD_OPS and "Id" not in fields:
        # A change event names its record in the header, never in the body.
        fields = {**fields, "Id": envelope.record_id}
    view = view_of(fields, schema, nulled=envelope.nulled, changed=envelope.changed)
    base = None if full_record is None else view_of(full_record, schema)
    return view, base


def _outcome(
    step: _Step, view: RecordView, base: RecordView | None, group_value: str | None
) -> Outcome:
    if step.envelope.op == "delete":
        return _on_delete(step, view, base, group_value)
    if step.envelope.full or step.envelope.op in WHOLE_RECORD_OPS:
        return _on_whole_record(step, view, base, group_value)
    return _on_update(step, view, base, group_value)


def _on_delete(
    step: _Step, view: RecordView, base: RecordView | None, group_value: str | None
) -> Outcome:
    policy = step.mapping.on_delete
    # A read of a deleted record (queryAll) also holds the values it was deleted with,
    # which a silent write (a gap, an overflow) may have changed since the last event.
    full = step.envelope.full
    if policy == "ignore":
        if full:
            return _on_whole_record(step, view, base, group_value)
        return NothingToDo(DELETE_IGNORED)
    group = _group_of(step, view, base, group_value)
    if not isinstance(group, str):
        return group
    if policy == "mark":
        last = _property_pairs(step, view.with_composed_names(), whole=True) if full else []
        return _result(step, group, [*last, (DELETED_PROPERTY, True)])
    return _result(step, group, [(prop, None) for prop in step.plan.deleted_props])


def _on_whole_record(
    step: _Step, view: RecordView, base: RecordView | None, group_value: str | None
) -> Outcome:
    view = view.with_composed_names()
    if base is not None:
        view = view.overlaid_on(base)
    elif _has_mapped_diffs(step, view):
        return _needs_full(step, _NOT_IN_CHANGE)
    elif not step.envelope.full and _stale_formulas(step, view):
        # A read holds the formulas' values as they were read with their inputs.
        return _needs_full(step, _FORMULA_READ)
    elif not step.envelope.full and _group_may_hold_uncarried(step):
        return _needs_full(step, _UNCARRIED_READ)
    group = _group_of(step, view, base, group_value)
    if not isinstance(group, str):
        return group
    return _result(step, group, _whole_record_pairs(step, view))


def _on_update(
    step: _Step, view: RecordView, base: RecordView | None, group_value: str | None
) -> Outcome:
    name_field = step.mapping.group_name_field
    if name_field != "Id" and view.was_changed(name_field):
        return _on_group_renamed(step, view, base)
    formulas = _stale_formulas(step, view)
    if formulas or _has_mapped_diffs(step, view):
        if base is None:
            return _needs_full(step, _FORMULA_READ if formulas else _NOT_IN_CHANGE)
        view = view.with_values_from(base, also=formulas)
    # Mapped changes first: an unmapped-only update must not cost a lookup.
    pairs = _property_pairs(step, view, whole=False)
    if not pairs:
        return NothingToDo(NO_MAPPED_FIELD)
    group = _group_of(step, view, base, group_value)
    return _result(step, group, pairs) if isinstance(group, str) else group


def _on_group_renamed(step: _Step, view: RecordView, base: RecordView | None) -> Outcome:
    # Amplitude cannot rename a group: the old one keeps its properties as they were.
    renamed = "group name field changed: the new group needs every property"
    if step.mapping.group_name_field in view.diffs:  # a person name sent as a part
        if base is None:
            return _needs_full(step, renamed)
        view = view.with_values_from(base)
    group = _to_group(step, view.get(step.mapping.group_name_field))
    if group is None:
        return NothingToDo("group name field cleared; the previous group is left as it was")
    if base is None:
        return _needs_full(step, renamed)
    return _result(step, group, _whole_record_pairs(step, view.overlaid_on(base)))


def _group_of(
    step: _Step, view: RecordView, base: RecordView | None, group_value: str | None
) -> str | NothingToDo | NeedsLookup:
    envelope, name_field = step.envelope, step.mapping.group_name_field
    if name_field == "Id":
        return envelope.record_id
    if view.has(name_field):
        return _named(step, view.get(name_field))
    if group_value is not None:
        return _named(step, group_value)
    if base is not None:
        return _named(step, base.get(name_field))
    if envelope.full:
        return NothingToDo(f"group name field {name_field} was not read")
    if _absent_means_null(envelope, step.plan.name_field):
        return NothingToDo("group name field is empty")
    return NeedsLookup(
        sfdc_object=envelope.object,
        record_id=envelope.record_id,
        fields=(name_field,),
        full_record=False,
        deleted=envelope.op == "delete",
        reason=f"group name field {name_field} is not in the change",
    )


def _named(step: _Step, value: Any) -> str | NothingToDo:
    group = _to_group(step, value)
    return group if group is not None else NothingToDo("group name field is empty")


def _to_group(step: _Step, value: Any) -> str | None:
    return to_group_value(value, step.plan.name_field.sf_type)


def _needs_full(step: _Step, reason: str) -> NeedsLookup:
    return NeedsLookup(
        sfdc_object=step.envelope.object,
        record_id=step.envelope.record_id,
        fields=step.plan.read_fields,
        full_record=True,
        deleted=False,
        reason=reason,
    )


def _whole_record_pairs(step: _Step, view: RecordView) -> list[_Pair]:
    pairs = _property_pairs(step, view, whole=True)
    if step.mapping.on_delete == "mark":
        pairs.append((DELETED_PROPERTY, False))
    return pairs


def _property_pairs(step: _Step, view: RecordView, *, whole: bool) -> list[_Pair]:
    """(property, value or None for unset); ``whole``: absent fields are null."""
    if whole or step.plan.dynamic:
        return _pairs_by_target(step, view, whole=whole)
    return _pairs_by_value(step, view)


def _pairs_by_target(step: _Step, view: RecordView, *, whole: bool) -> list[_Pair]:
    pairs: list[_Pair] = []
    values = view.values
    for target in live_targets(step.plan, view.parts):
        value = values.get(target.field, MISSING)
        if value is MISSING and target.parent is not None:
            value = view.value_of(target.field, target.parent)
        if value is not MISSING:
            pairs.append((target.prop, to_property_value(value, target.sf_type)))
        elif whole and _absent_means_null(step.envelope, target):
            pairs.append((target.prop, None))
    return pairs


def _pairs_by_value(step: _Step, view: RecordView) -> list[_Pair]:
    """The same for a partial change under a schema: walk the (few) fields it carries."""
    by_field = step.plan.by_field
    return [
        (target.prop, None if value is None else to_property_value(value, target.sf_type))
        for name, value in view.values.items()
        for target in by_field.get(name, ())
        # A compound's null unsets its components; its (or a person name's) own value,
        # such as a business account's Name, names none of them.
        if value is None or target.field == name
    ]


def _absent_means_null(envelope: ChangeEnvelope, target: Target) -> bool:
    """Whether a whole record that lacks ``target`` says it is null.

    A CDC ``create`` or ``undelete`` carries every non-null field it can carry. A
    read (a full envelope) holds what it selected, with explicit nulls; a field it
    lacks was not read (hidden by field-level security, or not selected), and
    saying nothing about a field never unsets it.
    """
    if envelope.full:
        return False
    return envelope.op in WHOLE_RECORD_OPS and target.in_events


def _stale_formulas(step: _Step, view: RecordView) -> tuple[str, ...]:
    """The mapped formula fields that read a field this change changed."""
    readers = step.plan.formula_inputs
    if not readers:
        return ()
    found = (
        formula
        for name, formulas in readers.items()
        if view.was_changed(name)
        for formula in formulas
    )
    return tuple(dict.fromkeys(found))


def _group_may_hold_uncarried(step: _Step) -> bool:
    """Whether a create or undelete must read the fields change events never carry.

    Named by ``Id``, the group is the record's own. Named by another field, it may be
    one another record named before (renamed since, or deleted): its properties of
    fields no event carries (formulas, ``SystemModstamp``...) are still that record's,
    and this event cannot say what they are now.
    """
    if step.mapping.group_name_field == "Id":
        return False
    return any(not target.in_events for target in step.plan.targets)


def _has_mapped_diffs(step: _Step, view: RecordView) -> bool:
    return bool(view.diffs) and not view.diffs.isdisjoint(step.plan.watched)


def _result(step: _Step, group: str, pairs: list[_Pair]) -> PropertyChanges | NothingToDo:
    if not pairs:
        return NothingToDo(NO_MAPPED_FIELD)
    values = {prop: value for prop, value in pairs if value is not None}
    unset = _NO_UNSET if len(values) == len(pairs) else _unset_of(pairs)
    envelope = step.envelope
    return PropertyChanges(
        step.mapping.group_type, group, envelope.ordering, values, unset, envelope.record_id
    )


def _unset_of(pairs: list[_Pair]) -> frozenset[str]:
    return frozenset([prop for prop, value in pairs if value is None])
