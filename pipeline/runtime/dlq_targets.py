"""Which Salesforce records a DLQ entry stands for, and what they mean for Amplitude now.

Pure: entries and records in, targets and property changes out. The redelivery
(:mod:`pipeline.runtime.dlq_redeliver`) does the reading and the sending.

Which records an entry names:

* ``rejected`` (Amplitude refused the identification): the group
  ``group_type:group_value``. Its record is the group value itself when the
  group name field is ``Id``; otherwise the records whose group name field
  holds the value now.
* an entry whose payload is a change envelope (``unresolved``, and
  ``malformed`` messages that decode today): its object and record id.
* a CDC event ingest could not understand: the ``entityName`` and
  ``recordIds`` of its header, when those are readable.

A record that is gone (deleted, or not found at all) is a delete, so the
mapping's ``on_delete`` applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from pipeline.config.mapping import MappingConfig, ObjectMapping
from pipeline.errors import EnvelopeError
from pipeline.kafka.records import DlqEntry
from pipeline.salesforce.change_events import HEADER
from pipeline.transform.apply import (
    NothingToDo,
    Outcome,
    PropertyChanges,
    changes_for,
    changes_for_config,
)
from pipeline.transform.envelope import ChangeEnvelope, decode
from pipeline.transform.reads import deleted_envelope, envelope_from_record
from pipeline.transform.schema import ObjectSchema

# Records by id as one read found them; None: not found at all (purged).
Read = Mapping[str, Mapping[str, Any] | None]

_TEXT_TYPES: Final = frozenset(
    ("string", "id", "reference", "email", "phone", "url", "picklist", "textarea", "combobox")
)
_NUMBER_TYPES: Final = frozenset(("double", "int", "long", "currency", "percent"))


@dataclass(frozen=True, slots=True)
class Target:
    """Records of one object behind an entry; for a rejected group, only that mapping."""

    sfdc_object: str
    record_ids: tuple[str, ...] = ()
    mapping: ObjectMapping | None = None
    group_value: str | None = None

    @property
    def by_group(self) -> bool:
        """The records are found by their group name field, not by id."""
        return self.mapping is not None and self.mapping.group_name_field != "Id"


@dataclass(frozen=True, slots=True)
class Changes:
    """What one read of an entry's records means: changes to send, notes, problems."""

    changes: list[PropertyChanges]
    notes: list[str]
    problems: list[str]


def targets_of(entry: DlqEntry, config: MappingConfig) -> list[Target] | str:
    """The records behind ``entry``, or why they cannot be named."""
    if entry.reason == "rejected":
        return _group_targets(entry, config)
    if entry.source_topic is not None:
        return _envelope_target(entry, entry.source_topic, config)
    if isinstance(entry.extra, dict) and entry.extra.get("channel"):
        return _event_target(entry.payload, config)
    return "no record can be named from this entry (no change envelope, no CDC event)"


def _group_targets(entry: DlqEntry, config: MappingConfig) -> list[Target] | str:
    group_type, sep, group_value = entry.key.partition(":")
    if not sep or not group_value:
        return f"the key {entry.key!r} names no group (group_type:group_value)"
    mappings = [m for m in config.mappings if m.group_type == group_type]
    if not mappings:
        return f"no mapping writes group type {group_type!r} any more"
    targets: list[Target] = []
    for mapping in mappings:
        ids: tuple[str, ...] = ()
        if mapping.group_name_field == "Id":
            if not is_record_id(group_value):
                continue  # this mapping's groups are record ids; this value is not one
            ids = (group_value,)
        targets.append(Target(mapping.sfdc_object, ids, mapping, group_value))
    return targets or f"{group_value!r} is not a Salesforce record id"


def _envelope_target(entry: DlqEntry, topic: str, config: MappingConfig) -> list[Target] | str:
    payload = entry.payload
    try:
        if payload is None:
            raise EnvelopeError("the change has no value")
        text = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
        envelope = decode(text)
    except (EnvelopeError, TypeError) as exc:
        # Whatever the value held, a changes topic's message is keyed by its record's Id
        # and its topic names the object (sfamp.changes.<Object>): that is enough to re-read.
        _, changes, sfdc_object = topic.rpartition(".changes.")
        if changes and sfdc_object and is_record_id(entry.key):
            return _record_target(sfdc_object, [entry.key], config, None)
        return f"cannot tell which record: {exc}"
    return _record_target(envelope.object, [envelope.record_id], config, envelope)


def _event_target(payload: Any, config: MappingConfig) -> list[Target] | str:
    try:
        message = orjson.loads(payload) if isinstance(payload, str) else payload
        header = message["data"]["payload"][HEADER]
        sfdc_object, ids = str(header["entityName"]), list(header["recordIds"])
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        return f"cannot tell which record: the CDC event has no readable header ({exc!r})"
    return _record_target(sfdc_object, [str(i) for i in ids], config, None)


def _record_target(
    sfdc_object: str, ids: list[str], config: MappingConfig, envelope: ChangeEnvelope | None
) -> list[Target] | str:
    if not config.for_object(sfdc_object):
        return f"no mapping reads {sfdc_object} any more"
    if envelope is not None and envelope.op == "gap_overflow":
        return f"an overflow names no record: run 'sfamp backfill --object {sfdc_object}'"
    bad = [record_id for record_id in ids if not is_record_id(record_id)]
    if bad or not ids:
        return f"not a Salesforce record id: {', '.join(map(repr, bad)) or 'none given'}"
    return [Target(sfdc_object, tuple(dict.fromkeys(ids)))]


def is_record_id(text: str) -> bool:
    return len(text) in (15, 18) and text.isascii() and text.isalnum()


def group_literal(value: str, sf_type: str | None) -> str | None:
    """``value`` as a SOQL literal for a field of ``sf_type``; None when it cannot be one."""
    if sf_type in _NUMBER_TYPES:
        try:
            float(value)
        except ValueError:
            return None
        return value
    if sf_type == "boolean":
        return value if value in ("true", "false") else None
    if sf_type is None or sf_type in _TEXT_TYPES:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return None


def changes_of(
    target: Target, read: Read, config: MappingConfig, schema: ObjectSchema | None, now_ms: int
) -> Changes:
    """The property changes the records of ``read`` mean now (deletes follow on_delete)."""
    result = Changes([], [], [])
    if target.by_group and not read:
        result.notes.append(f"no {target.sfdc_object} names group {target.group_value!r} now")
    for record_id, record in read.items():
        envelope = _envelope(target.sfdc_object, record_id, record, now_ms)
        if target.mapping is not None:
            known = target.group_value if record is None else None
            outcomes = [
                (target.mapping, changes_for(envelope, target.mapping, schema, group_value=known))
            ]
        else:
            outcomes = changes_for_config(envelope, config, schema)
        for mapping, outcome in outcomes:
            _settle(result, mapping, outcome, gone=record is None)
    return result


def _envelope(
    sfdc_object: str, record_id: str, record: Mapping[str, Any] | None, now_ms: int
) -> ChangeEnvelope:
    if record is None:
        return deleted_envelope(sfdc_object, record_id, source="rest", now_ms=now_ms)
    return envelope_from_record(sfdc_object, record, source="rest", now_ms=now_ms)


def _settle(result: Changes, mapping: ObjectMapping, outcome: Outcome, *, gone: bool) -> None:
    if isinstance(outcome, PropertyChanges):
        result.changes.append(outcome)
    elif isinstance(outcome, NothingToDo):
        result.notes.append(f"{mapping.group_type}: {outcome.reason}")
    elif gone:
        result.problems.append(
            f"{mapping.group_type}: the record is gone from Salesforce and its group "
            f"cannot be named (group name field {mapping.group_name_field})"
        )
    else:
        result.problems.append(f"{mapping.group_type}: {outcome.reason}")
