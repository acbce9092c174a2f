"""``sfamp reconcile``: re-read what change events cannot keep fresh, now, and say what differs."""

from __future__ import annotations

import asyncio
import signal
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import typer
from rich.progress import TextColumn
from rich.table import Table

from pipeline.cli.backfill_cmd import ApiChoice
from pipeline.cli.common import (
    MAPPING,
    console,
    err_console,
    fail,
    given_mapping_file,
    on_stop_signals,
    one_of,
    print_clauses,
    print_json,
    quiet_kafka_client,
    settings_or_exit,
    unless_stopped,
    warn_if_passed_over,
)
from pipeline.cli.progress import ObjectBars, choose_progress
from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.errors import SfampError
from pipeline.gc_tuning import startup_objects_frozen
from pipeline.runtime.backfill import ReadOptions, StopRequest
from pipeline.runtime.mapping_file import MappingVersion
from pipeline.runtime.mapping_source import initial_mapping
from pipeline.runtime.reconcile.checkpoint import checkpoint_status
from pipeline.runtime.reconcile.report import LogProgress, ObjectReconcile, ReconcileSummary
from pipeline.runtime.reconcile.run import default_checkpoint, run_reconcile
from pipeline.salesforce.bulk import DEFAULT_BATCH_ROWS, DEFAULT_MAX_RECORDS
from pipeline.wording import plural

DRY_RUN = typer.Option(
    False,
    "--dry-run",
    help="Read and compare only: write nothing to Kafka and no checkpoint; print what "
    "would be sent.",
)
AS_JSON = typer.Option(False, "--json", help="Print the summary as JSON.")
CHECKPOINT = typer.Option(
    None,
    "--checkpoint",
    help="Checkpoint file (default: reconcile-checkpoint.json in SFAMP_RUNTIME__STATE_DIR, "
    "the service's own): an interrupted reconcile resumes from it on the next run.",
)
INTERVAL = typer.Option(
    10.0,
    "--progress-interval",
    min=0,
    help="Seconds between progress log lines when not on a TTY (0: one per batch).",
)
API = typer.Option(
    ApiChoice.auto, "--api", parser=one_of(ApiChoice), hidden=True, help="auto, bulk or rest."
)
MAX_RECORDS = typer.Option(
    DEFAULT_MAX_RECORDS, "--max-records", min=1, hidden=True, help="Rows per Bulk result page."
)
BATCH_ROWS = typer.Option(
    DEFAULT_BATCH_ROWS, "--batch-rows", min=1, hidden=True, help="Rows per written batch."
)


def reconcile(
    dry_run: bool = DRY_RUN,
    mapping: Path | None = MAPPING,
    as_json: bool = AS_JSON,
    checkpoint: Path | None = CHECKPOINT,
    progress_interval: float = INTERVAL,
    api: ApiChoice = API,
    max_records: int = MAX_RECORDS,
    batch_rows: int = BATCH_ROWS,
) -> None:
    """Run a reconcile now and print what differed from what sfamp last sent.

    Reads the mapped fields change events cannot keep fresh (formula fields, and
    fields events never carry such as LastActivityDate) of every record, through
    Bulk API 2.0 (REST for objects under 10,000 records), and compares them with
    the digest of what was sent (sfamp.sent). Each record with differences is
    written to its changes topic with only those fields: the running service
    (sfamp run) sends them at its next flush, after any newer change. The service
    also runs this on the mapping's "reconcile" schedule.

    An interrupted run resumes from its checkpoint on the next run. Exits 1 when
    the run stopped early (Salesforce or Kafka unavailable, another reconcile
    running), 130 on Ctrl-C and 143 on SIGTERM.
    """
    settings = settings_or_exit()
    quiet_kafka_client()
    options = ReadOptions(api=api.value, max_records=max_records, batch_rows=batch_rows)
    try:
        # One run per process: the per-page collections skip what the start left alive.
        with _progress(as_json, progress_interval) as progress, startup_objects_frozen():
            summary = asyncio.run(
                _until_signal(
                    settings,
                    given_mapping_file(mapping, settings),
                    dry_run=dry_run,
                    checkpoint_path=checkpoint,
                    progress=progress,
                    options=options,
                )
            )
    except SfampError as exc:  # e.g. the mapping file: refused before the run began
        if as_json:  # for a script, the summary of a refused run, as everywhere else
            path = str(checkpoint or default_checkpoint(settings))
            print_json(ReconcileSummary(dry_run=dry_run, checkpoint=path, error=exc).to_json())
        fail(exc)
    if not summary.completed and not did_anything(summary):
        # Refused or stopped before a record was read: the reason alone, as backfill (for
        # a script, the summary too).
        if as_json:
            print_json(summary.to_json())
        _exit(summary)
    if as_json:
        print_json(summary.to_json())
    else:
        print_summary(summary)
    _exit(summary)


def did_anything(summary: ReconcileSummary) -> bool:
    """Whether the run read a record (or found objects done by the run it resumed): only
    then is its summary worth printing beside an error."""
    return summary.records_read > 0 or any(item.already_done for item in summary.objects)


async def _until_signal(
    settings: Settings, mapping_path: Path | None, **options: Any
) -> ReconcileSummary:
    """The mapping read, then the reconcile; SIGINT or SIGTERM stops it cleanly from the
    start (its checkpoint kept)."""
    stop = StopRequest()
    with on_stop_signals(stop.set):
        checkpoint = options["checkpoint_path"] or default_checkpoint(settings)
        unstarted = ReconcileSummary(dry_run=options["dry_run"], checkpoint=str(checkpoint))
        try:
            read = await unless_stopped(initial_mapping(settings.kafka, mapping_path), stop)
        except SfampError as exc:  # no mapping to run: said as a run's own error
            unstarted.error = exc
            return unstarted
        if read is None:
            unstarted.interrupted = stop.reason
            return unstarted
        ((version, _),) = read
        warn_if_passed_over(version)
        warn_if_published_maps_less(version)
        return await run_reconcile(settings, version.mapping, stop=stop, **options)


def warn_if_published_maps_less(version: MappingVersion) -> None:
    """Say, in one line, that a service following the published revision (not this newer
    file) sends what the reconcile writes as that revision maps it: properties only the
    file maps are read and written, and never reach Amplitude."""
    published = version.supersedes
    if published is None:
        return
    theirs = _properties(published.mapping)
    only = sorted({prop for _, prop in _properties(version.mapping) - theirs})
    path = version.source.removeprefix("file:")
    missing = f" ({', '.join(only)} not among them)" if only else ""
    err_console.print(
        f"[yellow]warning:[/] the service sends what this writes with the properties "
        f"{published.source} maps{missing}, unless it runs {path} too; to send them all, "
        f"publish the file first: sfamp config import {path}",
        highlight=False,
        soft_wrap=True,
    )


def _properties(mapping: MappingConfig) -> set[tuple[str, str]]:
    """Every (group type, property) ``mapping`` sets."""
    return {
        (m.group_type, p.amplitude_property) for m in mapping.mappings for p in m.group_properties
    }


def _exit(summary: ReconcileSummary) -> None:
    if summary.interrupted is not None:
        kept = not summary.dry_run and checkpoint_status(Path(summary.checkpoint))[1]
        next_step = (
            f"the next sfamp reconcile (or the service's) resumes from {summary.checkpoint}"
            if kept
            else "no checkpoint was written; run again"
        )
        err_console.print(
            f"[bold yellow]interrupted[/] by {summary.interrupted}: {next_step}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(128 + signal.Signals[summary.interrupted].value)
    if summary.error is not None:
        fail(summary.error)


def print_summary(summary: ReconcileSummary) -> None:
    """Per object: records read, properties that differ (by property), groups to send."""
    verb = "would send" if summary.dry_run else "written for the next flush"
    title = "reconcile" + (" (dry run)" if summary.dry_run else "")
    title += " (resumed)" if summary.resumed else ""
    table = Table(title=title, title_justify="left")
    for column in ("object", "via", "records read", "differing properties", f"groups ({verb})"):
        table.add_column(column, justify="left" if column in ("object", "via") else "right")
    for item in summary.objects:
        via = "already done" if item.already_done else (item.method or "-")
        table.add_row(
            item.sfdc_object,
            via,
            f"{item.records_read:,}",
            _by_property(item),
            f"{item.groups:,}" + (f" (+{item.caught_up:,} re-read)" if item.caught_up else ""),
        )
    for sfdc_object, why in summary.skipped.items():
        table.add_row(sfdc_object, "-", "0", f"[dim]{why}[/]", "0")
    console.print(table)
    print_clauses(
        [
            plural(summary.api_calls, "Salesforce API call"),
            plural(summary.bulk_jobs, "Bulk job"),
            f"{plural(summary.digests_known, 'digest')} of sent values known",
            f"{summary.elapsed_seconds:.1f} s",
        ]
    )


def _by_property(item: ObjectReconcile) -> str:
    if not item.properties:
        return "0"
    parts = ", ".join(f"{name} {count:,}" for name, count in sorted(item.properties.items()))
    return f"{item.properties_differing:,} ({parts})"


class RichProgress(ObjectBars):
    """One bar per object on stderr: records read of the total, properties that differ."""

    def __init__(self) -> None:
        super().__init__(TextColumn("records  {task.fields[differing]:,} differing"), differing=0)

    def advance(self, sfdc_object: str, rows: int, properties: int) -> None:
        task_id = self._tasks[sfdc_object]
        differing = int(self._bar.tasks[task_id].fields["differing"]) + properties
        self._bar.update(task_id, advance=rows, differing=differing)

    def finish_object(self, item: ObjectReconcile) -> None:
        self._finish(item.sfdc_object, item.records_read)


def _progress(as_json: bool, interval: float) -> RichProgress | nullcontext[LogProgress]:
    return choose_progress(as_json, RichProgress, lambda: LogProgress(interval))
