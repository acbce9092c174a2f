"""REST query, queryAll, query-more and sObject Collections retrieve (reference §2.4, §2.6).

``FieldDefinition`` queries are answered from the schema by :mod:`field_definitions`."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from sfamp_sandbox.salesforce.api_error import ApiError, invalid_field, json_parser_error
from sfamp_sandbox.salesforce.field_definitions import answer as field_definitions
from sfamp_sandbox.salesforce.field_definitions import is_field_definition
from sfamp_sandbox.salesforce.ids import to_18
from sfamp_sandbox.salesforce.org import Record
from sfamp_sandbox.salesforce.query import Column, CompiledQuery, FieldResolver, compile_parsed
from sfamp_sandbox.salesforce.render import record_json
from sfamp_sandbox.salesforce.soql import FieldRef, parse
from sfamp_sandbox.salesforce.state import STATE, SandboxState, json_response

DEFAULT_BATCH = 2000
MAX_CURSORS = 500
CURSOR_IDLE_SECONDS = 15 * 60
MAX_COLLECTION_IDS = 2000
MAX_COLLECTION_GET_IDS = 800


@dataclass(slots=True)
class Cursor:
    compiled: CompiledQuery
    rows: list[Record]
    batch: int
    endpoint: str
    touched: float


class QueryCursors:
    """Open query locators, bounded; idle ones expire like Salesforce's (~15 min)."""

    def __init__(self) -> None:
        self._cursors: OrderedDict[str, Cursor] = OrderedDict()

    def open(self, cursor: Cursor) -> str:
        locator = "01g" + secrets.token_hex(6)[:12]
        self._cursors[locator] = cursor
        while len(self._cursors) > MAX_CURSORS:
            self._cursors.popitem(last=False)
        return locator

    def get(self, locator: str, now: float) -> Cursor:
        cursor = self._cursors.get(locator)
        if cursor is None or now - cursor.touched > CURSOR_IDLE_SECONDS:
            self._cursors.pop(locator, None)
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        cursor.touched = now
        self._cursors.move_to_end(locator)
        return cursor

    def close(self, locator: str) -> None:
        self._cursors.pop(locator, None)

    def clear(self) -> None:
        self._cursors.clear()


def batch_size(header: str | None) -> int:
    """``Sforce-Query-Options: batchSize=N``: 200..2000 in Salesforce; smaller sizes are allowed
    here so that tests can page through small data."""
    if not header:
        return DEFAULT_BATCH
    for option in header.split(","):
        name, _, value = option.strip().partition("=")
        if name.strip().lower() == "batchsize" and value.strip().isdigit():
            return max(1, min(DEFAULT_BATCH, int(value)))
    return DEFAULT_BATCH


def _page(
    state: SandboxState,
    cursor: Cursor,
    locator: str | None,
    offset: int,
    version: str,
) -> dict[str, Any]:
    compiled = cursor.compiled
    rows = cursor.rows[offset : offset + cursor.batch]
    body: dict[str, Any] = {"totalSize": len(cursor.rows), "done": True}
    end = offset + len(rows)
    if end < len(cursor.rows):
        locator = locator or state.cursors.open(cursor)
        body["done"] = False
        body["nextRecordsUrl"] = f"/services/data/v{version}/{cursor.endpoint}/{locator}-{end}"
    elif locator:
        state.cursors.close(locator)
    body["records"] = [record_json(compiled.obj, compiled.columns, r, version) for r in rows]
    return body


async def run_query(request: web.Request) -> web.Response:
    state = request.app[STATE]
    endpoint = request.match_info["endpoint"]
    text = request.query.get("q")
    if not text:
        raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
    query = parse(text)
    if is_field_definition(query):
        return json_response(field_definitions(query, request.match_info["version"]))
    compiled = compile_parsed(state.org, query)
    rows = compiled.run(state.org, include_deleted=endpoint == "queryAll")
    if compiled.query.count:
        return json_response({"totalSize": len(rows), "done": True, "records": []})
    cursor = Cursor(
        compiled,
        rows,
        batch_size(request.headers.get("Sforce-Query-Options")),
        endpoint,
        state.clock.now(),
    )
    return json_response(_page(state, cursor, None, 0, request.match_info["version"]))


async def query_more(request: web.Request) -> web.Response:
    state = request.app[STATE]
    locator, _, offset = request.match_info["locator"].rpartition("-")
    if not locator or not offset.isdigit():
        raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    cursor = state.cursors.get(locator, state.clock.now())
    return json_response(_page(state, cursor, locator, int(offset), request.match_info["version"]))


def _split(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise json_parser_error("ids and fields must be lists of strings")


async def retrieve_collection(request: web.Request) -> web.Response:
    """Records by id in request order, ``null`` for unknown, malformed or deleted ids."""
    state = request.app[STATE]
    store = state.org.store(request.match_info["sobject"])
    if request.method == "POST":
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise json_parser_error(str(exc)) from exc
        if not isinstance(body, dict):
            raise json_parser_error("expected a JSON object")
        ids, names, cap = (
            _split(body.get("ids", [])),
            _split(body.get("fields", [])),
            MAX_COLLECTION_IDS,
        )
    else:
        ids = _split(request.query.get("ids", ""))
        names, cap = _split(request.query.get("fields", "")), MAX_COLLECTION_GET_IDS
    if not ids or not names:
        raise ApiError(400, "MALFORMED_QUERY", "ids and fields are required")
    if len(ids) > cap:
        raise ApiError(
            400,
            "EXCEEDED_ID_LIMIT",
            f"record limit reached. cannot submit more than {cap} records into this call",
        )
    columns = resolve_columns(state, store.obj.name, names)
    version = request.match_info["version"]
    out: list[dict[str, Any] | None] = []
    for record_id in ids:
        try:
            record = store.records.get(to_18(record_id))
        except ValueError:
            record = None
        if record is None or record[1]:
            out.append(None)
        else:
            out.append(record_json(store.obj, columns, record, version))
    return json_response(out)


def resolve_columns(state: SandboxState, object_name: str, names: list[str]) -> list[Column]:
    obj = state.org.store(object_name).obj
    resolver = FieldResolver(state.org, obj, "")
    columns = []
    for name in names:
        try:
            columns.append(resolver.column(FieldRef(name, 0)))
        except ApiError as exc:
            raise invalid_field(name, obj.name) from exc
    return columns
