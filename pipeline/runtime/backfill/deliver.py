"""Delivering a backfill's batches: the state a run and an object share, and the window
of deliveries in flight (settled in read order, checkpointed once delivered)."""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from pipeline.amplitude import AmplitudeClient
from pipeline.config.mapping import MappingConfig
from pipeline.errors import AmplitudeError, SfampError
from pipeline.runtime.backfill.ahead import ReadAhead
from pipeline.runtime.backfill.catch_up import CatchUp
from pipeline.runtime.backfill.checkpoint import CheckpointFile, RejectSink, rejected_entries
from pipeline.runtime.backfill.meaning import ReadMeaning
from pipeline.runtime.backfill.read import ReadOptions, ReadPosition, RecordBatch
from pipeline.runtime.backfill.report import (
    BackfillProgress,
    BackfillSummary,
    DuplicateGroups,
    ObjectSummary,
)
from pipeline.runtime.reconcile.recorder import SentRecorder
from pipeline.salesforce.bulk import BulkQuery
from pipeline.salesforce.client import SalesforceClient
from pipeline.transform.group_update import GroupUpdate
from pipeline.transform.schema import ObjectSchema

# Batches being sent at once: while the next one is transformed, five are on the wire,
# so a batch's round trip and the time Amplitude takes to answer it overlap the next
# ones' (with one, every batch waited at least a round trip after its transform). With
# batches of one request (DEFAULT_BATCH_ROWS) that is up to six requests: more than the
# Amplitude client's starting level (4), well below its ceiling (16), so the level, not
# this bound, decides once it has risen. At 50 ms of round trip, four in flight ended later.
MAX_IN_FLIGHT: Final = 6
log = structlog.get_logger(__name__)


@dataclass(slots=True)
class BackfillRun:
    """Everything one backfill shares across its objects."""

    config: MappingConfig
    sf: SalesforceClient
    bulk: BulkQuery
    amplitude: AmplitudeClient
    checkpoint: CheckpointFile | None  # None in a dry run: nothing is delivered
    resume_from: CheckpointFile | None
    sink: RejectSink
    progress: BackfillProgress | None
    options: ReadOptions
    where: str | None
    summary: BackfillSummary
    duplicates: DuplicateGroups = field(default_factory=DuplicateGroups)
    sent: SentRecorder | None = None  # records reconciled properties sent (sfamp.sent)


@dataclass(slots=True)
class ObjectRun:
    """One object being backfilled: what is read, from where, and its catch-up."""

    item: ObjectSummary
    schema: ObjectSchema
    config: MappingConfig  # the mappings of this object only
    fields: list[str]
    fingerprint: str
    start: ReadPosition | None
    catch_up: CatchUp | None  # None in a dry run, or without SystemModstamp
    meaning: ReadMeaning
    job_id: str | None = None
    saved_job: str | None = None  # the Bulk job the checkpoint names
    total: int | None = None  # the records counted beside the describe
    # The catch-up's first read, begun once the snapshot read its last record; the
    # object's run closes it however it ends.
    first_round: ReadAhead[list[dict[str, Any]]] | None = None
    # The snapshot's read, begun when the object was opened (``opening.py``), reading no
    # page before ``turn`` is set; closed however the object's run ends.
    reader: ReadAhead[RecordBatch] | None = None
    turn: asyncio.Event = field(default_factory=asyncio.Event)

    def save(self, run: BackfillRun, position: ReadPosition, *, complete: bool = False) -> None:
        if run.checkpoint is None:
            return
        catch_up = None if self.catch_up is None else self.catch_up.to_json()
        run.checkpoint.save(
            self.item.sfdc_object, self.fingerprint, position, catch_up=catch_up, complete=complete
        )
        self.saved_job = position.job_id or self.saved_job

    def found_job(self, job_id: str) -> None:
        self.job_id = job_id


@dataclass(frozen=True, slots=True)
class _Pending:
    task: asyncio.Task[int]
    position: ReadPosition
    rows: int
    keys: tuple[list[int], list[int]]


class InFlightBatches:
    """Deliveries of one object in flight, settled in read order.

    While batches are being sent the next is transformed; a batch's position
    is checkpointed only once it and every batch before it were delivered, and as
    soon as that is so: each push first settles the delivered batches at the front,
    and a stop settles them before it cancels the rest, so that a resume does not
    send them again.
    """

    def __init__(self, run: BackfillRun, obj: ObjectRun, *, progress: bool = True) -> None:
        self._run, self._obj, self._progress = run, obj, progress
        self._pending: collections.deque[_Pending] = collections.deque()

    async def push(
        self, batch: RecordBatch, updates: list[GroupUpdate], keys: tuple[list[int], list[int]]
    ) -> None:
        """Start delivering ``updates`` of ``batch``; ``keys`` are its reads' catch-up keys
        (:meth:`CatchUp.key_of`, :meth:`CatchUp.raw_key`), remembered once it was delivered."""
        task = asyncio.create_task(deliver(self._run, self._obj.item, updates))
        # The records are not kept: only where they end and how many they were.
        self._pending.append(_Pending(task, batch.position, len(batch.records), keys))
        self._settle_delivered()
        while len(self._pending) >= MAX_IN_FLIGHT:
            await self._settle_oldest()

    async def drain(self) -> None:
        while self._pending:
            await self._settle_oldest()

    async def settle_after(self, cause: SfampError) -> None:
        """After a failed read: what was already sent still counts, so settle and checkpoint
        it; a delivery that fails now is logged, ``cause`` stays the reason the run stops."""
        try:
            await self.drain()
        except SfampError as exc:
            log.error("backfill_settle_failed", reason=str(exc), stopped_by=str(cause))

    async def cancel(self) -> None:
        """Stop whatever is still in flight (after an error or a stop). The batches at the
        front that were delivered are checkpointed first; none after them is."""
        try:
            self._settle_delivered()
        except SfampError as exc:  # the run stops anyway: it says why, this is logged
            log.error("backfill_checkpoint_failed_at_stop", reason=str(exc))
        tasks = [pending.task for pending in self._pending]
        self._pending.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _settle_oldest(self) -> None:
        sent = await self._pending[0].task
        self._settled(self._pending.popleft(), sent)

    def _settle_delivered(self) -> None:
        """Settle the batches at the front whose delivery ended well, without waiting."""
        while self._pending and _delivered(self._pending[0].task):
            pending = self._pending.popleft()
            self._settled(pending, pending.task.result())

    def _settled(self, pending: _Pending, sent: int) -> None:
        obj, run = self._obj, self._run
        if obj.catch_up is not None:
            obj.catch_up.remember(*pending.keys)
        obj.save(run, pending.position)
        if self._progress and run.progress is not None:
            run.progress.advance(obj.item.sfdc_object, pending.rows, sent)


def _delivered(task: asyncio.Task[int]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


async def deliver(run: BackfillRun, item: ObjectSummary, updates: list[GroupUpdate]) -> int:
    """Send (or, in a dry run, plan) one batch's updates; rejects go to the sink."""
    if run.checkpoint is None:
        plan = run.amplitude.plan(updates)
        item.identifications += plan.identifications
        item.requests += len(plan.requests)
        item.bytes += plan.total_bytes
        return plan.identifications
    try:
        report = await run.amplitude.send(updates)
    except AmplitudeError as exc:
        if exc.attempts is not None:  # the summary counts what was tried
            item.requests += exc.attempts.requests
            item.bytes += exc.attempts.bytes_sent
            run.summary.retries += exc.attempts.retries
        raise
    if run.sent is not None:
        await run.sent.record(run.config, updates, report)
    item.identifications += report.delivered
    item.requests += report.requests
    item.bytes += report.bytes_sent
    item.rejected += len(report.rejected)
    run.summary.retries += report.retries
    await run.sink.write(rejected_entries(report, item.sfdc_object, int(time.time() * 1000)))
    return report.delivered
