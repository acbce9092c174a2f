"""Catch-up reads that end a snapshot, so that a value read earlier never lands last.

A snapshot (``sfamp backfill``, or the service's re-sync of an object) reads a
record at one moment and delivers it later. When the record changes in between,
its change event can reach Amplitude first and the snapshot's older value land
over it. So every snapshot ends with catch-up rounds: read again each record whose
``SystemModstamp`` is at or after the snapshot's start (minus
:data:`~pipeline.runtime.backfill.stamps.MARGIN_SECONDS`),
deliver those whose read differs from the one delivered for it, and repeat until a
round finds nothing new. The value delivered last for a record was then read after
its last change.

"Differs" compares a digest of what the read means (the mapped values, or the
fields read, with the stamp; see :mod:`~pipeline.runtime.backfill.meaning`), not
the stamp alone: ``SystemModstamp`` has whole seconds, so a second change within
the second a record was read keeps its stamp. Rounds read through ``queryAll``
with ``IsDeleted`` (when the object has it), so a record deleted after its page
was read gets its ``on_delete`` outcome rather than keeping the live values
delivered last. A round expected to be large (a window a bulk load filled) reads
through a Bulk API 2.0 job when the caller allows it, and every round is compared
page by page, keeping only what changed.

Every time here is Salesforce's: the snapshot starts at the server's ``Date``, and a
later round looks back from the newest ``SystemModstamp`` the round before it saw.
The local clock is never used, so a skewed host cannot shrink the window.
"""

from __future__ import annotations

import contextlib
from array import array
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

import structlog

from pipeline.config.mapping import MappingConfig
from pipeline.runtime.backfill.ahead import ReadAhead, prefetched
from pipeline.runtime.backfill.keys import (
    UNDELIVERED,
    ReadKeys,
    load_seen,
    pack_keys,
    pack_latest,
)
from pipeline.runtime.backfill.meaning import (
    DELETED,
    MODSTAMP,
    Outcomes,
    ReadMeaning,
    fields_digest,
    raw_key,
    read_key,
)
from pipeline.runtime.backfill.stamps import all_before, newest, parse_stamp, soql_since
from pipeline.salesforce.bulk_csv import column_of
from pipeline.transform.schema import ObjectSchema

MAX_ROUNDS: Final = 5
# What was delivered is remembered as one 64-bit number per read of a record a round can
# find again (record id and digest hashed together, 8 bytes each: keys.py): none is
# forgotten, so a round re-sends only what really changed and a quiet object always
# ends the rounds, even after a bulk load put every record inside the window.
# A round expected to read this many records or more reads through Bulk API 2.0 (when
# the caller gives it a way to): a few CSV pages instead of a REST call per 2,000 rows.
BULK_MIN_ROWS: Final = 10_000
_SECOND_CHARS: Final = 19  # a stamp to the second, as the SOQL literal has it
REST_PAGE_ROWS: Final = 2_000  # records compared at a time in a round read through REST

log = structlog.get_logger(__name__)


class SnapshotReads(Protocol):
    """What catch-up needs from Salesforce (``SalesforceRest`` has it)."""

    async def server_time(self) -> datetime | None: ...

    def query(self, soql: str, *, all_rows: bool = False) -> AsyncIterator[dict[str, Any]]: ...


class WindowPages(Protocol):
    """A SOQL query's records in pages through Bulk API 2.0 (``BulkWindowReads`` in ``read.py``)."""

    def pages(self, soql: str, *, all_rows: bool) -> AsyncGenerator[list[dict[str, Any]]]: ...


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
    bulk: WindowPages | None = None,
    recycle_bin: bool = False,
    server_time: datetime | None = None,
) -> CatchUp | None:
    """The catch-up of a snapshot that starts now: call it before the first read.

    ``meaning`` (the mapping and the object's describe) makes rounds compare mapped
    values and read deleted records too; ``bulk`` lets a large round read through
    Bulk API 2.0; ``recycle_bin`` reads the records deleted before the window too
    when a mapping of the object acts on deletes (:attr:`CatchUp.recycle_bin`);
    ``server_time`` is Salesforce's clock when the caller took it already (before
    the first read too). ``None`` (and a warning) when ``fields`` lack
    ``SystemModstamp``, i.e. the object has none to order by.
    """
    if MODSTAMP not in fields:
        log.warning("snapshot_catch_up_unavailable", object=sfdc_object, missing=MODSTAMP)
        return None
    start = server_time if server_time is not None else await snapshot_start(rest, sfdc_object)
    return catch_up_for(
        rest, sfdc_object, fields, start, where=where, meaning=meaning, bulk=bulk,
        recycle_bin=recycle_bin,
    )  # fmt: skip


def catch_up_for(
    rest: SnapshotReads,
    sfdc_object: str,
    fields: Sequence[str],
    since: datetime | None,
    *,
    where: str | None = None,
    meaning: tuple[MappingConfig, ObjectSchema] | None = None,
    seen: object = None,
    bulk: WindowPages | None = None,
    recycle_bin: bool = False,
) -> CatchUp:
    """A catch-up from ``since``: a new one, or one resumed with what a checkpoint's
    ``seen`` says was delivered (as :meth:`CatchUp.to_json` wrote it)."""
    remembered, latest = load_seen(seen)
    catch_up = CatchUp(
        rest, sfdc_object, fields, since, where, ReadKeys(remembered), latest=latest, bulk=bulk
    )
    if meaning is not None:
        config, schema = meaning
        catch_up.meaning = ReadMeaning(sfdc_object, config, schema)
        catch_up.with_deleted = schema.field(DELETED) is not None
        acts = any(m.on_delete != "ignore" for m in config.for_object(sfdc_object))
        catch_up.recycle_bin = recycle_bin and catch_up.with_deleted and acts
    if remembered or latest:  # the next checkpoint keeps what this one resumed from
        catch_up._packed.extend(seen)  # type: ignore[arg-type]  # load_seen checked it
    return catch_up


def record_digest(record: Mapping[str, Any], fields: Sequence[str]) -> bytes:
    """The ``fields`` a read holds, with its stamp and whether it is deleted."""
    return fields_digest(record, tuple(fields))


@dataclass(slots=True)
class CatchUp:
    """The catch-up of one snapshot: what was delivered since its start, and the rounds.

    Call :meth:`track` with every record once it was delivered (snapshot batches
    and catch-up rounds alike), or :meth:`remember` with the keys :meth:`key_of`
    gave for them, and deliver each round of :meth:`rounds` before asking for the
    next. A round's rows include deleted records (``IsDeleted`` true) when
    ``with_deleted``: deliver them as deletes.
    """

    rest: SnapshotReads
    sfdc_object: str
    fields: Sequence[str]
    since: datetime | None
    where: str | None = None
    keys: ReadKeys = field(default_factory=ReadKeys)  # what was delivered, as read keys
    # The same reads as read (:func:`raw_key`): a round skips the transform of a read
    # found here. Not checkpointed: after a resume, earlier reads are compared by meaning.
    raw_keys: ReadKeys = field(default_factory=ReadKeys)
    # For each record a round sent again, the read key it delivered last. Such a record
    # has several reads remembered, and a later round compares its read with the last
    # one only: A, then B, then A again within one second must land A over B.
    latest: dict[str, int] = field(default_factory=dict)
    # Reads a round found changed (read key: record id), until delivered.
    _sending: dict[int, str] = field(default_factory=dict)
    # Keys tracked since the last checkpoint, and the packed chunks written before: a
    # checkpoint after every batch encodes only what is new. The (record id, key) pairs
    # hold UNDELIVERED for a read a round is sending: a resumed run sends it once more,
    # as it cannot know whether it landed.
    _fresh: array[int] = field(default_factory=lambda: array("Q"))
    _fresh_latest: list[tuple[str, int]] = field(default_factory=list)
    _packed: list[str] = field(default_factory=list)
    rounds_done: int = 0
    quiescent: bool = False
    # What a read means (mapped values); None: the fields read (see :func:`record_digest`).
    meaning: ReadMeaning | None = None
    with_deleted: bool = False
    # Read the records deleted before the window (:meth:`deleted_before`): an outage
    # longer than the event retention (or a snapshot after one) must apply the deletes
    # it missed, and the recycle bin holds them for 15 days.
    recycle_bin: bool = False
    # The records it sent inside the window: a snapshot that reads one live (a delete
    # stamped before the start, committed after the read) has a round send it again.
    _binned: set[str] = field(default_factory=set)
    bulk: WindowPages | None = None  # large rounds read through Bulk API 2.0 when set
    bulk_min_rows: int = BULK_MIN_ROWS

    @property
    def floor(self) -> str | None:
        """The window's first second as text: reads stamped earlier are never found again."""
        return None if self.since is None else soql_since(self.since)[:_SECOND_CHARS]

    def in_window_at(self, records: Sequence[Mapping[str, Any]]) -> list[int]:
        """The indexes of ``records`` stamped inside the window, read from their
        ``SystemModstamp`` column alone (a block's own, if they are one): read again by a
        round. A stamp sorts before the window's first second exactly when its first 19
        characters do, so it is compared whole."""
        floor, stamps = self.floor, column_of(records, MODSTAMP)
        if floor is None:
            return [index for index, stamp in enumerate(stamps) if isinstance(stamp, str)]
        if all_before(stamps, floor):
            return []  # (an aged backfill's batches)
        return [i for i, stamp in enumerate(stamps) if isinstance(stamp, str) and stamp >= floor]

    def track(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Remember the reads of delivered records that a catch-up round could find again."""
        found = [records[index] for index in self.in_window_at(records)]
        self.remember([self.read_key(r) for r in found], [self.raw_key(r) for r in found])

    @property
    def seen(self) -> set[int]:
        """Every read key remembered (a copy, for inspection)."""
        return set(self.keys)

    def remember(self, keys: Iterable[int], raw: Iterable[int] = ()) -> None:
        """Remember delivered reads (in the window) by :meth:`key_of` and :meth:`raw_key`;
        a read a round found changed becomes the latest of its record."""
        added = array("Q", keys)
        self.keys.add(added)
        self.raw_keys.add(raw)
        if not self._sending:
            self._fresh.extend(added)
            return
        for key in added:
            record_id = self._sending.pop(key, None)
            if record_id is None:
                self._fresh.append(key)
            else:
                self.latest[record_id] = key
                self._fresh_latest.append((record_id, key))

    def changed(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The records whose read differs from the one delivered for them last."""
        latest, raw_seen, seen = self.latest, self.raw_keys, self.keys
        fresh = []
        for record in records:
            record_id = record.get("Id")
            last = latest.get(record_id) if latest and isinstance(record_id, str) else None
            if last is None and self.raw_key(record) in raw_seen:
                continue  # read exactly as before: it means the same
            key = self.read_key(record)
            if key == last or (last is None and key in seen):
                continue
            fresh.append(dict(record))
            if isinstance(record_id, str):
                self._sending[key] = record_id
                self._fresh_latest.append((record_id, UNDELIVERED))
        return fresh

    def raw_key(self, record: Mapping[str, Any]) -> int:
        return raw_key(record, self.fields)

    def read_key(self, record: Mapping[str, Any]) -> int:
        """The record id and what its read means, as one 64-bit number."""
        return read_key(record.get("Id"), self.digest_of(record))

    def key_of(self, record: Mapping[str, Any], outcomes: Outcomes) -> int:
        """:meth:`read_key` of a read already transformed into ``outcomes``."""
        if self.meaning is None:
            return self.read_key(record)
        return read_key(record.get("Id"), self.meaning.digest(record, outcomes))

    def digest_of(self, record: Mapping[str, Any]) -> bytes:
        """What ``record`` means, as compared between reads."""
        if self.meaning is not None:
            return self.meaning.digest_of(record)
        return record_digest(record, self.fields)

    def read_ahead(self) -> ReadAhead[list[dict[str, Any]]]:
        """The first round's read, begun now: call it once the snapshot has read every
        record, while its last batches may still be on their way to Amplitude.

        Pass it to :meth:`rounds`, which compares its pages once they were delivered
        (and remembered); the caller closes it. Its reads are later than the snapshot's,
        so they still land after them. Bulk or REST is chosen by what was remembered so
        far, a few batches short of all.
        """
        return ReadAhead(self._pages(self.soql(self.since), len(self.keys)))

    async def rounds(
        self, first: ReadAhead[list[dict[str, Any]]] | None = None
    ) -> AsyncGenerator[list[dict[str, Any]]]:
        """Rounds of changed records, until one finds nothing new (at most :data:`MAX_ROUNDS`).

        A round is read page by page (the next page read while this one is compared)
        and keeps only what changed, so memory holds a page and the changes. ``first``
        is the first round's read, begun early (:meth:`read_ahead`).
        """
        start, expected = self.since, len(self.keys)
        for _ in range(MAX_ROUNDS):
            found, fresh, latest = 0, [], start
            pages = (
                first if first is not None else prefetched(self._pages(self.soql(start), expected))
            )
            first = None
            async with contextlib.aclosing(pages):  # its reader stops however the round ends
                async for page in pages:
                    found += len(page)
                    fresh += self.changed(page)
                    # A change after this round's read gets a later stamp than any it saw.
                    latest = newest(latest, page)
            self.rounds_done += 1
            log.info(
                "snapshot_catch_up_round",
                object=self.sfdc_object,
                round=self.rounds_done,
                read=found,
                changed=len(fresh),
            )
            if not fresh:
                self.quiescent = True
                return
            yield fresh
            start, expected = latest, found
        log.error(
            "snapshot_catch_up_not_quiescent",
            object=self.sfdc_object,
            rounds=self.rounds_done,
            action="records kept changing while they were re-read; the stream carries "
            "their later changes, but run the snapshot again once the object is quiet "
            "to be sure no older value landed last",
        )

    async def deleted_before(self) -> AsyncGenerator[list[dict[str, Any]]]:
        """With :attr:`recycle_bin`, the records deleted before the snapshot started, a page
        at a time: read before the snapshot and delivered ahead of it, so that a live record
        read later (one sharing a deleted one's group value) lands after them."""
        if not self.recycle_bin or self.since is None:  # from no start, rounds read them
            return
        deleted = 0
        # Said before it begins: its deletes go out first, and Amplitude may hold them.
        log.info("snapshot_recycle_bin_reading", object=self.sfdc_object)
        soql = self.soql(self.since, deleted_before=True)
        async with contextlib.aclosing(prefetched(self._pages(soql, 0))) as pages:
            async for page in pages:
                deleted += len(page)
                binned = column_of(page, "Id")
                self._binned.update(binned[i] for i in self.in_window_at(page))
                yield [dict(record) for record in page]
        log.info("snapshot_recycle_bin_read", object=self.sfdc_object, deleted=deleted)

    def read_again_if_binned(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Call with a snapshot's live reads: one of a record :meth:`deleted_before` sent
        inside the window (a long transaction's delete, committed after this read) makes
        the next round send that record again, as it reads then."""
        if not self._binned:
            return
        for record_id in column_of(records, "Id"):
            if record_id in self._binned:
                self.latest[record_id] = UNDELIVERED
                self._fresh_latest.append((record_id, UNDELIVERED))

    async def _pages(self, soql: str, expected: int) -> AsyncGenerator[list[dict[str, Any]]]:
        """The round's records in pages: Bulk CSV pages when it is expected to be large."""
        if self.bulk is not None and expected >= self.bulk_min_rows:
            # Closed with this one: its job's delete must not wait for the collector.
            pages = self.bulk.pages(soql, all_rows=self.with_deleted)
            async with contextlib.aclosing(pages):
                async for page in pages:
                    yield page
            return
        rows: list[dict[str, Any]] = []
        async for record in self.rest.query(soql, all_rows=self.with_deleted):
            rows.append(record)
            if len(rows) >= REST_PAGE_ROWS:
                yield rows
                rows = []
        if rows:
            yield rows

    def soql(self, start: datetime | None, *, deleted_before: bool = False) -> str:
        """The round from ``start``; ``deleted_before``: the records deleted before it."""
        deleted = [DELETED] if self.with_deleted else []
        select = ", ".join(dict.fromkeys(["Id", *self.fields, MODSTAMP, *deleted]))
        conditions = [f"({self.where})"] if self.where else []
        if deleted_before and start is not None:
            # Every delete before the snapshot's start, the window's first minutes too: a
            # round would send those after the live reads, over a live record that shares
            # the group (their reads are remembered as sent, so no round sends them again).
            conditions += [f"{DELETED} = true", f"{MODSTAMP} < {soql_since(start, 0)}"]
        elif start is not None:
            conditions.append(f"{MODSTAMP} >= {soql_since(start)}")
        # Names come from the validated mapping and the describe; ``where`` is the
        # user's own condition, as in the snapshot.
        soql = f"SELECT {select} FROM {self.sfdc_object}"  # noqa: S608
        return soql + (f" WHERE {' AND '.join(conditions)}" if conditions else "")

    def to_json(self) -> dict[str, Any]:
        """What a checkpoint keeps, so that a resumed run catches up from the first start."""
        if self._fresh:
            self._packed.append(pack_keys(self._fresh))
            self._fresh = array("Q")
        if self._fresh_latest:
            self._packed.append(pack_latest(self._fresh_latest))
            self._fresh_latest = []
        return {
            "since": None if self.since is None else self.since.isoformat(),
            "seen": list(self._packed),
        }
