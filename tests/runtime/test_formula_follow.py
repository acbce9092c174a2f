"""A mapped formula field follows the fields it reads, end to end against the sandboxes.

Change events never carry ``Revenue_Per_Employee__c``; a REST update of ``AnnualRevenue``
(which it reads) makes the deliver pump read the formula's new value at flush time and
send it with the change, in the same request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import Org, group, running, settings_for, wait_until
from tests.sandbox.salesforce.conftest import API, CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME

MAPPING: dict[str, Any] = {
    "version": 1,
    "sync_cadence": {"mode": "interval", "every_seconds": 1},
    "mappings": [
        {
            "sfdc_object": "Account",
            "group_type": "account",
            "group_name_field": "Id",
            "group_properties": [
                {"sfdc_field": "AnnualRevenue", "amplitude_property": "revenue"},
                {"sfdc_field": "Revenue_Per_Employee__c", "amplitude_property": "per_employee"},
            ],
        }
    ],
}


async def _rest_update(org: Org, record_id: str, **fields: Any) -> None:
    """An update through Salesforce's REST API, as a user's integration makes it."""
    login = {
        "grant_type": "password",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "username": USERNAME,
        "password": PASSWORD,
    }
    token = (await org.http.post("/services/oauth2/token", data=login)).json()["access_token"]
    response = await org.http.patch(
        f"{API}/sobjects/Account/{record_id}",
        json=fields,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == httpx.codes.NO_CONTENT, response.text


async def test_a_formula_follows_a_rest_update_of_what_it_reads_within_one_flush(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_text(json.dumps(MAPPING))
    async with running(settings_for(stack, topic_prefix), mapping_file):
        account = await org.create("Account", Name="Acme", AnnualRevenue=1000, NumberOfEmployees=10)
        await wait_until(
            lambda: (group(stack, "account", account) or {}).get("per_employee") == 100,
            what="the formula's value read for the create",
        )
        await _rest_update(org, account, AnnualRevenue=5000)
        await wait_until(
            lambda: (group(stack, "account", account) or {}).get("revenue") == 5000,
            what="the REST update of AnnualRevenue",
        )
        # The formula's new value arrived with the change that fed it, not later.
        assert (group(stack, "account", account) or {}).get("per_employee") == 500
