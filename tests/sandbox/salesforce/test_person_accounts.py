"""Person accounts: a composed ``Name`` string on REST, SOQL and Bulk CSV, the nested
``Name`` compound in change events; business accounts as before."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest

from sfamp_sandbox.salesforce import SalesforceSandbox

from .conftest import API

pytestmark = pytest.mark.integration
ADA = {"IsPersonAccount": True, "Salutation": "Ms.", "FirstName": "Ada", "LastName": "Lovelace"}


async def _create(http: httpx.AsyncClient, values: dict[str, Any]) -> str:
    created = await http.post("/__sandbox/records/Account", json=values)
    assert created.status_code == 201, created.text
    record_id: str = created.json()["id"]
    return record_id


def _payloads(sandbox: SalesforceSandbox) -> list[dict[str, Any]]:
    return [e["payload"] for e in sandbox.events.events_after(-2)]


async def _bulk_rows(http: httpx.AsyncClient, query: str) -> list[list[str]]:
    job = (await http.post(f"{API}/jobs/query", json={"query": query})).json()
    page = await http.get(f"{API}/jobs/query/{job['id']}/results")
    return list(csv.reader(io.StringIO(page.text)))


async def test_person_account_name_per_read_path(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    person = await _create(sf_http, {**ADA, "Industry": "Media"})
    business = await _create(sf_http, {"Name": "Acme"})
    record = (await sf_http.get(f"{API}/sobjects/Account/{person}")).json()
    assert record["Name"] == "Ada Lovelace"
    assert (record["Salutation"], record["FirstName"], record["LastName"]) == (
        "Ms.",
        "Ada",
        "Lovelace",
    )
    assert record["IsPersonAccount"] is True
    query = "SELECT Id, Name, IsPersonAccount FROM Account"
    rows = (await sf_http.get(f"{API}/query/", params={"q": query})).json()["records"]
    assert [(r["Name"], r["IsPersonAccount"]) for r in rows] == [
        ("Ada Lovelace", True),
        ("Acme", False),
    ]
    assert await _bulk_rows(sf_http, query) == [
        ["Id", "Name", "IsPersonAccount"],
        [person, "Ada Lovelace", "true"],
        [business, "Acme", "false"],
    ]
    person_event, business_event = _payloads(salesforce_sandbox)
    assert person_event["Name"] == {"Salutation": "Ms.", "FirstName": "Ada", "LastName": "Lovelace"}
    assert {"FirstName", "LastName", "Salutation"}.isdisjoint(person_event)
    assert person_event["IsPersonAccount"] is True
    assert person_event["Industry"] == "Media"
    assert business_event["Name"] == "Acme"
    assert business_event["IsPersonAccount"] is False


async def test_person_name_update_event_nests_the_changed_part(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    person = await _create(sf_http, ADA)
    response = await sf_http.patch(f"{API}/sobjects/Account/{person}", json={"LastName": "Byron"})
    assert response.status_code == 204
    await sf_http.patch(f"{API}/sobjects/Account/{person}", json={"Salutation": None})
    _, renamed, cleared = _payloads(salesforce_sandbox)
    assert renamed["Name"] == {"LastName": "Byron"}
    assert sorted(renamed["ChangeEventHeader"]["changedFields"]) == [
        "LastModifiedDate",
        "Name.LastName",
    ]
    assert cleared["Name"] == {"Salutation": None}
    assert cleared["ChangeEventHeader"]["nulledFields"] == ["Name.Salutation"]
    record = (await sf_http.get(f"{API}/sobjects/Account/{person}")).json()
    assert record["Name"] == "Ada Byron"


async def test_person_and_business_fields_are_kept_apart(sf_http: httpx.AsyncClient) -> None:
    via_api = await sf_http.post(f"{API}/sobjects/Account/", json={"Name": "X", **ADA})
    assert via_api.json()[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    no_last = await sf_http.post(
        "/__sandbox/records/Account", json={"IsPersonAccount": True, "FirstName": "Ada"}
    )
    assert no_last.json()[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert no_last.json()[0]["fields"] == ["LastName"]
    person = await _create(sf_http, ADA)
    business = await _create(sf_http, {"Name": "Acme"})
    renamed = await sf_http.patch(f"{API}/sobjects/Account/{person}", json={"Name": "Countess"})
    assert renamed.json()[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    named = await sf_http.patch(f"{API}/sobjects/Account/{business}", json={"FirstName": "A"})
    assert named.json()[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    flipped = await sf_http.patch(
        f"/__sandbox/records/Account/{business}", json={"IsPersonAccount": True}
    )
    assert flipped.status_code == 400


async def test_seeded_person_accounts_and_describe(sf_http: httpx.AsyncClient) -> None:
    seeded = await sf_http.post(
        "/__sandbox/seed", json={"object": "Account", "count": 3, "person_accounts": True}
    )
    query = "SELECT Name, FirstName, LastName, IsPersonAccount FROM Account"
    rows = (await sf_http.get(f"{API}/query/", params={"q": query})).json()["records"]
    assert len(rows) == len(seeded.json()["ids"]) == 3
    for row in rows:
        assert row["IsPersonAccount"] is True
        assert row["Name"] == f"{row['FirstName']} {row['LastName']}"
    described = (await sf_http.get(f"{API}/sobjects/Account/describe/")).json()["fields"]
    fields = {f["name"]: f for f in described}
    assert fields["Name"]["extraTypeInfo"] == "switchablepersonname"
    assert fields["Name"]["compoundFieldName"] is None
    for part in ("Salutation", "FirstName", "LastName"):
        assert fields[part]["compoundFieldName"] == "Name"
    assert fields["IsPersonAccount"]["createable"] is False
