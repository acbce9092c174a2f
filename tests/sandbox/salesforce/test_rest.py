"""REST API over real HTTP: discovery, describe, query paging, CRUD, collections, limits,
error shapes, and the CDC changes that writes publish."""

from __future__ import annotations

import re

import httpx
import pytest

from sfamp_sandbox.salesforce import SalesforceSandbox

from .conftest import API

pytestmark = pytest.mark.integration
DATETIME_JSON = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$")


async def _seed(http: httpx.AsyncClient, object_name: str, count: int) -> list[str]:
    response = await http.post("/__sandbox/seed", json={"object": object_name, "count": count})
    assert response.status_code == 200
    ids: list[str] = response.json()["ids"]
    return ids


async def test_versions_resources_and_global_describe(sf_http: httpx.AsyncClient) -> None:
    versions = (await sf_http.get("/services/data/")).json()
    assert {"label": "Spring '26", "url": "/services/data/v66.0", "version": "66.0"} in versions
    assert {"label": "Winter '25", "url": "/services/data/v62.0", "version": "62.0"} in versions
    resources = (await sf_http.get(f"{API}/")).json()
    assert resources["query"] == f"{API}/query"
    described = (await sf_http.get(f"{API}/sobjects/")).json()
    by_name = {o["name"]: o for o in described["sobjects"]}
    assert by_name["Account"]["keyPrefix"] == "001"
    assert by_name["Plan__c"]["custom"] is True
    assert by_name["AccountChangeEvent"]["queryable"] is False
    ids = await _seed(sf_http, "Plan__c", 7)
    info = (await sf_http.get(f"{API}/sobjects/Plan__c/")).json()
    assert info["objectDescribe"]["keyPrefix"] == "a0B"
    assert [item["Id"] for item in info["recentItems"]] == ids[::-1][:5]


async def test_object_describe_has_compound_and_flags(sf_http: httpx.AsyncClient) -> None:
    response = await sf_http.get(f"{API}/sobjects/Account/describe/")
    fields = {f["name"]: f for f in response.json()["fields"]}
    assert fields["BillingAddress"]["type"] == "address"
    assert fields["BillingCity"]["compoundFieldName"] == "BillingAddress"
    assert fields["External_Id__c"]["externalId"] is True
    assert fields["External_Id__c"]["unique"] is True
    assert fields["Id"]["idLookup"] is True
    assert fields["Revenue_Per_Employee__c"]["calculated"] is True
    assert fields["Regions__c"]["type"] == "multipicklist"
    assert fields["OwnerId"]["referenceTo"] == ["User"]
    kinds = {f["type"] for f in fields.values()}
    assert {
        "id",
        "string",
        "picklist",
        "boolean",
        "currency",
        "double",
        "int",
        "percent",
        "date",
        "datetime",
        "reference",
        "email",
        "url",
        "textarea",
    } <= kinds
    contact = (await sf_http.get(f"{API}/sobjects/contact/describe")).json()
    names = {f["name"]: f for f in contact["fields"]}
    assert names["LastName"]["compoundFieldName"] == "Name"
    assert names["LastName"]["nillable"] is False
    missing = await sf_http.get(f"{API}/sobjects/Widget__c/describe/")
    assert missing.status_code == 404
    assert missing.json()[0]["errorCode"] == "NOT_FOUND"


async def test_query_pages_with_next_records_url(sf_http: httpx.AsyncClient) -> None:
    ids = await _seed(sf_http, "Account", 450)
    first = await sf_http.get(
        f"{API}/query/",
        params={"q": "SELECT Id, Name, CreatedDate, BillingAddress FROM Account ORDER BY Id"},
        headers={"Sforce-Query-Options": "batchSize=200"},
    )
    body = first.json()
    assert first.headers["Sforce-Limit-Info"].startswith("api-usage=")
    assert body["totalSize"] == 450
    assert body["done"] is False
    seen = [r["Id"] for r in body["records"]]
    record = body["records"][0]
    assert record["attributes"] == {"type": "Account", "url": f"{API}/sobjects/Account/{ids[0]}"}
    assert DATETIME_JSON.match(record["CreatedDate"])
    assert set(record["BillingAddress"]) == {"street", "city", "state", "postalCode", "country"}
    while not body["done"]:
        body = (await sf_http.get(body["nextRecordsUrl"])).json()
        seen += [r["Id"] for r in body["records"]]
    assert "nextRecordsUrl" not in body
    assert seen == ids
    count = (await sf_http.get(f"{API}/query", params={"q": "SELECT COUNT() FROM Account"})).json()
    assert count == {"totalSize": 450, "done": True, "records": []}


async def test_query_errors(sf_http: httpx.AsyncClient) -> None:
    async def error(q: str) -> tuple[int, dict[str, str]]:
        response = await sf_http.get(f"{API}/query/", params={"q": q})
        return response.status_code, response.json()[0]

    status, body = await error("SELECT Id FORM Account")
    assert (status, body["errorCode"]) == (400, "MALFORMED_QUERY")
    assert body["message"].endswith("unexpected token: FORM")
    status, body = await error("SELECT Id, Nope__c FROM Account")
    assert (status, body["errorCode"]) == (400, "INVALID_FIELD")
    assert "No such column 'Nope__c' on entity 'Account'" in body["message"]
    status, body = await error("SELECT Id FROM Nope__c")
    assert (status, body["errorCode"]) == (400, "INVALID_TYPE")
    assert "sObject type 'Nope__c' is not supported" in body["message"]
    stale = await sf_http.get(f"{API}/query/01gdeadbeef-200")
    assert stale.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


async def test_crud_and_query_all(sf_http: httpx.AsyncClient) -> None:
    created = await sf_http.post(
        f"{API}/sobjects/Account/", json={"Name": "Express Logistics", "NumberOfEmployees": 4}
    )
    assert created.status_code == 201
    record_id = created.json()["id"]
    assert created.json() == {"id": record_id, "success": True, "errors": []}
    assert record_id.startswith("001")
    assert len(record_id) == 18
    patched = await sf_http.patch(
        f"{API}/sobjects/Account/{record_id}", json={"Industry": "Energy", "AnnualRevenue": 100}
    )
    assert patched.status_code == 204
    got = (await sf_http.get(f"{API}/sobjects/Account/{record_id}?fields=Name,Industry")).json()
    assert got["Industry"] == "Energy"
    assert set(got) == {"attributes", "Name", "Industry"}
    full = (await sf_http.get(f"{API}/sobjects/Account/{record_id[:15]}")).json()
    assert full["Revenue_Per_Employee__c"] == 25.0
    assert full["IsDeleted"] is False
    assert (await sf_http.delete(f"{API}/sobjects/Account/{record_id}")).status_code == 204
    gone = await sf_http.get(f"{API}/sobjects/Account/{record_id}")
    assert gone.status_code == 404
    again = await sf_http.delete(f"{API}/sobjects/Account/{record_id}")
    assert again.json()[0]["errorCode"] == "ENTITY_IS_DELETED"
    q = f"SELECT Id, IsDeleted FROM Account WHERE Id = '{record_id}'"
    assert (await sf_http.get(f"{API}/query/", params={"q": q})).json()["totalSize"] == 0
    rows = (await sf_http.get(f"{API}/queryAll/", params={"q": q})).json()["records"]
    assert rows[0]["IsDeleted"] is True
    restored = await sf_http.post(f"/__sandbox/records/Account/{record_id}/undelete")
    assert restored.json()["IsDeleted"] is False


async def test_write_errors(sf_http: httpx.AsyncClient) -> None:
    unknown = await sf_http.post(f"{API}/sobjects/Account/", json={"Name": "A", "Foo__c": 1})
    assert unknown.status_code == 400
    assert unknown.json()[0]["errorCode"] == "INVALID_FIELD"
    with_id = await sf_http.post(f"{API}/sobjects/Account/", json={"Id": "x", "Name": "A"})
    assert (
        with_id.json()[0]["message"] == "The Id field should not be specified in the sobject data."
    )
    missing = await sf_http.post(f"{API}/sobjects/Contact/", json={"FirstName": "A"})
    assert missing.json()[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    bad_json = await sf_http.post(f"{API}/sobjects/Account/", content=b"{nope")
    assert bad_json.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    formula = await sf_http.post(
        f"{API}/sobjects/Account/", json={"Name": "A", "Revenue_Per_Employee__c": 1}
    )
    assert formula.json()[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    no_record = await sf_http.patch(f"{API}/sobjects/Account/001RM0000000zzzAAA", json={})
    assert no_record.status_code == 404


async def test_collections_retrieve_returns_null_for_missing(sf_http: httpx.AsyncClient) -> None:
    ids = await _seed(sf_http, "Account", 3)
    await sf_http.delete(f"{API}/sobjects/Account/{ids[1]}")
    wanted = [ids[2], "001RM00000000zzAAA", ids[1], "garbage", ids[0]]
    post = await sf_http.post(
        f"{API}/composite/sobjects/Account", json={"ids": wanted, "fields": ["Id", "Name"]}
    )
    body = post.json()
    assert [r and r["Id"] for r in body] == [ids[2], None, None, None, ids[0]]
    got = await sf_http.get(
        f"{API}/composite/sobjects/Account", params={"ids": ",".join(ids), "fields": "Name"}
    )
    assert got.json()[0] == {
        "attributes": {"type": "Account", "url": f"{API}/sobjects/Account/{ids[0]}"},
        "Name": "Account 0000001",
    }
    bad = await sf_http.post(
        f"{API}/composite/sobjects/Account", json={"ids": ids, "fields": ["Nope"]}
    )
    assert bad.status_code == 400
    assert bad.json()[0]["errorCode"] == "INVALID_FIELD"
    too_many = await sf_http.post(
        f"{API}/composite/sobjects/Account", json={"ids": ids * 700, "fields": ["Id"]}
    )
    assert too_many.status_code == 400


async def test_request_limit_and_usage_header(sf_http: httpx.AsyncClient) -> None:
    await sf_http.post("/__sandbox/limits", json={"max": 100, "used": 98})
    ok = await sf_http.get(f"{API}/limits/")
    assert ok.headers["Sforce-Limit-Info"] == "api-usage=99/100"
    assert ok.json()["DailyApiRequests"] == {"Max": 100, "Remaining": 1}
    assert (await sf_http.get(f"{API}/sobjects/")).status_code == 200
    refused = await sf_http.get(f"{API}/sobjects/")
    assert refused.status_code == 403
    assert refused.json() == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    assert refused.headers["Sforce-Limit-Info"] == "api-usage=100/100"


async def test_scripted_rest_faults(sf_http: httpx.AsyncClient) -> None:
    await sf_http.post("/__sandbox/faults", json={"kind": "http_503", "count": 2})
    await sf_http.post("/__sandbox/faults", json={"kind": "request_limit", "count": 1})
    statuses = [(await sf_http.get(f"{API}/limits/")).status_code for _ in range(4)]
    assert statuses == [503, 503, 403, 200]
    await sf_http.post("/__sandbox/faults", json={"kind": "http_500"})
    failed = await sf_http.get(f"{API}/limits/")
    assert failed.status_code == 500
    assert failed.json()[0]["errorCode"] == "UNKNOWN_EXCEPTION"


async def test_missing_session_is_invalid_session_id(
    salesforce_sandbox: SalesforceSandbox,
) -> None:
    async with httpx.AsyncClient(base_url=salesforce_sandbox.base_url, timeout=10) as client:
        response = await client.get(f"{API}/sobjects/", headers={"Authorization": "Bearer no"})
    assert response.status_code == 401
    assert response.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]


async def test_update_publishes_changed_and_nulled_fields(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    created = await sf_http.post(
        f"{API}/sobjects/Account/",
        json={"Name": "Acme", "BillingCity": "San Francisco", "Phone": "1", "Industry": "Media"},
    )
    record_id = created.json()["id"]
    await sf_http.patch(
        f"{API}/sobjects/Account/{record_id}",
        json={"BillingCity": "Oakland", "Phone": None, "Industry": "Media"},
        headers={"Sforce-Call-Options": "client=sfamp-test"},
    )
    events = salesforce_sandbox.events.events_after(-2)
    assert [e["payload"]["ChangeEventHeader"]["changeType"] for e in events] == [
        "CREATE",
        "UPDATE",
    ]
    create = events[0]["payload"]
    assert create["BillingAddress"] == {"City": "San Francisco"}
    assert "IsDeleted" not in create
    assert "SystemModstamp" not in create
    assert "Revenue_Per_Employee__c" not in create
    assert create["CreatedDate"].endswith(".000Z")
    update = events[1]["payload"]
    header = update["ChangeEventHeader"]
    assert header["recordIds"] == [record_id]
    assert header["changeOrigin"] == "com/salesforce/api/rest/62.0;client=sfamp-test"
    assert header["sequenceNumber"] == 1
    assert sorted(header["changedFields"]) == ["BillingAddress.City", "LastModifiedDate", "Phone"]
    assert header["nulledFields"] == ["Phone"]
    assert update["BillingAddress"] == {"City": "Oakland"}
    assert update["Phone"] is None
    assert "Industry" not in update
    await sf_http.delete(f"{API}/sobjects/Account/{record_id}")
    delete = salesforce_sandbox.events.events_after(-2)[-1]["payload"]
    assert delete["ChangeEventHeader"]["changeType"] == "DELETE"
    assert set(delete) == {"ChangeEventHeader"}


async def test_get_deleted_and_updated_windows(sf_http: httpx.AsyncClient) -> None:
    ids = await _seed(sf_http, "Account", 3)
    # Windows have minute granularity: move past the seeding minute first.
    start = (await sf_http.post("/__sandbox/clock", json={"advance_seconds": 120})).json()["now"]
    await sf_http.post("/__sandbox/clock", json={"advance_seconds": 120})
    await sf_http.delete(f"{API}/sobjects/Account/{ids[0]}")
    await sf_http.patch(f"{API}/sobjects/Account/{ids[1]}", json={"Rating": "Hot"})
    await sf_http.post("/__sandbox/clock", json={"advance_seconds": 120})
    end = (await sf_http.get("/__sandbox/clock")).json()["now"]
    window = {"start": start, "end": end}
    deleted = (await sf_http.get(f"{API}/sobjects/Account/deleted/", params=window)).json()
    assert [d["id"] for d in deleted["deletedRecords"]] == [ids[0]]
    assert DATETIME_JSON.match(deleted["deletedRecords"][0]["deletedDate"])
    assert DATETIME_JSON.match(deleted["latestDateCovered"])
    updated = (await sf_http.get(f"{API}/sobjects/Account/updated/", params=window)).json()
    assert updated["ids"] == [ids[1]]
    backwards = await sf_http.get(
        f"{API}/sobjects/Account/deleted/", params={"start": end, "end": start}
    )
    assert backwards.status_code == 400
