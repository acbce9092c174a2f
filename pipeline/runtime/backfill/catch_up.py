"""Catch-up reads that end a snapshot, so that a value read earlier never lands last.

A snapshot (``sfamp backfill``, or the service's re-sync of an object) reads a
record at one moment and delivers it later. When the record changes in between,
its change event can reach Amplitude first and the snapshot's older value land
over it. So every snapshot ends with catch-up rounds: read again each record whose
``SystemModstamp`` is at or after the snapshot's start (minus :data:`MARGIN_SECONDS`),
deliver those whose read differs from the one delivered for it, and repeat until a
round finds nothing new. The value delivered last for a record was then read after
its last change.

"Differs" compares a digest of what the read means (the mapped values, or the
fields read, with the stamp), not the stamp alone: ``SystemModstamp`` has whole
seconds, so a second change within the second a record was read keeps its stamp.
Rounds read through ``queryAll`` with ``IsDeleted`` (when the object has it), so
a record deleted after its page was read gets its ``on_delete`` outcome rather
than keeping the live values delivered last.

Every time here is Salesforce's: the snapshot starts at the server's ``Date``, and a
later round looks back from the newest ``SystemModstamp`` the round before it saw.
The local clock is never used, so a skewed host cannot shrink the window.
"""

from __future__ import annotations

import base64
import hashlib
from array import array
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import orjson
import structlog

from pipeline.config.mapping import MappingConfig
from pipeline.errors import EnvelopeError
from pipeline.transform.apply import PropertyChanges, changes_for_config
from pipeline.transform.reads import envelope_from_record
from pipeline.transform.schema import ObjectSchema

MODSTAMP: Final = "SystemModstamp"
DELETED: Final = "IsDeleted"
# Stamps are taken when a write happens but become visible at commit, so a long
# transaction (a Bulk API ingest batch, heavy Apex) lands "in the past". ETL tools
# look back several minutes for the same reason.
MARGIN_SECONDS: Final = 300
MAX_ROUNDS: Final = 5
# What was delivered is remembered as one 64-bit number per read of a record a round can
# find again (record id and digest hashed together, about 60 bytes each in a set): none
# is forgotten, so a round re-sends only what really changed and a quiet object always
# ends the rounds, even after a bulk load put every record inside the window.
# A stamp compared to the millisecond, without its zone (REST +0000, Bulk Z: both UTC).
_STAMP_CHARS: Final = 23

log = structlog.get_logger(__name__)

# What a read of one record means, as a short digest: equal digests, nothing to send again.
Digest = Callable[[Mapping[str, Any]], str]
_NOT_DATA: Final = frozenset(("attributes", DELETED, MODSTAMP))


class SnapshotReads(Protocol):
    """What catch-up needs from Salesforce (``SalesforceRest`` has it)."""

    async def server_time(self) -> datetime | None: ...

    def query(self, soql: str, *, all_rows: bool = False) -> AsyncIterator[dict[str, Any]]: ...


async def snapshot_start(rest: SnapshotReads, sfdc_object: str) -> datetime | None:
    """When a snapshot of ``sfdc_object`` starts, on Salesforce's clock; take it before reading.

    The server's ``Date``; without one, the newest ``SystemModstamp`` (no later than
    the server's time). ``None`` for an empty object: catch-up then reads every record.
    """
    moment = await rest.server_time()
    if moment is not None:
        return moment
    soql = f"SELECT {MODSTAMP} FROM {sfdc_object} ORDER BY {MODSTAMP} DESC LIMIT 1"  # noqa: S608
    async for record in rest.query(soql):
        return parse_stamp(record.get(MODSTAMP))
    return None


async def begin_catch_up(
    rest: SnapshotReads,
    sfdc_object: str,
    fields: Sequence[str],
    *,
    where: str | None = None,
    meaning: tuple[MappingConfig, ObjectSchema] | None = None,
) -> CatchUp | None:
    """The catch-up of a snapshot that starts now: call it before the first read.

    ``meaning`` (the mapping and the object's describe) makes rounds compare mapped
    values and read deleted records too. ``None`` (and a warning) when ``fields``
    lack ``SystemModstamp``, i.e. the object has none to order by.
    """
    if MODSTAMP not in fields:
        log.warning("snapshot_catch_up_unavailable", object=sfdc_object, missing=MODSTAMP)
        return None
    start = await snapshot_start(rest, sfdc_object)
    return catch_up_for(rest, sfdc_object, fields, start, where=where, meaning=meaning)


def catch_up_for(
    rest: SnapshotReads,
    sfdc_object: str,
    fields: Sequence[str],
    since: datetime | None,
    *,
    where: str | None = None,
    meaning: tuple[MappingConfig, ObjectSchema] | None = None,
    seen: object = None,
) -> CatchUp:
    """A catch-up from ``since``: a new one, or one resumed with what a checkpoint's
    ``seen`` says was delivered (as :meth:`CatchUp.to_json` wrote it)."""
    remembered = load_seen(seen)
    if meaning is None:
        catch_up = CatchUp(rest, sfdc_object, fields, since, where, remembered)
    else:
        config, schema = meaning
        catch_up = CatchUp(
            rest, sfdc_object, fields, since, where, remembered,
            digest=mapped_digest(sfdc_object, config, schema),
            with_deleted=schema.field(DELETED) is not None,
        )  # fmt: skip
    if remembered:  # the next checkpoint keeps what this one resumed from
        catch_up._packed.extend(seen)  # type: ignore[arg-type]  # load_seen checked it
    return catch_up


def record_digest(record: Mapping[str, Any], fields: Sequence[str]) -> str:
    """The ``fields`` a read holds, with its stamp and whether it is deleted."""
    data = [record.get(name) for name in fields if name not in _NOT_DATA]
    return _digest([_stamp_of(record), _is_deleted(record), data])


def mapped_digest(sfdc_object: str, config: MappingConfig, schema: ObjectSchema) -> Digest:
    """What a read means for Amplitude (per mapping: group and values, or the outcome),
    with its stamp: the same record read through Bulk CSV or REST gives the same digest."""

    def digest(record: Mapping[str, Any]) -> str:
        try:
            envelope = envelope_from_record(sfdc_object, record, source="rest", now_ms=0)
        except EnvelopeError:
            return record_digest(record, sorted(record))
        meaning: list[Any] = [_stamp_of(record)]
        for mapping, outcome in changes_for_config(envelope, config, schema):
            if isinstance(outcome, PropertyChanges):
                unset = sorted(outcome.unset)
                meaning.append([outcome.group_type, outcome.group_value, dict(outcome.set), unset])
            else:
                meaning.append([mapping.group_type, type(outcome).__name__])
        return _digest(meaning)

    return digest


def _stamp_of(record: Mapping[str, Any]) -> str:
    return str(record.get(MODSTAMP))[:_STAMP_CHARS]


def _is_deleted(record: Mapping[str, Any]) -> bool:
    return record.get(DELETED) in (True, "true")


def _digest(meaning: object) -> str:
    data = orjson.dumps(meaning, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def parse_stamp(stamp: object) -> datetime | None:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp)
    except ValueError:
        return None


def soql_since(moment: datetime, margin_seconds: float = MARGIN_SECONDS) -> str:
    """The SOQL datetime literal ``margin_seconds`` before ``moment``, in whole seconds."""
    return (moment - timedelta(seconds=margin_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def newest(moment: datetime | None, records: Iterable[Mapping[str, Any]]) -> datetime | None:
    """The later of ``moment`` and the newest ``SystemModstamp`` among ``records``."""
    for record in records:
        stamp = parse_stamp(record.get(MODSTAMP))
        if stamp is not None and (moment is None or stamp > moment):
            moment = stamp
    return moment


@dataclass(slots=True)
class CatchUp:
    """The catch-up of one snapshot: what was delivered since its start, and the rounds.

    Call :meth:`track` with every record once it was delivered (snapshot batches
    and catch-up rounds alike), and deliver each round of :meth:`rounds` before
    asking for the next. A round's rows include deleted records (``IsDeleted``
    true) when ``with_deleted``: deliver them as deletes.
    """

    rest: SnapshotReads
    sfdc_object: str
    fields: Sequence[str]
    since: datetime | None
    where: str | None = None
    seen: set[int] = field(default_factory=set)
    # Keys tracked since the last checkpoint, and the packed chunks written before: a
    # checkpoint after every batch encodes only what is new.
    _fresh: list[int] = field(default_factory=list)
    _packed: list[str] = field(default_factory=list)
    rounds_done: int = 0
    quiescent: bool = False
    digest: Digest | None = None  # None: the fields read (see :func:`record_digest`)
    with_deleted: bool = False

    def track(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Remember the reads of delivered records that a catch-up round could find again."""
        floor = None if self.since is None else soql_since(self.since)[:19]
        seen = self.seen
        for record in records:
            stamp = record.get(MODSTAMP)
            if not isinstance(stamp, str) or (floor is not None and stamp[:19] < floor):
                continue
            key = self.read_key(record)
            if key not in seen:
                seen.add(key)
                self._fresh.append(key)

    def changed(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The records whose read differs from every one delivered for them."""
        seen, key = self.seen, self.read_key
        return [dict(r) for r in records if key(r) not in seen]

    def read_key(self, record: Mapping[str, Any]) -> int:
        """The record id and what its read means, as one 64-bit number."""
        text = f"{record.get('Id')}\0{self.digest_of(record)}".encode()
        return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")

    def digest_of(self, record: Mapping[str, Any]) -> str:
        """What ``record`` means, as compared between reads."""
        if self.digest is not None:
            return self.digest(record)
        return record_digest(record, self.fields)

    async def rounds(self) -> AsyncIterator[list[dict[str, Any]]]:
        """Rounds of changed records, until one finds nothing new (at most :data:`MAX_ROUNDS`)."""
        start = self.since
        for _ in range(MAX_ROUNDS):
            query = self.rest.query(self.soql(start), all_rows=self.with_deleted)
            found = [record async for record in query]
            self.rounds_done += 1
            fresh = self.changed(found)
            log.info(
                "snapshot_catch_up_round",
                object=self.sfdc_object,
                round=self.rounds_done,
                read=len(found),
                changed=len(fresh),
            )
            if not fresh:
                self.quiescent = True
                return
            yield fresh
            # A change after this round's read gets a later stamp than any it saw.
            start = newest(start, found)
        log.error(
            "snapshot_catch_up_not_quiescent",
            object=self.sfdc_object,
            rounds=self.rounds_done,
            action="records kept changing while they were re-read; the stream carries "
            "their later changes, but run the snapshot again once the object is quiet "
            "to be sure no older value landed last",
        )

    def soql(self, start: datetime | None) -> str:
        deleted = [DELETED] if self.with_deleted else []
        select = ", ".join(dict.fromkeys(["Id", *self.fields, MODSTAMP, *deleted]))
        conditions = [f"({self.where})"] if self.where else []
        if start is not None:
            conditions.append(f"{MODSTAMP} >= {soql_since(start)}")
        # Names come from the validated mapping and the describe; ``where`` is the
        # user's own condition, as in the snapshot.
        soql = f"SELECT {select} FROM {self.sfdc_object}"  # noqa: S608
        return soql + (f" WHERE {' AND '.join(conditions)}" if conditions else "")

    def to_json(self) -> dict[str, Any]:
        """What a checkpoint keeps, so that a resumed run catches up from the first start."""
        if self._fresh:
            self._packed.append(base64.b64encode(array("Q", self._fresh).tobytes()).decode())
            self._fresh.clear()
        return {
            "since": None if self.since is None else self.since.isoformat(),
            "seen": list(self._packed),
        }


def load_seen(saved: object) -> set[int]:
    """What a checkpoint's ``seen`` holds (chunks of packed 64-bit numbers, base64).

    Anything else (an older checkpoint's layout) is forgotten: its records are only
    sent once more, which ``$set`` makes harmless.
    """
    if not isinstance(saved, list) or not all(isinstance(chunk, str) for chunk in saved):
        return set()
    keys = array("Q")
    try:
        for chunk in saved:
            keys.frombytes(base64.b64decode(chunk, validate=True))
    except ValueError:
        return set()
    return set(keys)
