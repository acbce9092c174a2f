"""Absent is not null: a property is unset only when Salesforce says the field is null.

Salesforce says so with ``nulledFields``, a null in an update's body, a null (or an empty
CSV cell) in a record read with that field, or by leaving a field out of a CREATE or
UNDELETE that would carry it. A field a read did not select, that field-level security
hides, or that change events never carry is left alone.
"""

from __future__ import annotations

from typing import Any

from pipeline.config.mapping import MappingConfig
from pipeline.salesforce.change_events import envelopes_from_event
from pipeline.transform.apply import NeedsLookup, NothingToDo, PropertyChanges, changes_for
from pipeline.transform.coalesce import Coalescer
from pipeline.transform.compiled import compiled
from pipeline.transform.envelope import ChangeEnvelope
from pipeline.transform.reads import envelope_from_record
from pipeline.transform.schema import schema_from_describe, unreadable_fields
from tests.transform.fixtures import (
    ACCOUNT_DESCRIBE,
    ACCOUNT_ID,
    CREATE_BODY,
    account_schema,
    cdc_message,
    mapping,
)

SCHEMA = account_schema()
MAPPED = mapping({"Name": "name", "Industry": "industry", "Fax": "fax"})


def _hidden(*names: str) -> Any:
    """The account schema as a user who cannot read ``names`` gets it: describe omits them."""
    fields = [f for f in ACCOUNT_DESCRIBE["fields"] if f["name"] not in names]
    return schema_from_describe({"name": "Account", "fields": fields})


def _event(change_type: str, body: dict[str, Any]) -> ChangeEnvelope:
    (env,) = envelopes_from_event(cdc_message(change_type, body=body))
    return env


def _changes(outcome: object) -> PropertyChanges:
    assert isinstance(outcome, PropertyChanges), outcome
    return outcome


def test_a_read_without_a_mapped_field_leaves_its_property_alone() -> None:
    # A re-sync that could not select Industry (hidden from the user) must not unset it.
    record = {"attributes": {"type": "Account"}, "Id": ACCOUNT_ID, "Name": "Acme", "Fax": None}
    env = envelope_from_record("Account", record, source="bulk", now_ms=1)
    for schema in (SCHEMA, _hidden("Industry"), None):
        out = _changes(changes_for(env, MAPPED, schema))
        assert out.set == {"name": "Acme"}
        assert out.unset == frozenset({"fax"}), "only the field read as null is unset"


def test_a_read_without_the_group_name_field_names_no_group_and_looks_nothing_up() -> None:
    by_key = mapping({"Industry": "industry"}, group_name_field="Ext_Key__c")
    record = {"Id": ACCOUNT_ID, "Industry": "Energy"}
    env = envelope_from_record("Account", record, source="rest", now_ms=1)
    out = changes_for(env, by_key, _hidden("Ext_Key__c"))
    assert isinstance(out, NothingToDo)
    assert "Ext_Key__c was not read" in out.reason


def test_a_create_leaves_fields_the_describe_omits_alone() -> None:
    # Field-level security hides Industry: change events leave it out, as does describe.
    body = {key: value for key, value in CREATE_BODY.items() if key != "Industry"}
    out = _changes(changes_for(_event("CREATE", body), MAPPED, _hidden("Industry")))
    assert out.set == {"name": "Acme"}
    assert out.unset == frozenset({"fax"}), "Fax is readable and null; Industry is unknown"


def test_an_undelete_leaves_fields_events_never_carry_alone() -> None:
    system = mapping(
        {
            "Name": "name",
            "SystemModstamp": "modstamp",
            "LastActivityDate": "last_activity",
            "IsDeleted": "deleted",
            "Score__c": "score",
            "Fax": "fax",
        }
    )
    for schema in (SCHEMA, None):
        out = _changes(changes_for(_event("UNDELETE", CREATE_BODY), system, schema))
        assert out.set == {"name": "Acme"}
        if schema is None:
            # Without a describe nobody knows Score__c is a formula; the named system
            # fields are still known never to travel in events.
            assert out.unset == frozenset({"fax", "score"})
        else:
            assert out.unset == frozenset({"fax"})


def test_a_create_still_unsets_a_carried_field_it_lacks() -> None:
    # A CREATE carries every non-null field: absent Fax is a null Salesforce reported.
    out = _changes(changes_for(_event("CREATE", CREATE_BODY), MAPPED, SCHEMA))
    assert out.unset == frozenset({"fax"})


def test_a_create_without_a_group_name_it_cannot_carry_looks_it_up() -> None:
    by_key = mapping({"Industry": "industry"}, group_name_field="Ext_Key__c")
    out = changes_for(_event("CREATE", CREATE_BODY), by_key, _hidden("Ext_Key__c"))
    assert isinstance(out, NeedsLookup)
    assert out.fields == ("Ext_Key__c",)


def test_unreadable_fields_are_those_the_describe_omits() -> None:
    schema = _hidden("Industry", "Fax")
    names = ["Id", "Name", "Industry", "BillingAddress", "BillingCity", "Fax", "Industry"]
    assert unreadable_fields(schema, names) == ["Industry", "Fax"]
    assert unreadable_fields(SCHEMA, names) == []


def test_a_change_carrying_a_field_the_describe_omits_leaves_its_property_alone() -> None:
    # Shown again by field-level security since the describe was read: the value's type is
    # unknown, so it is not sent as it came ("A;B" for a multi-select, text for a number).
    # Deliver describes the object again when a change carries the field.
    tags = mapping({"Name": "name", "Tags__c": "tags", "AnnualRevenue": "revenue"})
    body = {"Name": "Acme", "Tags__c": "A;B", "AnnualRevenue": 250}
    update = cdc_message("UPDATE", body=body, changed=list(body))
    (env,) = envelopes_from_event(update)
    hidden = _hidden("Tags__c", "AnnualRevenue")
    out = _changes(changes_for(env, tags, hidden))
    assert out.set == {"name": "Acme"}
    assert out.unset == frozenset()
    config = MappingConfig(sync_cadence={"mode": "hourly"}, mappings=[tags])
    folded = Coalescer(10)
    compiled(config).fold(env, hidden, folded)
    (update_sent,) = folded.drain()
    assert dict(update_sent.set) == {"name": "Acme"}
    described = _changes(changes_for(env, tags, SCHEMA))
    assert described.set == {"name": "Acme", "tags": ["A", "B"], "revenue": 250}


def test_a_delete_unsets_what_the_describe_omits_too() -> None:
    # on_delete is the mapping's policy, not a read: a hidden field's property goes as well.
    policy = mapping({"Name": "name", "Industry": "industry"}, on_delete="unset")
    (env,) = envelopes_from_event(cdc_message("DELETE"))
    hidden = _hidden("Industry")
    assert _changes(changes_for(env, policy, hidden)).unset == frozenset({"name", "industry"})
    config = MappingConfig(sync_cadence={"mode": "hourly"}, mappings=[policy])
    folded = Coalescer(10)
    compiled(config).fold(env, hidden, folded)
    (update,) = folded.drain()
    assert update.unset == frozenset({"name", "industry"})


def test_a_delete_unsets_the_components_of_a_compound_the_describe_omits() -> None:
    # While described, BillingAddress set billing.City and the other components.
    policy = mapping({"Name": "name", "BillingAddress": "billing"}, on_delete="unset")
    (env,) = envelopes_from_event(cdc_message("DELETE"))
    described = _changes(changes_for(env, policy, SCHEMA)).unset
    hidden_parts = {"BillingAddress", "BillingStreet", "BillingCity", "BillingState"}
    hidden_parts |= {"BillingPostalCode", "BillingCountry", "BillingLatitude", "BillingLongitude"}
    unset = _changes(changes_for(env, policy, _hidden(*hidden_parts))).unset
    assert "billing.City" in described
    assert described <= unset
