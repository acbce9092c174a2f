"""What a reconcile found and did, and how it shows progress (log lines; the CLI adds a bar)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import structlog

from pipeline.errors import SfampError
from pipeline.runtime.progress import IntervalCounter, ObjectProgress

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class ObjectReconcile:
    """One object: records read, what differed from the digest, what was written."""

    sfdc_object: str
    fields: list[str] = field(default_factory=list)
    method: str = ""
    total: int | None = None
    records_read: int = 0
    properties: Counter[str] = field(default_factory=Counter)  # per property: groups differing
    groups: int = 0  # groups with at least one differing property
    records_written: int = 0  # envelopes written to the changes topic
    caught_up: int = 0  # records written again by catch-up rounds
    already_done: bool = False  # finished by the run this one resumed
    finished: bool = False

    @property
    def properties_differing(self) -> int:
        return sum(self.properties.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "object": self.sfdc_object,
            "fields": self.fields,
            "method": self.method,
            "records_read": self.records_read,
            "properties_differing": self.properties_differing,
            "by_property": dict(sorted(self.properties.items())),
            "groups": self.groups,
            "records_written": self.records_written,
            "caught_up": self.caught_up,
            "already_done": self.already_done,
            "finished": self.finished,
        }


@dataclass(slots=True)
class ReconcileSummary:
    """A whole run; ``error`` or ``interrupted`` set when it stopped early (checkpoint kept)."""

    dry_run: bool = False
    resumed: bool = False
    checkpoint: str = ""
    started_at_ms: int = 0
    objects: list[ObjectReconcile] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # object -> why nothing is read
    digests_known: int = 0
    api_calls: int = 0
    bulk_jobs: int = 0
    elapsed_seconds: float = 0.0
    error: SfampError | None = None
    interrupted: str | None = None

    @property
    def completed(self) -> bool:
        return self.error is None and self.interrupted is None

    @property
    def records_read(self) -> int:
        return sum(item.records_read for item in self.objects)

    @property
    def properties_differing(self) -> int:
        return sum(item.properties_differing for item in self.objects)

    @property
    def groups(self) -> int:
        return sum(item.groups for item in self.objects)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "resumed": self.resumed,
            "completed": self.completed,
            "checkpoint": None if self.dry_run else self.checkpoint,  # a dry run writes none
            "started_at_ms": self.started_at_ms,
            "records_read": self.records_read,
            "properties_differing": self.properties_differing,
            "groups": self.groups,
            "digests_known": self.digests_known,
            "api_calls": self.api_calls,
            "bulk_jobs": self.bulk_jobs,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "error": None if self.error is None else str(self.error),
            "interrupted": self.interrupted,
            "objects": [item.to_json() for item in self.objects],
            "skipped": self.skipped,
        }


ReconcileProgress = ObjectProgress[ObjectReconcile]


class LogProgress(IntervalCounter):
    """Progress as structlog lines: one per object start and end, one per ``interval``."""

    def start_object(
        self, sfdc_object: str, total: int | None, method: str, *, done: int = 0
    ) -> None:
        log.info("reconcile_object_started", method=method, **self._start(sfdc_object, total, done))

    def _line(self, sfdc_object: str, now: float) -> None:
        log.info(
            "reconcile_progress",
            object=sfdc_object,
            records_read=self._done + self._rows,
            total=self._total,
            properties_differing=self._found,
        )

    def finish_object(self, item: ObjectReconcile) -> None:
        self._finish()
        log.info(
            "reconcile_object_done",
            object=item.sfdc_object,
            records_read=item.records_read,
            properties_differing=item.properties_differing,
            groups=item.groups,
            caught_up=item.caught_up,
            already_done=item.already_done,
        )
