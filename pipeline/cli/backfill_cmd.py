"""``sfamp backfill``: read every mapped record once and deliver it to Amplitude."""

from __future__ import annotations

import asyncio
import signal
import sys
from contextlib import nullcontext
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.progress import TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pipeline.cli.backfill_summary import print_summary
from pipeline.cli.common import (
    MAPPING,
    err_console,
    fail,
    given_mapping_file,
    on_stop_signals,
    one_of,
    print_json,
    quiet_kafka_client,
    settings_or_exit,
    unless_stopped,
    warn_if_passed_over,
)
from pipeline.cli.progress import ObjectBars, choose_progress
from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.config.verify import check_mapping_against_org
from pipeline.errors import ConfigError, MappingError, SettingsError, SfampError
from pipeline.gc_tuning import startup_objects_frozen
from pipeline.runtime.backfill import (
    DEFAULT_CHECKPOINT,
    BackfillSummary,
    CheckpointFile,
    LogProgress,
    ObjectSummary,
    ReadOptions,
    StopRequest,
    run_backfill,
    selected_objects,
)
from pipeline.runtime.mapping_source import accepted_version, initial_mapping
from pipeline.salesforce.bulk import DEFAULT_BATCH_ROWS, DEFAULT_MAX_RECORDS
from pipeline.salesforce.client import SalesforceClient


class ApiChoice(StrEnum):
    auto = "auto"
    bulk = "bulk"
    rest = "rest"


class DlqChoice(StrEnum):
    auto = "auto"
    kafka = "kafka"
    file = "file"


OBJECTS = typer.Option(
    None,
    "--object",
    "-o",
    metavar="<object>",
    help="Backfill only this object (repeatable). Default: every mapped one.",
)
WHERE = typer.Option(
    None, "--where", help="SOQL condition added to every query, e.g. \"Type = 'Customer'\"."
)
DRY_RUN = typer.Option(
    False, "--dry-run", help="Read and transform, send nothing: print the plan instead."
)
RESUME = typer.Option(False, "--resume", help="Continue an interrupted run from its checkpoint.")
RESUME_OR_START = typer.Option(
    False,
    "--resume-or-start",
    help="Resume when the checkpoint exists, else start a new run: for Jobs and containers "
    "that are retried. A finished run's checkpoint makes it skip finished objects.",
)
AS_JSON = typer.Option(False, "--json", help="Print the summary as JSON.")
CHECKPOINT = typer.Option(
    DEFAULT_CHECKPOINT,
    "--checkpoint",
    help="Checkpoint file, on a writable and persistent disk (checked before anything is sent).",
)
API = typer.Option(
    ApiChoice.auto,
    "--api",
    parser=one_of(ApiChoice),
    help="auto: Bulk API 2.0, REST for small objects or when Bulk is unavailable.",
)
DLQ = typer.Option(
    DlqChoice.auto,
    "--dlq",
    parser=one_of(DlqChoice),
    help="Where rejected identifications go: auto (sfamp.dlq if Kafka answers, else a file "
    "beside the checkpoint), kafka, or file.",
)
MAX_RECORDS = typer.Option(
    DEFAULT_MAX_RECORDS, "--max-records", min=1, hidden=True, help="Rows per Bulk result page."
)
BATCH_ROWS = typer.Option(
    DEFAULT_BATCH_ROWS, "--batch-rows", min=1, hidden=True, help="Rows per delivered batch."
)
INTERVAL = typer.Option(
    10.0,
    "--progress-interval",
    min=0,
    help="Seconds between progress log lines when not on a TTY (0: one per batch).",
)


def backfill(
    objects: list[str] | None = OBJECTS,
    where: str | None = WHERE,
    dry_run: bool = DRY_RUN,
    resume: bool = RESUME,
    resume_or_start: bool = RESUME_OR_START,
    mapping: Path | None = MAPPING,
    as_json: bool = AS_JSON,
    checkpoint: Path = CHECKPOINT,
    api: ApiChoice = API,
    dlq: DlqChoice = DLQ,
    progress_interval: float = INTERVAL,
    max_records: int = MAX_RECORDS,
    batch_rows: int = BATCH_ROWS,
) -> None:
    """Backfill every mapped Salesforce record into Amplitude group properties.

    Reads through Bulk API 2.0 (REST for small objects), transforms with the same
    code as the stream, and checkpoints after every delivered batch: --resume
    continues an interrupted run. Each object ends with catch-up reads of records
    changed meanwhile, so no value read earlier lands over a newer one. Exits 1
    when the run stopped early (for example on REQUEST_LIMIT_EXCEEDED), 3 when it
    completed but Amplitude rejected identifications (they wait in the DLQ), 130
    on Ctrl-C and 143 on SIGTERM; the checkpoint of what was delivered is kept.
    """
    if resume and resume_or_start:
        fail(ConfigError("use --resume or --resume-or-start, not both"))
    settings = settings_or_exit()
    quiet_kafka_client()
    resume = resume or (resume_or_start and checkpoint.exists())
    try:
        if not dry_run:  # before anything is asked of Salesforce, Kafka or Amplitude
            CheckpointFile(checkpoint).check_writable()
        if resume:  # a missing or unreadable checkpoint is said before the login too
            CheckpointFile.load(checkpoint)
        # One run per process: the per-page collections skip what the start left alive.
        with _progress(as_json, progress_interval) as progress, startup_objects_frozen():
            summary = asyncio.run(
                _checked_until_signal(
                    settings,
                    mapping,
                    objects=objects or None,
                    where=where,
                    dry_run=dry_run,
                    resume=resume,
                    checkpoint_path=checkpoint,
                    progress=progress,
                    dlq=dlq.value,
                    options=ReadOptions(
                        api=api.value, max_records=max_records, batch_rows=batch_rows
                    ),
                )
            )
    except SfampError as exc:
        fail(exc)
    if not summary.completed and not did_anything(summary):
        # Stopped before anything was sent: no table, the reason and what to do (for a
        # script, the summary too).
        if as_json:
            print_json(summary.to_json())
        if summary.error is not None:
            fail(summary.error, hint=summary.next_step())
        _exit(summary)  # interrupted: that line, and 128 + the signal's number
    if as_json:
        print_json(summary.to_json())
    else:
        print_summary(summary)
    _exit(summary)


def did_anything(summary: BackfillSummary) -> bool:
    """Whether the run sent (or would send) something, or kept a checkpoint: only then is
    its summary worth printing beside an error."""
    done = summary.total("identifications") + summary.total("rejected")
    return done > 0 or summary.checkpoint_saved or any(o.already_done for o in summary.objects)


async def _checked_until_signal(
    settings: Settings, mapping_option: Path | None, *, objects: list[str] | None, **options: Any
) -> BackfillSummary:
    """The mapping read and checked against the org (unknown objects and fields are refused
    before anything is read; a newer published mapping the org refuses gives way to the
    file), then the backfill, through one Salesforce login. SIGINT (Ctrl-C) or SIGTERM
    stops it cleanly from the start: before the backfill, with nothing done."""
    stop = StopRequest()
    with on_stop_signals(stop.set):
        async with SalesforceClient.from_settings(settings.salesforce) as salesforce:
            unstarted = BackfillSummary(
                dry_run=options["dry_run"],
                resumed=options["resume"],
                checkpoint=str(options["checkpoint_path"]),
            )
            checking = _checked_mapping(
                settings, mapping_option, objects, salesforce, dry_run=options["dry_run"]
            )
            try:
                checked = await unless_stopped(checking, stop)
            except SfampError as exc:  # a refused login, a mapping the org refuses...
                unstarted.error = exc  # said with what to do next, as a run's own error
                return unstarted
            if checked is None:
                unstarted.interrupted = stop.reason
                return unstarted
            ((mapping, source),) = checked
            summary = await run_backfill(
                settings, mapping, salesforce=salesforce, objects=objects, stop=stop, **options
            )
            summary.mapping = source
            return summary


async def _checked_mapping(
    settings: Settings,
    mapping_option: Path | None,
    objects: list[str] | None,
    salesforce: SalesforceClient,
    *,
    dry_run: bool,
) -> tuple[MappingConfig, str]:
    """The mapping to run, checked against the org, and where it came from. Every missing
    credential (the Amplitude key too, unless ``dry_run``) is said first, before a login."""
    missing = settings.credential_problems(amplitude=not dry_run)
    if missing:
        raise SettingsError(missing)
    version, _ = await initial_mapping(settings.kafka, given_mapping_file(mapping_option, settings))
    selected_objects(version.mapping, objects)  # an unmapped --object: no login

    async def accept(mapping: MappingConfig) -> None:
        chosen = selected_objects(mapping, objects)
        await check_mapping_against_org(settings, chosen, salesforce=salesforce)

    try:
        running, refused = await accepted_version(version, accept)
    except MappingError as exc:  # say whose problems they are: a file's go unnamed
        if version.source.startswith("file:") or version.passed_over is not None:
            raise  # a file's (the published one, refused, gave way to the file)
        raise MappingError(f"{version.source}: {exc}", exc.problems) from exc
    if refused is None:
        warn_if_passed_over(running)
    else:
        err_console.print(
            f"[yellow]warning:[/] {version.source} does not match the org "
            f"({str(refused).splitlines()[0]}); backfilling with "
            f"{running.source.removeprefix('file:')} instead",
            highlight=False,
            soft_wrap=True,
        )
    return selected_objects(running.mapping, objects), running.source


# Exit code of a run that completed while Amplitude rejected identifications: not 1, so
# that a retry on failure (a Job, a wrapper script) does not run the backfill again.
REJECTED_EXIT_CODE = 3


def _exit(summary: BackfillSummary) -> None:
    """Exit 0 when complete, 1 on an error, 3 when complete but Amplitude rejected
    identifications (so that a script or a cron job notices them), 128 + the signal's
    number when interrupted."""
    if summary.interrupted is not None:
        err_console.print(
            f"[bold yellow]interrupted[/] by {summary.interrupted}: {summary.next_step()}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(128 + signal.Signals[summary.interrupted].value)
    if summary.error is not None:
        fail(summary.error)
    rejections = summary.rejections()
    if rejections is not None:
        err_console.print(f"[bold red]error:[/] {rejections}", highlight=False, soft_wrap=True)
        sys.exit(REJECTED_EXIT_CODE)


class RichProgress(ObjectBars):
    """One bar per object on stderr: rows read of the total, identifications, rate, ETA."""

    def __init__(self) -> None:
        super().__init__(
            TextColumn("rows  {task.fields[sent]:,} sent"),
            TextColumn("{task.fields[rate]:,.0f}/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            sent=0,
            rate=0.0,
        )

    def advance(self, sfdc_object: str, rows: int, identifications: int) -> None:
        task_id = self._tasks[sfdc_object]
        task = self._bar.tasks[self._tasks[sfdc_object]]
        self._bar.update(
            task_id,
            advance=rows,
            sent=int(task.fields["sent"]) + identifications,
            rate=task.speed or 0.0,
        )

    def finish_object(self, summary: ObjectSummary) -> None:
        self._finish(summary.sfdc_object, summary.rows_read)


def _progress(as_json: bool, interval: float) -> RichProgress | nullcontext[LogProgress]:
    return choose_progress(as_json, RichProgress, lambda: LogProgress(interval))
