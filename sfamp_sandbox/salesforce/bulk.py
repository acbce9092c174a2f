"""Bulk API 2.0 query jobs (reference §3).

A job goes UploadComplete -> InProgress -> JobComplete over ``job_seconds`` of emulator time.
The matching records are snapshotted when the job is first seen complete; result pages are
cut from that snapshot, so a locator returns the same rows for as long as the job exists.

The query is checked against the user's field-level security twice: when the job is created
(refused with ``INVALID_FIELD``, as REST refuses it) and again when it runs, so a field hidden
in between makes the job ``Failed`` with that error as its ``errorMessage``.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from sfamp_sandbox.salesforce.api_error import ApiError, json_parser_error, not_found
from sfamp_sandbox.salesforce.ids import IdSequence
from sfamp_sandbox.salesforce.org import Record
from sfamp_sandbox.salesforce.query import CompiledQuery, compile_query
from sfamp_sandbox.salesforce.render import DELIMITERS, LINE_ENDINGS, csv_page
from sfamp_sandbox.salesforce.state import STATE, SandboxState, json_response, session_of
from sfamp_sandbox.salesforce.values import datetime_rest

TERMINAL = frozenset({"JobComplete", "Failed", "Aborted"})
DEFAULT_MAX_RECORDS = 100_000
MAX_JOBS = 10_000


@dataclass(slots=True)
class BulkJob:
    id: str
    operation: str
    compiled: CompiledQuery
    created_by: str
    created_at: float
    api_version: str
    delimiter: str = "COMMA"
    line_ending: str = "LF"
    final_state: str | None = None  # Aborted, or JobComplete once the snapshot is taken
    rows: list[Record] | None = None
    finished_at: float | None = None
    error_message: str | None = None

    def state(self, now: float, job_seconds: float) -> str:
        if self.final_state is not None:
            return self.final_state
        elapsed = now - self.created_at
        if elapsed >= job_seconds:
            return "JobComplete"
        return "InProgress" if elapsed >= job_seconds / 2 else "UploadComplete"


@dataclass(slots=True)
class BulkJobs:
    """Query jobs of the org, bounded (the oldest terminal ones are forgotten first)."""

    job_seconds: float = 0.2
    created_count: int = 0
    ids: IdSequence = field(default_factory=lambda: IdSequence("750"))
    jobs: OrderedDict[str, BulkJob] = field(default_factory=OrderedDict)

    def add(self, job: BulkJob) -> None:
        self.jobs[job.id] = job
        self.created_count += 1
        while len(self.jobs) > MAX_JOBS:
            oldest = next((j for j in self.jobs.values() if j.final_state in TERMINAL), None)
            self.jobs.pop(oldest.id if oldest else next(iter(self.jobs)))

    def get(self, job_id: str) -> BulkJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise not_found()
        return job

    def clear(self) -> None:
        self.jobs.clear()


def refresh(state: SandboxState, job: BulkJob) -> str:
    """The job's state now; takes the snapshot the first time it is seen complete."""
    now = state.clock.now()
    current = job.state(now, state.jobs.job_seconds)
    if current == "JobComplete" and job.rows is None:
        job.finished_at = now
        try:
            compiled = _compile_for_bulk(state, job.compiled.query.text)
        except ApiError as error:
            job.final_state = "Failed"
            job.error_message = f"{error.error_code}: {error.message.strip()}"
            return job.final_state
        job.compiled = compiled
        job.rows = compiled.run(state.org, include_deleted=job.operation == "queryAll")
        job.final_state = "JobComplete"
    return current


def job_info(state: SandboxState, job: BulkJob, *, queued: bool = False) -> dict[str, Any]:
    """The job as Salesforce describes it; ``queued`` reports a job just created."""
    current = "UploadComplete" if queued else refresh(state, job)
    created = datetime_rest(int(job.created_at) * 1000)
    processed = len(job.rows) if job.rows is not None else 0
    elapsed = (job.finished_at or state.clock.now()) - job.created_at
    info: dict[str, Any] = {
        "id": job.id,
        "operation": job.operation,
        "object": job.compiled.obj.name,
        "createdById": job.created_by,
        "createdDate": created,
        "systemModstamp": created,
        "state": current,
        "concurrencyMode": "Parallel",
        "contentType": "CSV",
        "apiVersion": float(job.api_version),
        "jobType": "V2Query",
        "lineEnding": job.line_ending,
        "columnDelimiter": job.delimiter,
        "numberRecordsProcessed": processed,
        "retries": 0,
        "totalProcessingTime": max(0, int(elapsed * 1000)) if current in TERMINAL else 0,
    }
    if job.error_message is not None:
        info["errorMessage"] = job.error_message
    return info


def _compile_for_bulk(state: SandboxState, text: str) -> CompiledQuery:
    compiled = compile_query(state.org, text)
    if compiled.query.count:
        raise ApiError(400, "API_ERROR", "Aggregate queries are not supported in Bulk Query")
    if any(c.field.type == "address" for c in compiled.columns):
        raise ApiError(400, "API_ERROR", "Selecting compound data not supported in Bulk Query")
    return compiled


async def create_job(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise json_parser_error(str(exc)) from exc
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        raise ApiError(400, "INVALIDJOB", "InvalidJob : query is required")
    operation = body.get("operation", "query")
    delimiter = body.get("columnDelimiter", "COMMA")
    line_ending = body.get("lineEnding", "LF")
    if operation not in {"query", "queryAll"}:
        raise ApiError(400, "INVALIDJOB", f"InvalidJob : operation {operation} is not valid")
    if delimiter not in DELIMITERS or line_ending not in LINE_ENDINGS:
        raise ApiError(400, "INVALIDJOB", "InvalidJob : columnDelimiter or lineEnding is invalid")
    if body.get("contentType", "CSV") != "CSV":
        raise ApiError(400, "INVALIDJOB", "InvalidJob : only CSV content is supported")
    job = BulkJob(
        state.jobs.ids.next_id(),
        operation,
        _compile_for_bulk(state, body["query"]),
        session_of(request).user.id,
        state.clock.now(),
        request.match_info["version"],
        delimiter,
        line_ending,
    )
    state.jobs.add(job)
    return json_response(job_info(state, job, queued=True))


async def get_job(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response(job_info(state, state.jobs.get(request.match_info["job_id"])))


async def change_job(request: web.Request) -> web.Response:
    state = request.app[STATE]
    job = state.jobs.get(request.match_info["job_id"])
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise json_parser_error(str(exc)) from exc
    if not isinstance(body, dict) or body.get("state") != "Aborted":
        raise ApiError(400, "INVALIDJOBSTATE", "Invalid state change for a query job")
    if refresh(state, job) in TERMINAL:
        raise ApiError(400, "INVALIDJOBSTATE", f"Job is already {job.final_state}")
    job.final_state = "Aborted"
    job.finished_at = state.clock.now()
    return json_response(job_info(state, job))


async def delete_job(request: web.Request) -> web.Response:
    state = request.app[STATE]
    job = state.jobs.get(request.match_info["job_id"])
    if refresh(state, job) not in TERMINAL:
        raise ApiError(400, "INVALIDJOBSTATE", "Only a finished or aborted job can be deleted")
    state.jobs.jobs.pop(job.id, None)
    return web.Response(status=204)


async def list_jobs(request: web.Request) -> web.Response:
    state = request.app[STATE]
    records = [job_info(state, job) for job in list(state.jobs.jobs.values())[-1000:]]
    return json_response({"done": True, "records": records, "nextRecordsUrl": None})


def _decode_locator(locator: str) -> int:
    try:
        offset = base64.urlsafe_b64decode(locator + "=" * (-len(locator) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid locator") from exc
    if not offset.isdigit():
        raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid locator")
    return int(offset)


def encode_locator(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def _max_records(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_MAX_RECORDS
    if not raw.isdigit() or int(raw) < 1:
        raise ApiError(400, "INVALIDJOB", "maxRecords must be a positive integer")
    return int(raw)


async def results(request: web.Request) -> web.Response:
    state = request.app[STATE]
    job = state.jobs.get(request.match_info["job_id"])
    if refresh(state, job) != "JobComplete" or job.rows is None:
        raise ApiError(
            400,
            "JOB_NOT_COMPLETE",
            "can only download query results of successfully completed bulk job",
        )
    offset = _decode_locator(request.query["locator"]) if request.query.get("locator") else 0
    page = job.rows[offset : offset + _max_records(request.query.get("maxRecords"))]
    end = offset + len(page)
    body = csv_page(
        job.compiled.columns,
        page,
        delimiter=DELIMITERS[job.delimiter],
        line_ending=LINE_ENDINGS[job.line_ending],
    )
    headers = {
        "Sforce-Locator": encode_locator(end) if end < len(job.rows) else "null",
        "Sforce-NumberOfRecords": str(len(page)),
    }
    return web.Response(body=body, headers=headers, content_type="text/csv", charset="UTF-8")


def add_bulk_routes(app: web.Application) -> None:
    base = "/services/data/v{version:\\d+\\.\\d}/jobs/query"
    router = app.router
    router.add_post(f"{base}{{slash:/?}}", create_job)
    router.add_get(f"{base}{{slash:/?}}", list_jobs)
    router.add_get(f"{base}/{{job_id}}/results{{slash:/?}}", results)
    router.add_get(f"{base}/{{job_id}}{{slash:/?}}", get_job)
    router.add_patch(f"{base}/{{job_id}}{{slash:/?}}", change_job)
    router.add_delete(f"{base}/{{job_id}}{{slash:/?}}", delete_job)
