"""The reconcile's checkpoint: the backfill's checkpoint file, one entry per object.

A new run holds an entry for every object it will read (not complete), written
with its first save: after its first batch written to Kafka, or an object
finished (a resumed run writes the entries it replaces at once). It then moves
each one's read position and catch-up state after every batch and marks it
complete at the end. So the file alone says how the last run ended: every entry
complete (it finished, when the file was last written), or not (it was
interrupted, and the next run resumes it). A new run that stops before its first
save (refused by Salesforce or Kafka, stopped) leaves the last run's file as it
was. An entry whose fingerprint no longer matches (other fields or mappings)
starts that object over.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import structlog

from pipeline.errors import ConfigError
from pipeline.runtime.backfill.catch_up import CatchUp, begin_catch_up, catch_up_for
from pipeline.runtime.backfill.checkpoint import CheckpointFile, ObjectCheckpoint
from pipeline.runtime.backfill.read import ReadPosition
from pipeline.runtime.backfill.stamps import parse_stamp
from pipeline.runtime.reconcile.compare import ObjectPlan
from pipeline.salesforce.rest import SalesforceRest
from pipeline.transform.reads import MODSTAMP

log = structlog.get_logger(__name__)


class ReconcileCheckpoint:
    """One run's checkpoint file, addressed by object plan."""

    def __init__(self, file: CheckpointFile, *, resumed: bool) -> None:
        self.file = file
        self.resumed = resumed

    def entry(self, plan: ObjectPlan) -> ObjectCheckpoint | None:
        return self.file.entry(plan.sfdc_object, plan.fingerprint)

    def save(
        self,
        plan: ObjectPlan,
        position: ReadPosition,
        catch_up: CatchUp | None,
        *,
        complete: bool = False,
    ) -> None:
        state = None if catch_up is None else catch_up.to_json()
        self.file.save(
            plan.sfdc_object, plan.fingerprint, position, catch_up=state, complete=complete
        )

    async def catch_up(
        self, rest: SalesforceRest, plan: ObjectPlan, saved: ObjectCheckpoint | None
    ) -> CatchUp | None:
        """The object's catch-up: resumed from the entry, or starting now (before reading)."""
        meaning = (plan.config, plan.schema)
        obj, fields = plan.sfdc_object, plan.fields
        if saved is None or "since" not in saved.catch_up or MODSTAMP not in fields:
            return await begin_catch_up(rest, obj, fields, meaning=meaning)
        since = parse_stamp(saved.catch_up["since"])
        seen = saved.catch_up.get("seen")
        return catch_up_for(rest, obj, fields, since, meaning=meaning, seen=seen)


def open_checkpoint(path: Path, plans: list[ObjectPlan]) -> ReconcileCheckpoint:
    """The unfinished run's checkpoint to resume, else a new one; an entry for every plan.

    A run is unfinished when an object it still reads is not complete: an entry of an
    object no longer read does not count. Raises :class:`ConfigError` when the file
    cannot be written, before anything is read.
    """
    wanted = {plan.sfdc_object for plan in plans}
    previous = _load(path)
    if previous is not None:
        previous.objects = {k: v for k, v in previous.objects.items() if k in wanted}
        if _finished(previous):
            previous = None
    file = previous or CheckpointFile(path)
    file.check_writable()
    for plan in plans:
        entry = file.objects.get(plan.sfdc_object)
        if entry is not None and entry.get("fingerprint") == plan.fingerprint:
            continue
        if previous is not None:
            # Resuming: written now, before this run touches the object's seen file, so
            # the entry replaced never points at this run's catch-up keys.
            file.save(plan.sfdc_object, plan.fingerprint, ReadPosition())
        else:
            file.hold(plan.sfdc_object, plan.fingerprint)  # a new run: written by its first save
    return ReconcileCheckpoint(file, resumed=previous is not None)


def checkpoint_status(path: Path) -> tuple[datetime | None, bool]:
    """When the last run finished (None: unknown), and whether one is to be resumed."""
    file = _load(path)
    if file is None or not file.objects:
        return None, False
    if _finished(file):
        return datetime.fromtimestamp(path.stat().st_mtime, UTC), False
    return None, True


def _finished(file: CheckpointFile) -> bool:
    return all(entry.get("complete") for entry in file.objects.values())


def _load(path: Path) -> CheckpointFile | None:
    if not path.exists():
        return None
    try:
        return CheckpointFile.load(path)
    except ConfigError as exc:
        log.warning("reconcile_checkpoint_unreadable", path=str(path), reason=str(exc))
        return None
