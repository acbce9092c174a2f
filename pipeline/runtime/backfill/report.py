"""What a backfill found and did: duplicate group values, per-object and run summaries,
and the progress protocol with its log-line implementation."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import structlog

from pipeline.errors import (
    ConfigError,
    SalesforceRequestError,
    SfampError,
    UnreadableFieldsError,
)
from pipeline.runtime.progress import IntervalCounter, ObjectProgress
from pipeline.transform.apply import PropertyChanges

DUPLICATES_SHOWN: Final = 20
# Salesforce refusing the query itself: the same read fails the same way on every run.
REFUSED_QUERY_CODES: Final = frozenset(
    {
        "MALFORMED_QUERY",
        "INVALID_FIELD",
        "INVALID_TYPE",
        "NOT_FOUND",
        "INVALID_QUERY_FILTER_OPERATOR",
    }
)
log = structlog.get_logger(__name__)


class DuplicateGroups:
    """Group values shared by several records of one mapping (a non-unique group name field).

    Amplitude would silently merge them into one group; a backfill reports them.
    Seen values are kept as hashes (about 60 bytes each); mappings named by ``Id``
    or by a field the describe marks unique cannot repeat and are not tracked.
    """

    def __init__(self) -> None:
        self._seen: dict[str, set[int]] = {}
        self.repeated: dict[str, dict[str, int]] = {}

    def track(self, group_type: str) -> None:
        self._seen.setdefault(group_type, set())
        self.repeated.setdefault(group_type, {})

    def see(self, group_type: str, group_value: str) -> None:
        seen = self._seen.get(group_type)
        if seen is None:
            return
        marker = hash(group_value)
        if marker in seen:
            counts = self.repeated[group_type]
            counts[group_value] = counts.get(group_value, 1) + 1
        else:
            seen.add(marker)

    def see_all(self, changes: Iterable[PropertyChanges]) -> None:
        """:meth:`see` of each change's group, in order; no call per change when no group
        type is tracked (every mapping named by ``Id`` or a unique field)."""
        if self._seen:
            for change in changes:
                self.see(change.group_type, change.group_value)

    def report(self) -> dict[str, dict[str, Any]]:
        """Per group type: how many values repeat, and the most repeated with record counts."""
        found: dict[str, dict[str, Any]] = {}
        for group_type, counts in self.repeated.items():
            if counts:
                top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
                found[group_type] = {
                    "values": len(counts),
                    "records": sum(counts.values()),
                    "top": dict(top[:DUPLICATES_SHOWN]),
                }
        return found


@dataclass(slots=True)
class ObjectSummary:
    """What the backfill did for one Salesforce object."""

    sfdc_object: str
    method: str = ""
    total: int | None = None
    rows_read: int = 0
    identifications: int = 0
    requests: int = 0
    bytes: int = 0
    rejected: int = 0
    without_group: int = 0  # records whose group name field is empty
    caught_up: int = 0  # records re-read and re-sent because they changed meanwhile
    recycle_bin: int = 0  # deleted records read from the recycle bin, sent ahead
    catch_up_rounds: int = 0
    quiescent: bool | None = None  # None: no catch-up (dry run, or no SystemModstamp)
    already_done: bool = False
    finished: bool = False


@dataclass(slots=True)
class BackfillSummary:
    """The whole run; ``error`` or ``interrupted`` is set when it stopped early.

    The checkpoint then still points at the last delivered batch: ``--resume``
    continues from there, unless :attr:`resumable` says it cannot help.
    """

    objects: list[ObjectSummary] = field(default_factory=list)
    dry_run: bool = False
    resumed: bool = False
    api_calls: int = 0
    bulk_jobs: int = 0
    retries: int = 0
    rejected_to: str | None = None
    duplicates: dict[str, dict[str, Any]] = field(default_factory=dict)
    sample: list[dict[str, Any]] = field(default_factory=list)
    elapsed_seconds: float = 0.0
    checkpoint: str | None = None
    checkpoint_saved: bool = False
    # The checkpoint this run replaced is back: it was refused before it confirmed a batch.
    checkpoint_put_back: bool = False
    error: SfampError | None = None
    interrupted: str | None = None  # the signal that stopped the run, e.g. SIGINT
    # Where the mapping that ran came from: "file:<path>" or "sfamp.config revision N".
    mapping: str | None = None

    @property
    def completed(self) -> bool:
        return self.error is None and self.interrupted is None

    @property
    def resumable(self) -> bool:
        """False when running again cannot get further without someone fixing something."""
        return self.error is None or resumable(self.error)

    @property
    def quiescent(self) -> bool:
        return all(item.quiescent is not False for item in self.objects)

    def rejections(self) -> str | None:
        """One line on the identifications Amplitude refused, and where they wait; None
        when it refused none (a dry run sends nothing, so none)."""
        count = self.total("rejected")
        if not count:
            return None
        many = count > 1
        what = f"Amplitude rejected {count:,} identification{'s' if many else ''}"
        holds = "holds them with the reasons" if many else "holds it with the reason"
        kind, _, where = (self.rejected_to or "").partition(":")
        if kind == "kafka":
            return f"{what}; {where} {holds} (see 'sfamp dlq list')"
        # A file nothing replays: the backfill of their objects sends them again.
        objects = " ".join(f"--object {o.sfdc_object}" for o in self.objects if o.rejected)
        return f"{what}; {where} {holds}; once fixed, 'sfamp backfill {objects}' sends them again"

    def next_step(self) -> str | None:
        """What to do after a run that stopped early, in one line; None when complete."""
        if self.completed:
            return None
        if isinstance(self.error, UnreadableFieldsError):  # its message says what to do
            again = "rerun with --resume" if self.checkpoint_saved else "run again"
            return f"once the field can be read (or is out of the mapping), {again}"
        if not self.resumable and self.objects:  # refused before any read: nothing to resume
            if isinstance(self.error, SalesforceRequestError):
                return (
                    f"resuming cannot help: Salesforce refuses the query itself "
                    f"({self.error.error_code}); fix the mapping or --where and run again"
                )
            return "resuming cannot help: fix the problem and run again"
        if self.dry_run:  # sends nothing and keeps no checkpoint: only running again helps
            if self.error is None:
                return "a dry run keeps no checkpoint; run it again"
            return "a dry run keeps no checkpoint; run it again once the problem above is fixed"
        if self.checkpoint_saved or self.resumed:  # a resumed run's checkpoint is still there
            return f"checkpoint kept: {self.checkpoint}; rerun with --resume"
        if self.checkpoint_put_back:
            return (
                f"the earlier run's checkpoint is kept: {self.checkpoint}; once the problem "
                "above is fixed, run again, or with --resume to go on with that run"
            )
        if not self.objects and self.error is not None and not self.error.retriable:
            # Refused before an object was opened: a setting, a --where Salesforce refuses.
            return "nothing was read or sent; run again once the problem above is fixed"
        if self.error is not None and not self.error.retriable:
            return "no batch was confirmed delivered yet; run again once the problem above is fixed"
        return "no batch was confirmed delivered yet; run again"

    def total(self, name: str) -> int:
        return int(sum(getattr(item, name) for item in self.objects))

    def to_json(self) -> dict[str, Any]:
        return {
            "completed": self.completed,
            "error": None if self.error is None else str(self.error),
            "error_type": None if self.error is None else type(self.error).__name__,
            "interrupted": self.interrupted,
            "resumable": self.resumable,
            "next_step": self.next_step(),
            "quiescent": self.quiescent,
            "dry_run": self.dry_run,
            "resumed": self.resumed,
            "mapping": self.mapping,
            "rows_read": self.total("rows_read"),
            "identifications": self.total("identifications"),
            "requests": self.total("requests"),
            "bytes": self.total("bytes"),
            "rejected": self.total("rejected"),
            "rejected_to": self.rejected_to,
            "without_group": self.total("without_group"),
            "duplicates": self.duplicates,
            "salesforce_api_calls": self.api_calls,
            "bulk_jobs": self.bulk_jobs,
            "amplitude_retries": self.retries,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "checkpoint": self.checkpoint,
            "checkpoint_saved": self.checkpoint_saved,
            "checkpoint_put_back": self.checkpoint_put_back,
            "caught_up": self.total("caught_up"),
            "recycle_bin": self.total("recycle_bin"),
            "sample": self.sample,
            "objects": [asdict(item) for item in self.objects],
        }


def resumable(error: SfampError) -> bool:
    """Whether ``--resume`` can get past ``error``: not when the query itself is refused
    (a bad ``--where``, an unknown object or field) or the user must fix something first."""
    if isinstance(error, ConfigError):
        return False
    return not (
        isinstance(error, SalesforceRequestError) and error.error_code in REFUSED_QUERY_CODES
    )


# What the CLI shows while a backfill runs (a rich bar, or log lines).
BackfillProgress = ObjectProgress[ObjectSummary]


class LogProgress(IntervalCounter):
    """Progress as structlog lines: one per object start and end, one per ``interval``.
    ``rows_read`` counts the rows of delivered batches, and the rate and ETA follow it."""

    def start_object(
        self, sfdc_object: str, total: int | None, method: str, *, done: int = 0
    ) -> None:
        log.info("backfill_object_started", method=method, **self._start(sfdc_object, total, done))

    def _line(self, sfdc_object: str, now: float) -> None:
        rate, eta = self._rate_and_eta(now)
        log.info(
            "backfill_progress",
            object=sfdc_object,
            rows_read=self._done + self._rows,
            total=self._total,
            identifications=self._found,
            rows_per_second=round(rate),
            eta_seconds=None if eta is None else round(eta, 1),
        )

    def finish_object(self, summary: ObjectSummary) -> None:
        self._finish()
        log.info(
            "backfill_object_done",
            object=summary.sfdc_object,
            rows_read=summary.rows_read,
            identifications=summary.identifications,
            requests=summary.requests,
            rejected=summary.rejected,
            finished=summary.finished,
        )
