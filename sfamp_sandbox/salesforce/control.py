"""Control API under ``/__sandbox/`` (no auth): seed data, move the clock, script faults,
inject CDC events, read and write records, field-level security, API usage, reset.

The control API acts as an administrator: it reads and writes every field, whatever the API
user's field-level security, and it alone can create person accounts.

- ``POST /__sandbox/seed`` ``{"object": "Account", "count": N}`` adds generated records and
  answers their ids. Seeding is silent unless ``"emit_events": true``;
  ``"person_accounts": true`` makes generated Accounts person accounts;
  ``"age_seconds": S`` dates them S seconds ago (``CreatedDate``, ``LastModifiedDate``,
  ``SystemModstamp``), as records last changed long before, instead of now.
- ``POST /__sandbox/records/{object}`` with field values creates one record (a person account
  with ``"IsPersonAccount": true`` and ``FirstName``/``LastName``/``Salutation``);
  ``GET|PATCH|DELETE /__sandbox/records/{object}/{id}`` reads, changes or deletes one, and
  ``POST .../{id}/undelete`` restores it. Each answers the record with every field.
  Writes emit change events like REST writes do (``changeOrigin`` of REST v62.0) unless
  ``"emit_events": false`` is in the body or ``?emit_events=false`` in the URL: then the
  stored values change silently, as when Salesforce recalculates a formula or changes a field
  in the background, and only ``SystemModstamp`` moves (``LastModifiedDate`` does not).
- ``POST /__sandbox/field-security`` ``{"object": "Account", "field": "Industry",
  "readable": false}`` hides a field from the API user (``true`` shows it again); ``GET``
  reads the state. Both answer ``{"hidden": {"Account": ["Industry"]}}``. A hidden field is
  left out of describe and of change events, and SOQL (REST query, queryAll, retrieve,
  Bulk API 2.0 jobs) and API writes that name it fail with ``INVALID_FIELD``. Hiding one
  part of an address hides the whole address.
- ``POST /__sandbox/events`` injects merged updates (``multi_update``), ``gap`` and
  ``gap_overflow`` events or a ``schema_change``; ``GET /__sandbox/events?after=N`` lists them.
- ``GET|POST /__sandbox/clock`` (``{"advance_seconds": S}``), ``POST /__sandbox/faults``
  (scripted REST and CometD failures, ``count`` 1-10000 uses; ``DELETE`` forgets those
  not used yet), ``POST /__sandbox/limits`` (API usage).
- ``GET|POST /__sandbox/latency`` (``{"ms": N}``): every API request (REST, Bulk, OAuth,
  CometD, not this control API) is answered N ms later, like a WAN round trip; see
  :mod:`sfamp_sandbox.latency`.
- ``POST /__sandbox/reset`` forgets records, jobs, cursors, faults, usage, events and
  field-level security; the latency stays, as it is a setting of the sandbox, not its data.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from sfamp_sandbox.fault_limits import fault_count, fault_delay
from sfamp_sandbox.salesforce.api_error import ApiError, json_parser_error
from sfamp_sandbox.salesforce.cdc import CHANGE_TYPES
from sfamp_sandbox.salesforce.org import Transaction
from sfamp_sandbox.salesforce.query import FieldResolver
from sfamp_sandbox.salesforce.render import all_columns, record_json
from sfamp_sandbox.salesforce.seed import seed
from sfamp_sandbox.salesforce.state import (
    COMETD_FAULTS,
    REST_FAULTS,
    STATE,
    SandboxState,
    error_response,
    json_response,
)
from sfamp_sandbox.salesforce.values import datetime_rest

MAX_SEED = 5_000_000
GAP_TYPES = frozenset(t for t in CHANGE_TYPES if t.startswith("GAP_") and t != "GAP_OVERFLOW")


@web.middleware
async def control_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    if not request.path.startswith("/__sandbox"):
        response: web.StreamResponse = await handler(request)
        return response
    try:
        response = await handler(request)
    except ApiError as error:
        return error_response(error)
    except (KeyError, TypeError, ValueError) as exc:
        return json_response({"error": "bad_request", "message": str(exc)}, 400)
    return response


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise json_parser_error(str(exc)) from exc
    if not isinstance(body, dict):
        raise json_parser_error("expected a JSON object")
    return body


def _tx(state: SandboxState) -> Transaction:
    return Transaction(state.org.admin.id)


def _record_body(state: SandboxState, object_name: str, record_id: str) -> dict[str, Any]:
    store = state.org.store(object_name)
    found = state.org.find_record(store.obj.name, record_id)
    if found is None:
        raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
    columns = all_columns(FieldResolver(state.org, store.obj, "", secure=False), store.obj)
    return record_json(store.obj, columns, found, "62.0")


async def seed_records(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _body(request)
    count = int(body.get("count", 1))
    if not 0 <= count <= MAX_SEED:
        raise ValueError(f"count must be between 0 and {MAX_SEED}")
    ids = seed(
        state.org,
        str(body["object"]),
        count,
        emit_events=bool(body.get("emit_events", False)),
        seed_value=body.get("seed"),
        person_accounts=bool(body.get("person_accounts", False)),
        age_seconds=float(body.get("age_seconds", 0)),
    )
    answer: dict[str, Any] = {
        "object": state.org.store(str(body["object"])).obj.name,
        "count": len(ids),
    }
    if body.get("return_ids", True):
        answer["ids"] = ids
    return json_response(answer)


def _now_body(state: SandboxState) -> dict[str, Any]:
    now = state.clock.now()
    return {"now": datetime_rest(int(now * 1000)), "epoch_seconds": now}


async def clock(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "POST":
        state.clock.advance(float((await _body(request)).get("advance_seconds", 0)))
    return json_response(_now_body(state))


async def faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "DELETE":  # what is queued, and nothing else (unlike a reset)
        state.faults.pending.clear()
        if state.cometd is not None:
            state.cometd.clear_faults()
        return json_response({"pending_rest_faults": 0})
    body = await _body(request)
    kind = str(body["kind"])
    count = fault_count(body.get("count", 1))
    delay = fault_delay(body.get("delay_seconds", 0.0))
    if kind in REST_FAULTS:
        state.faults.add(kind, count, delay)
    elif kind in COMETD_FAULTS:
        if kind == "expire_sessions":
            state.sessions.expire_all()
        if state.cometd is not None:
            state.cometd.inject_fault(kind, count)
    else:
        known = ", ".join(sorted({*REST_FAULTS, *COMETD_FAULTS}))
        raise ValueError(f"unknown fault kind {kind!r}; the kinds are {known}")
    return json_response(
        {"kind": kind, "count": count, "pending_rest_faults": len(state.faults.pending)}
    )


async def inject_event(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _body(request)
    kind, object_name = str(body["type"]), str(body["object"])
    tx = _tx(state)
    if kind == "multi_update":
        ids = state.org.multi_update(object_name, body["ids"], body["fields"], tx)
        return json_response({"ids": ids, "transaction_key": tx.key})
    if kind == "gap":
        change_type = str(body.get("change_type", "GAP_UPDATE"))
        if change_type not in GAP_TYPES:
            raise ValueError(f"change_type must be one of {sorted(GAP_TYPES)}")
        state.org.emit_gap(object_name, change_type, body["ids"], tx)
    elif kind == "gap_overflow":
        state.org.emit_gap(object_name, "GAP_OVERFLOW", [], tx)
    elif kind == "schema_change":
        return json_response(
            {"schema": state.events.change_schema(state.org.store(object_name).obj.name)}
        )
    else:
        raise ValueError(f"unknown event type {kind!r}")
    return json_response(
        {"transaction_key": tx.key, "latest_replay_id": state.events.latest_replay_id}
    )


async def list_events(request: web.Request) -> web.Response:
    state = request.app[STATE]
    after = int(request.query.get("after", "-2"))
    limit = min(int(request.query.get("limit", "1000")), 10_000)
    entity = request.query.get("object", "")
    return json_response(state.events.events_after(after, entity_name=entity, limit=limit))


def _emit_events(request: web.Request, body: dict[str, Any]) -> bool:
    """``emit_events`` from the body (removed from it) or the query string; true by default."""
    flag: Any = body.pop("emit_events", request.query.get("emit_events", True))
    if isinstance(flag, str) and flag.lower() in {"true", "false", "1", "0"}:
        flag = flag.lower() in {"true", "1"}
    if not isinstance(flag, bool):
        raise ValueError("emit_events must be true or false")
    return flag


async def create_record(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _body(request)
    emit = _emit_events(request, body)
    record_id = state.org.create(request.match_info["object"], body, _tx(state), emit=emit)
    return json_response({"id": record_id}, 201)


async def record(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name, record_id = request.match_info["object"], request.match_info["id"]
    if request.method == "PATCH":
        body = await _body(request)
        emit = _emit_events(request, body)
        state.org.update(name, record_id, body, _tx(state), emit=emit)
    elif request.method == "DELETE":
        emit = _emit_events(request, {})
        state.org.delete(name, record_id, _tx(state), emit=emit)
    return json_response(_record_body(state, name, record_id))


async def undelete(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name, record_id = request.match_info["object"], request.match_info["id"]
    body = await _body(request)
    state.org.undelete(name, record_id, _tx(state), emit=_emit_events(request, body))
    return json_response(_record_body(state, name, record_id))


async def field_security(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "POST":
        body = await _body(request)
        obj = state.org.store(str(body["object"])).obj
        readable = body["readable"]
        if not isinstance(readable, bool):
            raise ValueError("readable must be true or false")
        state.org.security.set_readable(obj, str(body["field"]), readable)
    return json_response({"hidden": state.org.security.snapshot()})


async def limits(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _body(request)
    state.usage.max = int(body.get("max", state.usage.max))
    state.usage.used = int(body.get("used", state.usage.used))
    return json_response({"max": state.usage.max, "used": state.usage.used})


async def latency(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "POST":
        state.latency.set_from(await _body(request))
    return json_response(state.latency.as_dict())


async def reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.org.reset()
    state.jobs.clear()
    state.cursors.clear()
    state.faults.pending.clear()
    state.usage.used = 0
    state.sessions.refresh_token_valid = True
    state.events.reset()
    return json_response({"reset": True})


async def summary(request: web.Request) -> web.Response:
    state = request.app[STATE]
    counts = {name: len(store.records) for name, store in state.org.stores.items()}
    return json_response(
        {
            "org_id": state.org.org_id,
            "records": counts,
            "latest_replay_id": state.events.latest_replay_id,
            "api_usage": {"max": state.usage.max, "used": state.usage.used},
            **_now_body(state),
        }
    )


def add_control_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/__sandbox", summary)
    router.add_post("/__sandbox/seed", seed_records)
    router.add_get("/__sandbox/clock", clock)
    router.add_post("/__sandbox/clock", clock)
    router.add_post("/__sandbox/faults", faults)
    router.add_delete("/__sandbox/faults", faults)
    router.add_post("/__sandbox/events", inject_event)
    router.add_get("/__sandbox/events", list_events)
    router.add_post("/__sandbox/records/{object}", create_record)
    for method in ("GET", "PATCH", "DELETE"):
        router.add_route(method, "/__sandbox/records/{object}/{id}", record)
    router.add_post("/__sandbox/records/{object}/{id}/undelete", undelete)
    router.add_get("/__sandbox/field-security", field_security)
    router.add_post("/__sandbox/field-security", field_security)
    router.add_post("/__sandbox/limits", limits)
    router.add_get("/__sandbox/latency", latency)
    router.add_post("/__sandbox/latency", latency)
    router.add_post("/__sandbox/reset", reset)
