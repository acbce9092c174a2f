"""Salesforce change events (CometD CDC messages) turned into change envelopes.

One CometD CDC message becomes one envelope per entry of ``recordIds`` (a merged
event applies the same body to every id). A ``GAP_OVERFLOW`` names no record and
becomes a single envelope with ``record_id == ""``. A wildcard id such as
``001*`` ("every record of the object") is kept as the record id; the transform
answers it with an object re-sync.

The header's ``entityName`` is Salesforce's wire name for the object; it stops here
and becomes the envelope's ``object``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from msgspec.structs import replace

from pipeline.errors import EnvelopeError
from pipeline.transform.envelope import ChangeEnvelope, Op

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
