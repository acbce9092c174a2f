"""Schema from describe: types, flags and compound components indexed both ways."""

from __future__ import annotations

import pytest

from pipeline.errors import SalesforceError
from pipeline.transform.schema import (
    component_field_name,
    component_key,
    schema_from_describe,
)
from tests.transform.fixtures import account_schema, contact_schema


def test_fields_carry_type_and_flags() -> None:
    schema = account_schema()
    assert schema.name == "Account"
    assert schema.type_of("AnnualRevenue") == "currency"
    assert schema.type_of("Nope__c") is None
    score = schema.field("Score__c")
    assert score is not None
    assert score.calculated
    key = schema.field("Ext_Key__c")
    assert key is not None
    assert (key.unique, key.external_id, key.id_lookup) == (True, True, True)


def test_address_components_are_indexed_by_their_cdc_names() -> None:
    schema = account_schema()
    assert schema.is_compound("BillingAddress")
    assert not schema.is_compound("BillingCity")
    parts = [info.component for info in schema.components_of("BillingAddress")]
    assert parts == ["Street", "City", "State", "PostalCode", "Country", "Latitude"]
    assert schema.component_field("BillingAddress", "City") == "BillingCity"
    assert schema.component_field("BillingAddress", "postalCode") == "BillingPostalCode"


def test_person_name_and_geolocation_components() -> None:
    assert contact_schema().component_field("Name", "FirstName") == "FirstName"
    assert account_schema().component_field("Loc__c", "Latitude") == "Loc__Latitude__s"


def test_unknown_component_falls_back_to_the_naming_rule() -> None:
    assert account_schema().component_field("BillingAddress", "CountryCode") == (
        "BillingCountryCode"
    )


@pytest.mark.parametrize(
    ("parent", "component", "field_name"),
    [
        ("BillingAddress", "City", "BillingCity"),
        ("ShippingAddress", "GeocodeAccuracy", "ShippingGeocodeAccuracy"),
        ("MailingAddress", "StateCode", "MailingStateCode"),
        ("Name", "LastName", "LastName"),
        ("Address", "Street", "Street"),  # User's address has bare component names
        ("Loc__c", "Longitude", "Loc__Longitude__s"),
    ],
)
def test_naming_rule_works_both_ways(parent: str, component: str, field_name: str) -> None:
    assert component_field_name(parent, component) == field_name
    assert component_key(parent, field_name) == component
    rest_spelling = component[0].lower() + component[1:]  # REST: city, postalCode
    assert component_field_name(parent, rest_spelling) == field_name


@pytest.mark.parametrize(
    "describe",
    [{}, {"name": "Account"}, {"name": "Account", "fields": [{"type": "string"}]}],
)
def test_malformed_describe_is_refused(describe: dict[str, object]) -> None:
    with pytest.raises(SalesforceError):
        schema_from_describe(describe)
