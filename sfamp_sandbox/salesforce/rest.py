"""REST API of the sandbox: auth and limits middleware, discovery, describe, sObject CRUD,
limits (reference §2). Query and collections live in :mod:`rest_query`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from sfamp_sandbox.salesforce import describe
from sfamp_sandbox.salesforce.api_error import (
    ApiError,
    invalid_session,
    json_parser_error,
    not_found,
)
from sfamp_sandbox.salesforce.oauth import Session
from sfamp_sandbox.salesforce.objects import find_object
from sfamp_sandbox.salesforce.org import Transaction
from sfamp_sandbox.salesforce.query import FieldResolver
from sfamp_sandbox.salesforce.render import all_columns, record_json
from sfamp_sandbox.salesforce.rest_query import QueryCursors, resolve_columns
from sfamp_sandbox.salesforce.state import (
    STATE,
    SandboxState,
    error_response,
    json_response,
    session_of,
)

__all__ = ["QueryCursors", "add_rest_routes", "api_middleware"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LATEST_VERSION = 66


def _needs_auth(path: str) -> bool:
    return path.startswith(("/services/data/v", "/id/")) or path == "/services/oauth2/userinfo"


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Scripted faults, then the session check, then the API allocation, for every REST and
    Bulk call; errors become Salesforce's JSON array; ``Sforce-Limit-Info`` on every
    authenticated response."""
    if not _needs_auth(request.path):
        return await handler(request)
    state = request.app[STATE]
    session: Session | None = None
    try:
        if request.path.startswith("/services/data/"):
            await state.faults.apply(state.usage)
        session = state.sessions.lookup(request.headers.get("Authorization"))
        if session is None:
            raise invalid_session()
        if request.path.startswith("/services/data/"):
            state.usage.charge()
        response = await handler(request)
    except ApiError as error:
        response = error_response(error)
        if error.status == 401:
            response.headers["WWW-Authenticate"] = "Token"
    except web.HTTPNotFound:
        response = error_response(not_found())
    except web.HTTPMethodNotAllowed as exc:
        allowed = ",".join(sorted(exc.allowed_methods))
        response = error_response(
            ApiError(
                405,
                "METHOD_NOT_ALLOWED",
                f"HTTP Method '{request.method}' not allowed. Allowed are {allowed}",
            )
        )
    if session is not None:
        response.headers["Sforce-Limit-Info"] = state.usage.header
    return response


def transaction_for(request: web.Request) -> Transaction:
    """One transaction per request; ``changeOrigin`` names the REST API version and the client
    from ``Sforce-Call-Options: client=X``."""
    origin = f"com/salesforce/api/rest/{request.match_info.get('version', '62.0')}"
    for option in request.headers.get("Sforce-Call-Options", "").split(","):
        name, _, value = option.strip().partition("=")
        if name.strip() == "client" and value.strip():
            origin += f";client={value.strip()}"
    return Transaction(session_of(request).user.id, origin, api=True)


def _release_label(version: int) -> str:
    # v66.0 is Spring '26; each release adds one version, three releases a year.
    steps = LATEST_VERSION - version
    season = ("Spring", "Winter", "Summer")[steps % 3]
    year = 26 - (steps + 2) // 3 + (1 if season == "Winter" else 0)
    return f"{season} '{year:02d}"


async def list_versions(request: web.Request) -> web.Response:
    return json_response(
        [
            {"label": _release_label(v), "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
            for v in range(31, LATEST_VERSION + 1)
        ]
    )


async def resources(request: web.Request) -> web.Response:
    state = request.app[STATE]
    version = request.match_info["version"]
    base = f"/services/data/v{version}"
    names = ("sobjects", "query", "queryAll", "limits", "composite", "jobs", "search", "tooling")
    body: dict[str, str] = {name: f"{base}/{name}" for name in names}
    host = f"{request.scheme}://{request.host}"
    body["identity"] = f"{host}/id/{state.org.org_id}/{session_of(request).user.id}"
    return json_response(body)


async def global_describe(request: web.Request) -> web.Response:
    return json_response(describe.global_describe(request.match_info["version"]))


def _object(request: web.Request) -> Any:
    obj = find_object(request.match_info["sobject"])
    if obj is None:
        raise not_found()
    return obj


async def describe_object(request: web.Request) -> web.Response:
    obj = _object(request)
    hidden = request.app[STATE].org.security.hidden(obj.name)
    return json_response(describe.describe_object(obj, request.match_info["version"], hidden))


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise json_parser_error(f"Unexpected character: {exc}") from exc
    if not isinstance(body, dict):
        raise json_parser_error("Cannot deserialize instance of sObject from a non-object")
    return body


async def object_info_or_create(request: web.Request) -> web.Response:
    state = request.app[STATE]
    obj = _object(request)
    version = request.match_info["version"]
    if request.method == "POST":
        record_id = state.org.create(obj.name, await _json_body(request), transaction_for(request))
        return json_response({"id": record_id, "success": True, "errors": []}, 201)
    store = state.org.stores[obj.name]
    recent = [r for r in reversed(store.records.values()) if not r[1]][:5] if store.records else []
    columns = resolve_columns(state, obj.name, ["Id", "Name"])
    items = [record_json(obj, columns, r, version) for r in recent]
    return json_response(describe.basic_info(obj, version, items))


async def record(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    obj = _object(request)
    record_id = request.match_info["record_id"]
    if request.method == "PATCH":
        state.org.update(obj.name, record_id, await _json_body(request), transaction_for(request))
        return web.Response(status=204)
    if request.method == "DELETE":
        state.org.delete(obj.name, record_id, transaction_for(request))
        return web.Response(status=204)
    found = state.org.live_record(obj.name, record_id)
    fields = request.query.get("fields")
    if fields:
        columns = resolve_columns(state, obj.name, [f.strip() for f in fields.split(",")])
    else:
        columns = list(all_columns(FieldResolver(state.org, obj, ""), obj))
    return json_response(record_json(obj, columns, found, request.match_info["version"]))


async def limits(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    usage = state.usage
    jobs_used = state.jobs.created_count

    def entry(maximum: int, used: int = 0) -> dict[str, int]:
        return {"Max": maximum, "Remaining": max(0, maximum - used)}

    return json_response(
        {
            "DailyApiRequests": entry(usage.max, usage.used),
            "DailyBulkApiBatches": entry(15_000),
            "DailyBulkV2QueryJobs": entry(10_000, jobs_used),
            "DailyBulkV2QueryFileStorageMB": entry(976_562),
            "DailyDeliveredPlatformEvents": entry(50_000),
            "DailyDurableStreamingApiEvents": entry(1_000_000),
            "DurableStreamingApiConcurrentClients": entry(2_000),
            "MonthlyPlatformEventsUsageEntitlement": entry(0),
            "DataStorageMB": entry(
                1_024, sum(len(s.records) for s in state.org.stores.values()) // 500
            ),
            "FileStorageMB": entry(1_024),
        }
    )


def add_rest_routes(app: web.Application) -> None:
    from sfamp_sandbox.salesforce import replication, rest_query

    v = "/services/data/v{version:\\d+\\.\\d}"
    slash = "{slash:/?}"
    router = app.router
    router.add_get("/services/data{slash:/?}", list_versions)
    router.add_get(f"{v}{slash}", resources)
    router.add_get(f"{v}/sobjects{slash}", global_describe)
    router.add_get(f"{v}/sobjects/{{sobject}}/describe{slash}", describe_object)
    router.add_get(f"{v}/sobjects/{{sobject}}/deleted{slash}", replication.deleted)
    router.add_get(f"{v}/sobjects/{{sobject}}/updated{slash}", replication.updated)
    for method in ("GET", "POST"):
        router.add_route(method, f"{v}/sobjects/{{sobject}}{slash}", object_info_or_create)
    for method in ("GET", "PATCH", "DELETE"):
        router.add_route(method, f"{v}/sobjects/{{sobject}}/{{record_id}}{slash}", record)
    router.add_get(f"{v}/{{endpoint:query|queryAll}}{slash}", rest_query.run_query)
    router.add_get(f"{v}/{{endpoint:query|queryAll}}/{{locator}}", rest_query.query_more)
    for method in ("GET", "POST"):
        router.add_route(
            method, f"{v}/composite/sobjects/{{sobject}}{slash}", rest_query.retrieve_collection
        )
    router.add_get(f"{v}/limits{slash}", limits)
