"""Change event bodies for CometD clients, built from stored records (reference §4.5).

CREATE and UNDELETE carry every non-null field; UPDATE carries only what changed (nulls
explicit) plus ``LastModifiedDate``; compound components are nested under their compound name
and reported in ``changedFields`` as ``BillingAddress.City`` / ``Name.LastName``. ``IsDeleted``,
``SystemModstamp`` and formula fields are never sent, nor are fields hidden from the API user by
field-level security (``hidden``). A person account's ``Name`` travels as its nested compound
(``Name.FirstName``...), never as the composed string.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sfamp_sandbox.salesforce.person import is_person
from sfamp_sandbox.salesforce.schema import FieldDef, ObjectDef, cdc_component
from sfamp_sandbox.salesforce.values import to_cdc

Record = tuple[Any, ...]
NEVER_SENT = frozenset({"IsDeleted", "SystemModstamp", "Id"})
NO_FIELDS: frozenset[str] = frozenset()


def _event_fields(obj: ObjectDef, record: Record, hidden: frozenset[str]) -> Iterable[FieldDef]:
    skipped = NEVER_SENT | hidden
    if is_person(obj, record):
        skipped |= {"Name"}
    for field in obj.fields:
        if field.stored and field.name not in skipped:
            yield field


def _put(body: dict[str, Any], field: FieldDef, value: Any) -> str:
    """Place one value in the body; returns the name to list in changed/nulled fields."""
    if field.compound is None:
        body[field.name] = to_cdc(field, value)
        return field.name
    part = cdc_component(field)
    body.setdefault(field.compound, {})[part] = to_cdc(field, value)
    return f"{field.compound}.{part}"


def full_body(obj: ObjectDef, record: Record, hidden: frozenset[str] = NO_FIELDS) -> dict[str, Any]:
    """Body of a CREATE or UNDELETE event: all non-null fields."""
    body: dict[str, Any] = {}
    for field in _event_fields(obj, record, hidden):
        value = record[obj.slots[field.name]]
        if value is not None:
            _put(body, field, value)
    return body


def update_body(
    obj: ObjectDef, old: Record, new: Record, hidden: frozenset[str] = NO_FIELDS
) -> tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    """Body, changed fields and nulled fields of an UPDATE from ``old`` to ``new``."""
    body: dict[str, Any] = {}
    changed: list[str] = []
    nulled: list[str] = []
    for field in _event_fields(obj, new, hidden):
        slot = obj.slots[field.name]
        if old[slot] == new[slot] and field.name != "LastModifiedDate":
            continue
        name = _put(body, field, new[slot])
        changed.append(name)
        if new[slot] is None:
            nulled.append(name)
    return body, tuple(changed), tuple(nulled)


def merged_update_body(
    obj: ObjectDef, names: Sequence[str], record: Record, hidden: frozenset[str] = NO_FIELDS
) -> tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    """Body of one UPDATE event applied to many records: the named fields as in ``record``
    (every record got the same values), plus ``LastModifiedDate``."""
    body: dict[str, Any] = {}
    changed: list[str] = []
    nulled: list[str] = []
    wanted = set(names) | {"LastModifiedDate"}
    for field in _event_fields(obj, record, hidden):
        if field.name not in wanted:
            continue
        value = record[obj.slots[field.name]]
        name = _put(body, field, value)
        changed.append(name)
        if value is None:
            nulled.append(name)
    return body, tuple(changed), tuple(nulled)
