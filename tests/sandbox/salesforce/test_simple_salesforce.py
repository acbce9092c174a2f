"""simple-salesforce, a widely used client, pointed at the sandbox.

simple-salesforce always builds ``https://`` URLs; a requests adapter sends them to the
sandbox's plain-HTTP port instead. The client is synchronous, so it runs in a worker thread
while the sandbox serves on the test's event loop.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from sfamp_sandbox.salesforce import SalesforceSandbox

pytestmark = pytest.mark.integration


class PlainHttpAdapter(HTTPAdapter):
    """Rewrites https:// to http:// for the one host it is mounted on."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        assert request.url is not None
        request.url = "http://" + request.url.removeprefix("https://")
        return super().send(request, *args, **kwargs)


@pytest.fixture
def http_session(salesforce_sandbox: SalesforceSandbox) -> Iterator[requests.Session]:
    session = requests.Session()
    session.mount(
        f"https://{salesforce_sandbox.host}:{salesforce_sandbox.port}", PlainHttpAdapter()
    )
    yield session
    session.close()


def _client(sf: SalesforceSandbox, token: str, session: requests.Session) -> Salesforce:
    return Salesforce(instance_url=sf.base_url, session_id=token, session=session, version="62.0")


async def test_query_all_pages_through_more_than_2000_rows(
    salesforce_sandbox: SalesforceSandbox, sf_token: str, http_session: requests.Session
) -> None:
    from sfamp_sandbox.salesforce.seed import seed

    ids = seed(salesforce_sandbox.org, "Account", 4500)
    client = _client(salesforce_sandbox, sf_token, http_session)
    result = await asyncio.to_thread(client.query_all, "SELECT Id, Name FROM Account")
    assert result["totalSize"] == 4500
    assert [r["Id"] for r in result["records"]] == ids
    assert client.api_usage["api-usage"].used == 3  # three pages of 2,000 / 2,000 / 500


async def test_crud_through_sobject_api(
    salesforce_sandbox: SalesforceSandbox, sf_token: str, http_session: requests.Session
) -> None:
    client = _client(salesforce_sandbox, sf_token, http_session)

    def work() -> tuple[dict[str, Any], dict[str, Any]]:
        created = client.Contact.create({"FirstName": "Ada", "LastName": "Lovelace"})
        client.Contact.update(created["id"], {"LastName": "King"})
        record = client.Contact.get(created["id"])
        client.Contact.delete(created["id"])
        return created, record

    created, record = await asyncio.to_thread(work)
    assert created["success"] is True
    assert record["Name"] == "Ada King"
    stored = salesforce_sandbox.org.find_record("Contact", created["id"])
    assert stored is not None
    assert stored[1] is True
    update = salesforce_sandbox.events.events_after(-2)[1]["payload"]
    assert update["ChangeEventHeader"]["changedFields"] == ["LastModifiedDate", "Name.LastName"]
    assert update["Name"] == {"LastName": "King"}


async def test_malformed_query_raises(
    salesforce_sandbox: SalesforceSandbox, sf_token: str, http_session: requests.Session
) -> None:
    client = _client(salesforce_sandbox, sf_token, http_session)
    with pytest.raises(SalesforceMalformedRequest) as caught:
        await asyncio.to_thread(client.query, "SELECT Id FORM Account")
    assert caught.value.content[0]["errorCode"] == "MALFORMED_QUERY"


async def test_bulk2_query_reads_every_row(
    salesforce_sandbox: SalesforceSandbox, sf_token: str, http_session: requests.Session
) -> None:
    from sfamp_sandbox.salesforce.seed import seed

    ids = seed(salesforce_sandbox.org, "Opportunity", 3000)
    client = _client(salesforce_sandbox, sf_token, http_session)

    def run() -> list[str]:
        chunks = client.bulk2.Opportunity.query(
            "SELECT Id, Name, Amount FROM Opportunity", max_records=1000, wait=0
        )
        return [str(chunk) for chunk in chunks]

    chunks = await asyncio.to_thread(run)
    assert len(chunks) == 3
    rows = [row for chunk in chunks for row in csv.DictReader(io.StringIO(chunk))]
    assert [row["Id"] for row in rows] == ids
    assert float(rows[0]["Amount"]) > 0
