"""Bulk API 2.0 query jobs over real HTTP: states, CSV format, locator paging, abort, delete."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from sfamp_sandbox.salesforce import SalesforceSandbox

from .conftest import API

pytestmark = pytest.mark.integration
JOBS = f"{API}/jobs/query"


async def _create(http: httpx.AsyncClient, query: str, **extra: str) -> dict[str, object]:
    response = await http.post(JOBS, json={"operation": "query", "query": query, **extra})
    assert response.status_code == 200, response.text
    job: dict[str, object] = response.json()
    return job


async def test_results_page_through_every_row_exactly_once(sf_http: httpx.AsyncClient) -> None:
    seeded = await sf_http.post("/__sandbox/seed", json={"object": "Account", "count": 2500})
    ids = seeded.json()["ids"]
    job = await _create(sf_http, "SELECT Id, Name, Is_Active__c, CreatedDate FROM Account")
    assert job["state"] == "UploadComplete"
    assert job["object"] == "Account"
    info = (await sf_http.get(f"{JOBS}/{job['id']}")).json()
    assert info["state"] == "JobComplete"
    assert info["numberRecordsProcessed"] == 2500
    seen: list[str] = []
    locator = ""
    pages = 0
    while True:
        params = {"maxRecords": "700", **({"locator": locator} if locator else {})}
        page = await sf_http.get(f"{JOBS}/{job['id']}/results", params=params)
        assert page.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(page.text)))
        assert rows[0] == ["Id", "Name", "Is_Active__c", "CreatedDate"]
        assert int(page.headers["Sforce-NumberOfRecords"]) == len(rows) - 1
        seen += [row[0] for row in rows[1:]]
        pages += 1
        locator = page.headers["Sforce-Locator"]
        if locator == "null":
            break
    assert pages == 4
    assert seen == ids
    again = await sf_http.get(f"{JOBS}/{job['id']}/results", params={"maxRecords": "700"})
    assert again.text.splitlines()[1].startswith(f'"{ids[0]}"')


async def test_csv_quotes_everything_and_formats_values(sf_http: httpx.AsyncClient) -> None:
    created = await sf_http.post(
        f"{API}/sobjects/Account/", json={"Name": 'Say "hi", Inc.', "Is_Active__c": True}
    )
    record_id = created.json()["id"]
    job = await _create(
        sf_http,
        "SELECT Id, Name, Industry, Is_Active__c, LastModifiedDate, Owner.Name FROM Account",
        lineEnding="CRLF",
    )
    page = await sf_http.get(f"{JOBS}/{job['id']}/results")
    lines = page.text.split("\r\n")
    assert lines[0] == '"Id","Name","Industry","Is_Active__c","LastModifiedDate","Owner.Name"'
    cells = lines[1].split('","')
    assert lines[1].startswith(f'"{record_id}","Say ""hi"", Inc.","","true","')
    assert cells[-2].endswith(".000Z")
    assert cells[-1] == 'Sandbox Admin"'
    assert page.headers["Sforce-Locator"] == "null"


async def test_query_all_includes_deleted_rows(sf_http: httpx.AsyncClient) -> None:
    ids = (await sf_http.post("/__sandbox/seed", json={"object": "Plan__c", "count": 3})).json()
    await sf_http.delete(f"{API}/sobjects/Plan__c/{ids['ids'][0]}")
    live = await _create(sf_http, "SELECT Id FROM Plan__c")
    every = await sf_http.post(
        JOBS, json={"operation": "queryAll", "query": "SELECT Id FROM Plan__c"}
    )
    live_rows = (await sf_http.get(f"{JOBS}/{live['id']}/results")).text.splitlines()
    all_rows = (await sf_http.get(f"{JOBS}/{every.json()['id']}/results")).text.splitlines()
    assert len(live_rows) == 3
    assert len(all_rows) == 4


async def test_unsupported_queries_are_refused(sf_http: httpx.AsyncClient) -> None:
    for query, code in [
        ("SELECT COUNT() FROM Account", "API_ERROR"),
        ("SELECT BillingAddress FROM Account", "API_ERROR"),
        ("SELECT Id FROM Nope__c", "INVALID_TYPE"),
        ("SELECT Id Account", "MALFORMED_QUERY"),
    ]:
        response = await sf_http.post(JOBS, json={"operation": "query", "query": query})
        assert response.status_code == 400
        assert response.json()[0]["errorCode"] == code
    bad_op = await sf_http.post(
        JOBS, json={"operation": "delete", "query": "SELECT Id FROM Account"}
    )
    assert bad_op.json()[0]["errorCode"] == "INVALIDJOB"
    unknown = await sf_http.get(f"{JOBS}/750RM0000000zzzAAA")
    assert unknown.status_code == 404


async def test_job_moves_through_states_with_emulator_time() -> None:
    async with (
        SalesforceSandbox(bulk_job_seconds=60.0) as sf,
        httpx.AsyncClient(base_url=sf.base_url, timeout=10) as http,
    ):
        token = (
            await http.post(
                "/services/oauth2/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": "sandbox-client",
                    "client_secret": "sandbox-secret",
                },
            )
        ).json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        job = await _create(http, "SELECT Id FROM Account")
        assert (await http.get(f"{JOBS}/{job['id']}")).json()["state"] == "UploadComplete"
        early = await http.get(f"{JOBS}/{job['id']}/results")
        assert early.json()[0]["errorCode"] == "JOB_NOT_COMPLETE"
        await http.post("/__sandbox/clock", json={"advance_seconds": 31})
        assert (await http.get(f"{JOBS}/{job['id']}")).json()["state"] == "InProgress"
        refused = await http.delete(f"{JOBS}/{job['id']}")
        assert refused.status_code == 400
        await http.post("/__sandbox/clock", json={"advance_seconds": 30})
        assert (await http.get(f"{JOBS}/{job['id']}")).json()["state"] == "JobComplete"
        other = await _create(http, "SELECT Id FROM Contact")
        aborted = await http.patch(f"{JOBS}/{other['id']}", json={"state": "Aborted"})
        assert aborted.json()["state"] == "Aborted"
        listed = (await http.get(JOBS)).json()
        assert listed["done"] is True
        assert [j["id"] for j in listed["records"]] == [job["id"], other["id"]]
        assert (await http.delete(f"{JOBS}/{job['id']}")).status_code == 204
        assert (await http.get(f"{JOBS}/{job['id']}")).status_code == 404
