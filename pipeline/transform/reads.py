"""Records read through REST or Bulk (gap re-reads, backfill, re-sync) turned into change
envelopes.

A read becomes a *full* envelope: every field that was read is present, null or not;
a field that is absent was not read, and the transform leaves its property alone.
(Change events from CometD become envelopes in :mod:`pipeline.salesforce.change_events`.)

A read is ordered by :func:`read_order`: the later of its ``SystemModstamp`` and a
floor known to precede the read (the ``commitTimestamp`` of the gap event that asked
for it), both on Salesforce's clock. ``SystemModstamp`` has whole seconds, so that
alone can sort a read before a change event it reflects; the deliver pump therefore
also places every read after the changes of its record that came before it in the
partition (:class:`~pipeline.transform.coalesce.ReadOrders`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from pipeline.errors import EnvelopeError
from pipeline.transform.envelope import ChangeEnvelope, Source

# REST returns these beside the fields; they are never record data.
_NOT_FIELDS: Final = frozenset(("attributes",))
MODSTAMP: Final = "SystemModstamp"


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


def stamped_envelope(
    sfdc_object: str, record: Mapping[str, Any], *, source: Source, now_ms: int
) -> ChangeEnvelope:
    """:func:`envelope_from_record` ordered at the record's ``SystemModstamp`` (``now_ms``
    for a read without one): a snapshot's or catch-up's row, which deliver places after
    the changes of its record held before it."""
    stamp = modified_ms(record)
    at = now_ms if stamp is None else stamp
    return envelope_from_record(sfdc_object, record, source=source, now_ms=at)


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
