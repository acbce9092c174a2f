"""What sfamp last sent for the properties a reconcile re-reads, as a compact digest.

A reconcile re-reads the mapped fields change events cannot keep fresh (formula
fields, and the fields events never carry: :data:`NEVER_IN_CHANGE_EVENTS`) and sends
only the values that differ from what was sent last. Every path that sends those
properties (deliver's flushes, ``sfamp backfill``, ``sfamp dlq replay``) records what
Amplitude accepted in the compacted topic ``<prefix>.sent``
(:mod:`pipeline.kafka.sent`): per group and property, the 8-byte BLAKE2b of the
value's canonical JSON as sent (``null`` for an unset).

One key per property rather than per group: each write stands alone, so a flush
that sends one formula of a group never has to know (or race another instance
for) the digests of its other properties. Only reconciled properties are
recorded, so a mapping without formula fields writes nothing here. A key the
topic does not hold means "not known": the reconcile sends that value, which is
always safe; only a digest older than what was sent could hide a change, which
is why every sending path records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

import orjson

from pipeline.config.mapping import MappingConfig, ObjectMapping
from pipeline.kafka.sent import decode_sent_digest, encode_sent_digest, sent_key
from pipeline.transform.change_event_fields import never_in_change_events
from pipeline.transform.group_update import GroupUpdate, PropertyValue
from pipeline.transform.schema import ObjectSchema

DIGEST_BYTES: Final = 8
SchemaOf = Callable[[str], ObjectSchema | None]
# group type -> the properties a reconcile re-reads (and whose sends are recorded).
Reconciled = Mapping[str, frozenset[str]]


def value_digest(value: PropertyValue | None) -> int:
    """The digest of a value as Amplitude receives it (None: an unset), as a 64-bit int."""
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return int.from_bytes(hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest(), "big")


def _slot(key: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(key, digest_size=DIGEST_BYTES).digest(), "big")


class SentDigests:
    """The ``sent`` topic in memory: one 64-bit number per key and per value (about 100
    bytes a property in a dict), for the group types a reconcile reads."""

    def __init__(self) -> None:
        self._table: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._table)

    def load(self, key: bytes, value: bytes | None) -> None:
        """One record of the topic, in offset order; a tombstone forgets the key."""
        digest = decode_sent_digest(value)
        if digest is None:
            self._table.pop(_slot(key), None)
        else:
            self._table[_slot(key)] = digest

    def differs(
        self, group_type: str, group_value: str, prop: str, value: PropertyValue | None
    ) -> bool:
        """Whether ``value`` is not what was last sent for the property (or nothing is known)."""
        known = self._table.get(_slot(sent_key(group_type, group_value, prop)))
        return known is None or known != value_digest(value)


def reconciled_fields(mapping: ObjectMapping, schema: ObjectSchema | None) -> list[str]:
    """The mapped property fields change events cannot keep fresh: formulas and the fields
    they never carry (fields the describe omits are left out: they cannot be read)."""
    if schema is None:
        return []
    found = []
    for prop in mapping.group_properties:
        info = schema.field(prop.sfdc_field)
        if info is not None and never_in_change_events(info.name, calculated=info.calculated):
            found.append(prop.sfdc_field)
    return found


def reconciled_mapping(mapping: ObjectMapping, schema: ObjectSchema | None) -> ObjectMapping | None:
    """``mapping`` with only its reconciled properties; None when it has none."""
    fields = set(reconciled_fields(mapping, schema))
    if not fields:
        return None
    kept = [p for p in mapping.group_properties if p.sfdc_field in fields]
    return mapping.model_copy(update={"group_properties": kept})


def reconciled_properties(config: MappingConfig, schema_of: SchemaOf) -> dict[str, frozenset[str]]:
    """Per group type, the properties whose sends are recorded."""
    found: dict[str, set[str]] = {}
    for mapping in config.mappings:
        fields = set(reconciled_fields(mapping, schema_of(mapping.sfdc_object)))
        props = {p.amplitude_property for p in mapping.group_properties if p.sfdc_field in fields}
        if props:
            found.setdefault(mapping.group_type, set()).update(props)
    return {group_type: frozenset(props) for group_type, props in found.items()}


def sent_records(
    updates: Sequence[GroupUpdate], rejected: Iterable[tuple[str, str]], reconciled: Reconciled
) -> list[tuple[bytes, bytes]]:
    """(key, value) of ``sent`` for every reconciled property Amplitude accepted."""
    refused = set(rejected)
    records: list[tuple[bytes, PropertyValue | None]] = []
    for update in updates:
        props = reconciled.get(update.group_type)
        if not props or update.key in refused:
            continue
        group_type, group_value = update.key
        for prop, value in update.set.items():
            if prop in props:
                records.append((sent_key(group_type, group_value, prop), value))
        records += [(sent_key(group_type, group_value, p), None) for p in update.unset & props]
    return [(key, encode_sent_digest(value_digest(value))) for key, value in records]
