"""What a reconcile read means: the properties that differ from what was sent, as an envelope.

Pure: a record read through Bulk or REST, the object's reconciled mappings and the
digests in, at most one change envelope out. The envelope is a *full* read that holds
only ``Id``, the group name field of each mapping with a difference, and the fields
whose properties differ: the transform leaves every other property alone (absent is
not null), and deliver orders it like any read, at the record's ``SystemModstamp``
after the changes of its record before it in the partition.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.config.mapping import MappingConfig
from pipeline.errors import EnvelopeError
from pipeline.runtime.reconcile.digest import SentDigests
from pipeline.transform.apply import PropertyChanges, changes_for_config
from pipeline.transform.envelope import ChangeEnvelope, Source
from pipeline.transform.reads import envelope_from_record, stamped_envelope
from pipeline.transform.schema import ObjectSchema


@dataclass(frozen=True, slots=True)
class ObjectPlan:
    """One object's reconcile: its mappings cut to the reconciled properties, what to select."""

    sfdc_object: str
    schema: ObjectSchema
    config: MappingConfig  # the object's mappings, reconciled properties only
    fields: list[str]  # Id, group name fields, reconciled fields (SystemModstamp when known)
    fingerprint: str

    @property
    def group_types(self) -> set[str]:
        return {m.group_type for m in self.config.mappings}


@dataclass(slots=True)
class Tally:
    """What differed: per property, the groups; and the groups with any difference."""

    properties: Counter[str] = field(default_factory=Counter)
    _groups: set[int] = field(default_factory=set)

    @property
    def groups(self) -> int:
        return len(self._groups)

    def count(self, group_type: str, group_value: str, prop: str) -> None:
        self.properties[prop] += 1
        key = f"{group_type}\0{group_value}".encode()
        self._groups.add(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))


def differing_envelope(
    plan: ObjectPlan,
    record: Mapping[str, Any],
    digests: SentDigests | None,
    *,
    source: Source,
    now_ms: int,
    tally: Tally,
) -> ChangeEnvelope | None:
    """The envelope that sends what ``record`` holds and the digests do not; None if nothing.

    ``digests`` None sends every reconciled property of the record (a catch-up row,
    whose older read may still be on its way). A record without an Id is skipped.
    """
    try:
        read = stamped_envelope(plan.sfdc_object, record, source=source, now_ms=now_ms)
    except EnvelopeError:
        return None
    keep: dict[str, None] = {"Id": None}
    for mapping, outcome in changes_for_config(read, plan.config, plan.schema):
        if not isinstance(outcome, PropertyChanges):
            continue
        fields = {p.amplitude_property: p.sfdc_field for p in mapping.group_properties}
        values: dict[str, Any] = {**dict.fromkeys(outcome.unset), **outcome.set}
        differing = [
            prop
            for prop, value in values.items()
            if prop in fields
            and (
                digests is None
                or digests.differs(outcome.group_type, outcome.group_value, prop, value)
            )
        ]
        if differing:
            keep[mapping.group_name_field] = None
            for prop in differing:
                keep[fields[prop]] = None
                tally.count(outcome.group_type, outcome.group_value, prop)
    if len(keep) == 1:
        return None
    chosen = {name: record[name] for name in keep if name in record}
    # Ordered as the whole read was (the fields kept may leave out its stamp).
    return envelope_from_record(plan.sfdc_object, chosen, source=source, now_ms=read.commit_ts)


def deleted_envelope(
    plan: ObjectPlan, record: Mapping[str, Any], *, now_ms: int
) -> ChangeEnvelope | None:
    """A catch-up row read deleted (``queryAll``) as the delete it stands for; None without an Id.

    A reconcile read of the record, written before the delete, may reach deliver after
    the record's DELETE event: whole, it would mark the group live again (``on_delete:
    mark``) or set what ``unset`` removed. Written after it, the delete is the last word,
    and deliver applies the mapping's ``on_delete``.
    """
    try:
        return stamped_envelope(plan.sfdc_object, record, source="rest", now_ms=now_ms)
    except EnvelopeError:
        return None
