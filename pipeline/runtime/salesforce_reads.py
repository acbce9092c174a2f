"""What the pumps read from Salesforce: object schemas and records by id.

Both go through the REST adapter, so session expiry, limits and outages are
already translated into the project's errors by the time they reach a pump.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Protocol

import structlog

from pipeline.config.mapping import MappingConfig
from pipeline.errors import SalesforceError, SalesforceRequestError
from pipeline.transform.plan import plan_for
from pipeline.transform.schema import ObjectSchema, schema_from_describe

log = structlog.get_logger(__name__)

# Ids per SOQL IN list: about 6 KB of URL, far below Salesforce's 16 KB limit.
IDS_PER_QUERY = 300
# Field-level security can hide or show a field at any time, and the transform must
# know: a CREATE or UNDELETE lacking a hidden field says nothing about it. A describe
# older than this is read again.
SCHEMA_MAX_AGE_SECONDS = 300.0


class RestReads(Protocol):
    async def describe(self, sobject: str) -> dict[str, Any]: ...

    def query(self, soql: str, *, all_rows: bool = False) -> AsyncIterator[dict[str, Any]]: ...


class SchemaCache:
    """Describes each object, again once that is ``max_age_seconds`` old; the transform
    converts values by field type and knows which fields the user may read."""

    def __init__(
        self,
        rest: RestReads,
        *,
        max_age_seconds: float = SCHEMA_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rest = rest
        self._schemas: dict[str, ObjectSchema | None] = {}
        self._read_at: dict[str, float] = {}
        self._max_age = max_age_seconds
        self._clock = clock

    def cached(self, sfdc_object: str) -> ObjectSchema | None:
        return self._schemas.get(sfdc_object)

    async def ensure(self, objects: Iterable[str]) -> None:
        for sfdc_object in objects:
            read_at = self._read_at.get(sfdc_object)
            if read_at is not None and self._clock() - read_at < self._max_age:
                continue
            try:
                describe = await self._rest.describe(sfdc_object)
            except SalesforceRequestError as exc:
                # Refused for good (object gone, no access): convert values as they
                # come rather than stop every object's changes. Verify tells why.
                log.error("describe_refused", object=sfdc_object, reason=str(exc))
                self._schemas[sfdc_object] = None
            except SalesforceError as exc:
                if read_at is None:
                    raise
                # A refresh failed (outage, limits): keep the describe we have.
                log.warning("describe_refresh_failed", object=sfdc_object, reason=str(exc))
            else:
                self._schemas[sfdc_object] = schema_from_describe(describe)
            self._read_at[sfdc_object] = self._clock()

    def forget(self) -> None:
        self._schemas.clear()
        self._read_at.clear()


def fields_to_read(
    config: MappingConfig, sfdc_object: str, schema: ObjectSchema | None
) -> list[str]:
    """Id and every field any mapping of the object reads, compounds as components."""
    names = ["Id"]
    for mapping in config.for_object(sfdc_object):
        plan = plan_for(mapping, schema)
        names += [mapping.group_name_field, *plan.read_fields]
    return list(dict.fromkeys(names))


async def records_by_id(
    rest: RestReads, sfdc_object: str, ids: Iterable[str], fields: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Current values of the given records, deleted ones included (``queryAll``)."""
    wanted = sorted(set(ids))
    select = ", ".join(dict.fromkeys(["Id", "IsDeleted", *fields]))
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), IDS_PER_QUERY):
        chunk = wanted[start : start + IDS_PER_QUERY]
        in_list = ", ".join(f"'{_quoted(record_id)}'" for record_id in chunk)
        # Names come from a validated mapping and ids are checked alphanumeric.
        soql = f"SELECT {select} FROM {sfdc_object} WHERE Id IN ({in_list})"  # noqa: S608
        async for record in rest.query(soql, all_rows=True):
            found[str(record["Id"])] = record
    # Callers may hold 15-character ids; index the 18-character answers by both.
    for record_id, record in list(found.items()):
        found.setdefault(record_id[:15], record)
    return found


def _quoted(record_id: str) -> str:
    if not record_id.isalnum():
        raise SalesforceRequestError(f"not a Salesforce record id: {record_id!r}")
    return record_id
