"""Numbers on every read path, as Salesforce writes them: a ``Number(9, 0)`` double is
``250.0`` in REST JSON and change events and ``"250.0"`` in Bulk CSV; large doubles are
``1.5E7`` in CSV; writes round to the field's scale."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from sfamp_sandbox.salesforce import SalesforceSandbox
from sfamp_sandbox.salesforce.objects import FIELD_TYPES, PLAN
from sfamp_sandbox.salesforce.values import java_double

from .conftest import API


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (250.0, "250.0"),
        (0.0, "0.0"),
        (0.005, "0.005"),
        (0.0001, "1.0E-4"),
        (9_999_999.99, "9999999.99"),
        (15_000_000.0, "1.5E7"),
        (-350_000_000.0, "-3.5E8"),
        (16_147_805_824_397.0, "1.6147805824397E13"),
    ],
)
def test_doubles_print_as_java_does(value: float, text: str) -> None:
    assert java_double(value) == text


def test_plan_seats_is_a_scale_zero_double_and_every_type_has_a_field() -> None:
    seats = PLAN.by_name["Seats__c"]
    assert (seats.type, seats.precision, seats.scale) == ("double", 9, 0)
    assert set(FIELD_TYPES) == {
        "address",
        "boolean",
        "currency",
        "date",
        "datetime",
        "double",
        "email",
        "formula",
        "id",
        "int",
        "multipicklist",
        "percent",
        "phone",
        "picklist",
        "reference",
        "string",
        "textarea",
        "url",
    }


@pytest.mark.integration
async def test_seats_on_rest_bulk_and_change_events(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    created = await sf_http.post(f"{API}/sobjects/Plan__c/", json={"Name": "P", "Seats__c": 250})
    plan_id = created.json()["id"]
    await sf_http.post(
        f"{API}/sobjects/Account/", json={"Name": "A", "AnnualRevenue": 15_000_000.004}
    )
    rest = await sf_http.get(f"{API}/sobjects/Plan__c/{plan_id}", params={"fields": "Seats__c"})
    assert b'"Seats__c":250.0' in rest.content
    job = (
        await sf_http.post(
            f"{API}/jobs/query", json={"query": "SELECT Seats__c, Monthly_Price__c FROM Plan__c"}
        )
    ).json()
    page = await sf_http.get(f"{API}/jobs/query/{job['id']}/results")
    assert list(csv.reader(io.StringIO(page.text))) == [
        ["Seats__c", "Monthly_Price__c"],
        ["250.0", ""],
    ]
    revenue_job = (
        await sf_http.post(f"{API}/jobs/query", json={"query": "SELECT AnnualRevenue FROM Account"})
    ).json()
    revenue = await sf_http.get(f"{API}/jobs/query/{revenue_job['id']}/results")
    assert revenue.text.splitlines()[1] == '"1.5E7"'
    plan_event, account_event = [e["payload"] for e in salesforce_sandbox.events.events_after(-2)]
    assert plan_event["Seats__c"] == 250.0
    assert isinstance(plan_event["Seats__c"], float)
    assert account_event["AnnualRevenue"] == 15_000_000.0


@pytest.mark.integration
async def test_writes_round_to_the_field_scale(sf_http: httpx.AsyncClient) -> None:
    created = await sf_http.post(
        f"{API}/sobjects/Plan__c/", json={"Name": "P", "Seats__c": 250.5, "Monthly_Price__c": 9.995}
    )
    record = (await sf_http.get(f"{API}/sobjects/Plan__c/{created.json()['id']}")).json()
    assert (record["Seats__c"], record["Monthly_Price__c"]) == (251.0, 10.0)
