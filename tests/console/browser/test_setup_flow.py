"""The whole setup in a real browser, from an org with no published mapping to Save, with
``sfamp run`` running beside it: the service switches to the saved mapping, a record
edited through Salesforce's REST API reaches Amplitude, and Status shows the flush."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from pipeline.config.validation import dump_mapping
from pipeline.kafka.config_topic import latest_mapping
from tests.console.browser.org import SalesforceRest, amplitude_group
from tests.console.browser.pages import ConsoleMessages, MappingSetup
from tests.console.browser.stack import ConsoleStack
from tests.runtime.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]

# What the service runs until the console saves: another group type, another field.
FILE_MAPPING: dict[str, Any] = {
    "version": 1,
    "sync_cadence": {"mode": "interval", "every_seconds": 1},
    "mappings": [
        {
            "sfdc_object": "Account",
            "group_type": "account",
            "group_name_field": "Id",
            "group_properties": [{"sfdc_field": "Name", "amplitude_property": "name"}],
        }
    ],
}


async def service_status(console: ConsoleStack) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.get(console.env["SFAMP_CONSOLE__SERVICE_URL"] + "/status")
    return dict(answer.json())


async def test_from_no_mapping_to_save_and_a_salesforce_change_reaching_amplitude(
    page: Page, console: ConsoleStack, console_messages: ConsoleMessages
) -> None:
    service = console.start_service(FILE_MAPPING)
    await page.goto(console.url + "/")
    await expect(page.get_by_text("No mapping is published yet.")).to_be_visible()
    await expect(page.get_by_test_id("salesforce-user")).to_have_text("admin@sandbox.example")

    form = await MappingSetup(page).open(console.url)
    await expect(form.control("Sync Cadence")).to_have_value("daily")
    await expect(page.get_by_test_id("group-mapping")).to_have_count(0)
    await form.interval(1)
    await form.add_group_mapping(
        "Account", "customer", "Id", [("Name", "name"), ("Industry", "industry")], "mark"
    )
    await form.no_failures()
    await form.next.click()

    table = page.get_by_role("table", name="Final verification")
    await expect(table.get_by_role("row").filter(has_text="Account.Industry")).to_contain_text(
        "pass"
    )
    verdict = page.get_by_role("status")
    await expect(verdict).to_contain_text(re.compile(r"Verified: \d+ passed, 0 warning"))
    await service.ready()
    assert (await service_status(console))["mapping_revision"].startswith("file:")
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.get_by_test_id("saved-revision")).to_have_text("1")
    # The Saved page is a GET (Post/Redirect/Get): reloading it publishes nothing more.
    await expect(page).to_have_url(re.compile(r"/mapping/saved\?result="))
    await page.reload()
    await expect(page.get_by_test_id("saved-revision")).to_have_text("1")
    published, _ = await latest_mapping(console.sandboxes.settings(console.topic_prefix).kafka)
    assert published is not None
    assert published.revision == 1

    async def switched() -> bool:
        return (await service_status(console))["mapping_revision"] == "sfamp.config revision 1"

    await wait_until(switched, timeout=30, what="sfamp run to switch to revision 1")

    salesforce = SalesforceRest(console.salesforce_url)
    record_id = await salesforce.create("Account", Name="Console Co", Industry="Energy")
    await salesforce.update("Account", record_id, Industry="Retail")

    async def delivered() -> bool:
        group = await amplitude_group(console.amplitude_url, "customer", record_id)
        return group == {"name": "Console Co", "industry": "Retail", "sfdc_deleted": False}

    await wait_until(delivered, timeout=30, what="the change to reach Amplitude as customer")

    await page.goto(console.url + "/status")
    await expect(page.get_by_test_id("service-mapping")).to_contain_text(
        "sfamp.config revision 1; cadence"
    )
    # The chart's totals only grow; "last flush" may already be a later, empty one.
    await expect(page.get_by_test_id("throughput-chart")).to_contain_text(
        re.compile(r"groups flushed \([1-9]\d*\)")
    )

    # Back to edit it: the form holds the published mapping, and Export gives its bytes
    # (those of sfamp config export, compared by test_mapping_form).
    await form.open(console.url)
    await expect(form.control("Amplitude group type")).to_have_value("customer")
    async with page.expect_download() as download:
        await page.get_by_role("button", name="Export config").click()
    exported = Path(await (await download.value).path()).read_text()
    published, _ = await latest_mapping(console.sandboxes.settings(console.topic_prefix).kafka)
    assert published is not None
    assert exported == dump_mapping(published.mapping)
    # Saved, Status while it polls, and the form of a published mapping: no CSP reports.
    assert console_messages.csp_violations() == []
    assert console_messages.errors() == []
