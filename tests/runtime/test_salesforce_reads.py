"""SchemaCache and record reads against a scripted REST adapter (pure unit tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog.testing

from pipeline.config.mapping import MappingConfig
from pipeline.errors import (
    SalesforceRequestError,
    SalesforceUnavailableError,
    UnreadableFieldsError,
)
from pipeline.runtime.salesforce_reads import (
    IDS_PER_QUERY,
    SchemaCache,
    fields_to_read,
    read_described,
    records_by_id,
    refuse_unreadable,
)
from pipeline.transform.envelope import ChangeEnvelope, encode
from pipeline.transform.schema import ObjectSchema, schema_from_describe
from tests.transform.fixtures import mapping


class ScriptedRest:
    def __init__(self, describe_error: Exception | None = None) -> None:
        self.describe_error = describe_error
        self.queries: list[tuple[str, bool]] = []

    async def describe(self, sobject: str) -> dict[str, Any]:
        if self.describe_error is not None:
            raise self.describe_error
        return {"name": sobject, "fields": [{"name": "Id", "type": "id"}]}

    async def query(self, soql: str, *, all_rows: bool = False) -> AsyncIterator[dict[str, Any]]:
        self.queries.append((soql, all_rows))
        ids = soql.split("IN (")[1].rstrip(")").replace("'", "").split(", ")
        for record_id in ids:
            yield {"Id": record_id + "AAA", "IsDeleted": False}


async def test_a_refused_describe_leaves_the_object_without_a_schema() -> None:
    cache = SchemaCache(ScriptedRest(SalesforceRequestError("gone", error_code="NOT_FOUND")))
    await cache.ensure(["Gone__c"])
    assert cache.cached("Gone__c") is None


async def test_an_unavailable_org_is_not_mistaken_for_a_missing_object() -> None:
    cache = SchemaCache(ScriptedRest(SalesforceUnavailableError("503")))
    with pytest.raises(SalesforceUnavailableError):
        await cache.ensure(["Account"])


async def test_records_by_id_reads_in_chunks_with_query_all_and_answers_15_char_ids() -> None:
    rest = ScriptedRest()
    ids = [f"001A{n:011d}" for n in range(IDS_PER_QUERY + 5)]
    found = await records_by_id(rest, "Account", ids, ["Name"])
    assert len(rest.queries) == 2
    assert all(all_rows for _, all_rows in rest.queries)
    assert rest.queries[0][0].startswith("SELECT Id, IsDeleted, Name FROM Account WHERE Id IN (")
    assert found[ids[0]]["Id"] == ids[0] + "AAA"


async def test_an_id_that_is_not_an_id_is_refused_before_any_query() -> None:
    rest = ScriptedRest()
    with pytest.raises(SalesforceRequestError):
        await records_by_id(rest, "Account", ["001' OR Name != '"], ["Name"])
    assert rest.queries == []


class ChangingRest(ScriptedRest):
    """Describes whatever fields the test sets; fails when ``error`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.fields = ["Id", "Industry"]
        self.error: Exception | None = None
        self.malformed = False  # an answer without its "fields" list
        self.describes = 0

    async def describe(self, sobject: str) -> dict[str, Any]:
        self.describes += 1
        if self.error is not None:
            raise self.error
        if self.malformed:
            return {"name": sobject}
        return {"name": sobject, "fields": [{"name": f, "type": "string"} for f in self.fields]}


async def test_a_describe_is_read_again_once_it_is_old() -> None:
    # Field-level security may hide a field at any time; the schema must learn it.
    now = [0.0]
    rest = ChangingRest()
    cache = SchemaCache(rest, max_age_seconds=300, clock=lambda: now[0])
    await cache.ensure(["Account"])
    rest.fields = ["Id"]
    now[0] = 299.0
    await cache.ensure(["Account"])
    assert rest.describes == 1
    assert cache.cached("Account").field("Industry") is not None  # type: ignore[union-attr]
    now[0] = 300.0
    await cache.ensure(["Account"])
    assert rest.describes == 2
    assert cache.cached("Account").field("Industry") is None  # type: ignore[union-attr]


async def test_a_failed_refresh_keeps_the_describe_it_has() -> None:
    now = [0.0]
    rest = ChangingRest()
    cache = SchemaCache(rest, max_age_seconds=300, clock=lambda: now[0])
    await cache.ensure(["Account"])
    rest.error = SalesforceUnavailableError("503")
    now[0] = 301.0
    await cache.ensure(["Account"])  # no error: the stale describe still converts values
    assert cache.cached("Account") is not None
    await cache.ensure(["Account"])
    assert rest.describes == 2, "a failed refresh waits another max age before it retries"


def _cache(*fields: str) -> tuple[SchemaCache, ChangingRest, list[float]]:
    """A cache over a describe of ``fields``, on a clock the test moves (``now[0]``)."""
    now = [0.0]
    rest = ChangingRest()
    rest.fields = list(fields)
    return SchemaCache(rest, max_age_seconds=300, clock=lambda: now[0]), rest, now


class Change:
    """A Kafka record of a change: what ensure_current reads of it is its raw value. The
    field names are in the body only (``changed`` is left empty) unless given."""

    def __init__(self, fields: dict[str, Any], changed: tuple[str, ...] = ()) -> None:
        envelope = ChangeEnvelope("Account", "001A", "update", 1, changed=changed, fields=fields)
        self.value: bytes | None = encode(envelope)


INDUSTRY = MappingConfig(
    sync_cadence={"mode": "hourly"}, mappings=[mapping({"Industry": "industry"})]
)


async def test_a_change_carrying_a_field_the_describe_lacks_has_it_described_again() -> None:
    # Hidden by field-level security at the last describe, shown again since: the change's
    # value must be converted by the field's type, not left out for the describe's age.
    cache, rest, now = _cache(*["Id", "Name"])
    await cache.ensure_current(INDUSTRY, [("Account", [Change({"Name": "Acme"})])])
    assert rest.describes == 1, "a change without the field: nothing to describe again"

    rest.fields = ["Id", "Name", "Industry"]
    now[0] = 1.0
    changes = [Change({"Name": "Acme"}), Change({"Industry": "Energy"})]
    with structlog.testing.capture_logs() as logs:
        await cache.ensure_current(INDUSTRY, [(None, changes), ("Account", changes)])
    assert rest.describes == 2
    (said,) = [entry for entry in logs if entry["event"] == "mapped_fields_readable_again"]
    assert said["fields"] == ["Industry"]
    assert "sfamp backfill --object Account" in said["hint"]
    assert cache.cached("Account").field("Industry") is not None  # type: ignore[union-attr]
    await cache.ensure_current(INDUSTRY, [("Account", changes)])
    assert rest.describes == 2, "described: nothing is missing any more"


async def test_a_describe_still_lacking_the_field_is_read_again_at_most_every_30_s() -> None:
    cache, rest, now = _cache(*["Id"])
    carrying = [("Account", [Change({"Industry": "Energy"})])]
    await cache.ensure_current(INDUSTRY, carrying)
    assert rest.describes == 1, "a describe read by this very call is not read again"
    now[0] = 1.0
    await cache.ensure_current(INDUSTRY, carrying)
    assert rest.describes == 2
    now[0] = 30.0
    await cache.ensure_current(INDUSTRY, carrying)
    assert rest.describes == 2
    now[0] = 31.0
    await cache.ensure_current(INDUSTRY, carrying)
    assert rest.describes == 3
    await cache.ensure_current(INDUSTRY, [("Contact", [Change({"Industry": "x"})])])
    assert rest.describes == 3, "an object no mapping reads is not described"


async def test_a_describe_read_for_another_reason_holds_no_carried_field_back() -> None:
    """An undelete's describe (the field hidden then), the field shown, a change carrying
    it 5 s later: described again at once, its value converted, not left out."""
    cache, rest, now = _cache(*["Id"])
    await cache.ensure_current(INDUSTRY, [("Account", [Change({"Name": "Acme"})])])
    now[0] = 60.0
    undelete = ChangeEnvelope("Account", "001A", "undelete", 3, fields={"Name": "Acme"})
    await cache.ensure_current(INDUSTRY, [("Account", [Raw(encode(undelete))])])
    assert rest.describes == 2
    rest.fields = ["Id", "Name", "Industry"]
    now[0] = 65.0
    await cache.ensure_current(INDUSTRY, [("Account", [Change({"Industry": "Energy"})])])
    assert rest.describes == 3
    assert cache.cached("Account").field("Industry") is not None  # type: ignore[union-attr]


async def test_a_field_shown_hidden_and_shown_again_is_described_each_time_it_is_carried() -> None:
    cache, rest, now = _cache(*["Id"])
    await cache.ensure_current(INDUSTRY, [("Account", [Change({"Name": "Acme"})])])
    rest.fields = ["Id", "Industry"]
    now[0] = 1.0
    carrying = [("Account", [Change({"Industry": "Energy"})])]
    await cache.ensure_current(INDUSTRY, carrying)
    assert rest.describes == 2
    rest.fields = ["Id"]  # hidden again; a describe for another reason sees it so
    now[0] = 5.0
    undelete = ChangeEnvelope("Account", "001A", "undelete", 3, fields={"Name": "Acme"})
    await cache.ensure_current(INDUSTRY, [("Account", [Raw(encode(undelete))])])
    assert rest.describes == 3
    rest.fields = ["Id", "Industry"]  # and shown again
    now[0] = 9.0
    await cache.ensure_current(INDUSTRY, carrying)
    assert rest.describes == 4, "the describe that listed it held nothing back"
    assert cache.cached("Account").field("Industry") is not None  # type: ignore[union-attr]


async def test_a_failed_describe_for_a_carried_field_keeps_the_one_there_is() -> None:
    # Salesforce unavailable (or its API limit reached) must not stop every object's changes.
    cache, rest, now = _cache(*["Id"])
    await cache.ensure_current(INDUSTRY, [("Account", [Change({"Name": "Acme"})])])
    rest.error = SalesforceUnavailableError("503")
    now[0] = 5.0
    await cache.ensure_current(INDUSTRY, [("Account", [Change({"Industry": "Energy"})])])
    assert rest.describes == 2
    assert cache.cached("Account") is not None
    now[0] = 6.0
    await cache.ensure_current(INDUSTRY, [("Account", [Change({"Name": "Acme"})])])
    assert rest.describes == 2, "the kept describe waits its age, or the next carried field"


def _config(fields: dict[str, str]) -> MappingConfig:
    return MappingConfig(sync_cadence={"mode": "hourly"}, mappings=[mapping(fields)])


async def _describes_after(described: list[str], config: MappingConfig, *changes: Change) -> int:
    """Describes made by a batch of ``changes`` a second after a first describe (of
    ``described``) read from a batch carrying nothing."""
    cache, rest, now = _cache(*described)
    await cache.ensure_current(config, [("Account", [Change({"Name": "Acme"})])])
    now[0] = 1.0
    await cache.ensure_current(config, [("Account", list(changes))])
    return rest.describes - 1


async def test_a_component_is_looked_for_under_its_compound_field() -> None:
    # Change events nest components: BillingAddress: {"City": ...}, never BillingCity.
    city = _config({"BillingCity": "city"})
    assert await _describes_after(["Id"], city, Change({"BillingAddress": {"City": "Oslo"}})) == 1
    custom = _config({"Addr__City__s": "city"})
    assert await _describes_after(["Id"], custom, Change({"Addr__c": {"City": "Oslo"}})) == 1
    nulled = Change({}, changed=("BillingAddress.City",))
    assert await _describes_after(["Id"], city, nulled) == 1


async def test_a_hidden_component_of_a_listed_compound_is_looked_for_inside_it() -> None:
    # Geocodes hidden, the address readable: editing the street says nothing new.
    latitude = _config({"BillingLatitude": "latitude"})
    listed = ["Id", "BillingAddress", "BillingCity"]
    street = Change({"BillingAddress": {"City": "Oslo", "Street": "Main"}})
    assert await _describes_after(listed, latitude, street) == 0
    geocoded = Change({"BillingAddress": {"City": "Oslo", "Latitude": 59.9}})
    assert await _describes_after(listed, latitude, geocoded) == 1


async def test_an_unreadable_describe_answer_keeps_the_describe_there_is() -> None:
    cache, rest, now = _cache(*["Id"])
    await cache.ensure(["Account"])
    rest.malformed = True
    now[0] = 301.0
    await cache.ensure(["Account"])
    assert rest.describes == 2
    assert cache.cached("Account") is not None


async def test_a_refused_refresh_keeps_converting_by_the_describe_there_is() -> None:
    # A describe that was read converts better than none: values would go out as they come.
    cache, rest, now = _cache("Id", "Industry")
    await cache.ensure(["Account"])
    rest.error = SalesforceRequestError("gone", error_code="NOT_FOUND")
    now[0] = 301.0
    assert await cache.ensure(["Account"]) == set()
    assert cache.cached("Account").field("Industry") is not None  # type: ignore[union-attr]


class FieldSecurityRest(ChangingRest):
    """Refuses a query naming a field the describe no longer lists, as Salesforce does."""

    async def query(self, soql: str, *, all_rows: bool = False) -> AsyncIterator[dict[str, Any]]:
        self.queries.append((soql, all_rows))
        selected = soql.removeprefix("SELECT ").split(" FROM ")[0].split(", ")
        for name in selected:
            if name not in {*self.fields, "IsDeleted"}:
                raise SalesforceRequestError(f"No such column '{name}'", error_code="INVALID_FIELD")
        yield {"Id": "001A00000000001AAA", "IsDeleted": False}


async def _read_industry(cache: SchemaCache, rest: FieldSecurityRest) -> list[str]:
    """What :func:`read_described` selects for INDUSTRY, read through ``rest``."""

    async def read(schema: ObjectSchema | None) -> list[str]:
        fields = fields_to_read(INDUSTRY, "Account", schema)
        await records_by_id(rest, "Account", ["001A00000000001"], fields)
        return fields

    return await read_described(cache, INDUSTRY, "Account", read)


async def test_a_read_refused_for_a_field_hidden_since_the_describe_is_asked_again_without_it() -> (
    None
):
    reports: list[tuple[str, frozenset[str]]] = []
    now = [0.0]
    rest = FieldSecurityRest()
    cache = SchemaCache(rest, clock=lambda: now[0], on_hidden=lambda *r: reports.append(r))
    await cache.ensure_mapped(INDUSTRY, ["Account"])
    assert reports == [("Account", frozenset())]
    rest.fields = ["Id"]  # Industry hidden by field-level security, the describe still fresh
    with structlog.testing.capture_logs() as logs:
        assert await _read_industry(cache, rest) == ["Id"]
    assert rest.describes == 2
    assert len(rest.queries) == 2, "refused once, then asked without the hidden field"
    assert reports[-1] == ("Account", frozenset({"Industry"}))
    (said,) = [entry for entry in logs if entry["event"] == "mapped_fields_unreadable"]
    assert said["fields"] == ["Industry"]

    now[0] = 1.0
    with structlog.testing.capture_logs() as logs:
        await cache.ensure_mapped(INDUSTRY, ["Account"])
    assert rest.describes == 2, "the describe is fresh"
    assert not logs, "said once until it is listed again"


async def test_a_read_refused_again_under_a_new_describe_is_raised() -> None:
    now = [0.0]
    rest = FieldSecurityRest()
    cache = SchemaCache(rest, clock=lambda: now[0])
    await cache.ensure(["Account"])

    async def read(schema: ObjectSchema | None) -> None:
        await records_by_id(rest, "Account", ["001A00000000001"], ["Id", "Gone__c"])

    with pytest.raises(SalesforceRequestError, match="Gone__c"):
        await read_described(cache, INDUSTRY, "Account", read)
    assert (rest.describes, len(rest.queries)) == (2, 2)
    now[0] = 10.0
    with pytest.raises(SalesforceRequestError, match="Gone__c"):
        await read_described(cache, INDUSTRY, "Account", read)
    assert (rest.describes, len(rest.queries)) == (2, 3), "described again at most every 30 s"


def test_reads_leave_out_a_field_the_describe_omits_but_the_group_name_field() -> None:
    by_external_id = mapping({"Industry": "industry", "Name": "name"}, group_name_field="Key__c")
    config = MappingConfig(sync_cadence={"mode": "hourly"}, mappings=[by_external_id])
    schema = schema_from_describe(
        {"name": "Account", "fields": [{"name": n, "type": "string"} for n in ("Id", "Name")]}
    )
    assert fields_to_read(config, "Account", schema) == ["Id", "Key__c", "Name"]
    with pytest.raises(UnreadableFieldsError, match=r"Account\.Key__c, Account\.Industry"):
        refuse_unreadable(config, "Account", schema)


async def test_a_refused_describe_says_nothing_of_which_fields_can_be_read() -> None:
    reports: list[tuple[str, frozenset[str]]] = []
    refused = ScriptedRest(SalesforceRequestError("no access", error_code="INSUFFICIENT_ACCESS"))
    cache = SchemaCache(refused, on_hidden=lambda *report: reports.append(report))
    await cache.ensure_mapped(INDUSTRY, ["Account"])
    assert cache.cached("Account") is None
    assert reports == [], "no describe: a field hidden before is not taken as readable again"


async def test_an_undelete_has_its_object_described_again_first() -> None:
    """An undelete takes a field it lacks for null: one hidden (field-level security) since
    the describe was read would be unset. Its object is described again before, at most
    every 30 s; other changes wait for the describe's age."""
    cache, rest, now = _cache("Id", "Name", "Industry")
    await cache.ensure(["Account"])
    rest.fields = ["Id", "Name"]  # Industry hidden: change events leave it out now
    now[0] = 60.0
    update = ChangeEnvelope("Account", "001A", "update", 2, fields={"Name": "Acme"})
    await cache.ensure_current(INDUSTRY, [("Account", [Raw(encode(update))])])
    assert rest.describes == 1, "an update says nothing a describe could answer"
    undelete = ChangeEnvelope("Account", "001A", "undelete", 3, fields={"Name": "Acme"})
    await cache.ensure_current(INDUSTRY, [("Account", [Raw(encode(undelete))])])
    assert rest.describes == 2
    assert cache.cached("Account").omits("Industry")  # type: ignore[union-attr]
    now[0] = 70.0
    await cache.ensure_current(INDUSTRY, [("Account", [Raw(encode(undelete))])])
    assert rest.describes == 2, "at most every 30 s"


class Raw:
    """A Kafka record holding ``value`` as it is."""

    def __init__(self, value: bytes) -> None:
        self.value: bytes | None = value
