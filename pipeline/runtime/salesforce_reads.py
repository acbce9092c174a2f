"""What the pumps read from Salesforce: object schemas and records by id.

Both go through the REST adapter, so session expiry, limits and outages are
already translated into the project's errors by the time they reach a pump.

Records are read by id in batches (SOQL ``Id IN (...)``), and one bad id must
not fail its neighbours: ids that cannot be Salesforce ids are refused before
any query, and a batch Salesforce refuses because of an id is split in halves
until that id is alone. A refusal that concerns every id (a field the user may
not read, an unknown object) is raised as before.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog

from pipeline.config.mapping import MappingConfig
from pipeline.errors import SalesforceError, SalesforceRequestError, UnreadableFieldsError
from pipeline.transform.plan import plan_for
from pipeline.transform.schema import (
    ObjectSchema,
    compound_candidates,
    schema_from_describe,
    unreadable_fields,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

# An undelete as the envelope codec writes it (no spaces; see _carried_search).
_UNDELETE = b'"op":"undelete"'
# How Salesforce names the field a query is refused for (INVALID_FIELD).
_NO_SUCH_COLUMN = re.compile(r"No such column '([A-Za-z0-9_]+)'")
# Ids per SOQL IN list: about 6 KB of URL, far below Salesforce's 16 KB limit.
IDS_PER_QUERY = 300
# Error codes with which Salesforce refuses a query for one bad id in its IN list.
_ID_ERROR_CODES = frozenset({"MALFORMED_ID", "INVALID_ID_FIELD", "INVALID_QUERY_FILTER_OPERATOR"})
_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-5]{3})?")
_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
# Field-level security can hide or show a field at any time, and the transform must
# know: a CREATE or UNDELETE lacking a hidden field says nothing about it. A describe
# older than this is read again.
SCHEMA_MAX_AGE_SECONDS = 300.0
# A change that carries a mapped field the describe lacks (shown again since) has the
# object described again at once, then at most this often while the describe still
# lacks it.
REDESCRIBE_SECONDS = 30.0


class CarriedChange(Protocol):
    """A Kafka record of a change (aiokafka's ``ConsumerRecord``): its raw JSON value."""

    @property
    def value(self) -> bytes | None: ...


class RestReads(Protocol):
    async def describe(self, sfdc_object: str) -> dict[str, Any]: ...

    def query(self, soql: str, *, all_rows: bool = False) -> AsyncIterator[dict[str, Any]]: ...


# Told, after each describe read for a mapping, the mapped fields it omits (none: all
# readable): (object, fields).
HiddenFields = Callable[[str, frozenset[str]], None]


class SchemaCache:
    """Describes each object, again once that is ``max_age_seconds`` old; the transform
    converts values by field type and knows which fields the user may read.

    ``on_hidden`` is told which mapped fields each describe read for a mapping omits
    (:meth:`ensure_mapped`), so that the service can show them.
    """

    def __init__(
        self,
        rest: RestReads,
        *,
        max_age_seconds: float = SCHEMA_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        on_hidden: HiddenFields | None = None,
    ) -> None:
        self._rest = rest
        self._on_hidden = on_hidden
        self._schemas: dict[str, ObjectSchema | None] = {}
        self._read_at: dict[str, float] = {}
        self._max_age = max_age_seconds
        self._clock = clock
        self._redescribed_at: dict[str, float] = {}
        # per object: when a describe read for a carried field (see ensure_current) still
        # lacked one
        self._carried_lacking_at: dict[str, float] = {}
        # per object: the mapping and describe it was made for, and the search of their
        # mapped fields the describe lacks (None: it lacks none)
        self._searches: dict[str, tuple[MappingConfig, ObjectSchema | None, _Search | None]] = {}
        # per object: the mapped fields its describe omitted when last described
        self._hidden: dict[str, frozenset[str]] = {}

    def cached(self, sfdc_object: str) -> ObjectSchema | None:
        return self._schemas.get(sfdc_object)

    async def ensure(self, objects: Iterable[str]) -> set[str]:
        """Describe each of ``objects`` whose describe is missing or old; answers those
        described (a refused one included). A failed refresh keeps the describe there is;
        a failed first describe raises."""
        described: set[str] = set()
        for sfdc_object in objects:
            read_at = self._read_at.get(sfdc_object)
            if read_at is not None and self._clock() - read_at < self._max_age:
                continue
            try:
                schema = schema_from_describe(await self._rest.describe(sfdc_object))
            except SalesforceRequestError as exc:
                # Refused for good (object gone, no access): rather than stop every
                # object's changes, keep converting by the describe there is; with none,
                # values are taken as they come. Verify tells why.
                log.error("describe_refused", object=sfdc_object, reason=str(exc))
                if self._schemas.get(sfdc_object) is None:
                    self._schemas[sfdc_object] = None
                    described.add(sfdc_object)
            except SalesforceError as exc:
                if read_at is None:
                    raise
                # A refresh failed (outage, limits, an answer it cannot read): keep the
                # describe we have.
                log.warning("describe_refresh_failed", object=sfdc_object, reason=str(exc))
            else:
                self._schemas[sfdc_object] = schema
                described.add(sfdc_object)
            self._read_at[sfdc_object] = self._clock()
        return described

    async def ensure_mapped(self, config: MappingConfig, objects: Iterable[str]) -> set[str]:
        """:meth:`ensure`, then say which mapped fields each new describe omits (logged when
        newly hidden, and told to ``on_hidden``)."""
        described = await self.ensure(objects)
        for sfdc_object in described:
            self._say_hidden(config, sfdc_object)
        return described

    async def describe_again(
        self, config: MappingConfig, sfdc_object: str, refused: str | None = None
    ) -> bool:
        """Describe ``sfdc_object`` again now, unless that was done in the last
        :data:`REDESCRIBE_SECONDS` and the describe no longer lists ``refused``; True
        when a new describe was read.

        For a read Salesforce refused for a field (``INVALID_FIELD``, the field
        ``refused`` when its answer names it) that the describe lists: field-level
        security hid it since, and the new describe leaves it out. A field the describe
        still lists is always worth a new one (another hidden since the last, say).
        """
        now, last = self._clock(), self._redescribed_at.get(sfdc_object)
        schema = self._schemas.get(sfdc_object)
        listed = refused is not None and schema is not None and not schema.omits(refused)
        if last is not None and now - last < REDESCRIBE_SECONDS and not listed:
            return False
        self._redescribed_at[sfdc_object] = now
        self._read_at[sfdc_object] = -math.inf  # out of date: read again, kept if that fails
        return sfdc_object in await self.ensure_mapped(config, [sfdc_object])

    async def ensure_current(
        self, config: MappingConfig, changes: Iterable[tuple[str | None, Sequence[CarriedChange]]]
    ) -> None:
        """:meth:`ensure` the mapped objects of ``changes`` (object or None, records), and
        describe again an object whose changes carry a mapped field its describe lacks.

        The transform leaves such a field alone, its type being unknown; a change can
        carry it only once field-level security shows it again, so the describe that
        lacks it is out of date, and waiting for its age would leave the change's new
        values out. Records are searched in their raw bytes (no decoding) for the keys a
        change would carry the field under, and only for objects whose describe lacks a
        mapped field. A describe read by this very call is not read again; one read for a
        carried field that still lacks one holds the next back :data:`REDESCRIBE_SECONDS`
        (no other describe does). A failed refresh keeps the describe there is, as
        :meth:`ensure` does.
        """
        mapped = [(o, records) for o, records in changes if o is not None and config.for_object(o)]
        described = await self.ensure_mapped(config, dict.fromkeys(o for o, _ in mapped))
        carried: dict[str, list[CarriedChange]] = {}
        for sfdc_object, records in mapped:
            if sfdc_object not in described and self._carries_missing(config, sfdc_object, records):
                carried.setdefault(sfdc_object, []).extend(records)
        for sfdc_object, records in carried.items():
            await self._describe_for_carried(config, sfdc_object, records)
        # An undelete takes a field it lacks for null: one hidden since the describe would
        # be unset. So its object is described again first (at most every 30 s).
        for sfdc_object, records in mapped:
            fresh = sfdc_object in described or sfdc_object in carried
            if not fresh and any(_UNDELETE in r.value for r in records if r.value):
                await self.describe_again(config, sfdc_object)

    async def _describe_for_carried(
        self, config: MappingConfig, sfdc_object: str, records: Sequence[CarriedChange]
    ) -> None:
        """Describe again an object whose ``records`` carry a mapped field its describe
        lacks, unless a describe read for that within :data:`REDESCRIBE_SECONDS` still
        lacked one: only such a describe holds the next back (one read for another reason,
        an undelete's, says nothing of fields shown since)."""
        now, lacked = self._clock(), self._carried_lacking_at.get(sfdc_object)
        if lacked is not None and now - lacked < REDESCRIBE_SECONDS:
            return
        self._read_at[sfdc_object] = -math.inf  # out of date: read again, kept if that fails
        lacking = missing_fields(config, sfdc_object, self._schemas.get(sfdc_object))
        await self.ensure_mapped(config, [sfdc_object])
        schema = self._schemas.get(sfdc_object)
        still = missing_fields(config, sfdc_object, schema)
        if self._carries_missing(config, sfdc_object, records):
            # Left alone until a describe lists them; said once per try.
            self._carried_lacking_at[sfdc_object] = now
            log.warning("describe_lacks_carried_fields", object=sfdc_object, fields=sorted(still))
        else:
            self._carried_lacking_at.pop(sfdc_object, None)
        if schema is not None and lacking - still:
            # What changed while they were hidden reached no change event.
            log.warning(
                "mapped_fields_readable_again",
                object=sfdc_object,
                fields=sorted(lacking - still),
                hint=f"values changed while they were hidden arrive with their next "
                f"change; 'sfamp backfill --object {sfdc_object}' brings them now",
            )

    def _say_hidden(self, config: MappingConfig, sfdc_object: str) -> None:
        """Log the mapped fields a describe omits, once until they are listed again: reads
        leave them out (their properties are left alone), and nothing else would say so."""
        schema = self._schemas.get(sfdc_object)
        if schema is None:  # refused: it says nothing of which fields can be read
            return
        missing = missing_fields(config, sfdc_object, schema)
        hidden = missing - self._hidden.get(sfdc_object, frozenset())
        self._hidden[sfdc_object] = missing
        if self._on_hidden is not None:
            self._on_hidden(sfdc_object, missing)
        if hidden:
            log.error(
                "mapped_fields_unreadable",
                object=sfdc_object,
                fields=sorted(hidden),
                permission="field-level security: Read Access",
                action="left alone: reads leave them out, no property is unset",
            )

    def _carries_missing(
        self, config: MappingConfig, sfdc_object: str, records: Sequence[CarriedChange]
    ) -> bool:
        schema = self._schemas.get(sfdc_object)
        cached = self._searches.get(sfdc_object)
        if cached is None or cached[0] is not config or cached[1] is not schema:
            missing = missing_fields(config, sfdc_object, schema)
            cached = (config, schema, _carried_search(missing, schema))
            self._searches[sfdc_object] = cached
        search = cached[2]
        if search is None:
            return False
        return any(search(value) for record in records if (value := record.value))

    def forget(self) -> None:
        self._schemas.clear()
        self._read_at.clear()


_Search = Callable[[bytes], object]


def _carried_search(missing: frozenset[str], schema: ObjectSchema | None) -> _Search | None:
    """A search of a change's JSON (as the envelope codec writes it: no spaces) for any
    of ``missing``: its own key or name, or its component inside the compound field its
    name says it belongs to (that field's key alone when the describe lacks it too)."""
    if not missing:
        return None
    patterns: set[bytes] = set()
    for name in missing:
        patterns.add(re.escape(f'"{name}"'.encode()))
        for parent, part in compound_candidates(name):
            patterns.add(re.escape(f'"{parent}.{part}"'.encode()))  # in changed or nulled
            if schema is not None and schema.field(parent) is not None:
                inside = f'"{parent}":{{'.encode()
                patterns.add(re.escape(inside) + rb"[^{}]*" + re.escape(f'"{part}"'.encode()))
            else:
                patterns.add(re.escape(f'"{parent}"'.encode()))
    return re.compile(b"|".join(sorted(patterns))).search


def mapped_fields(config: MappingConfig, sfdc_object: str) -> list[str]:
    """The fields ``config`` maps for ``sfdc_object`` (group name fields included), each
    once, as the mappings name them."""
    return list(
        dict.fromkeys(name for mapping in config.for_object(sfdc_object) for name in mapping.fields)
    )


def missing_fields(
    config: MappingConfig, sfdc_object: str, schema: ObjectSchema | None
) -> frozenset[str]:
    """The fields ``config`` maps for ``sfdc_object`` that ``schema`` does not describe
    (none without a schema: then every value is taken as it comes)."""
    if schema is None:
        return frozenset()
    return frozenset(unreadable_fields(schema, mapped_fields(config, sfdc_object)))


async def read_described(
    schemas: SchemaCache,
    config: MappingConfig,
    sfdc_object: str,
    read: Callable[[ObjectSchema | None], Awaitable[T]],
) -> T:
    """``read(schema)`` under the cached describe, and once more under a new one when
    Salesforce refuses it for a field (``INVALID_FIELD``): one hidden by field-level
    security since the describe was read, which the new one leaves out (see
    :meth:`SchemaCache.describe_again`). Any other refusal, or the same one again, is
    raised."""
    try:
        return await read(schemas.cached(sfdc_object))
    except SalesforceRequestError as exc:
        if exc.error_code != "INVALID_FIELD":
            raise
        if not await schemas.describe_again(config, sfdc_object, refused_field(exc)):
            raise
    return await read(schemas.cached(sfdc_object))


def refused_field(exc: SalesforceRequestError) -> str | None:
    """The field Salesforce names in a refusal for it ("No such column 'X' on entity
    'Account'", ``INVALID_FIELD``, or a Bulk job failed with that message), or None."""
    column = _NO_SUCH_COLUMN.search(str(exc))
    return column.group(1) if column else None


def refuse_unreadable(config: MappingConfig, sfdc_object: str, schema: ObjectSchema) -> None:
    """Raise :class:`UnreadableFieldsError` naming the fields ``config`` maps for
    ``sfdc_object`` that ``schema`` omits: a read that must be whole (a backfill, a
    re-sync) stops and says so, where :func:`fields_to_read` would leave them out."""
    missing = unreadable_fields(schema, mapped_fields(config, sfdc_object))
    if missing:
        raise UnreadableFieldsError(sfdc_object, missing)


def fields_to_read(
    config: MappingConfig, sfdc_object: str, schema: ObjectSchema | None
) -> list[str]:
    """Id and every field any mapping of the object reads, compounds as components; not
    the fields the describe omits (hidden by field-level security: a query naming one is
    refused), but the group name field (see :func:`pipeline.transform.plan.compile_plan`)."""
    names = ["Id"]
    for mapping in config.for_object(sfdc_object):
        plan = plan_for(mapping, schema)
        names += [mapping.group_name_field, *plan.read_fields]
    return list(dict.fromkeys(names))


@dataclass(slots=True)
class RecordReads:
    """Records found by id (deleted ones too), and the ids that cannot be read, with why."""

    found: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


async def read_records(
    rest: RestReads, sfdc_object: str, ids: Iterable[str], fields: Sequence[str]
) -> RecordReads:
    """Current values of the given records, deleted ones included (``queryAll``).

    A bad id lands in ``refused`` alone; an unknown one is simply not found.
    """
    reads = RecordReads()
    wanted: list[str] = []
    for record_id in sorted(set(ids)):
        problem = id_problem(record_id)
        if problem is None:
            wanted.append(record_id)
        else:
            reads.refused[record_id] = problem
    select = ", ".join(dict.fromkeys(["Id", "IsDeleted", *fields]))

    def soql(chunk: Sequence[str]) -> str:
        in_list = ", ".join(f"'{record_id}'" for record_id in chunk)
        # Names come from a validated mapping; ids passed id_problem (letters and digits).
        return f"SELECT {select} FROM {sfdc_object} WHERE Id IN ({in_list})"  # noqa: S608

    for start in range(0, len(wanted), IDS_PER_QUERY):
        await _read_chunk(rest, soql, wanted[start : start + IDS_PER_QUERY], reads)
    # Callers may hold 15-character ids; index the 18-character answers by both.
    for record_id, record in list(reads.found.items()):
        reads.found.setdefault(record_id[:15], record)
    return reads


async def _read_chunk(
    rest: RestReads, soql: Callable[[Sequence[str]], str], chunk: Sequence[str], reads: RecordReads
) -> None:
    try:
        async for record in rest.query(soql(chunk), all_rows=True):
            reads.found[str(record["Id"])] = record
    except SalesforceRequestError as exc:
        if exc.error_code not in _ID_ERROR_CODES:
            raise  # about the query, not one id: every id of it fails alike
        if len(chunk) == 1:
            reads.refused[chunk[0]] = f"Salesforce refused the id {chunk[0]!r}: {exc}"
            return
        half = len(chunk) // 2
        await _read_chunk(rest, soql, chunk[:half], reads)
        await _read_chunk(rest, soql, chunk[half:], reads)


async def records_by_id(
    rest: RestReads, sfdc_object: str, ids: Iterable[str], fields: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Like :func:`read_records`, but any bad id raises SalesforceRequestError."""
    reads = await read_records(rest, sfdc_object, ids, fields)
    if reads.refused:
        raise SalesforceRequestError("; ".join(reads.refused.values()), error_code="MALFORMED_ID")
    return reads.found


def id_problem(record_id: str) -> str | None:
    """Why ``record_id`` cannot name a Salesforce record, or None when it can.

    A record id is 15 case-sensitive letters and digits, or those and a
    3-character checksum whose bits say which of the 15 are upper-case
    letters (the 18-character form may be written in any case).
    """
    if not _ID.fullmatch(record_id):
        return f"not a Salesforce record id: {record_id!r} (15 or 18 letters and digits)"
    for chunk, letter in enumerate(record_id[15:].upper()):
        bits = _CHECKSUM_ALPHABET.index(letter)
        group = record_id[chunk * 5 : chunk * 5 + 5]
        if any(bits >> n & 1 and not char.isalpha() for n, char in enumerate(group)):
            return f"not a Salesforce record id: {record_id!r} (its last 3 characters do not fit)"
    return None
