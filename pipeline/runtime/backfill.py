"""Full-snapshot backfill: every mapped record, read once and delivered as group updates.

Two users share this module:

- ``sfamp backfill`` calls :func:`run_backfill`: read each object (Bulk API 2.0
  first, REST query for small objects or when Bulk is unavailable), turn every
  record into a *full* change envelope, transform it with the same pure code as
  the stream (:func:`~pipeline.transform.apply.changes_for_config`), coalesce a
  batch, and send it with the same Amplitude client.
- the streaming service re-syncs one object after ``GAP_OVERFLOW`` or an expired
  replay id with :func:`read_object`, writing the records to Kafka as envelopes.

Checkpoints follow the project rule: a position (Bulk job id + page locator +
rows done in that page, or the last Id of a REST read ordered by Id) is written
only after Amplitude accepted the batch before it, or the rejected part of it
went to the DLQ. A killed run therefore re-sends at most one batch on
``--resume``; ``$set``/``$unset`` make that harmless.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import orjson
import structlog

from pipeline.amplitude import AmplitudeClient, DeliveryReport
from pipeline.config.mapping import MappingConfig, ObjectMapping
from pipeline.config.settings import Settings
from pipeline.errors import (
    ConfigError,
    KafkaError,
    MappingError,
    SalesforceRequestError,
    SalesforceUnavailableError,
    SfampError,
)
from pipeline.kafka.envelope import Source
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.records import DlqEntry
from pipeline.kafka.topics import TopicNames
from pipeline.runtime.salesforce_reads import fields_to_read
from pipeline.salesforce.bulk import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_MAX_RECORDS,
    BulkQuery,
    batched,
    rest_converters,
    select_list,
)
from pipeline.salesforce.client import SalesforceClient
from pipeline.transform.apply import PropertyChanges, changes_for_config
from pipeline.transform.cdc import envelope_from_record
from pipeline.transform.coalesce import Coalescer
from pipeline.transform.group_update import GroupUpdate
from pipeline.transform.schema import ObjectSchema, schema_from_describe

DEFAULT_STATE_DIR: Final = Path(".sfamp")
DEFAULT_CHECKPOINT: Final = DEFAULT_STATE_DIR / "backfill-checkpoint.json"
REJECTED_FILE: Final = "backfill-rejected.jsonl"
# Objects this small are cheaper through REST (a few query pages) than a Bulk job.
DEFAULT_REST_MAX_RECORDS: Final = 10_000
CHECKPOINT_VERSION: Final = 1
SAMPLE_SIZE: Final = 3
DUPLICATES_SHOWN: Final = 20
KAFKA_PROBE_SECONDS: Final = 5.0
# Batches being sent at once; two lets one transform while the other is on the wire.
MAX_IN_FLIGHT: Final = 2

Api = Literal["auto", "bulk", "rest"]
DlqMode = Literal["auto", "kafka", "file"]
log = structlog.get_logger(__name__)


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How records are read: which API, page and batch sizes."""

    api: Api = "auto"
    rest_max_records: int = DEFAULT_REST_MAX_RECORDS
    max_records: int = DEFAULT_MAX_RECORDS  # Bulk rows per result page
    batch_rows: int = DEFAULT_BATCH_ROWS  # rows handed on at a time


@dataclass(slots=True)
class ReadPosition:
    """Where a read stands: everything before it was handed on (and, in a backfill, delivered).

    Bulk: ``job_id`` + ``locator`` of the current page (None: the first) + ``rows_done``
    in that page. REST: ``last_id`` of a read ordered by Id. ``finished`` once all is read.
    """

    method: Literal["bulk", "rest"] | None = None
    job_id: str | None = None
    locator: str | None = None
    rows_done: int = 0
    last_id: str | None = None
    finished: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReadPosition:
        return cls(**{key: data[key] for key in cls.__slots__ if key in data})


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """Typed records (REST JSON shape) and the position right after them."""

    records: list[dict[str, Any]]
    source: Source
    position: ReadPosition
    total: int | None


ReadProgress = Callable[[int, int | None], None]


def snapshot_fields(config: MappingConfig, sfdc_object: str, schema: ObjectSchema) -> list[str]:
    """What a whole-object read selects: every mapped field (compounds as components),
    and ``SystemModstamp`` to order the snapshot against change events; only fields the
    describe knows."""
    wanted = [*fields_to_read(config, sfdc_object, schema), "SystemModstamp"]
    return [name for name in dict.fromkeys(wanted) if schema.field(name) is not None]


async def read_object(
    sf: SalesforceClient,
    mapping: ObjectMapping,
    *,
    where: str | None = None,
    checkpoint: ReadPosition | None = None,
    progress: ReadProgress | None = None,
    options: ReadOptions = ReadOptions(),
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every record of ``mapping``'s object, page by page, typed as REST JSON.

    Records hold ``Id``, the group name field, the mapped fields (compound ones as
    components) and ``SystemModstamp``. ``checkpoint`` is read as the start and
    moved forward when the caller asks for the next page, i.e. once it is done
    with the previous one; ``progress(rows, total)`` is called per page.
    """
    schema = schema_from_describe(await sf.rest.describe(mapping.sfdc_object))
    config = MappingConfig(sync_cadence={"mode": "hourly"}, mappings=[mapping])
    fields = snapshot_fields(config, mapping.sfdc_object, schema)
    bulk = BulkQuery(sf.rest)
    start = replace(checkpoint) if checkpoint is not None else None
    job_id: str | None = None
    async for batch in read_batches(
        sf, bulk, schema, fields, where=where, start=start, options=options
    ):
        job_id = batch.position.job_id or job_id
        if progress is not None:
            progress(len(batch.records), batch.total)
        yield batch.records
        if checkpoint is not None:
            _copy_position(batch.position, checkpoint)
    await _forget_job(bulk, job_id)


async def read_batches(
    sf: SalesforceClient,
    bulk: BulkQuery,
    schema: ObjectSchema,
    fields: Sequence[str],
    *,
    where: str | None,
    start: ReadPosition | None,
    options: ReadOptions,
) -> AsyncIterator[RecordBatch]:
    """Batches of an object's records from ``start``, by Bulk or REST (see the module doc)."""
    if start is not None and start.finished:
        return
    if start is not None and start.method == "rest":
        async for batch in _rest_batches(sf, schema.name, fields, where, start.last_id, None):
            yield batch
        return
    total = await count_records(sf, schema.name, where)
    resuming_bulk = start is not None and start.method == "bulk"
    if options.api == "rest" or (
        options.api == "auto" and not resuming_bulk and total <= options.rest_max_records
    ):
        async for batch in _rest_batches(sf, schema.name, fields, where, None, total):
            yield batch
        return
    soql = _soql(schema.name, fields, where)
    job = await _bulk_job(bulk, soql, start, allow_fallback=options.api == "auto")
    if job is None:
        async for batch in _rest_batches(sf, schema.name, fields, where, None, total):
            yield batch
        return
    async for batch in _bulk_batches(bulk, schema, job, start, options):
        yield batch


async def count_records(sf: SalesforceClient, sfdc_object: str, where: str | None) -> int:
    """``SELECT COUNT()``: the total for the ETA and the REST-or-Bulk choice (one API call)."""
    soql = f"SELECT COUNT() FROM {sfdc_object}"  # noqa: S608 - see _soql
    soql += f" WHERE {where}" if where else ""
    async for page in sf.rest.query_pages(soql):
        return page.total_size
    return 0


async def _bulk_job(
    bulk: BulkQuery, soql: str, start: ReadPosition | None, *, allow_fallback: bool
) -> tuple[str, int] | None:
    """(job id, row count) of a completed job: the checkpoint's, else a new one.

    None means Bulk is unavailable and REST should be used instead.
    """
    if start is not None and start.method == "bulk" and start.job_id:
        try:
            job = await bulk.wait(start.job_id)
            return job.id, job.records_processed
        except SalesforceRequestError as exc:
            log.warning("bulk_job_gone", job_id=start.job_id, reason=str(exc))
            start.locator, start.rows_done = None, 0
    try:
        created = await bulk.create(soql)
        job = await bulk.wait(created.id)
    except (SalesforceRequestError, SalesforceUnavailableError) as exc:
        if not allow_fallback:
            raise
        log.warning("bulk_unavailable_using_rest", reason=str(exc))
        return None
    if start is not None:
        start.locator, start.rows_done = None, 0
    return job.id, job.records_processed


async def _bulk_batches(
    bulk: BulkQuery,
    schema: ObjectSchema,
    job: tuple[str, int],
    start: ReadPosition | None,
    options: ReadOptions,
) -> AsyncIterator[RecordBatch]:
    job_id, total = job
    converters = rest_converters({name: info.type for name, info in schema.fields.items()})
    locator = start.locator if start is not None and start.job_id == job_id else None
    skip = start.rows_done if start is not None and start.job_id == job_id else 0
    async for page in bulk.pages(job_id, locator=locator, max_records=options.max_records):
        rows = page.rows(converters)
        for _ in range(skip):
            next(rows, None)
        done, skip = skip, 0
        batches = batched(rows, options.batch_rows)
        current = next(batches, None)
        if current is None:
            # Only reached for an empty page, or a resume that had done a page exactly.
            yield _bulk_batch([], job_id, page.next_locator, 0, total)
            continue
        while current is not None:
            following = next(batches, None)
            done += len(current)
            if following is None:
                yield _bulk_batch(current, job_id, page.next_locator, 0, total)
            else:
                yield _bulk_batch(current, job_id, page.locator, done, total, last=False)
            current = following


def _bulk_batch(
    records: list[dict[str, Any]],
    job_id: str,
    locator: str | None,
    rows_done: int,
    total: int,
    *,
    last: bool = True,
) -> RecordBatch:
    # The last batch of a page points at the next page; of the last page, at nothing.
    finished = last and locator is None
    position = ReadPosition("bulk", job_id, locator, rows_done, None, finished)
    return RecordBatch(records, "bulk", position, total)


async def _rest_batches(
    sf: SalesforceClient,
    sfdc_object: str,
    fields: Sequence[str],
    where: str | None,
    after_id: str | None,
    total: int | None,
) -> AsyncIterator[RecordBatch]:
    """REST query ordered by Id, so that "last Id" is a position to resume from."""
    conditions = [f"({where})"] if where else []
    if after_id:
        conditions.append(f"Id > '{_checked_id(after_id)}'")
    soql = _soql(sfdc_object, fields, " AND ".join(conditions) or None) + " ORDER BY Id"
    last_id = after_id
    async for page in sf.rest.query_pages(soql):
        if page.records:
            last_id = str(page.records[-1]["Id"])
        position = ReadPosition("rest", None, None, 0, last_id, page.done)
        yield RecordBatch(page.records, "rest", position, total)


def _soql(sfdc_object: str, fields: Sequence[str], where: str | None) -> str:
    # Object and field names come from a validated mapping and the describe;
    # ``where`` is the user's own SOQL condition, passed on as given.
    soql = f"SELECT {select_list(fields)} FROM {sfdc_object}"  # noqa: S608
    return soql + (f" WHERE {where}" if where else "")


def _checked_id(record_id: str) -> str:
    if not record_id.isascii() or not record_id.isalnum():
        raise ConfigError(f"checkpoint holds an invalid record id {record_id!r}")
    return record_id


def _copy_position(source: ReadPosition, target: ReadPosition) -> None:
    for key in ReadPosition.__slots__:
        setattr(target, key, getattr(source, key))


async def _forget_job(bulk: BulkQuery, job_id: str | None) -> None:
    """Delete a finished job's results; failing to is not worth failing the run for."""
    if not job_id:
        return
    try:
        await bulk.delete(job_id)
    except SfampError as exc:
        log.warning("bulk_job_delete_failed", job_id=job_id, reason=str(exc))


# -- what a run found and did ---------------------------------------------------------------


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
    already_done: bool = False
    finished: bool = False


@dataclass(slots=True)
class BackfillSummary:
    """The whole run; ``error`` is set (and ``completed`` false) when it stopped early.

    The checkpoint then still points at the last delivered batch: ``--resume``
    continues from there.
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
    error: SfampError | None = None

    @property
    def completed(self) -> bool:
        return self.error is None

    def total(self, name: str) -> int:
        return int(sum(getattr(item, name) for item in self.objects))

    def to_json(self) -> dict[str, Any]:
        return {
            "completed": self.completed,
            "error": None if self.error is None else str(self.error),
            "error_type": None if self.error is None else type(self.error).__name__,
            "dry_run": self.dry_run,
            "resumed": self.resumed,
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
            "sample": self.sample,
            "objects": [asdict(item) for item in self.objects],
        }


class BackfillProgress(Protocol):
    """What the CLI shows while a backfill runs (a rich bar, or log lines)."""

    def start_object(self, sfdc_object: str, total: int | None, method: str) -> None: ...

    def advance(self, sfdc_object: str, rows: int, identifications: int) -> None: ...

    def finish_object(self, summary: ObjectSummary) -> None: ...


class LogProgress:
    """Progress as structlog lines: one per object start and end, one per ``interval``."""

    def __init__(
        self, interval_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval_seconds
        self._clock = clock
        self._started = self._last = 0.0
        self._rows = self._sent = 0
        self._total: int | None = None

    def start_object(self, sfdc_object: str, total: int | None, method: str) -> None:
        self._started = self._last = self._clock()
        self._rows = self._sent = 0
        self._total = total
        log.info("backfill_object_started", object=sfdc_object, total=total, method=method)

    def advance(self, sfdc_object: str, rows: int, identifications: int) -> None:
        self._rows += rows
        self._sent += identifications
        now = self._clock()
        if now - self._last < self._interval:
            return
        self._last = now
        rate = self._rows / max(now - self._started, 1e-6)
        remaining = None if self._total is None else max(0, self._total - self._rows)
        log.info(
            "backfill_progress",
            object=sfdc_object,
            rows_read=self._rows,
            total=self._total,
            identifications=self._sent,
            rows_per_second=round(rate),
            eta_seconds=None if remaining is None or rate <= 0 else round(remaining / rate, 1),
        )

    def finish_object(self, summary: ObjectSummary) -> None:
        log.info(
            "backfill_object_done",
            object=summary.sfdc_object,
            rows_read=summary.rows_read,
            identifications=summary.identifications,
            requests=summary.requests,
            rejected=summary.rejected,
            finished=summary.finished,
        )


# -- checkpoint and rejects -----------------------------------------------------------------


class CheckpointFile:
    """Per object: a fingerprint of what is read and the position delivered so far.

    Written atomically (temporary file + rename) after every delivered batch.
    A fingerprint that no longer matches (other fields, mapping or ``--where``)
    makes ``--resume`` start that object again rather than skip rows it never sent.
    """

    def __init__(self, path: Path, objects: dict[str, dict[str, Any]] | None = None) -> None:
        self.path = path
        self.objects: dict[str, dict[str, Any]] = objects or {}

    @classmethod
    def load(cls, path: Path) -> CheckpointFile:
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError as exc:
            raise ConfigError(
                f"no backfill checkpoint at {path}; run without --resume to start one"
            ) from exc
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read the backfill checkpoint {path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != CHECKPOINT_VERSION:
            raise ConfigError(
                f"{path} is not a backfill checkpoint of version {CHECKPOINT_VERSION}"
            )
        return cls(path, dict(data.get("objects") or {}))

    def position(self, sfdc_object: str, fingerprint: str) -> ReadPosition | None:
        entry = self.objects.get(sfdc_object)
        if entry is None:
            return None
        if entry.get("fingerprint") != fingerprint:
            log.warning("backfill_checkpoint_mismatch", object=sfdc_object, action="start over")
            return None
        return ReadPosition.from_json(entry.get("position") or {})

    def save(self, sfdc_object: str, fingerprint: str, position: ReadPosition) -> None:
        self.objects[sfdc_object] = {"fingerprint": fingerprint, "position": position.to_json()}
        document = {
            "version": CHECKPOINT_VERSION,
            "updated_at_ms": int(time.time() * 1000),
            "objects": self.objects,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        os.replace(temporary, self.path)


class RejectSink:
    """Where rejected identifications go: ``sfamp.dlq`` when Kafka answers, else a file.

    Opened on the first rejection only, so a clean run never needs Kafka. In
    ``auto`` mode Kafka gets :data:`KAFKA_PROBE_SECONDS` to answer.
    """

    def __init__(self, settings: Settings, mode: DlqMode, file: Path) -> None:
        self._settings = settings
        self._mode = mode
        self._file = file
        self._producer: ChangeProducer | None = None
        self._stack = contextlib.AsyncExitStack()
        self.destination: str | None = None

    async def write(self, entries: Sequence[DlqEntry]) -> None:
        if not entries:
            return
        if self.destination is None:
            await self._open()
        if self._producer is not None:
            topic = TopicNames(self._settings.kafka.topic_prefix).dlq
            await self._producer.send_all([(topic, *entry.encode()) for entry in entries])
            return
        with self._file.open("ab") as out:
            for entry in entries:
                out.write(orjson.dumps(asdict(entry)) + b"\n")

    async def _open(self) -> None:
        if self._mode != "file":
            kafka = self._settings.kafka
            if self._mode == "auto":
                timeout = min(kafka.request_timeout_seconds, KAFKA_PROBE_SECONDS)
                kafka = kafka.model_copy(update={"request_timeout_seconds": timeout})
            try:
                self._producer = await self._stack.enter_async_context(ChangeProducer(kafka))
                self.destination = f"kafka:{TopicNames(kafka.topic_prefix).dlq}"
                return
            except KafkaError as exc:
                if self._mode == "kafka":
                    raise
                log.warning("backfill_dlq_kafka_unreachable", reason=str(exc), file=str(self._file))
        self._file.parent.mkdir(parents=True, exist_ok=True)
        self.destination = f"file:{self._file}"

    async def aclose(self) -> None:
        await self._stack.aclose()


def rejected_entries(report: DeliveryReport, sfdc_object: str, now_ms: int) -> list[DlqEntry]:
    entries = []
    for rejection in report.rejected:
        update = rejection.update
        key = f"{update.group_type}:{update.group_value}"
        entries.append(
            DlqEntry(
                id=f"backfill:{key}:{now_ms}",
                reason="rejected",
                detail=f"Amplitude answered {rejection.status}: {rejection.reason}",
                at_ms=now_ms,
                key=key,
                payload=update.to_identification(),
                extra={"source": "backfill", "object": sfdc_object},
            )
        )
    return entries


# -- the run --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
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


async def run_backfill(
    settings: Settings,
    mapping_config: MappingConfig,
    *,
    objects: Sequence[str] | None = None,
    where: str | None = None,
    dry_run: bool = False,
    resume: bool = False,
    checkpoint_path: Path = DEFAULT_CHECKPOINT,
    progress: BackfillProgress | None = None,
    dlq: DlqMode = "auto",
    options: ReadOptions = ReadOptions(),
    salesforce: SalesforceClient | None = None,
) -> BackfillSummary:
    """Backfill the mapped objects (or ``objects``) and say what happened.

    Known failures (REQUEST_LIMIT_EXCEEDED, Amplitude unavailable or refusing the
    key, ...) do not raise: they end the run with ``summary.error`` set and the
    checkpoint kept. A dry run reads and transforms everything, sends nothing,
    writes no checkpoint and fills ``summary.requests``/``bytes`` with the plan.
    Rejected identifications go to ``sfamp.dlq`` or, without Kafka, to
    ``backfill-rejected.jsonl`` beside the checkpoint.
    """
    config = _selected(mapping_config, objects)
    summary = BackfillSummary(dry_run=dry_run, resumed=resume, checkpoint=str(checkpoint_path))
    resume_from = CheckpointFile.load(checkpoint_path) if resume else None
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        sf = salesforce
        if sf is None:
            sf = await stack.enter_async_context(
                SalesforceClient.from_settings(settings.salesforce)
            )
        amplitude = await stack.enter_async_context(AmplitudeClient(settings.amplitude))
        sink = RejectSink(settings, dlq, checkpoint_path.parent / REJECTED_FILE)
        stack.push_async_callback(sink.aclose)
        checkpoint = None
        if not dry_run:
            checkpoint = resume_from or CheckpointFile(checkpoint_path)
        run = _Run(
            config, sf, BulkQuery(sf.rest), amplitude, checkpoint, resume_from, sink,
            progress, options, where, summary,
        )  # fmt: skip
        calls_before = sf.rest.api_calls
        try:
            for sfdc_object in config.objects:
                await _backfill_object(run, sfdc_object)
        except SfampError as exc:
            log.error("backfill_stopped", error=type(exc).__name__, reason=str(exc))
            summary.error = exc
        finally:
            summary.api_calls = sf.rest.api_calls - calls_before
            summary.bulk_jobs = run.bulk.jobs_created
            summary.rejected_to = sink.destination
            summary.duplicates = run.duplicates.report()
            summary.elapsed_seconds = time.monotonic() - started
    return summary


def _selected(config: MappingConfig, objects: Sequence[str] | None) -> MappingConfig:
    if not objects:
        return config
    unknown = [name for name in objects if not config.for_object(name)]
    if unknown:
        raise MappingError(
            f"no mapping for {', '.join(unknown)}; mapped objects: {', '.join(config.objects)}"
        )
    wanted = set(objects)
    return config.model_copy(
        update={"mappings": [m for m in config.mappings if m.sfdc_object in wanted]}
    )


async def _backfill_object(run: _Run, sfdc_object: str) -> None:
    item = ObjectSummary(sfdc_object)
    run.summary.objects.append(item)
    schema = schema_from_describe(await run.sf.rest.describe(sfdc_object))
    fields = fields_to_read(run.config, sfdc_object, schema)
    mappings = run.config.for_object(sfdc_object)
    fingerprint = _fingerprint(mappings, fields, run.where)
    start = None if run.resume_from is None else run.resume_from.position(sfdc_object, fingerprint)
    if start is not None and start.finished:
        item.already_done = item.finished = True
        log.info("backfill_object_already_done", object=sfdc_object)
        return
    for mapping in mappings:
        if not _unique_by_schema(mapping, schema):
            run.duplicates.track(mapping.group_type)
    object_config = run.config.model_copy(update={"mappings": mappings})
    reader = read_batches(
        run.sf, run.bulk, schema, fields, where=run.where, start=start, options=run.options
    )
    job_id: str | None = None
    window = _Window(run, item, fingerprint)
    try:
        async for batch in _prefetched(reader):
            if not item.method:
                item.method, item.total = batch.source, batch.total
                if run.progress is not None:
                    run.progress.start_object(sfdc_object, batch.total, batch.source)
            job_id = batch.position.job_id or job_id
            # Transformed while the previous batch is still on the wire (see _Window).
            updates = _updates(run, item, object_config, schema, batch)
            await window.push(batch, updates)
        await window.drain()
    finally:
        await window.cancel()
    item.finished = True
    if run.checkpoint is not None:
        run.checkpoint.save(sfdc_object, fingerprint, ReadPosition(finished=True))
        await _forget_job(run.bulk, job_id)
    if run.progress is not None:
        run.progress.finish_object(item)


class _Window:
    """Deliveries of one object in flight, settled in read order.

    While one batch is being sent the next is transformed; a batch's position
    is checkpointed only once it and every batch before it were delivered.
    """

    def __init__(self, run: _Run, item: ObjectSummary, fingerprint: str) -> None:
        self._run, self._item, self._fingerprint = run, item, fingerprint
        self._pending: collections.deque[tuple[asyncio.Task[int], RecordBatch]] = (
            collections.deque()
        )

    async def push(self, batch: RecordBatch, updates: list[GroupUpdate]) -> None:
        task = asyncio.create_task(_deliver(self._run, self._item, updates))
        self._pending.append((task, batch))
        while len(self._pending) >= MAX_IN_FLIGHT:
            await self._settle_oldest()

    async def drain(self) -> None:
        while self._pending:
            await self._settle_oldest()

    async def cancel(self) -> None:
        """Stop whatever is still in flight (after an error); nothing is checkpointed."""
        tasks = [task for task, _ in self._pending]
        self._pending.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _settle_oldest(self) -> None:
        task, batch = self._pending[0]
        sent = await task
        self._pending.popleft()
        run, name = self._run, self._item.sfdc_object
        if run.checkpoint is not None:
            run.checkpoint.save(name, self._fingerprint, batch.position)
        if run.progress is not None:
            run.progress.advance(name, len(batch.records), sent)


async def _prefetched(batches: AsyncIterator[RecordBatch]) -> AsyncIterator[RecordBatch]:
    """The batches, with the next one read from Salesforce while this one is delivered.

    The reader task is owned here: it is cancelled and awaited however the loop ends,
    and its errors come out of this generator.
    """
    queue: asyncio.Queue[RecordBatch | BaseException | None] = asyncio.Queue(maxsize=1)

    async def read() -> None:
        try:
            async for batch in batches:
                await queue.put(batch)
            await queue.put(None)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            await queue.put(exc)

    reader = asyncio.create_task(read())
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _deliver(run: _Run, item: ObjectSummary, updates: list[GroupUpdate]) -> int:
    """Send (or, in a dry run, plan) one batch's updates; rejects go to the sink."""
    if run.checkpoint is None:
        plan = run.amplitude.plan(updates)
        item.identifications += plan.identifications
        item.requests += len(plan.requests)
        item.bytes += plan.total_bytes
        return plan.identifications
    report = await run.amplitude.send(updates)
    item.identifications += report.delivered
    item.requests += report.requests
    item.bytes += report.bytes_sent
    item.rejected += len(report.rejected)
    run.summary.retries += report.retries
    await run.sink.write(rejected_entries(report, item.sfdc_object, int(time.time() * 1000)))
    return report.delivered


def _updates(
    run: _Run, item: ObjectSummary, config: MappingConfig, schema: ObjectSchema, batch: RecordBatch
) -> list[GroupUpdate]:
    """Full envelopes through the stream's transform, one update per group.

    Groups named by a unique field under a single mapping occur once per batch,
    so their changes become updates directly; anything else is coalesced.
    """
    now_ms = int(time.time() * 1000)
    changes: list[PropertyChanges] = []
    see = run.duplicates.see
    for record in batch.records:
        envelope = envelope_from_record(
            item.sfdc_object, record, source=batch.source, now_ms=now_ms
        )
        for _mapping, outcome in changes_for_config(envelope, config, schema):
            if isinstance(outcome, PropertyChanges):
                changes.append(outcome)
                see(outcome.group_type, outcome.group_value)
            else:
                item.without_group += 1
    item.rows_read += len(batch.records)
    updates = _merged(changes, config, schema)
    if len(run.summary.sample) < SAMPLE_SIZE:
        room = SAMPLE_SIZE - len(run.summary.sample)
        run.summary.sample += [update.to_identification() for update in updates[:room]]
    return updates


def _merged(
    changes: list[PropertyChanges], config: MappingConfig, schema: ObjectSchema
) -> list[GroupUpdate]:
    if len(config.mappings) == 1 and _unique_by_schema(config.mappings[0], schema):
        return [GroupUpdate(c.group_type, c.group_value, c.set, c.unset) for c in changes]
    coalescer = Coalescer(max_groups=max(1, len(changes)))
    for change in changes:
        coalescer.add(change)
    return coalescer.drain()


def _unique_by_schema(mapping: ObjectMapping, schema: ObjectSchema) -> bool:
    if mapping.group_name_field == "Id":
        return True
    info = schema.field(mapping.group_name_field)
    return info is not None and info.unique


def _fingerprint(
    mappings: Sequence[ObjectMapping], fields: Sequence[str], where: str | None
) -> str:
    document = {
        "mappings": [m.model_dump(mode="json") for m in mappings],
        "fields": list(fields),
        "where": where,
    }
    return hashlib.sha256(orjson.dumps(document)).hexdigest()[:16]
