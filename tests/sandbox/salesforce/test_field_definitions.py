"""FieldDefinition through the REST query endpoint: every field of an object, whatever the API
user's field-level security, which is what tells a hidden field from a misspelt one."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import API

pytestmark = pytest.mark.integration

# The query sfamp runs (pipeline/salesforce/fields.py) when a mapped field is not in describe.
HIDDEN_OR_MISSPELT = (
    "SELECT QualifiedApiName FROM FieldDefinition WHERE EntityDefinition.QualifiedApiName ="
    " 'Account' AND QualifiedApiName IN ('Industry', 'Industri', 'Name')"
)


async def _query(http: httpx.AsyncClient, soql: str, endpoint: str = "query") -> Any:
    response = await http.get(f"{API}/{endpoint}/", params={"q": soql})
    assert response.status_code == 200, response.text
    return response.json()


async def _refused(http: httpx.AsyncClient, soql: str) -> dict[str, Any]:
    response = await http.get(f"{API}/query/", params={"q": soql})
    assert response.status_code == 400, response.text
    [error] = response.json()
    assert isinstance(error, dict)
    return error


async def test_a_hidden_field_is_still_defined_and_a_misspelt_one_is_not(
    sf_http: httpx.AsyncClient,
) -> None:
    hidden = await sf_http.post(
        "/__sandbox/field-security",
        json={"object": "Account", "field": "Industry", "readable": False},
    )
    assert hidden.status_code == 200, hidden.text
    for endpoint in ("query", "queryAll"):
        result = await _query(sf_http, HIDDEN_OR_MISSPELT, endpoint)
        assert result["totalSize"] == 2
        assert result["done"] is True
        assert sorted(r["QualifiedApiName"] for r in result["records"]) == ["Industry", "Name"]
    industry = next(r for r in result["records"] if r["QualifiedApiName"] == "Industry")
    assert industry["attributes"] == {
        "type": "FieldDefinition",
        "url": "/services/data/v62.0/sobjects/FieldDefinition/Account.Industry",
    }


async def test_every_field_of_the_object_and_only_of_that_object(
    sf_http: httpx.AsyncClient,
) -> None:
    described = (await sf_http.get(f"{API}/sobjects/Contact/describe/")).json()["fields"]
    soql = (
        "SELECT QualifiedApiName, DurableId, EntityDefinition.QualifiedApiName FROM"
        " FieldDefinition WHERE EntityDefinition.QualifiedApiName = 'contact'"
    )
    records = (await _query(sf_http, soql))["records"]
    assert [r["QualifiedApiName"] for r in records] == [f["name"] for f in described]
    first = records[0]
    assert first["DurableId"] == f"Contact.{first['QualifiedApiName']}"
    assert first["EntityDefinition"] == {
        "attributes": {
            "type": "EntityDefinition",
            "url": "/services/data/v62.0/sobjects/EntityDefinition/Contact",
        },
        "QualifiedApiName": "Contact",
    }


async def test_filters_order_limit_and_count(sf_http: httpx.AsyncClient) -> None:
    soql = (
        "SELECT QualifiedApiName FROM FieldDefinition WHERE EntityDefinitionId = 'Account'"
        " AND QualifiedApiName LIKE 'billing%' AND (NOT QualifiedApiName = 'BillingAddress')"
        " ORDER BY QualifiedApiName DESC LIMIT 2"
    )
    names = [r["QualifiedApiName"] for r in (await _query(sf_http, soql))["records"]]
    assert names == ["BillingStreet", "BillingState"]
    count = (
        "SELECT COUNT() FROM FieldDefinition WHERE DurableId IN ('Account.Name', 'Plan__c.Name')"
    )
    assert (await _query(sf_http, count))["totalSize"] == 2
    unknown = "SELECT QualifiedApiName FROM FieldDefinition WHERE EntityDefinitionId = 'Nope__c'"
    assert await _query(sf_http, unknown) == {"totalSize": 0, "done": True, "records": []}


async def test_the_entity_filter_is_required(sf_http: httpx.AsyncClient) -> None:
    for where in (
        "",
        " WHERE QualifiedApiName = 'Name'",
        " WHERE EntityDefinitionId = 'A' OR Id != null",
    ):
        error = await _refused(sf_http, f"SELECT QualifiedApiName FROM FieldDefinition{where}")
        assert error == {
            "errorCode": "EXTERNAL_OBJECT_UNSUPPORTED_EXCEPTION",
            "message": "FieldDefinition: a filter on a reified column is required.",
        }


async def test_an_unknown_column_is_an_invalid_field(sf_http: httpx.AsyncClient) -> None:
    error = await _refused(
        sf_http,
        "SELECT Colour FROM FieldDefinition WHERE EntityDefinition.QualifiedApiName = 'Account'",
    )
    assert error["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Colour' on entity 'FieldDefinition'" in error["message"]
    error = await _refused(
        sf_http,
        "SELECT EntityDefinition.Colour FROM FieldDefinition WHERE EntityDefinitionId = 'Account'",
    )
    assert "No such column 'Colour' on entity 'EntityDefinition'" in error["message"]
