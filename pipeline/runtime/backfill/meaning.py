"""What a read of a record means for Amplitude, worked out once per record.

A snapshot (``sfamp backfill``, a re-sync) needs two things of every record it
reads: each mapping's outcome (the group and its property changes) and a digest
of that meaning, which catch-up rounds compare between reads of the record. Both
come from one transform here.

Most reads are flat and live: Bulk CSV rows always are, REST rows unless they
hold a compound field or a relationship as a nested object. For such a read the
whole-record rules of :mod:`pipeline.transform.apply` come down to: the group
from the group name field (not read: no group; empty: no group), every mapped
field that was read set, or unset when null, a field that was not read left
alone, and ``sfdc_deleted: false`` under ``on_delete: mark``. :class:`ReadMeaning`
applies exactly that with the same compiled plan and the same value conversion
(:func:`to_property_value`, :func:`to_group_value`), without building an
envelope and a view per record. Any other read (a deleted record, a nested value,
a mapping with formula fields that follow other fields, no schema) goes through
:func:`changes_for_config` itself; a test compares both on generated records.

A Bulk batch held column by column (:class:`RowColumns`) is worked out a column at
a time (:meth:`ReadMeaning.outcomes_of`): each mapped column converted once
(:func:`to_property_values`), each row's change built from the converted columns,
with no dict per row; another test compares it with the row-by-row answers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import orjson

from pipeline.config.mapping import MappingConfig, ObjectMapping
from pipeline.errors import EnvelopeError
from pipeline.salesforce.bulk_csv import RowColumns
from pipeline.transform.apply import (
    DELETED_PROPERTY,
    NothingToDo,
    Outcome,
    PropertyChanges,
    changes_for_config,
)
from pipeline.transform.envelope import Source
from pipeline.transform.group_update import PropertyValue
from pipeline.transform.plan import MappingPlan, plan_for
from pipeline.transform.reads import envelope_from_record
from pipeline.transform.schema import ObjectSchema
from pipeline.transform.values import (
    kept_types,
    normalise_float,
    to_group_value,
    to_property_value,
    to_property_values,
)

MODSTAMP: Final = "SystemModstamp"
DELETED: Final = "IsDeleted"
# A stamp compared to the millisecond, without its zone (REST +0000, Bulk Z: both UTC).
STAMP_CHARS: Final = 23
# Conversions remembered per mapped field; a field with more distinct values (names,
# amounts) just stops being remembered.
MEMO_VALUES: Final = 4096
Outcomes = list[tuple[ObjectMapping, Outcome]]
_MISSING: Any = object()
_EMPTY: Final[frozenset[str]] = frozenset()
_NOT_DATA: Final = frozenset(("attributes", DELETED, MODSTAMP))
_NUMBER_TYPES: Final = frozenset(("int", "long", "double", "currency", "percent"))
# One mapped field of a flat plan: field, property, type, compound parent, the types
# its values keep as they are (:func:`kept_types`), whether a float is normalised as a
# number, and the conversions of other values seen so far.
_Target = tuple[str, str, str | None, str | None, frozenset[type], bool, dict[Any, Any]]
_EachPlan = list[list[Outcome]] | None  # per flat plan, each row's outcome
_RowSets = Callable[[Iterable[tuple[Any, ...]]], list[dict[str, PropertyValue]]]


@dataclass(frozen=True, slots=True)
class BatchMeaning:
    """What a batch of reads means: every change (:class:`PropertyChanges`) in read
    order, how many outcomes change no group (no group name, nothing mapped), and each
    read's outcomes. ``changes`` is not to be changed in place: :meth:`outcomes` reads it."""

    changes: list[PropertyChanges]
    others: int
    each: list[Outcomes] | None = None  # None: one change per read, of ``mapping``
    mapping: ObjectMapping | None = None

    def outcomes(self, index: int) -> Outcomes:
        """The outcomes of the batch's ``index``-th read (from 0)."""
        if self.each is not None:
            return self.each[index]
        assert self.mapping is not None  # set whenever each is not
        return [(self.mapping, self.changes[index])]


@dataclass(frozen=True, slots=True)
class _FlatPlan:
    """One mapping's plan as plain tuples, for flat live reads."""

    mapping: ObjectMapping
    name_field: str | None  # None: the group is the record Id
    name_type: str | None
    name_parent: str | None
    targets: tuple[_Target, ...]
    mark: bool
    row_sets: _RowSets  # each row of converted values (one per target) as its $set


def _flat_plan(plan: MappingPlan) -> _FlatPlan | None:
    """The plan for flat reads, or None when some read of it needs the general rules."""
    fields = [target.field for target in plan.targets] + [plan.name_field.field]
    if plan.schema is None or plan.dynamic or plan.formula_inputs:
        return None
    if any("." in name for name in fields):
        return None  # a dotted column is never a field of ours in the general rules
    by_id = plan.mapping.group_name_field == "Id"
    return _FlatPlan(
        plan.mapping,
        None if by_id else plan.name_field.field,
        plan.name_field.sf_type,
        plan.name_field.parent,
        tuple(
            (
                t.field,
                t.prop,
                t.sf_type,
                t.parent,
                kept_types(t.sf_type),
                t.sf_type in _NUMBER_TYPES,
                {},
            )
            for t in plan.targets
        ),
        plan.mapping.on_delete == "mark",
        _row_sets(tuple(t.prop for t in plan.targets)),
    )


def _row_sets(props: tuple[str, ...]) -> _RowSets:
    """A function from rows (one value per property of ``props``) to a dict per row,
    ``dict(zip(props, row))`` each.

    It is a comprehension over a dict display compiled for these properties, as
    :func:`collections.namedtuple` compiles its class: a display builds its dict at
    its final size, about twice as fast as ``dict(zip(...))``, which grows it. The
    names are the function's globals; its source holds only ``k0``, ``v0``...
    """
    keys = [f"k{index}" for index in range(len(props))]
    values = [f"v{index}" for index in range(len(props))]
    entries = "".join(f"{key}: {value}, " for key, value in zip(keys, values, strict=True))
    unpacked = "".join(f"{value}, " for value in values)
    source = f"lambda rows: [{{{entries}}} for ({unpacked}) in rows]"
    return cast("_RowSets", eval(source, dict(zip(keys, props, strict=True))))  # noqa: S307


class ReadMeaning:
    """Outcomes and digests of the reads of one object under ``config`` and ``schema``."""

    def __init__(self, sfdc_object: str, config: MappingConfig, schema: ObjectSchema) -> None:
        self.sfdc_object = sfdc_object
        self.config = config
        self.schema = schema
        plans = [_flat_plan(plan_for(m, schema)) for m in config.for_object(sfdc_object)]
        self._flat = tuple(p for p in plans if p is not None) if None not in plans else None

    def outcomes(self, record: Mapping[str, Any], *, source: Source, now_ms: int) -> Outcomes:
        """Each mapping's outcome for ``record``, as :func:`changes_for_config` answers.

        Raises :class:`EnvelopeError` for a record without an Id.
        """
        if self._flat is not None and _flat_and_live(record, source):
            return self._flat_outcomes(record, now_ms)
        envelope = envelope_from_record(self.sfdc_object, record, source=source, now_ms=now_ms)
        return changes_for_config(envelope, self.config, self.schema)

    def outcomes_of(
        self, records: Sequence[Mapping[str, Any]], *, source: Source, now_ms: int
    ) -> list[Outcomes]:
        """:meth:`outcomes` of each of ``records``, in order.

        A block of full-width Bulk rows (:class:`RowColumns`) is worked out column by
        column when every row is flat and live and the page has a column for every
        field the mappings read; any other batch record by record.
        """
        each_plan = self._each_plan(records, now_ms)
        return self._each_read(records, each_plan, source=source, now_ms=now_ms)

    def meaning_of(
        self, records: Sequence[Mapping[str, Any]], *, source: Source, now_ms: int
    ) -> BatchMeaning:
        """What :meth:`outcomes_of` answers for a batch, with its changes gathered in
        read order.

        A block under one mapping whose every row names a group (a backfill's, nearly
        always) is its changes alone, with no outcome list per read.
        """
        each_plan = self._each_plan(records, now_ms)
        if self._flat is not None and each_plan is not None and len(each_plan) == 1:
            (found,) = each_plan
            changes = [o for o in found if isinstance(o, PropertyChanges)]
            if len(changes) == len(found):
                return BatchMeaning(changes, 0, mapping=self._flat[0].mapping)
        each = self._each_read(records, each_plan, source=source, now_ms=now_ms)
        changes = [o for read in each for _, o in read if isinstance(o, PropertyChanges)]
        return BatchMeaning(changes, sum(map(len, each)) - len(changes), each)

    def _each_plan(self, records: Sequence[Mapping[str, Any]], now_ms: int) -> _EachPlan:
        if self._flat is None or not isinstance(records, RowColumns):
            return None
        return _block_outcomes(self._flat, records, now_ms)

    def _each_read(
        self,
        records: Sequence[Mapping[str, Any]],
        each_plan: _EachPlan,
        *,
        source: Source,
        now_ms: int,
    ) -> list[Outcomes]:
        """Each read's outcomes: from ``each_plan`` (a block's), else record by record."""
        if each_plan is not None:
            return _by_read(self._flat or (), each_plan)
        return [self.outcomes(record, source=source, now_ms=now_ms) for record in records]

    def _flat_outcomes(self, record: Mapping[str, Any], now_ms: int) -> Outcomes:
        record_id: str = record["Id"]
        found: Outcomes = []
        for plan in self._flat or ():
            group = record_id if plan.name_field is None else _group(plan, record)
            if isinstance(group, NothingToDo):
                found.append((plan.mapping, group))
                continue
            values: dict[str, PropertyValue] = {}
            unset: list[str] = []
            for name, prop, sf_type, parent, kept, number, memo in plan.targets:
                value: Any = record.get(name, _MISSING)
                if value is _MISSING:
                    if parent is None or record.get(parent, 0) is not None:
                        continue  # not read: left alone
                    value = None  # the whole compound field is null
                # What to_property_value answers, without the call for values kept as
                # they are and a number field's floats (most values of a Bulk read).
                if value is None:
                    converted: PropertyValue | None = None
                elif type(value) in kept:
                    converted = None if value == "" else value
                elif number and value.__class__ is float:
                    converted = normalise_float(value)
                else:
                    converted = _converted(value, sf_type, memo)
                if converted is None:
                    unset.append(prop)
                else:
                    values[prop] = converted
            if plan.mark:
                values[DELETED_PROPERTY] = False
            found.append((plan.mapping, _changes(plan, group, values, unset, now_ms, record_id)))
        return found

    def digest(self, record: Mapping[str, Any], outcomes: Outcomes) -> bytes:
        """What the read means, with its stamp: equal for equal meanings, whatever API read it."""
        meaning: list[Any] = [stamp_of(record)]
        for mapping, outcome in outcomes:
            if isinstance(outcome, PropertyChanges):
                unset = sorted(outcome.unset)
                meaning.append([outcome.group_type, outcome.group_value, outcome.set, unset])
            else:
                meaning.append([mapping.group_type, type(outcome).__name__])
        return canonical(meaning)

    def digest_of(self, record: Mapping[str, Any]) -> bytes:
        """:meth:`digest` of a read not transformed yet (one without an Id: its fields)."""
        try:
            outcomes = self.outcomes(record, source="rest", now_ms=0)
        except EnvelopeError:
            return fields_digest(record, sorted(record))
        return self.digest(record, outcomes)


def _flat_and_live(record: Mapping[str, Any], source: Source) -> bool:
    record_id = record.get("Id")
    if type(record_id) is not str or not record_id:
        return False
    if record.get(DELETED) in (True, "true"):
        return False
    # A Bulk CSV row holds text and scalars only; REST JSON may nest compounds.
    return source == "bulk" or dict not in map(type, record.values())


def _converted(value: Any, sf_type: str | None, memo: dict[Any, Any]) -> PropertyValue | None:
    """:func:`to_property_value`, remembered per field for up to :data:`MEMO_VALUES` values.

    Picklists, booleans, dates and the like repeat across records: their conversion
    (a regular expression, a split) is worth doing once. Keyed by type and value, as
    ``1``, ``1.0`` and ``True`` are equal keys that convert differently. A list (a
    multi-select picklist) is copied, as every update must own its values.
    """
    key = (type(value), value)
    try:
        converted = memo.get(key, _MISSING)
    except TypeError:  # an unhashable value
        return to_property_value(value, sf_type)
    if converted is _MISSING:
        converted = to_property_value(value, sf_type)
        if len(memo) < MEMO_VALUES:
            memo[key] = converted
    return list(converted) if type(converted) is list else converted


def _block_outcomes(plans: tuple[_FlatPlan, ...], block: RowColumns, now_ms: int) -> _EachPlan:
    """Each plan's outcome for each row, as :meth:`ReadMeaning._flat_outcomes` has them,
    worked out a column at a time; None when a row needs other rules (no Id, deleted) or
    the page lacks a column a mapping reads (then some field was not read: left alone)."""
    ids = block.column("Id")
    if ids is None or set(map(type, ids)) != {str} or not all(ids):  # an empty Id
        return None
    deleted = block.column(DELETED)
    if deleted is not None and (True in deleted or "true" in deleted):
        return None
    each_plan: list[list[Outcome]] = []
    for plan in plans:
        read = [block.column(target[0]) for target in plan.targets]
        columns = [cells for cells in read if cells is not None]
        names = ids if plan.name_field is None else block.column(plan.name_field)
        if not columns or len(columns) < len(read) or names is None:
            return None
        if plan.name_field is not None:
            names = [to_group_value(value, plan.name_type) for value in names]
        types = [target[2] for target in plan.targets]
        converted = list(map(to_property_values, columns, types))
        each_plan.append(_column_changes(plan, names, ids, converted, now_ms))
    return each_plan


def _by_read(plans: tuple[_FlatPlan, ...], each_plan: list[list[Outcome]]) -> list[Outcomes]:
    """Each plan's outcomes per row as each row's outcomes, plan by plan."""
    if len(plans) == 1:
        mapping = plans[0].mapping
        return [[(mapping, outcome)] for outcome in each_plan[0]]
    mappings = [plan.mapping for plan in plans]
    return [list(zip(mappings, row, strict=True)) for row in zip(*each_plan, strict=True)]


def _column_changes(
    plan: _FlatPlan,
    groups: Sequence[str | None],
    ids: Sequence[str],
    columns: list[Sequence[Any]],
    now_ms: int,
) -> list[Outcome]:
    """Each row's change of ``plan``: ``columns`` hold its mapped fields' property values
    (``None``: unset), ``groups`` its group (``None``: no group)."""
    props = [target[1] for target in plan.targets]
    group_type, mark, order = plan.mapping.group_type, plan.mark, (now_ms, 0, 0)
    # The columns of a block are all as long as it: no zip below checks lengths.
    rows = zip(*columns, strict=False)
    if not mark and _no_none(groups) and all(map(_no_none, columns)):
        # Every row has a group and sets every property (most blocks): nothing to sort.
        sets = plan.row_sets(rows)
        named = cast("Sequence[str]", groups)  # none is None, as checked above
        return [
            PropertyChanges(group_type, group, order, values, _EMPTY, record_id)
            for group, record_id, values in zip(named, ids, sets, strict=False)
        ]
    found: list[Outcome] = []
    for group, record_id, values in zip(groups, ids, rows, strict=False):
        if group is None:
            found.append(NothingToDo("group name field is empty"))
            continue
        if None in values:
            changes = {p: v for p, v in zip(props, values, strict=False) if v is not None}
            nulls = frozenset(p for p, v in zip(props, values, strict=False) if v is None)
        else:
            changes, nulls = dict(zip(props, values, strict=False)), _EMPTY
        if mark:
            changes[DELETED_PROPERTY] = False
        found.append(PropertyChanges(group_type, group, order, changes, nulls, record_id))
    return found


def _no_none(cells: Sequence[Any]) -> bool:
    """``None not in cells``, by a truth test first: quicker, and enough when no cell
    is false (no zero, no empty text)."""
    return all(cells) or None not in cells


def _group(plan: _FlatPlan, record: Mapping[str, Any]) -> str | NothingToDo:
    name = plan.name_field
    assert name is not None
    if name in record:
        value = record[name]
    elif plan.name_parent is not None and record.get(plan.name_parent, 0) is None:
        value = None  # the compound field holding it is null
    else:
        return NothingToDo(f"group name field {name} was not read")
    group = to_group_value(value, plan.name_type)
    return group if group is not None else NothingToDo("group name field is empty")


def _changes(
    plan: _FlatPlan,
    group: str,
    values: dict[str, PropertyValue],
    unset: list[str],
    now_ms: int,
    record_id: str,
) -> PropertyChanges | NothingToDo:
    if not values and not unset:
        return NothingToDo("no mapped field in the change")
    order = (now_ms, 0, 0)
    nulls = frozenset(unset) if unset else _EMPTY
    return PropertyChanges(plan.mapping.group_type, group, order, values, nulls, record_id)


def stamp_of(record: Mapping[str, Any]) -> str:
    return str(record.get(MODSTAMP))[:STAMP_CHARS]


def is_deleted(record: Mapping[str, Any]) -> bool:
    return record.get(DELETED) in (True, "true")


def fields_digest(record: Mapping[str, Any], fields: list[str] | tuple[str, ...]) -> bytes:
    """The ``fields`` a read holds, with its stamp and whether it is deleted."""
    data = [record.get(name) for name in fields if name not in _NOT_DATA]
    return canonical([stamp_of(record), is_deleted(record), data])


def canonical(meaning: object) -> bytes:
    return orjson.dumps(meaning, option=orjson.OPT_SORT_KEYS, default=str)


def read_key(record_id: object, digest: bytes) -> int:
    """A record's id and what its read means, as one 64-bit number."""
    text = str(record_id).encode() + b"\0" + digest
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def raw_key(record: Mapping[str, Any], fields: Sequence[str]) -> int:
    """A read exactly as it was read (id, stamp, deleted or not, ``fields`` as typed), as one
    64-bit number: equal for two reads through the same API that hold the same values.

    Equal raw reads mean the same, so a catch-up round skips the transform for them;
    a read through another API (REST after Bulk) may spell a value differently and is
    then compared by what it means.
    """
    data = [record.get("Id"), record.get(MODSTAMP), is_deleted(record), *map(record.get, fields)]
    raw = orjson.dumps(data, default=str)
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")
