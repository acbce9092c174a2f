"""The service's reconcile: run on the mapping's schedule, one at a time, resumed after a kill.

It runs where ingest runs (one instance per org), in the service's task group. At
start it reads the checkpoint: a run left unfinished resumes at once, otherwise the
next slot follows the last finished run (:mod:`~pipeline.runtime.reconcile.schedule`).
A new mapping revision reschedules it (a running reconcile finishes with the mapping
it started with). A failed run (Salesforce or Kafka unavailable, limits, a
``sfamp reconcile`` holding the checkpoint) is logged and retried with a growing
pause; the service goes on. Stopping the service cancels a run between two
checkpoints: the next start resumes it (a run stopped before its first checkpoint
has nothing to resume: the next start follows the last finished run's schedule).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from pipeline.config.settings import Settings
from pipeline.kafka.producer import ChangeProducer
from pipeline.runtime.mapping_source import MappingHolder
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.reconcile.checkpoint import checkpoint_status
from pipeline.runtime.reconcile.report import ObjectReconcile, ReconcileSummary
from pipeline.runtime.reconcile.run import default_checkpoint, run_reconcile
from pipeline.runtime.reconcile.schedule import describe, next_run
from pipeline.runtime.retry import Backoff
from pipeline.runtime.state import ServiceState
from pipeline.salesforce.client import SalesforceClient

Clock = Callable[[], datetime]
log = structlog.get_logger(__name__)


class ReconcileScheduler:
    """Waits for the next reconcile, runs it, records what it did in /status and metrics."""

    def __init__(
        self,
        settings: Settings,
        holder: MappingHolder,
        salesforce: SalesforceClient,
        producer: ChangeProducer,
        state: ServiceState,
        metrics: Metrics,
        *,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.state = state
        self.metrics = metrics
        self._salesforce = salesforce
        self._producer = producer
        self._clock = clock
        self._retry = Backoff(first=60.0, ceiling=3600.0)
        self._retry_at: datetime | None = None
        self.last_finished: datetime | None = None
        self._checkpoint_stamp: int | None = -1  # the checkpoint file's mtime when last read
        self.interrupted = False
        self.runs = 0

    async def run(self) -> None:
        self._read_checkpoint()
        while True:
            due = self._next_due()  # None: off, until a new mapping sets a schedule
            if not await self._wait_for(due):
                continue  # the mapping changed: compute the next run again
            await self.run_once()

    def _next_due(self) -> datetime | None:
        schedule = self.holder.current.reconcile
        due = next_run(
            schedule,
            now=self._clock(),
            last_finished=self.last_finished,
            interrupted=self.interrupted,
        )
        if due is not None and self._retry_at is not None:
            due = max(due, self._retry_at)
        self.state.reconcile["schedule"] = describe(schedule)
        self.state.reconcile["next_at"] = None if due is None else due.isoformat()
        return due

    async def _wait_for(self, due: datetime | None) -> bool:
        """True once ``due`` has come; False when a new mapping arrived first.

        Polls the clock (at most a second apart), so a test's clock can move it.
        """
        generation = self.holder.generation
        while due is None or self._clock() < due:
            if self.holder.generation != generation:
                log.info("reconcile_rescheduled", revision=self.holder.version.source)
                return False
            if self._read_checkpoint():
                return False  # a run of its own (`sfamp reconcile`) finished meanwhile
            remaining = 1.0 if due is None else (due - self._clock()).total_seconds()
            await asyncio.sleep(min(1.0, max(0.01, remaining)))
        return True

    def _read_checkpoint(self) -> bool:
        """Take the last finished run from the checkpoint when it changed since last read
        (at start, and after an `sfamp reconcile` beside the service, which writes the same
        file); True when that run is newer than the one known."""
        stamp = self._checkpoint_written()
        if stamp == self._checkpoint_stamp:
            return False
        self._checkpoint_stamp = stamp
        finished, interrupted = checkpoint_status(default_checkpoint(self.settings))
        if finished is None or (self.last_finished is not None and finished <= self.last_finished):
            self.interrupted = self.interrupted if self.last_finished else interrupted
            return False
        self.last_finished, self.interrupted = finished, False
        # A run the service did not watch: its checkpoint keeps when it finished, not its counts.
        self.state.reconcile["last"] = {"finished_at": finished.isoformat(), "ok": True}
        # From the start, so that an alert on a stale reconcile outlives restarts.
        self.metrics.reconcile_last_success.set(finished.timestamp())
        return True

    def _checkpoint_written(self) -> int | None:
        """The checkpoint file's modification time (ns), None when there is none."""
        try:
            return default_checkpoint(self.settings).stat().st_mtime_ns
        except OSError:
            return None

    async def run_once(self) -> ReconcileSummary:
        """One reconcile now, with the current mapping; state and metrics follow it."""
        started = self._clock()
        self.state.reconcile["running"] = {"started_at": started.isoformat(), "object": None}
        self.state.reconcile["next_at"] = None
        began = time.monotonic()
        try:
            summary = await run_reconcile(
                self.settings,
                self.holder.current,
                salesforce=self._salesforce,
                producer=self._producer,
                progress=_StateProgress(self.state, self.metrics),
            )
        finally:
            self.state.reconcile.pop("running", None)
            self._checkpoint_stamp = self._checkpoint_written()  # this run's own writes
        self._finished(summary, started, time.monotonic() - began)
        return summary

    def _finished(self, summary: ReconcileSummary, started: datetime, seconds: float) -> None:
        self.runs += 1
        now = self._clock()
        outcome = "ok" if summary.completed else "failed"
        self.metrics.reconcile_runs.labels(outcome).inc()
        self.metrics.reconcile_duration.set(round(seconds, 3))
        self.state.reconcile["last"] = _last_run(summary, started, now, seconds)
        if summary.completed:
            self.last_finished, self.interrupted, self._retry_at = now, False, None
            self._retry.reset()
            self.metrics.reconcile_last_success.set(now.timestamp())
            log.info(
                "reconcile_done",
                records_read=summary.records_read,
                properties_sent=summary.properties_differing,
                groups=summary.groups,
                seconds=round(seconds, 1),
            )
            return
        self.interrupted = True
        delay = self._retry.next()
        self._retry_at = now + timedelta(seconds=delay)
        log.error(
            "reconcile_failed",
            error=None if summary.error is None else type(summary.error).__name__,
            reason=str(summary.error),
            retry_in_seconds=round(delay),
        )


def _last_run(
    summary: ReconcileSummary, started: datetime, finished: datetime, seconds: float
) -> dict[str, Any]:
    return {
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "ok": summary.completed,
        "resumed": summary.resumed,
        "records_read": summary.records_read,
        "properties_sent": summary.properties_differing,
        "groups": summary.groups,
        "duration_seconds": round(seconds, 3),
        "error": None if summary.error is None else str(summary.error),
    }


class _StateProgress:
    """Progress into /status and the metrics, as the run goes."""

    def __init__(self, state: ServiceState, metrics: Metrics) -> None:
        self._state = state
        self._metrics = metrics

    def start_object(
        self, sfdc_object: str, total: int | None, method: str, *, done: int = 0
    ) -> None:
        running = self._state.reconcile.get("running")
        if running is not None:
            running.update(object=sfdc_object, total=total, method=method, records_read=done)

    def advance(self, sfdc_object: str, rows: int, properties: int) -> None:
        self._metrics.reconcile_records_read.labels(sfdc_object).inc(rows)
        self._metrics.reconcile_properties_sent.labels(sfdc_object).inc(properties)
        running = self._state.reconcile.get("running")
        if running is not None:
            running["records_read"] = running.get("records_read", 0) + rows

    def catching_up(self, sfdc_object: str, /) -> None:
        return None

    def finish_object(self, item: ObjectReconcile) -> None:
        return None
