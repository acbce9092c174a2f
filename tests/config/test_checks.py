"""The verification rules as pure functions over a describe: no org, no network."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest

from pipeline.config.checks import (
    NEVER_CARRIED,
    NOT_FOLLOWABLE,
    RECONCILE_OFF,
    UNREADABLE,
    DescribedObject,
    group_name_check,
    object_check,
    object_entries,
    property_check,
)
from pipeline.transform.change_event_fields import NEVER_IN_CHANGE_EVENTS, never_in_change_events
from pipeline.transform.schema import schema_from_describe


def field(name: str, type_: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


ACCOUNT = schema_from_describe(
    {
        "name": "Account",
        "fields": [
            field("Id", "id"),
            field("Name"),
            field("Industry", "picklist"),
            field("SystemModstamp", "datetime"),
            field("IsDeleted", "boolean"),
            field("LastActivityDate", "date"),
            field("LastViewedDate", "datetime"),
            field("Score__c", "double", calculated=True),
            field("Per__c", "currency", calculated=True, calculatedFormula="AnnualRevenue / Seats"),
            field("Age__c", "double", calculated=True, calculatedFormula="TODAY() - Since__c"),
            field("Owner_Name__c", calculated=True, calculatedFormula="Owner.Name"),
            field("Logo__c", "base64"),
        ],
    }
)


def check(
    field_name: str, unreadable: Mapping[str, str] | None = MappingProxyType({})
) -> tuple[str, str]:
    found = property_check("c", DescribedObject(ACCOUNT, unreadable), field_name)
    return found.status, found.detail


@pytest.mark.parametrize(
    "name", ["SystemModstamp", "IsDeleted", "LastActivityDate", "LastViewedDate"]
)
def test_fields_change_events_never_carry_warn(name: str) -> None:
    status, detail = check(name)
    assert status == "warn"
    assert detail.endswith(
        "change events never carry it; "
        "refreshed by the reconcile (daily at 03:00 UTC), backfills and re-syncs"
    )
    assert NEVER_CARRIED == "change events never carry it"


def test_formula_fields_warn_in_the_same_words() -> None:
    assert check("Score__c") == (
        "warn",
        f"formula (double): {NEVER_CARRIED}; "
        "refreshed by the reconcile (daily at 03:00 UTC), backfills and re-syncs",
    )


def test_formulas_of_the_same_record_are_followed_the_others_only_refreshed() -> None:
    followed = "formula (currency): re-read when AnnualRevenue, Seats change"
    assert check("Per__c") == ("pass", followed)
    for name, sf_type in (("Age__c", "double"), ("Owner_Name__c", "string")):
        assert check(name) == (
            "warn",
            f"formula ({sf_type}) {NOT_FOLLOWABLE}: "
            "refreshed by the reconcile only (daily at 03:00 UTC)",
        )


def test_with_the_reconcile_off_they_are_said_to_go_stale() -> None:
    def off(field_name: str) -> tuple[str, str]:
        found = property_check("c", DescribedObject(ACCOUNT), field_name, reconcile="off")
        return found.status, found.detail

    assert off("Age__c") == (
        "warn",
        f"formula (double) {NOT_FOLLOWABLE}: refreshed by the reconcile only, and {RECONCILE_OFF}",
    )
    assert off("LastActivityDate")[1].endswith(f"{NEVER_CARRIED}; {RECONCILE_OFF}")
    assert "goes stale" in RECONCILE_OFF
    assert off("Per__c")[0] == "pass"  # followed by change events whatever the schedule


def test_ordinary_fields_pass_and_binary_ones_fail() -> None:
    assert check("Industry") == ("pass", "picklist -> string")
    assert check("Logo__c")[0] == "fail"


def test_the_one_list_of_fields_events_never_carry() -> None:
    assert {"SystemModstamp", "IsDeleted", "LastActivityDate", "LastReferencedDate"} <= (
        NEVER_IN_CHANGE_EVENTS
    )
    assert never_in_change_events("Anything__c", calculated=True)
    assert not never_in_change_events("Industry")


def test_a_field_hidden_by_field_level_security_says_so() -> None:
    assert check("Rating", {"Rating": "Rating"}) == ("fail", f"Rating is {UNREADABLE}")


def test_a_field_in_another_case_says_how_to_spell_it() -> None:
    case = "field names in change events are case-sensitive"
    assert check("industry") == ("fail", f"spell it Industry: {case}")
    assert check("rating", {"rating": "rating"}) == ("fail", f"rating is {UNREADABLE}")
    hidden = DescribedObject(ACCOUNT, {"rating": "Rating"})
    assert property_check("c", hidden, "rating").detail == f"spell it Rating: {case}"


def test_a_misspelt_field_names_the_nearest_one() -> None:
    assert check("Industy") == ("fail", "no field Industy on Account (did you mean Industry?)")
    assert check("Nothing__c") == ("fail", "no field Nothing__c on Account")


def test_when_the_org_cannot_say_a_missing_field_may_be_either() -> None:
    status, detail = check("Rating", None)
    assert status == "fail"
    assert detail == f"no field Rating on Account, or it is {UNREADABLE}"


def test_object_names_are_checked_against_the_global_describe() -> None:
    entries = object_entries(
        {
            "sobjects": [
                {"name": "Account", "queryable": True},
                {"name": "AccountChangeEvent", "queryable": False},
                {"name": "Secret__c", "queryable": False},
            ]
        }
    )
    assert object_check("Account", entries) is None
    missing = object_check("Acount", entries)
    assert missing is not None
    assert missing.detail == "no object Acount in this org (did you mean Account?)"
    wrong_case = object_check("account", entries)
    assert wrong_case is not None
    assert "spell it Account" in wrong_case.detail
    hidden = object_check("Secret__c", entries)
    assert hidden is not None
    assert "not queryable" in hidden.detail


# As real orgs describe them: Id and Name are id lookup fields, and only Id names one record.
CONTACT = schema_from_describe(
    {
        "name": "Contact",
        "fields": [
            field("Id", "id", idLookup=True, unique=False),
            field("Name", idLookup=True, unique=False),
            field("Email", "email", idLookup=True, unique=False),
            field("Legacy_Id__c", externalId=True, idLookup=True, unique=False),
            field("Badge__c", externalId=True, idLookup=True, unique=True),
            field("Code__c", unique=True),
            field("Title"),
        ],
    }
)


def name_check(field_name: str) -> tuple[str, str]:
    found = group_name_check("g", DescribedObject(CONTACT, {}), field_name)
    return found.status, found.detail


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("Id", "the record Id: one group per record"),
        ("Code__c", "unique: one group per record"),
        ("Badge__c", "unique external id: one group per record"),
    ],
)
def test_only_id_and_unique_fields_name_one_group_per_record(name: str, detail: str) -> None:
    assert name_check(name) == ("pass", detail)


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("Name", "Name (string) is an id lookup field but not unique"),
        ("Email", "Email (email) is an id lookup field but not unique"),
        ("Legacy_Id__c", "Legacy_Id__c (string) is an id lookup field and an external id but "),
        ("Title", "Title (string) is not unique"),
    ],
)
def test_id_lookup_and_other_repeatable_fields_warn_that_records_share_groups(
    name: str, what: str
) -> None:
    status, detail = name_check(name)
    assert status == "warn"
    assert detail.startswith(what), detail
    assert detail.endswith("records sharing a value share one group, and the last change wins")


@pytest.mark.parametrize(
    ("on_delete", "ending"),
    [
        ("ignore", "and the last change wins"),
        ("mark", "; a delete of one marks the group deleted while others feed it"),
        ("unset", "; a delete of one unsets the properties others feed"),
    ],
)
def test_a_shared_group_warns_what_a_delete_does_to_it(on_delete: str, ending: str) -> None:
    found = group_name_check("g", DescribedObject(CONTACT, {}), "Title", on_delete=on_delete)
    assert found.status == "warn"
    assert found.detail.endswith(ending), found.detail


def test_a_compound_beside_its_own_component_writes_one_property_twice() -> None:
    from pipeline.config.checks import shared_property_checks
    from pipeline.config.mapping import ObjectMapping
    from sfamp_sandbox.salesforce.describe import describe_object
    from sfamp_sandbox.salesforce.objects import ACCOUNT as SANDBOX_ACCOUNT

    schema = schema_from_describe(describe_object(SANDBOX_ACCOUNT, "62.0"))
    mapping = ObjectMapping.model_validate(
        {
            "sfdc_object": "Account",
            "group_type": "account",
            "group_name_field": "Id",
            "group_properties": [
                {"sfdc_field": "BillingAddress", "amplitude_property": "billing_address"},
                {"sfdc_field": "BillingCity", "amplitude_property": "billing_address.City"},
                {"sfdc_field": "Name", "amplitude_property": "name"},
            ],
        }
    )
    (check,) = shared_property_checks(mapping, schema)
    assert (check.name, check.status) == (
        "Account -> account: property billing_address.City",
        "fail",
    )
    assert check.detail.startswith("written by both BillingAddress and BillingCity")
    apart = mapping.model_copy(
        update={"group_properties": [mapping.group_properties[0], mapping.group_properties[2]]}
    )
    assert shared_property_checks(apart, schema) == []
