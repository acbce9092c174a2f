"""Salesforce change events and re-read records turned into change envelopes.

One CometD CDC message becomes one envelope per entry of ``recordIds`` (a merged
event applies the same body to every id). A ``GAP_OVERFLOW`` names no record and
becomes a single envelope with ``record_id == ""``. A wildcard id such as
``001*`` ("every record of the object") is kept as the record id; the transform
answers it with an object re-sync.

Records read through REST or Bulk (gap re-reads, backfill) become *full*
envelopes: every field that was read is present, null or not; a field that is
absent was not read, and the transform leaves its property alone.

A read is ordered by :func:`read_order`: the later of its ``SystemModstamp`` and a
floor known to precede the read (the ``commitTimestamp`` of the gap event that asked
for it), both on Salesforce's clock. ``SystemModstamp`` has whole seconds, so that
alone can sort a read before a change event it reflects; the deliver pump therefore
also places every read after the changes of its record that came before it in the
partition (:class:`~pipeline.transform.coalesce.ReadOrders`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

from pipeline.errors import EnvelopeError
from pipeline.kafka.envelope import ChangeEnvelope, Op, Source

HEADER: Final = "ChangeEventHeader"
_OPS: Final[dict[str, Op]] = {
    "CREATE": "create",
    "UPDATE": "update",
    "DELETE": "delete",
    "UNDELETE": "undelete",
    "GAP_CREATE": "gap_create",
    "GAP_UPDATE": "gap_update",
    "GAP_DELETE": "gap_delete",
    "GAP_UNDELETE": "gap_undelete",
    "GAP_OVERFLOW": "gap_overflow",
}
# REST returns these beside the fields; they are never record data.
_NOT_FIELDS: Final = frozenset(("attributes",))
MODSTAMP: Final = "SystemModstamp"


def envelopes_from_event(message: Mapping[str, Any]) -> list[ChangeEnvelope]:
    """One envelope per record of a CometD CDC message; :class:`EnvelopeError` if malformed."""
    if not isinstance(message, Mapping):
        raise EnvelopeError(f"CDC message must be an object, got {type(message).__name__}")
    channel = _need(message, "channel", str, "message")
    data = _need(message, "data", dict, "message")
    payload = _need(data, "payload", dict, "data")
    replay_id = _need(_need(data, "event", dict, "data"), "replayId", int, "data.event")
    header = _need(payload, HEADER, dict, "payload")
    op = _op_of(header)
    body = {key: value for key, value in payload.items() if key != HEADER}
    template = ChangeEnvelope(
        object=_need(header, "entityName", str, HEADER),
        record_id="",
        op=op,
        commit_ts=_need(header, "commitTimestamp", int, HEADER),
        commit_number=_optional(header, "commitNumber", int, 0),
        transaction_key=_optional(header, "transactionKey", str, ""),
        sequence_number=_optional(header, "sequenceNumber", int, 0),
        channel=channel,
        replay_id=replay_id,
        changed=_names(header, "changedFields"),
        nulled=_nulled(header, body),
        fields=body,
    )
    return [replace(template, record_id=record_id) for record_id in _record_ids(header, op)]


def envelope_from_record(
    sfdc_object: str, record: Mapping[str, Any], *, source: Source, now_ms: int
) -> ChangeEnvelope:
    """A full envelope for a record read at ``now_ms`` through REST or Bulk (CSV row dicts).

    A row with ``IsDeleted`` true (``queryAll``) becomes a ``delete``; anything else an
    ``update`` that carries the whole record.
    """
    record_id = record.get("Id")
    if not isinstance(record_id, str) or not record_id:
        raise EnvelopeError(f"{sfdc_object} record without an Id")
    deleted = record.get("IsDeleted") in (True, "true")
    return ChangeEnvelope(
        object=sfdc_object,
        record_id=record_id,
        op="delete" if deleted else "update",
        commit_ts=now_ms,
        fields={key: value for key, value in record.items() if key not in _NOT_FIELDS},
        full=True,
        source=source,
    )


def read_order(record: Mapping[str, Any] | None, floor_ms: int) -> int:
    """The ``commit_ts`` of a read: the record's ``SystemModstamp`` (whole seconds) or
    ``floor_ms`` (a commit the read is known to follow), whichever is later."""
    stamp = None if record is None else modified_ms(record)
    return floor_ms if stamp is None else max(stamp, floor_ms)


def modified_ms(record: Mapping[str, Any]) -> int | None:
    """The record's ``SystemModstamp`` in epoch milliseconds, if it was read."""
    stamp = record.get(MODSTAMP)
    if not isinstance(stamp, str):
        return None
    try:
        return int(datetime.fromisoformat(stamp).timestamp() * 1000)
    except ValueError:
        return None


def reread_envelope(
    sfdc_object: str, record_id: str, record: Mapping[str, Any] | None, *, floor_ms: int
) -> ChangeEnvelope:
    """What a REST re-read of one record says: the whole record, or a delete when it is
    gone (a ``delete`` with the values it was deleted with when ``IsDeleted``, without
    any when not found); ordered by :func:`read_order`."""
    at = read_order(record, floor_ms)
    if record is None:
        return deleted_envelope(sfdc_object, record_id, source="rest", now_ms=at)
    return envelope_from_record(sfdc_object, record, source="rest", now_ms=at)


def deleted_envelope(
    sfdc_object: str, record_id: str, *, source: Source, now_ms: int
) -> ChangeEnvelope:
    """A ``delete`` for a record a re-read no longer finds (retrieve answered null)."""
    return ChangeEnvelope(
        object=sfdc_object, record_id=record_id, op="delete", commit_ts=now_ms, source=source
    )


def _op_of(header: Mapping[str, Any]) -> Op:
    change_type = _need(header, "changeType", str, HEADER)
    op = _OPS.get(change_type)
    if op is None:
        raise EnvelopeError(f"unknown CDC changeType {change_type!r}")
    return op


def _record_ids(header: Mapping[str, Any], op: Op) -> list[str]:
    if op == "gap_overflow":
        return [""]
    ids = _need(header, "recordIds", list, HEADER)
    if not ids or not all(isinstance(item, str) and item for item in ids):
        raise EnvelopeError(f"{HEADER}.recordIds must be a non-empty list of ids for {op}")
    return list(dict.fromkeys(ids))


def _nulled(header: Mapping[str, Any], body: Mapping[str, Any]) -> tuple[str, ...]:
    """Fields set to null: ``nulledFields`` where sent (Pub/Sub style), nulls in the body."""
    names = list(_names(header, "nulledFields"))
    for key, value in body.items():
        if value is None:
            names.append(key)
        elif isinstance(value, dict):
            names.extend(f"{key}.{part}" for part, inner in value.items() if inner is None)
    return tuple(dict.fromkeys(names))


def _names(header: Mapping[str, Any], key: str) -> tuple[str, ...]:
    names = header.get(key)
    if names is None:
        return ()
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise EnvelopeError(f"{HEADER}.{key} must be a list of field names")
    return tuple(names)


def _need(container: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = container.get(key)
    if type(value) is not kind:
        found = "missing" if value is None else type(value).__name__
        raise EnvelopeError(f"CDC {where}.{key} must be {kind.__name__}, got {found}")
    return value


def _optional(container: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = container.get(key, default)
    if type(value) is not kind:
        raise EnvelopeError(f"CDC {HEADER}.{key} must be {kind.__name__}")
    return value
