"""Flush-time reads by id: a bad id fails alone, its neighbours in the same read are delivered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from pipeline.config.mapping import MappingConfig, ObjectMapping
from pipeline.errors import SalesforceRequestError
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.producer import ChangeProducer
from pipeline.runtime.deliver.lookups import resolve_lookups
from pipeline.runtime.deliver.window import FlushWindow, Source
from pipeline.runtime.dlq_redeliver import _Reader
from pipeline.runtime.salesforce_reads import SchemaCache, id_problem, read_records, records_by_id
from pipeline.sandbox_stack import SandboxStack
from pipeline.transform.apply import NeedsLookup, changes_for
from pipeline.transform.envelope import ChangeEnvelope, encode
from tests.runtime.conftest import Org, group, read_dlq, running, settings_for, wait_until
from tests.transform.fixtures import mapping

GOOD_18 = "001RM0000000001YAA"  # 15 characters and the checksum of their case


def _update(record_id: str, **fields: Any) -> ChangeEnvelope:
    return ChangeEnvelope(
        object="Account",
        record_id=record_id,
        op="update",
        commit_ts=1_700_000_000_000,
        channel="/data/AccountChangeEvent",
        changed=tuple(fields),
        fields=fields,
    )


async def test_a_malformed_record_id_goes_to_the_dlq_alone(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    # One partition: both changes in one fetch, so their lookups share one read.
    settings = settings_for(stack, topic_prefix, kafka={"partitions": 1})
    [good] = await org.seed("Account", 1)
    external_id = (await org.record("Account", good))["External_Id__c"]
    await ensure_topics(settings.kafka, sfamp_topics(settings.kafka, ["Account"]))
    async with ChangeProducer(settings.kafka) as producer:
        # Tier__c alone: the account_ext group (External_Id__c) is looked up at flush time.
        for record_id in ("bad'id", good):
            envelope = _update(record_id, Tier__c="Gold")
            await producer.send(
                f"{topic_prefix}.changes.Account", envelope.kafka_key, encode(envelope)
            )
    async with running(settings, mapping_file):
        await wait_until(
            lambda: (group(stack, "account_ext", external_id) or {}).get("tier") == "Gold",
            what="the valid record's change",
        )

        async def dead_lettered() -> bool:
            return bool(await read_dlq(settings))

        await wait_until(dead_lettered, what="the bad id's DLQ entry")
    [entry] = await read_dlq(settings)
    assert entry.key == "bad'id"
    assert entry.reason == "malformed"
    assert 'not a Salesforce record id: "bad\'id"' in entry.detail


class ScriptedRest:
    """Answers SOQL IN lists like Salesforce: refuses a list holding a refused id."""

    def __init__(self, refused: set[str], error_code: str = "MALFORMED_ID") -> None:
        self.refused = refused
        self.error_code = error_code
        self.queries: list[list[str]] = []

    async def describe(self, sobject: str) -> dict[str, Any]:
        return {"name": sobject, "fields": []}

    async def query(self, soql: str, *, all_rows: bool = False) -> AsyncIterator[dict[str, Any]]:
        ids = soql.split("IN (")[1].rstrip(")").replace("'", "").split(", ")
        self.queries.append(ids)
        if self.refused & set(ids):
            raise SalesforceRequestError("invalid ID field", error_code=self.error_code)
        for record_id in ids:
            yield {"Id": record_id, "IsDeleted": False}


def _ids(count: int) -> list[str]:
    return [f"001RM{n:010d}" for n in range(count)]


async def test_a_batch_refused_for_one_id_is_split_until_that_id_is_alone() -> None:
    ids = _ids(40)
    rest = ScriptedRest(refused={ids[17]})
    reads = await read_records(rest, "Account", ids, ["Name"])
    assert set(reads.refused) == {ids[17]}
    assert "invalid ID field" in reads.refused[ids[17]]
    assert set(reads.found) == set(ids) - {ids[17]}
    assert len(rest.queries) <= 2 * 6 + 1  # halves down to one id, not one query per id


async def test_a_refusal_about_the_query_fails_every_id() -> None:
    rest = ScriptedRest(refused=set(_ids(4)), error_code="INVALID_FIELD")
    with pytest.raises(SalesforceRequestError):
        await read_records(rest, "Account", _ids(4), ["Hidden__c"])
    assert len(rest.queries) == 1


async def test_ids_that_cannot_be_ids_are_refused_before_any_query() -> None:
    rest = ScriptedRest(refused=set())
    reads = await read_records(rest, "Account", ["bad'id", "001RM0000000001", "0015"], ["Name"])
    assert set(reads.refused) == {"bad'id", "0015"}
    assert rest.queries == [["001RM0000000001"]]
    with pytest.raises(SalesforceRequestError, match="bad'id"):
        await records_by_id(rest, "Account", ["bad'id", "001RM0000000001"], ["Name"])


@pytest.mark.parametrize(
    ("record_id", "valid"),
    [
        ("001RM0000000001", True),
        (GOOD_18, True),
        (GOOD_18.lower(), True),  # the 18-character form is case-insensitive
        ("001RM0000000001AAE", False),  # the checksum marks a digit as upper case
        ("001RM0000000001AA9", False),  # 9 is no checksum character
        ("001RM00000001", False),
        ("001RM0000000001'", False),
        ("", False),
    ],
)
def test_the_salesforce_id_rule(record_id: str, valid: bool) -> None:
    assert (id_problem(record_id) is None) is valid


class HidingRest:
    """An org whose field-level security hides what ``fields`` leaves out: the describe
    lists ``fields`` only, and a query naming another is refused, as Salesforce refuses it."""

    def __init__(self, *hidden: str) -> None:
        every = ("Id", "IsDeleted", "External_Id__c", "Tier__c", "Industry", "SystemModstamp")
        self.fields = [name for name in every if name not in hidden]
        self.describes = 0

    async def describe(self, sobject: str) -> dict[str, Any]:
        self.describes += 1
        return {"name": sobject, "fields": [{"name": n, "type": "string"} for n in self.fields]}

    async def query(self, soql: str, *, all_rows: bool = False) -> AsyncIterator[dict[str, Any]]:
        selected = soql.removeprefix("SELECT ").split(" FROM ")[0].split(", ")
        for name in selected:
            if name not in self.fields:
                raise SalesforceRequestError(f"No such column '{name}'", error_code="INVALID_FIELD")
        record = {"Id": GOOD_18, "IsDeleted": False, "External_Id__c": "ext-1", "Tier__c": "Gold"}
        yield {name: value for name, value in record.items() if name in selected}


def _by_external_id(*mappings: ObjectMapping) -> MappingConfig:
    return MappingConfig.model_validate(
        {
            "sync_cadence": {"mode": "hourly"},
            "mappings": [m.model_dump(mode="json") for m in mappings]
            or [
                mapping(
                    {"Tier__c": "tier", "Industry": "industry"},
                    group_type="account_ext",
                    group_name_field="External_Id__c",
                ).model_dump(mode="json")
            ],
        }
    )


async def _lookup_tier(
    rest: HidingRest, schemas: SchemaCache, config: MappingConfig, index: int = 0
) -> FlushWindow:
    """A change to Tier__c alone under ``config.mappings[index]``, resolved at flush time."""
    envelope = _update(GOOD_18, Tier__c="Gold")
    outcome = changes_for(envelope, config.mappings[index], schemas.cached("Account"))
    assert isinstance(outcome, NeedsLookup), "the group is named by a read at flush time"
    window = FlushWindow()
    source = Source("t.changes.Account", 0, 7, GOOD_18)
    window.add(envelope, config.mappings[index], outcome, source)
    await resolve_lookups(rest, schemas, config, window)
    return window


async def test_a_hidden_field_is_left_out_of_a_lookup_for_another_field() -> None:
    rest = HidingRest("Industry")
    config = _by_external_id()
    schemas = SchemaCache(rest)
    await schemas.ensure(["Account"])
    window = await _lookup_tier(rest, schemas, config)
    assert window.dlq == [], "the change to a readable field is not dead-lettered"
    [update] = window.drain().updates()
    assert (update.group_value, update.set, update.unset) == ("ext-1", {"tier": "Gold"}, set())


async def test_a_second_field_hidden_soon_after_has_the_object_described_again() -> None:
    """The re-describe limit (30 s) does not hold back a new describe when Salesforce refuses
    a field the describe still lists: an admin hiding fields one after another."""
    now = [0.0]
    rest = HidingRest()
    config = _by_external_id(
        mapping(
            {"Tier__c": "tier", "Industry": "industry", "SystemModstamp": "modstamp"},
            group_type="account_ext",
            group_name_field="External_Id__c",
        )
    )
    schemas = SchemaCache(rest, clock=lambda: now[0])
    await schemas.ensure(["Account"])
    rest.fields.remove("Industry")
    assert (await _lookup_tier(rest, schemas, config)).dlq == []
    now[0] = 10.0
    rest.fields.remove("SystemModstamp")  # another field read, hidden ten seconds later
    assert (await _lookup_tier(rest, schemas, config)).dlq == []
    assert rest.describes == 3


async def test_a_hidden_group_name_field_dead_letters_only_its_own_mapping_s_changes() -> None:
    by_id = mapping({"Tier__c": "tier"}, group_type="account")
    by_key = mapping({"Tier__c": "tier"}, group_type="account_ext", group_name_field="Key__c")
    config = _by_external_id(by_id, by_key)
    rest = HidingRest()  # Key__c is no field it describes: hidden (or gone)
    schemas = SchemaCache(rest)
    await schemas.ensure(["Account"])
    envelope = _update(GOOD_18, Tier__c="Gold")
    window = FlushWindow()
    for index, mapped in enumerate(config.mappings):
        outcome = NeedsLookup("Account", GOOD_18, ("Tier__c",), True, False, "a full read")
        window.add(envelope, mapped, outcome, Source("t.changes.Account", 0, 7 + index, GOOD_18))
    await resolve_lookups(rest, schemas, config, window)
    [parked] = window.dlq
    assert "group name field Account.Key__c cannot be read (field-level security)" in parked.detail
    [update] = window.drain().updates()
    assert (update.group_type, update.set) == ("account", {"tier": "Gold"})


async def test_a_dlq_replay_says_which_hidden_field_it_leaves_out() -> None:
    config = _by_external_id()
    reader = _Reader(HidingRest("Industry"), config)
    with capture_logs() as logs:
        reads = await reader._by_id("Account", {GOOD_18})
    assert not isinstance(reads, str), reads
    (said,) = [line for line in logs if line["event"] == "mapped_fields_unreadable"]
    assert (said["object"], said["fields"]) == ("Account", ["Industry"])
