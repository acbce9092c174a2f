"""Field-level security through the control API: describe, SOQL (REST and Bulk), retrieve,
writes and change events all lose a hidden field; making it readable restores each."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sfamp_sandbox.salesforce import SalesforceSandbox

from .conftest import API

pytestmark = pytest.mark.integration
SECURITY = "/__sandbox/field-security"
NO_SUCH_INDUSTRY = (
    "No such column 'Industry' on entity 'Account'. If you are attempting to use a custom"
    " field, be sure to append the '__c' after the custom field name. Please reference your"
    " WSDL or the describe call for the appropriate names."
)


async def _hide(http: httpx.AsyncClient, field: str, readable: bool = False) -> dict[str, Any]:
    response = await http.post(
        SECURITY, json={"object": "Account", "field": field, "readable": readable}
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def _account(http: httpx.AsyncClient, **values: Any) -> str:
    created = await http.post(f"{API}/sobjects/Account/", json={"Name": "Acme", **values})
    assert created.status_code == 201, created.text
    record_id: str = created.json()["id"]
    return record_id


def _invalid_field(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    [error] = response.json()
    assert error["errorCode"] == "INVALID_FIELD"
    message: str = error["message"]
    return message


async def _described(http: httpx.AsyncClient) -> set[str]:
    fields = (await http.get(f"{API}/sobjects/Account/describe/")).json()["fields"]
    return {f["name"] for f in fields}


async def test_hidden_field_is_gone_from_describe_and_soql(sf_http: httpx.AsyncClient) -> None:
    record_id = await _account(sf_http, Industry="Energy")
    assert await _hide(sf_http, "Industry") == {"hidden": {"Account": ["Industry"]}}
    assert (await sf_http.get(SECURITY)).json() == {"hidden": {"Account": ["Industry"]}}
    assert "Industry" not in await _described(sf_http)
    for endpoint in ("query", "queryAll"):
        refused = await sf_http.get(
            f"{API}/{endpoint}/", params={"q": "SELECT Id, Industry FROM Account"}
        )
        message = _invalid_field(refused)
        assert message.endswith(NO_SUCH_INDUSTRY)
        assert "^\nERROR at Row:1:Column:12\n" in message
    where = await sf_http.get(
        f"{API}/query/", params={"q": "SELECT Id FROM Account WHERE Industry = 'Energy'"}
    )
    assert _invalid_field(where).endswith(NO_SUCH_INDUSTRY)
    parent = await sf_http.get(
        f"{API}/query/", params={"q": "SELECT Id, Account.Industry FROM Contact"}
    )
    assert _invalid_field(parent).endswith(NO_SUCH_INDUSTRY)
    whole = (await sf_http.get(f"{API}/sobjects/Account/{record_id}")).json()
    assert "Industry" not in whole
    assert whole["Name"] == "Acme"
    named = await sf_http.get(f"{API}/sobjects/Account/{record_id}", params={"fields": "Industry"})
    assert _invalid_field(named) == NO_SUCH_INDUSTRY
    composite = await sf_http.post(
        f"{API}/composite/sobjects/Account", json={"ids": [record_id], "fields": ["Id", "Industry"]}
    )
    assert _invalid_field(composite) == NO_SUCH_INDUSTRY
    admin = (await sf_http.get(f"/__sandbox/records/Account/{record_id}")).json()
    assert admin["Industry"] == "Energy"


async def test_bulk_jobs_are_refused_or_fail(sf_http: httpx.AsyncClient) -> None:
    await _account(sf_http, Industry="Energy")
    jobs = f"{API}/jobs/query"
    query = {"operation": "query", "query": "SELECT Id, Industry FROM Account"}
    started = (await sf_http.post(jobs, json=query)).json()
    await _hide(sf_http, "Industry")
    failed = (await sf_http.get(f"{jobs}/{started['id']}")).json()
    assert failed["state"] == "Failed"
    assert failed["errorMessage"].startswith("INVALID_FIELD: ")
    assert failed["errorMessage"].endswith(NO_SUCH_INDUSTRY)
    results = await sf_http.get(f"{jobs}/{started['id']}/results")
    assert results.status_code == 400
    assert _invalid_field(await sf_http.post(jobs, json=query)).endswith(NO_SUCH_INDUSTRY)


async def test_change_events_leave_hidden_fields_out(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    await _hide(sf_http, "Industry")
    hidden = await _hide(sf_http, "BillingCity")
    assert hidden == {
        "hidden": {
            "Account": sorted(
                [
                    "Industry",
                    "BillingAddress",
                    "BillingStreet",
                    "BillingCity",
                    "BillingState",
                    "BillingPostalCode",
                    "BillingCountry",
                ]
            )
        }
    }
    created = await sf_http.post(
        "/__sandbox/records/Account",
        json={"Name": "Acme", "Industry": "Energy", "BillingCity": "Oslo", "Phone": "1"},
    )
    record_id = created.json()["id"]
    await sf_http.patch(
        f"/__sandbox/records/Account/{record_id}",
        json={"Industry": "Media", "BillingCity": None, "Phone": "2"},
    )
    await sf_http.patch(f"/__sandbox/records/Account/{record_id}", json={"Industry": None})
    create, update, only_hidden = [e["payload"] for e in salesforce_sandbox.events.events_after(-2)]
    assert create["Name"] == "Acme"
    assert "Industry" not in create
    assert "BillingAddress" not in create
    assert update["Phone"] == "2"
    assert {"Industry", "BillingAddress"}.isdisjoint(update)
    assert sorted(update["ChangeEventHeader"]["changedFields"]) == ["LastModifiedDate", "Phone"]
    assert update["ChangeEventHeader"]["nulledFields"] == []
    assert only_hidden["ChangeEventHeader"]["changedFields"] == ["LastModifiedDate"]
    assert set(only_hidden) == {"ChangeEventHeader", "LastModifiedDate"}


async def test_api_writes_cannot_name_a_hidden_field(sf_http: httpx.AsyncClient) -> None:
    record_id = await _account(sf_http)
    await _hide(sf_http, "Industry")
    refused = await sf_http.patch(f"{API}/sobjects/Account/{record_id}", json={"Industry": "x"})
    assert refused.status_code == 400
    assert refused.json()[0] == {
        "message": "No such column 'Industry' on sobject of type Account",
        "errorCode": "INVALID_FIELD",
        "fields": ["Industry"],
    }
    created = await sf_http.post(f"{API}/sobjects/Account/", json={"Name": "B", "Industry": "x"})
    assert created.status_code == 400


async def test_readable_again_restores_everything(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    record_id = await _account(sf_http, Industry="Energy")
    await _hide(sf_http, "Industry")
    assert await _hide(sf_http, "Industry", readable=True) == {"hidden": {}}
    assert "Industry" in await _described(sf_http)
    rows = await sf_http.get(f"{API}/query/", params={"q": "SELECT Industry FROM Account"})
    assert [r["Industry"] for r in rows.json()["records"]] == ["Energy"]
    await sf_http.patch(f"{API}/sobjects/Account/{record_id}", json={"Industry": "Media"})
    update = salesforce_sandbox.events.events_after(-2)[-1]["payload"]
    assert update["Industry"] == "Media"


async def test_reset_restores_and_unhideable_fields_are_refused(
    sf_http: httpx.AsyncClient,
) -> None:
    await _hide(sf_http, "Industry")
    await sf_http.post("/__sandbox/reset")
    assert (await sf_http.get(SECURITY)).json() == {"hidden": {}}
    for field in ("Id", "Name", "SystemModstamp", "FirstName", "Nope__c"):
        refused = await sf_http.post(
            SECURITY, json={"object": "Account", "field": field, "readable": False}
        )
        assert refused.status_code == 400, field
    bad_flag = await sf_http.post(
        SECURITY, json={"object": "Account", "field": "Industry", "readable": "no"}
    )
    assert bad_flag.status_code == 400
    unknown_object = await sf_http.post(
        SECURITY, json={"object": "Acount", "field": "Industry", "readable": False}
    )
    assert unknown_object.json()[0]["errorCode"] == "INVALID_TYPE"
