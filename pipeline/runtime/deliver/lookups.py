"""Flush-time Salesforce reads: group names and fields a change does not carry.

The changes of one window that need a read are read together, one batched read
per object. A bad record id fails alone (see :mod:`pipeline.runtime.salesforce_reads`);
a field the describe omits (hidden by field-level security) is not selected, and
one hidden since the describe was read has the object described again and the read
asked once more without it. The changes of a mapping whose group name field is
hidden go to the DLQ, the others' are resolved. A read Salesforce still refuses
for every id parks that object's changes in the DLQ, and the other objects go on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.config.mapping import MappingConfig, ObjectMapping
from pipeline.errors import SalesforceRequestError
from pipeline.runtime.deliver.window import FlushWindow, Lookup, envelope_payload
from pipeline.runtime.salesforce_reads import (
    RecordReads,
    RestReads,
    SchemaCache,
    read_described,
    read_records,
)
from pipeline.transform.apply import (
    NothingToDo,
    Outcome,
    PropertyChanges,
    changes_for,
)
from pipeline.transform.plan import plan_for
from pipeline.transform.schema import ObjectSchema


async def resolve_lookups(
    rest: RestReads, schemas: SchemaCache, config: MappingConfig, window: FlushWindow
) -> None:
    """Turn the window's lookups into group updates or DLQ entries, then forget them."""
    by_object: dict[str, list[Lookup]] = {}
    for item in window.lookups:
        by_object.setdefault(item.envelope.object, []).append(item)
    for sfdc_object, items in by_object.items():
        try:
            reads = await _read(rest, schemas, config, items)
        except SalesforceRequestError as exc:
            # Salesforce refuses this read for good: park the changes, go on with the rest.
            for item in items:
                detail = f"Salesforce refused the lookup of {sfdc_object}: {exc}"
                window.to_dlq("unresolved", detail, item.source, envelope_payload(item.envelope))
            continue
        for item in items:
            _resolve_read(item, reads, schemas, window)
    window.lookups = []


async def _read(
    rest: RestReads, schemas: SchemaCache, config: MappingConfig, items: list[Lookup]
) -> RecordReads:
    """The records of ``items`` (one object's), read as :func:`read_described` reads."""
    sfdc_object = items[0].envelope.object
    ids = [item.envelope.record_id for item in items]

    async def read(schema: ObjectSchema | None) -> RecordReads:
        return await read_records(rest, sfdc_object, ids, _fields(config, schema, items))

    return await read_described(schemas, config, sfdc_object, read)


def _fields(config: MappingConfig, schema: ObjectSchema | None, items: list[Lookup]) -> list[str]:
    """What the read of ``items`` (one object's) selects: what each asks for, and what
    every mapping of the object reads, without the fields ``schema`` omits (a lookup
    planned under an older describe asks for those too), group name fields included:
    the changes of a mapping whose group name field is hidden go to the DLQ alone
    (:func:`_resolve`), not every lookup of the object with them."""
    fields = {name for item in items for name in item.fields}
    for mapping in config.for_object(items[0].envelope.object):
        fields |= {mapping.group_name_field, *plan_for(mapping, schema).read_fields}
    return sorted(name for name in fields if schema is None or not schema.omits(name))


def _resolve_read(
    item: Lookup, reads: RecordReads, schemas: SchemaCache, window: FlushWindow
) -> None:
    record_id = item.envelope.record_id
    problem = reads.refused.get(record_id)
    if problem is None:
        _resolve(item, reads.found.get(record_id), schemas, window)
    else:  # a bad id fails alone: its neighbours in the same read are resolved
        window.to_dlq("malformed", problem, item.source, envelope_payload(item.envelope))


def _resolve(
    item: Lookup, record: Mapping[str, Any] | None, schemas: SchemaCache, window: FlushWindow
) -> None:
    envelope, schema = item.envelope, schemas.cached(item.envelope.object)
    name_field = item.mapping.group_name_field
    if schema is not None and schema.omits(name_field):
        detail = (
            f"the group name field {envelope.object}.{name_field} cannot be read (field-level "
            f"security): grant Read Access, then replay this entry"
        )
        window.to_dlq("unresolved", detail, item.source, envelope_payload(envelope))
        return
    if record is None:
        detail = (
            f"{envelope.object} {envelope.record_id} is gone from Salesforce; "
            f"its {item.mapping.group_type} group cannot be named"
        )
        window.to_dlq("unresolved", detail, item.source, envelope_payload(envelope))
        return
    if item.full_record:
        outcome = changes_for(envelope, item.mapping, schema, full_record=record)
    else:
        name = record.get(item.mapping.group_name_field)
        outcome = changes_for(
            envelope, item.mapping, schema, group_value="" if name is None else str(name)
        )
    _settle_resolved(outcome, item, item.mapping, window)


def _settle_resolved(
    outcome: Outcome, item: Lookup, mapping: ObjectMapping, window: FlushWindow
) -> None:
    if isinstance(outcome, PropertyChanges):
        window.coalescer(item.source.partition_of).add(outcome)
    elif not isinstance(outcome, NothingToDo):
        detail = (
            f"still incomplete after reading Salesforce ({type(outcome).__name__}) "
            f"for {mapping.group_type}"
        )
        window.to_dlq("unresolved", detail, item.source, envelope_payload(item.envelope))
