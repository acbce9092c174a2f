"""Mapping setup in a real browser: failures block Next, a failing verification blocks
Save, Import then Export gives the bytes of ``sfamp config export``, and no page trips
the Content-Security-Policy. Nothing here saves: the module's org stays without a
published mapping."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import ElementHandle, Locator, Page, Route, expect

from pipeline.config.validation import load_mapping
from pipeline.kafka.config_topic import publish_mapping
from tests.console.browser.org import hide_field, sfamp
from tests.console.browser.pages import ConsoleMessages, MappingSetup
from tests.console.browser.stack import ConsoleStack
from tests.runtime.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]

ROOT = Path(__file__).resolve().parents[3]


async def test_failures_show_beside_their_control_and_in_the_list_and_block_next(
    page: Page, console: ConsoleStack
) -> None:
    form = await MappingSetup(page).open(console.url)
    await form.add_group_mapping("Account", "", "Id", [("Name", "name"), ("Name", "company")])

    group_type = form.control("Amplitude group type")
    await expect(group_type).to_have_accessible_description("is required")
    await expect(group_type).to_have_attribute("aria-invalid", "true")
    await expect(form.failures).to_contain_text("$.mappings[0].group_type is required")
    twice = form.control("Salesforce field", 1)
    await expect(twice).to_have_accessible_description(re.compile("'Name' is already mapped"))
    await expect(form.failures).to_contain_text(
        "$.mappings[0].group_properties[1].sfdc_field Salesforce field 'Name' is already mapped"
    )
    await expect(form.failures).to_contain_text("Validation failures (2)")
    await expect(form.next).to_be_disabled()
    await row_keeps_its_grid(page.get_by_test_id("group-property").nth(1))

    await form.type(group_type, "account")
    await expect(form.failures).to_contain_text("Validation failures (1)")
    await expect(group_type).to_have_accessible_description("")
    await expect(form.next).to_be_disabled()

    await form.choose(twice, "Industry")
    await form.no_failures()
    await expect(twice).to_have_accessible_description("")


async def row_keeps_its_grid(row: Locator) -> None:
    """A row whose field has a message keeps field, property and Remove on one line: the
    message wraps under its field instead of widening it."""
    boxes = [
        await part.bounding_box()
        for part in (
            row.get_by_label("Salesforce field", exact=True),
            row.get_by_label("Amplitude group property", exact=True),
            row.get_by_role("button", name="Remove group property"),
            row,
        )
    ]
    field, prop, remove, whole = (box for box in boxes if box is not None)
    assert field["width"] < whole["width"] / 2, (field, whole)
    assert field["x"] + field["width"] < prop["x"] < remove["x"], (field, prop, remove)
    middle = remove["y"] + remove["height"] / 2
    assert field["y"] < middle < field["y"] + field["height"], (field, remove)


async def same_element(page: Page, before: ElementHandle, now: Locator) -> bool:
    """Whether ``now`` is still the element ``before`` was, in the page."""
    return bool(
        await page.evaluate(
            "([a, b]) => a === b && a.isConnected", [before, await now.element_handle()]
        )
    )


async def test_validation_answers_keep_next_and_the_controls_in_place(
    page: Page, console: ConsoleStack
) -> None:
    form = await MappingSetup(page).open(console.url)
    await form.add_group_mapping("Account", "account", "Id", [("Name", "name")])
    await form.no_failures()
    group_type = form.control("Amplitude group type")
    next_before = await form.next.element_handle()
    typed_before = await group_type.element_handle()

    await group_type.fill("")
    await expect(group_type).to_have_accessible_description("is required")
    await expect(group_type).to_have_attribute("aria-invalid", "true")
    await expect(form.next).to_be_disabled()
    await group_type.fill("account")
    await form.no_failures()
    await expect(group_type).not_to_have_attribute("aria-invalid", "true")

    assert await same_element(page, next_before, form.next), "Next was replaced"
    assert await same_element(page, typed_before, group_type), "the text box was replaced"


async def test_a_press_on_next_lasting_past_a_validation_answer_still_clicks_it(
    page: Page, console: ConsoleStack
) -> None:
    """Typing, then Next at once: pressing Next leaves the text box, whose validation is
    answered before the button is released (as a person's click often is)."""
    form = await MappingSetup(page).open(console.url)
    await form.add_group_mapping("Account", "account", "Id", [("Name", "name")])
    await form.no_failures()
    await form.control("Amplitude group type").fill("customer")

    await form.next.scroll_into_view_if_needed()
    box = await form.next.bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    async with page.expect_response("**/mapping/validate"):
        await page.mouse.down()
    await page.mouse.up()

    table = page.get_by_role("table", name="Final verification")
    await expect(table.get_by_role("row").filter(has_text="Account -> customer")).to_contain_text(
        "pass"
    )


async def test_choosing_an_object_redraws_only_its_fields_and_a_row_added_at_once_counts(
    page: Page, console: ConsoleStack
) -> None:
    form = await MappingSetup(page).open(console.url)
    await page.get_by_role("button", name="Set up new group mapping").click()
    await expect(page.get_by_test_id("group-property")).to_have_count(1)
    group_type = form.control("Amplitude group type")
    typed_before = await group_type.element_handle()
    # The object's answer is held back while the person types on and adds a row.
    held: list[Route] = []
    await page.route("**/mapping/form", lambda route: held.append(route))

    await form.control("Salesforce object").select_option("Account")
    await wait_until(lambda: len(held) == 1, timeout=10, what="the object's request")
    await group_type.fill("account")
    await page.get_by_role("button", name="Add group property").click()

    async def answered() -> bool:
        while held:  # each answer in turn; a request waiting for the one before comes next
            await held.pop(0).continue_()
        return await page.get_by_test_id("group-property").count() == 2

    await wait_until(answered, timeout=15, what="both structural changes to be answered")
    await expect(group_type).to_have_value("account")
    assert await same_element(page, typed_before, group_type), "the text box was replaced"
    await form.choose(form.control("Group Name Field"), "Id")
    await form.choose(form.control("Salesforce field", 1), "Industry")  # Account's fields
    await expect(page.get_by_test_id("group-property")).to_have_count(2)


async def test_a_failing_verification_keeps_save_disabled(
    page: Page, console: ConsoleStack
) -> None:
    form = await MappingSetup(page).open(console.url)
    await form.add_group_mapping("Account", "account", "Id", [("Name", "name"), ("Industry", "x")])
    await form.no_failures()
    # The org changes under the form: the integration user loses read access to Industry.
    await hide_field(console.salesforce_url, "Account", "Industry", hidden=True)
    try:
        await form.next.click()
        table = page.get_by_role("table", name="Final verification")
        failed = table.get_by_role("row").filter(has_text="Account.Industry -> x")
        await expect(failed).to_contain_text("fail")
        await expect(failed).to_contain_text("not readable by the integration user")
        await expect(
            table.get_by_role("row").filter(has_text="Account.Name -> name")
        ).to_contain_text("pass")
        await expect(page.get_by_role("button", name="Save", exact=True)).to_be_disabled()
    finally:
        await hide_field(console.salesforce_url, "Account", "Industry", hidden=False)


async def test_import_then_export_gives_the_bytes_of_sfamp_config_export(
    page: Page, console: ConsoleStack, tmp_path: Path
) -> None:
    # The example mapping, written as a person might: other key order, other spacing.
    document = json.loads((ROOT / "examples" / "mapping.json").read_text())
    upload = tmp_path / "mine.json"
    upload.write_text(json.dumps(dict(reversed(document.items())), separators=(",", ":")))

    form = await MappingSetup(page).open(console.url)
    await form.control("Import config").set_input_files(upload)
    await expect(page.get_by_text("imported: not saved yet")).to_be_visible()
    await expect(form.control("Amplitude group type")).to_have_value("account")
    await expect(form.control("Salesforce field", 5)).to_have_value("BillingCountry")
    await form.no_failures()

    # A file that is not a mapping leaves the form as it was and says why in one line.
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": 1, "mappings": [')
    await form.control("Import config").set_input_files(broken)
    await expect(page.get_by_role("alert")).to_have_text(
        "Import config: the file is not JSON (unexpected end of data at line 1, column 29); "
        "the form is unchanged."
    )
    await expect(form.control("Amplitude group type")).to_have_value("account")
    await expect(form.control("Salesforce field", 5)).to_have_value("BillingCountry")
    async with page.expect_download() as download:
        await page.get_by_role("button", name="Export config").click()
    exported = Path(await (await download.value).path()).read_text()

    # sfamp config export of the same mapping, published under a prefix of its own.
    prefix = console.topic_prefix + "cli"
    kafka = console.sandboxes.settings(prefix).kafka
    await publish_mapping(kafka, load_mapping(upload), now_ms=int(time.time() * 1000))
    cli_env = {**console.env, "SFAMP_KAFKA__TOPIC_PREFIX": prefix}
    assert exported == await sfamp(cli_env, tmp_path, "config", "export")


async def test_no_page_trips_the_content_security_policy(
    page: Page, console: ConsoleStack, console_messages: ConsoleMessages
) -> None:
    answer = await page.goto(console.url + "/")
    assert answer is not None
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    await expect(page.get_by_text("admin@sandbox.example")).to_be_visible()

    form = await MappingSetup(page).open(console.url)
    await form.add_group_mapping("Account", "account", "Id", [("Name", "name")])
    await form.no_failures()
    await form.next.click()
    await expect(page.get_by_role("table", name="Final verification")).to_be_visible()
    await page.goto(console.url + "/status")
    await expect(page.get_by_role("heading", name="Status", exact=True)).to_be_visible()
    await page.goto(console.url + "/dead-letters")
    await expect(page.get_by_role("heading", name="Dead letters")).to_be_visible()
    assert console_messages.csp_violations() == []
    assert console_messages.errors() == []

    # The policy is enforced, not only sent: an inline script is refused and reported.
    await page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.inlineRan = true'; document.body.append(s); }"
    )
    assert await page.evaluate("() => window.inlineRan === undefined")
    await wait_until(
        lambda: len(console_messages.csp_violations()) == 1,
        timeout=5,
        what="Chromium to report the refused inline script",
    )


async def test_leaving_with_unsent_edits_asks_first_and_a_clean_form_does_not(
    page: Page, console: ConsoleStack
) -> None:
    form = await MappingSetup(page).open(console.url)
    status_link = page.get_by_role("navigation").get_by_role("link", name="Status")
    asked: list[str] = []

    async def stay(dialog: Any) -> None:
        asked.append(dialog.type)
        await dialog.dismiss()

    page.on("dialog", stay)
    await status_link.click()  # nothing edited yet: no question
    await expect(page.get_by_role("heading", name="Status")).to_be_visible()
    assert asked == []

    await form.open(console.url)
    await form.interval(45)
    await status_link.click()
    await wait_until(lambda: asked == ["beforeunload"], what="the question before leaving")
    await expect(page.get_by_role("heading", name="Mapping setup")).to_be_visible()
    await expect(form.control("Every (seconds)")).to_have_value("45")  # kept: stayed
    page.remove_listener("dialog", stay)

    async def leave(dialog: Any) -> None:
        asked.append(dialog.type)
        await dialog.accept()

    page.on("dialog", leave)
    await status_link.click()
    await expect(page.get_by_role("heading", name="Status")).to_be_visible()
    assert asked == ["beforeunload", "beforeunload"]

    # An addition alone (a button's request, no typing) is an edit too.
    await form.open(console.url)
    await page.get_by_role("button", name="Set up new group mapping").click()
    await expect(page.get_by_test_id("group-mapping")).to_have_count(1)
    await status_link.click()
    await expect(page.get_by_role("heading", name="Status")).to_be_visible()
    assert asked == ["beforeunload"] * 3
    page.remove_listener("dialog", leave)


async def test_the_keyboard_moves_to_what_an_addition_drew_and_back_after_a_removal(
    page: Page, console: ConsoleStack
) -> None:
    await MappingSetup(page).open(console.url)
    add = page.get_by_role("button", name="Set up new group mapping")
    await add.focus()
    await page.keyboard.press("Enter")
    section = page.get_by_test_id("group-mapping").first
    await expect(section.get_by_label("Salesforce object", exact=True)).to_be_focused()

    await section.get_by_role("button", name="Add group property").focus()
    await page.keyboard.press("Enter")
    rows = section.get_by_label("Salesforce field", exact=True)
    await expect(rows).to_have_count(2)
    # No object chosen yet: the field list waits for it, so the property name takes the keys.
    properties = section.get_by_label("Amplitude group property", exact=True)
    await expect(properties.nth(1)).to_be_focused()

    await section.get_by_role("button", name="Remove group property").nth(1).focus()
    await page.keyboard.press("Enter")
    await expect(rows).to_have_count(1)
    await expect(section.get_by_role("button", name="Add group property")).to_be_focused()

    await section.get_by_role("button", name="Remove group mapping").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("group-mapping")).to_have_count(0)
    await expect(add).to_be_focused()
