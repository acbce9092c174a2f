"""Applying a mapping to change envelopes: each rule has a test that fails without it."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.config.mapping import MappingConfig
from pipeline.salesforce.change_events import envelopes_from_event
from pipeline.transform.apply import (
    DELETED_PROPERTY,
    NeedsLookup,
    NeedsReread,
    NeedsResync,
    NothingToDo,
    Outcome,
    PropertyChanges,
    changes_for,
    changes_for_config,
)
from pipeline.transform.envelope import ChangeEnvelope
from pipeline.transform.plan import plan_for
from pipeline.transform.reads import deleted_envelope, envelope_from_record
from pipeline.transform.schema import schema_from_describe
from tests.transform.fixtures import (
    ACCOUNT_ID,
    CONTACT_ID,
    CREATE_BODY,
    UPDATE_BODY,
    UPDATE_CHANGED,
    account_schema,
    cdc_message,
    contact_schema,
    describe_field,
    mapping,
)

SCHEMA = account_schema()
BASIC = mapping({"Name": "name", "Industry": "industry", "Fax": "fax", "BillingCity": "city"})
BY_NAME = mapping({"Industry": "industry", "Fax": "fax"}, group_name_field="Name")


def event(change_type: str, body: dict[str, Any] | None = None, **kwargs: Any) -> ChangeEnvelope:
    (env,) = envelopes_from_event(cdc_message(change_type, body=body, **kwargs))
    return env


def changes(outcome: Outcome) -> PropertyChanges:
    assert isinstance(outcome, PropertyChanges), outcome
    return outcome


UPDATE = event("UPDATE", UPDATE_BODY, changed=UPDATE_CHANGED)


# --- updates ------------------------------------------------------------------------------


def test_update_sets_changed_mapped_fields_and_unsets_nulls() -> None:
    out = changes(changes_for(UPDATE, BASIC, SCHEMA))
    assert out.key == ("account", ACCOUNT_ID)
    assert out.set == {"city": "Oakland"}
    assert out.unset == frozenset({"fax"})
    assert out.order == (1714157000000, 1100670840000, 1)
    assert out.record_id == ACCOUNT_ID


def test_update_of_unmapped_fields_only_is_nothing_to_do() -> None:
    env = event("UPDATE", {"Phone": "555", "LastModifiedDate": "2024-04-26T18:43:20.000Z"})
    assert isinstance(changes_for(env, BASIC, SCHEMA), NothingToDo)


def test_unmapped_update_needs_no_lookup_even_without_the_group_name() -> None:
    env = event("UPDATE", {"Phone": "555"}, changed=["Phone"])
    assert isinstance(changes_for(env, BY_NAME, SCHEMA), NothingToDo)


def test_update_converts_values_by_schema_type() -> None:
    typed = mapping({"LastModifiedDate": "modified", "Tags__c": "tags", "AnnualRevenue": "revenue"})
    body = {"LastModifiedDate": "2024-04-26T18:43:20.000Z", "Tags__c": "a;b", "AnnualRevenue": 2e6}
    out = changes(changes_for(event("UPDATE", body), typed, SCHEMA))
    assert out.set == {
        "modified": "2024-04-26T18:43:20.000Z",
        "tags": ["a", "b"],
        "revenue": 2000000,
    }


def test_update_without_schema_keeps_values_as_they_come() -> None:
    typed = mapping({"Tags__c": "tags", "BillingCity": "city"})
    body = {"Tags__c": "a;b", "BillingAddress": {"City": "Oakland"}}
    out = changes(changes_for(event("UPDATE", body), typed, None))
    assert out.set == {"tags": "a;b", "city": "Oakland"}


def test_mapped_compound_field_becomes_one_property_per_component() -> None:
    compound = mapping({"BillingAddress": "billing_address"})
    for schema in (SCHEMA, None):
        out = changes(changes_for(UPDATE, compound, schema))
        assert out.set == {"billing_address.City": "Oakland"}
        assert out.unset == frozenset()


def test_whole_compound_nulled_unsets_every_component() -> None:
    compound = mapping({"BillingAddress": "billing_address", "BillingState": "state"})
    out = changes(changes_for(event("UPDATE", {"BillingAddress": None}), compound, SCHEMA))
    assert "billing_address.Street" in out.unset
    assert "billing_address.Latitude" in out.unset
    assert "state" in out.unset
    assert out.set == {}


def test_nulled_fields_header_unsets_like_a_body_null() -> None:
    env = event("UPDATE", {"Industry": "Energy"}, nulledFields=["BillingAddress.City"])
    out = changes(changes_for(env, BASIC, SCHEMA))
    assert out.set == {"industry": "Energy"}
    assert out.unset == frozenset({"city"})


def test_person_name_component_of_a_contact() -> None:
    contact = mapping(
        {"LastName": "last_name", "Email": "email"}, sfdc_object="Contact", group_type="contact"
    )
    env = event(
        "UPDATE",
        {"Name": {"LastName": "Lovelace"}},
        record_ids=[CONTACT_ID],
        entity="Contact",
        changed=["Name.LastName"],
    )
    out = changes(changes_for(env, contact, contact_schema()))
    assert out.set == {"last_name": "Lovelace"}


# --- group name field ---------------------------------------------------------------------


def test_group_name_field_missing_from_update_needs_a_lookup() -> None:
    env = event("UPDATE", {"Industry": "Energy"}, changed=["Industry"])
    out = changes_for(env, BY_NAME, SCHEMA)
    assert out == NeedsLookup(
        sfdc_object="Account",
        record_id=ACCOUNT_ID,
        fields=("Name",),
        full_record=False,
        deleted=False,
        reason="group name field Name is not in the change",
    )


def test_lookup_answer_by_group_value() -> None:
    env = event("UPDATE", {"Industry": "Energy"}, changed=["Industry"])
    out = changes(changes_for(env, BY_NAME, SCHEMA, group_value="Acme"))
    assert out.key == ("account", "Acme")
    assert out.set == {"industry": "Energy"}


def test_lookup_answer_by_record() -> None:
    env = event("UPDATE", {"Industry": "Energy"}, changed=["Industry"])
    record = {"Id": ACCOUNT_ID, "Name": "Acme", "Industry": "Mining"}
    out = changes(changes_for(env, BY_NAME, SCHEMA, full_record=record))
    assert out.key == ("account", "Acme")
    assert out.set == {"industry": "Energy"}  # the change itself, not the record's other fields


def test_lookup_finding_no_group_name_is_nothing_to_do() -> None:
    env = event("UPDATE", {"Industry": "Energy"}, changed=["Industry"])
    assert isinstance(changes_for(env, BY_NAME, SCHEMA, group_value=""), NothingToDo)


def test_enriched_group_name_field_is_used_without_lookup() -> None:
    # A custom channel may enrich updates with unchanged fields; they are not in changedFields.
    env = event("UPDATE", {"Industry": "Energy", "Name": "Acme"}, changed=["Industry"])
    out = changes(changes_for(env, BY_NAME, SCHEMA))
    assert out.key == ("account", "Acme")


def test_group_name_change_needs_the_full_record() -> None:
    env = event("UPDATE", {"Name": "Acme 2"}, changed=["Name"])
    compound = mapping(
        {"Industry": "industry", "BillingAddress": "billing_address"}, group_name_field="Name"
    )
    out = changes_for(env, compound, SCHEMA)
    assert isinstance(out, NeedsLookup)
    assert out.full_record is True
    assert out.fields[:3] == ("Name", "Industry", "BillingStreet")
    assert "BillingAddress" not in out.fields  # Bulk cannot select compound fields


def test_new_group_gets_every_mapped_property_from_the_full_record() -> None:
    env = event("UPDATE", {"Name": "Acme 2", "Fax": None}, changed=["Name", "Fax"])
    record = {"Id": ACCOUNT_ID, "Name": "Acme 2", "Industry": "Mining", "Fax": "555"}
    out = changes(changes_for(env, BY_NAME, SCHEMA, full_record=record))
    assert out.key == ("account", "Acme 2")
    assert out.set == {"industry": "Mining"}
    assert out.unset == frozenset({"fax"})  # the change's own null wins over the record


def test_group_name_cleared_is_nothing_to_do() -> None:
    env = event("UPDATE", {"Name": None}, changed=["Name"])
    assert isinstance(changes_for(env, BY_NAME, SCHEMA), NothingToDo)


def test_create_without_group_name_value_names_no_group() -> None:
    env = event("CREATE", {"Industry": "Energy"})
    assert isinstance(changes_for(env, BY_NAME, SCHEMA), NothingToDo)


def test_create_with_a_formula_group_name_needs_a_lookup() -> None:
    by_score = mapping({"Industry": "industry"}, group_name_field="Score__c")
    out = changes_for(event("CREATE", {"Industry": "Energy"}), by_score, SCHEMA)
    assert isinstance(out, NeedsLookup)
    assert out.fields == ("Score__c",)


# --- whole-record changes -----------------------------------------------------------------


def test_create_sets_all_mapped_fields_and_unsets_absent_ones() -> None:
    out = changes(changes_for(event("CREATE", CREATE_BODY), BASIC, SCHEMA))
    assert out.set == {"name": "Acme", "industry": "Biotechnology", "city": "San Francisco"}
    assert out.unset == frozenset({"fax"})


def test_create_leaves_formula_fields_alone() -> None:
    with_formula = mapping({"Name": "name", "Score__c": "score"})
    out = changes(changes_for(event("CREATE", CREATE_BODY), with_formula, SCHEMA))
    assert "score" not in out.unset
    assert out.set == {"name": "Acme"}


def test_create_with_mapped_compound_unsets_missing_components() -> None:
    compound = mapping({"BillingAddress": "billing_address"})
    out = changes(changes_for(event("CREATE", CREATE_BODY), compound, SCHEMA))
    assert out.set["billing_address.PostalCode"] == "94105"
    assert out.unset == frozenset({"billing_address.Latitude"})


def test_full_csv_record_is_converted_and_empty_cells_unset() -> None:
    typed = mapping(
        {
            "AnnualRevenue": "revenue",
            "Active__c": "active",
            "Fax": "fax",
            "Since__c": "since",
            "BillingAddress": "billing_address",
        }
    )
    row = {
        "Id": ACCOUNT_ID,
        "AnnualRevenue": "1500000.0",
        "Active__c": "true",
        "Fax": "",
        "BillingCity": "Oakland",
        "BillingLatitude": "37.8",
        "Owner.Name": "Ada Admin",
    }
    env = envelope_from_record("Account", row, source="bulk", now_ms=1714160000000)
    out = changes(changes_for(env, typed, SCHEMA))
    assert out.set == {
        "revenue": 1500000,
        "active": True,
        "billing_address.City": "Oakland",
        "billing_address.Latitude": 37.8,
    }
    # The empty cell is a null; columns the read did not have say nothing (absent is not null).
    assert out.unset == frozenset({"fax"})
    assert out.order == (1714160000000, 0, 0)


def test_full_rest_record_with_nested_lowercase_compound() -> None:
    compound = mapping({"BillingAddress": "billing_address"})
    record = {
        "attributes": {"type": "Account"},
        "Id": ACCOUNT_ID,
        "BillingAddress": {"city": "Oakland"},
    }
    env = envelope_from_record("Account", record, source="rest", now_ms=1)
    out = changes(changes_for(env, compound, SCHEMA))
    assert out.set == {"billing_address.City": "Oakland"}


def test_large_text_diff_needs_the_record_value() -> None:
    described = mapping({"Description": "description", "Industry": "industry"})
    body = {"Description": {"diff": "--- \n+++ abc\n@@ -1 +1 @@\n-old\n+new"}, "Industry": "Energy"}
    env = event("UPDATE", body, changed=["Description", "Industry"])
    out = changes_for(env, described, SCHEMA)
    assert isinstance(out, NeedsLookup)
    assert out.full_record
    record = {"Id": ACCOUNT_ID, "Description": "new text", "Industry": "Mining"}
    done = changes(changes_for(env, described, SCHEMA, full_record=record))
    assert done.set == {"description": "new text", "industry": "Energy"}


# --- deletes ------------------------------------------------------------------------------

DELETE = event("DELETE")
UNDELETE = event("UNDELETE", CREATE_BODY)


def test_delete_with_ignore_is_nothing_to_do() -> None:
    assert isinstance(changes_for(DELETE, BASIC, SCHEMA), NothingToDo)


def test_delete_with_unset_unsets_every_mapped_property() -> None:
    policy = mapping({"Name": "name", "BillingAddress": "billing_address"}, on_delete="unset")
    out = changes(changes_for(DELETE, policy, SCHEMA))
    assert out.set == {}
    assert "name" in out.unset
    assert "billing_address.City" in out.unset
    assert len(out.unset) == 1 + 6


def test_delete_with_mark_sets_the_deleted_property() -> None:
    policy = mapping({"Name": "name"}, on_delete="mark")
    out = changes(changes_for(DELETE, policy, SCHEMA))
    assert out.set == {DELETED_PROPERTY: True}
    assert out.unset == frozenset()
    assert DELETED_PROPERTY == "sfdc_deleted"


def test_undelete_with_mark_clears_the_mark_and_resets_properties() -> None:
    policy = mapping({"Name": "name"}, on_delete="mark")
    out = changes(changes_for(UNDELETE, policy, SCHEMA))
    assert out.set == {"name": "Acme", DELETED_PROPERTY: False}


@pytest.mark.parametrize("policy", ["ignore", "unset"])
def test_undelete_resets_the_record_properties(policy: str) -> None:
    out = changes(changes_for(UNDELETE, mapping({"Name": "name"}, on_delete=policy), SCHEMA))
    assert out.set == {"name": "Acme"}


def test_delete_with_a_non_id_group_name_needs_a_deleted_record_lookup() -> None:
    policy = mapping({"Industry": "industry"}, group_name_field="Name", on_delete="mark")
    out = changes_for(DELETE, policy, SCHEMA)
    assert isinstance(out, NeedsLookup)
    assert out.deleted
    assert not out.full_record
    again = changes(changes_for(DELETE, policy, SCHEMA, group_value="Acme"))
    assert again.key == ("account", "Acme")


def test_deleted_row_from_a_reread_follows_the_policy() -> None:
    policy = mapping({"Industry": "industry"}, group_name_field="Name", on_delete="mark")
    row = {"Id": ACCOUNT_ID, "Name": "Acme", "IsDeleted": "true"}
    env = envelope_from_record("Account", row, source="bulk", now_ms=1)
    out = changes(changes_for(env, policy, SCHEMA))
    assert (out.key, dict(out.set)) == (("account", "Acme"), {DELETED_PROPERTY: True})
    gone = deleted_envelope("Account", ACCOUNT_ID, source="rest", now_ms=1)
    assert changes(changes_for(gone, mapping({"Name": "n"}, on_delete="mark"), SCHEMA)).set == {
        DELETED_PROPERTY: True
    }


# --- gaps and overflow --------------------------------------------------------------------


@pytest.mark.parametrize("change_type", ["GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE"])
def test_gap_events_need_a_reread(change_type: str) -> None:
    out = changes_for(event(change_type), BASIC, SCHEMA)
    assert isinstance(out, NeedsReread)
    assert (out.sfdc_object, out.record_id) == ("Account", ACCOUNT_ID)


def test_overflow_needs_an_object_resync() -> None:
    env = event("GAP_OVERFLOW", record_ids=[], commit_ts=1714160000000)
    out = changes_for(env, BASIC, SCHEMA)
    assert isinstance(out, NeedsResync)
    assert (out.sfdc_object, out.since_ms) == ("Account", 1714160000000)


def test_wildcard_record_id_needs_an_object_resync() -> None:
    env = event("UPDATE", {"Industry": "Energy"}, record_ids=["001*"])
    assert isinstance(changes_for(env, BASIC, SCHEMA), NeedsResync)


# --- several mappings ---------------------------------------------------------------------


def test_one_envelope_feeds_every_mapping_of_its_object() -> None:
    contact = mapping({"Email": "email"}, sfdc_object="Contact", group_type="contact")
    by_key = mapping(
        {"Industry": "sector"}, group_type="account_by_key", group_name_field="Ext_Key__c"
    )
    config = MappingConfig(sync_cadence={"mode": "hourly"}, mappings=[BASIC, contact, by_key])
    env = event("UPDATE", {"Industry": "Energy"}, changed=["Industry"])
    results = changes_for_config(env, config, SCHEMA)
    assert [m.group_type for m, _ in results] == ["account", "account_by_key"]
    assert changes(results[0][1]).set == {"industry": "Energy"}
    assert isinstance(results[1][1], NeedsLookup)
    gaps = changes_for_config(event("GAP_UPDATE"), config, SCHEMA)
    assert all(isinstance(out, NeedsReread) for _, out in gaps)


def test_mapping_of_another_object_is_a_programming_error() -> None:
    contact = mapping({"Email": "email"}, sfdc_object="Contact", group_type="contact")
    with pytest.raises(ValueError, match="Account change given a Contact mapping"):
        changes_for(UPDATE, contact, SCHEMA)


def test_delete_unset_without_schema_unsets_the_mapped_property_names() -> None:
    policy = mapping({"Name": "name", "BillingAddress": "billing_address"}, on_delete="unset")
    out = changes(changes_for(DELETE, policy, None))
    assert out.unset == frozenset({"name", "billing_address"})


def test_compiled_plans_are_reused_per_mapping_and_schema() -> None:
    first = plan_for(BASIC, SCHEMA)
    assert plan_for(BASIC, SCHEMA) is first
    assert plan_for(BASIC, None) is not first
    assert plan_for(BASIC, account_schema()).targets == first.targets


# --- one value whatever the read path ------------------------------------------------------

PLAN_SCHEMA = schema_from_describe(
    {
        "name": "Plan__c",
        "fields": [
            describe_field("Id", "id"),
            describe_field("Seats__c", "double"),
            describe_field("Tier__c", "picklist"),
        ],
    }
)
BY_SEATS = mapping(
    {"Tier__c": "tier"}, sfdc_object="Plan__c", group_type="plan", group_name_field="Seats__c"
)


def test_a_number_group_name_looked_up_at_flush_time_names_the_same_group() -> None:
    plan_id = "a0BRM0000001AbCYAU"
    (created,) = envelopes_from_event(
        cdc_message(
            "CREATE",
            [plan_id],
            {"Seats__c": 250.0, "Tier__c": "Growth"},
            entity="Plan__c",
        )
    )
    assert changes(changes_for(created, BY_SEATS, PLAN_SCHEMA)).key == ("plan", "250")
    (updated,) = envelopes_from_event(
        cdc_message("UPDATE", [plan_id], {"Tier__c": "Free"}, entity="Plan__c", changed=["Tier__c"])
    )
    assert isinstance(changes_for(updated, BY_SEATS, PLAN_SCHEMA), NeedsLookup)
    # The flush-time lookup hands over the value as text: str(250.0) == "250.0".
    looked_up = changes(changes_for(updated, BY_SEATS, PLAN_SCHEMA, group_value=str(250.0)))
    assert looked_up.key == ("plan", "250")
    row = {"Id": plan_id, "Seats__c": "250.0", "Tier__c": "Free"}  # Bulk CSV
    read = envelope_from_record("Plan__c", row, source="bulk", now_ms=1)
    assert changes(changes_for(read, BY_SEATS, PLAN_SCHEMA)).key == ("plan", "250")


def test_a_business_account_name_sets_no_person_name_part() -> None:
    """A plain ``Name`` (a business account's) is not the person name's parts."""
    both = mapping({"Name": "name", "FirstName": "first"})
    envelope = ChangeEnvelope("Account", ACCOUNT_ID, "update", 1, fields={"Name": "Acme Inc"})
    out = changes_for(envelope, both, SCHEMA)
    assert isinstance(out, PropertyChanges)
    assert (out.set, out.unset) == ({"name": "Acme Inc"}, frozenset())
