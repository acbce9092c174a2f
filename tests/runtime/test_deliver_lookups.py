"""Flush-time reads by id: a bad id fails alone, its neighbours in the same read are delivered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config.mapping import MappingConfig
from pipeline.errors import SalesforceRequestError
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.producer import ChangeProducer
from pipeline.runtime.deliver.lookups import resolve_lookups
from pipeline.runtime.deliver.window import FlushWindow, Source
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
    """An org where Industry is hidden by field-level security: the describe leaves it out
    and a query naming it is refused, as Salesforce refuses it."""

    fields = ("Id", "IsDeleted", "External_Id__c", "Tier__c", "SystemModstamp")

    async def describe(self, sobject: str) -> dict[str, Any]:
        return {"name": sobject, "fields": [{"name": n, "type": "string"} for n in self.fields]}

    async def query(self, soql: str, *, all_rows: bool = False) -> AsyncIterator[dict[str, Any]]:
        selected = soql.removeprefix("SELECT ").split(" FROM ")[0].split(", ")
        for name in selected:
            if name not in self.fields:
                raise SalesforceRequestError(f"No such column '{name}'", error_code="INVALID_FIELD")
        yield {"Id": GOOD_18, "IsDeleted": False, "External_Id__c": "ext-1", "Tier__c": "Gold"}


async def test_a_hidden_field_is_left_out_of_a_lookup_for_another_field() -> None:
    config = MappingConfig.model_validate(
        {
            "sync_cadence": {"mode": "hourly"},
            "mappings": [
                mapping(
                    {"Tier__c": "tier", "Industry": "industry"},
                    group_type="account_ext",
                    group_name_field="External_Id__c",
                ).model_dump(mode="json")
            ],
        }
    )
    rest = HidingRest()
    schemas = SchemaCache(rest)
    await schemas.ensure(["Account"])
    envelope = _update(GOOD_18, Tier__c="Gold")
    outcome = changes_for(envelope, config.mappings[0], schemas.cached("Account"))
    assert isinstance(outcome, NeedsLookup), "the group is named by a read at flush time"
    window = FlushWindow()
    window.add(envelope, config.mappings[0], outcome, Source("t.changes.Account", 0, 7, GOOD_18))
    await resolve_lookups(rest, schemas, config, window)
    assert window.dlq == [], "the change to a readable field is not dead-lettered"
    [update] = window.drain().updates()
    assert (update.group_value, update.set, update.unset) == ("ext-1", {"tier": "Gold"}, set())
