"""The REST adapter against the Salesforce sandbox: paging, chunked retrieve, error mapping."""

from __future__ import annotations

import httpx
import pytest
from structlog.testing import capture_logs

from pipeline.errors import (
    RequestLimitError,
    SalesforceRequestError,
    SalesforceUnavailableError,
)
from pipeline.salesforce.client import SalesforceClient
from pipeline.salesforce.rest import normalise_id, one_line
from sfamp_sandbox.salesforce import SalesforceSandbox
from tests.salesforce.helpers import Sleeps, fault, sandbox_settings, seed

pytestmark = pytest.mark.integration


async def test_describe_describe_global_userinfo_limits(sf_client: SalesforceClient) -> None:
    rest = sf_client.rest
    account = await rest.describe("Account")
    assert account["name"] == "Account"
    assert {"Id", "Name", "Industry"} <= {f["name"] for f in account["fields"]}
    listing = await rest.describe_global()
    names = {entry["name"] for entry in listing["sobjects"]}
    assert {"Account", "AccountChangeEvent", "Plan__c", "Plan__ChangeEvent"} <= names
    info = await rest.userinfo()
    assert info["email"]
    limits = await rest.limits()
    assert limits["DailyApiRequests"]["Max"] > 0
    assert rest.api_calls == 4


async def test_query_follows_next_records_url_past_2000(
    sf_client: SalesforceClient, control: httpx.AsyncClient
) -> None:
    ids = await seed(control, "Account", 4500)
    rest = sf_client.rest
    pages = [page async for page in rest.query_pages("SELECT Id, Name, Owner.Name FROM Account")]
    assert [len(page.records) for page in pages] == [2000, 2000, 500]
    assert all(page.total_size == 4500 for page in pages)
    assert [page.done for page in pages] == [False, False, True]
    records = [r for page in pages for r in page.records]
    assert {r["Id"] for r in records} == set(ids)
    assert "attributes" not in records[0]
    assert "attributes" not in records[0]["Owner"]
    assert records[0]["Owner"]["Name"]

    before = rest.api_calls
    streamed = [r["Id"] async for r in rest.query("SELECT Id FROM Account")]
    assert sorted(streamed) == sorted(ids)
    assert rest.api_calls - before == 3


async def test_query_all_includes_deleted_records(
    sf_client: SalesforceClient, control: httpx.AsyncClient
) -> None:
    ids = await seed(control, "Account", 3)
    await sf_client.rest.request("DELETE", f"sobjects/Account/{ids[0]}")
    soql = "SELECT Id, IsDeleted FROM Account"
    live = [r["Id"] async for r in sf_client.rest.query(soql)]
    everything = {r["Id"]: r["IsDeleted"] async for r in sf_client.rest.query(soql, all_rows=True)}
    assert sorted(live) == sorted(ids[1:])
    assert everything[ids[0]] is True


async def test_retrieve_chunks_by_2000_and_accepts_15_character_ids(
    sf_client: SalesforceClient, control: httpx.AsyncClient
) -> None:
    ids = await seed(control, "Account", 4100)
    deleted = ids[1]
    await sf_client.rest.request("DELETE", f"sobjects/Account/{deleted}")
    short = ids[2][:15]
    asked = [*ids, short, "001000000000000AAA", "not-an-id"]
    rest = sf_client.rest
    before = rest.api_calls
    found = await rest.retrieve("Account", asked, ["Name", "Industry"])
    assert rest.api_calls - before == 3  # 4101 distinct valid ids -> 2000 + 2000 + 101
    assert deleted not in found
    assert "001000000000000AAA" not in found
    assert "not-an-id" not in found
    assert found[short] is found[ids[2]]
    assert found[ids[0]]["Id"] == ids[0]
    assert set(found[ids[0]]) == {"Id", "Name", "Industry"}
    assert len({key for key in found if len(key) == 18}) == 4099


async def test_request_takes_full_urls_host_paths_and_data_paths(
    sf_client: SalesforceClient,
) -> None:
    token = await sf_client.auth.token()
    assert token.identity_url is not None
    identity = (await sf_client.rest.request("GET", token.identity_url)).json()
    assert identity["username"] == "admin@sandbox.example"
    versions = (await sf_client.rest.request("GET", "/services/data/")).json()
    assert any(v["version"] == "62.0" for v in versions)
    resources = (await sf_client.rest.request("GET", "/")).json()
    assert resources["query"] == "/services/data/v62.0/query"


ERRORS = [
    ("SELECT Id, Foo__c FROM Account", "INVALID_FIELD", "No such column 'Foo__c'"),
    ("SELECT Id FORM Account", "MALFORMED_QUERY", ""),
    ("SELECT Id FROM Nope__c", "INVALID_TYPE", "sObject type 'Nope__c' is not supported"),
]


@pytest.mark.parametrize(("soql", "code", "text"), ERRORS)
async def test_query_errors_keep_their_error_code(
    sf_client: SalesforceClient, sleeps: Sleeps, soql: str, code: str, text: str
) -> None:
    with pytest.raises(SalesforceRequestError) as caught:
        [r async for r in sf_client.rest.query(soql)]
    assert caught.value.error_code == code
    assert str(caught.value).startswith(f"{code}: ")
    assert text in str(caught.value)
    assert "\n" not in str(caught.value)
    assert sleeps.delays == []  # a 4xx is never retried


async def test_describe_of_an_unknown_object_is_not_found(sf_client: SalesforceClient) -> None:
    with pytest.raises(SalesforceRequestError) as caught:
        await sf_client.rest.describe("Nope__c")
    assert caught.value.error_code == "NOT_FOUND"


async def test_request_limit_is_not_retried(
    sf_client: SalesforceClient, control: httpx.AsyncClient, sleeps: Sleeps
) -> None:
    await fault(control, "request_limit")
    with pytest.raises(RequestLimitError) as caught:
        await sf_client.rest.limits()
    assert caught.value.error_code == "REQUEST_LIMIT_EXCEEDED"
    assert "TotalRequests Limit exceeded" in str(caught.value)
    assert sleeps.delays == []


async def test_5xx_is_retried_with_growing_backoff_then_succeeds(
    sf_client: SalesforceClient, control: httpx.AsyncClient, sleeps: Sleeps
) -> None:
    await fault(control, "http_503", count=2)
    with capture_logs() as logs:
        limits = await sf_client.rest.limits()
    assert "DailyApiRequests" in limits
    assert len(sleeps.delays) == 2
    assert 0.25 <= sleeps.delays[0] <= 0.5
    assert 0.5 <= sleeps.delays[1] <= 1.0
    assert sf_client.rest.api_calls == 3
    retries = [line for line in logs if line["event"] == "salesforce_retry"]
    assert [line["call"] for line in retries] == ["GET limits/"] * 2, (
        "what is retried, beside the error that names what failed"
    )


async def test_persistent_5xx_gives_up_as_unavailable(
    sf_client: SalesforceClient, control: httpx.AsyncClient, sleeps: Sleeps
) -> None:
    await fault(control, "http_500", count=10)
    with pytest.raises(SalesforceUnavailableError, match="UNKNOWN_EXCEPTION") as caught:
        await sf_client.rest.describe("Account")
    assert caught.value.retriable
    assert len(sleeps.delays) == 3  # four attempts in all
    assert sf_client.rest.api_calls == 4


async def test_a_timeout_is_retried(
    salesforce_sandbox: SalesforceSandbox, control: httpx.AsyncClient
) -> None:
    settings = sandbox_settings(salesforce_sandbox, timeout_seconds=0.2)
    sleeps = Sleeps()
    async with SalesforceClient.from_settings(settings, sleep=sleeps) as client:
        await client.auth.token()
        response = await control.post(
            "/__sandbox/faults", json={"kind": "slow", "count": 1, "delay_seconds": 0.6}
        )
        response.raise_for_status()
        assert "DailyApiRequests" in await client.rest.limits()
    assert len(sleeps.delays) == 1


def test_normalise_id() -> None:
    assert normalise_id("001RM000004UF9s") == "001RM000004UF9sYAG"
    assert normalise_id("001RM000004UF9sYAG") == "001RM000004UF9sYAG"
    assert normalise_id("001RM000004UF9syag") == "001RM000004UF9sYAG"
    assert normalise_id("001RM000004UF9") is None
    assert normalise_id("001RM000004UF9s'") is None


def test_one_line_drops_the_caret_display() -> None:
    message = (
        "\nSELECT Id FORM Account\n          ^\nERROR at Row:1:Column:11\nunexpected token: FORM"
    )
    assert one_line(message) == (
        "SELECT Id FORM Account ERROR at Row:1:Column:11 unexpected token: FORM"
    )
