"""A flush's requests to Amplitude while the consumer group may move partitions.

Each partition's changes coalesce apart (:class:`~pipeline.transform.coalesce.DrainedBySource`),
so when the group takes a partition that fed any of the flush's groups, the requests
stop and what the partitions still held carry is sent again: the new owner sends the
others' values, and a retry of ours could land after its newer ones. Once the group
took every partition read, the flush stops (its caller sees ``revoked``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

from pipeline.amplitude import AmplitudeClient, DeliveryReport
from pipeline.kafka.consumer import Partition
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.records import DlqEntry
from pipeline.runtime.deliver.window import Flushing, partition_names
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.tasks import finish
from pipeline.transform.coalesce import DrainedBySource
from pipeline.transform.group_update import GroupUpdate

log = structlog.get_logger(__name__)

_T = TypeVar("_T")


async def send_kept(
    amplitude: AmplitudeClient, flushing: Flushing, drained: DrainedBySource[Partition]
) -> tuple[list[GroupUpdate], DeliveryReport] | None:
    """Send the groups of the partitions still held; start again without a partition the
    group takes meanwhile if it fed any group. None once the group took every one."""
    while not flushing.revoked.is_set():
        flushing.lost_more.clear()
        lost = set(flushing.lost)
        updates = drained.updates(leaving_out=lost)
        if not updates:
            return updates, DeliveryReport()
        sending = asyncio.ensure_future(amplitude.send(updates))
        try:
            report = await _unless_groups_lost(sending, flushing, drained, lost)
        finally:
            await finish(sending)
        if report is not None:
            return updates, report
        log.info(
            "flush_restarted",
            revoked=partition_names(flushing.lost - lost),
            groups=len(updates),
        )
    return None


async def unless(event: asyncio.Event, work: Coroutine[Any, Any, _T]) -> _T | None:
    """The work's result, or None once ``event`` is set first (the work is cancelled)."""
    task = asyncio.ensure_future(work)
    try:
        return task.result() if await _done_or(task, event) else None
    finally:
        await finish(task)


async def _unless_groups_lost(
    sending: asyncio.Future[DeliveryReport],
    flushing: Flushing,
    drained: DrainedBySource[Partition],
    lost: set[Partition],
) -> DeliveryReport | None:
    """The send's report, or None once the group takes a partition that fed one of its
    groups (a partition that fed none changes nothing)."""
    while not await _done_or(sending, flushing.lost_more):
        flushing.lost_more.clear()
        if drained.holds(flushing.lost - lost):
            return None
        lost = set(flushing.lost)
    return sending.result()


async def _done_or(task: asyncio.Future[Any], event: asyncio.Event) -> bool:
    """Wait until ``task`` is done or ``event`` is set; whether the task is done."""
    if not event.is_set():
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
    return task.done()


async def write_dead_letters(
    producer: ChangeProducer, topic: str, metrics: Metrics, entries: list[DlqEntry]
) -> None:
    """Write ``entries`` to the DLQ topic (acknowledged before the flush commits), each
    counted and logged with its reason."""
    if not entries:
        return
    await producer.send_all([(topic, *entry.encode()) for entry in entries])
    for entry in entries:
        metrics.dlq_messages.labels(entry.reason).inc()
        log.warning(
            "dlq_written", reason=entry.reason, key=entry.key, id=entry.id, detail=entry.detail
        )
