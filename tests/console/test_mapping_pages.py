"""Mapping setup over HTTP: validation fragments, structural changes, import and export, Save.

The console runs in-process behind aiohttp's test client, against the sandboxes and the
real broker; what it validates, exports and publishes is compared with the library and the CLI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from pipeline.config.settings import Settings
from pipeline.config.validation import dump_mapping, parse_mapping
from pipeline.kafka.config_topic import latest_mapping, publish_mapping
from pipeline.sandbox_stack import SandboxStack
from tests.console.conftest import csrf_of, sfamp_env, sfamp_in_process

Client = TestClient[Any, Any]

FORM = {
    "cadence_mode": "interval",
    "cadence_every": "30",
    "m0.sfdc_object": "Account",
    "m0.group_type": "account",
    "m0.group_name_field": "Id",
    "m0.on_delete": "mark",
    "m0.p0.sfdc_field": "Name",
    "m0.p0.amplitude_property": "name",
    "m0.p1.sfdc_field": "Industry",
    "m0.p1.amplitude_property": "industry",
}
MAPPING = {
    "version": 1,
    "sync_cadence": {"mode": "daily", "at": "06:30"},
    "reconcile": {"mode": "hourly", "minute": 15},
    "mappings": [
        {
            "sfdc_object": "Account",
            "group_type": "account",
            "group_name_field": "Id",
            "group_properties": [
                {"sfdc_field": "Name", "amplitude_property": "name"},
                {"sfdc_field": "Industry", "amplitude_property": "industry"},
            ],
            "on_delete": "unset",
        }
    ],
}


async def post(client: Client, path: str, fields: dict[str, str], **headers: str) -> str:
    csrf = await csrf_of(client)
    response = await client.post(path, data={"csrf_token": csrf, **fields}, headers=headers)
    text = await response.text()
    assert response.status == 200, text
    return text


async def update(client: Client, path: str, fields: dict[str, str]) -> tuple[str, bool]:
    """An htmx request of the form: the answer and whether it says the form validates."""
    csrf = await csrf_of(client)
    response = await client.post(
        path, data={"csrf_token": csrf, **fields}, headers={"HX-Request": "true"}
    )
    text = await response.text()
    assert response.status == 200, text
    trigger = json.loads(response.headers["HX-Trigger-After-Swap"])
    return text, trigger["sfamp-validated"]["valid"]


def oob_span(html: str, control: str) -> str:
    start = html.index(f'<span id="err-{control}" hx-swap-oob="innerHTML"')
    return html[html.index(">", start) + 1 : html.index("</span>", start)]


def controls(html: str) -> list[str]:
    """The ids of the form controls an answer draws."""
    return re.findall(r'<(?:input|select|button)[^>]* id="([^"]+)"', html)


async def test_a_field_mapped_twice_and_an_empty_group_type_fail_beside_their_controls(
    client: Client,
) -> None:
    fields = {**FORM, "m0.group_type": "", "m0.p1.sfdc_field": "Name"}
    html, valid = await update(client, "/mapping/validate", fields)

    assert not valid
    region = html[: html.index("</div>")]
    assert region.startswith('<div id="failures" hx-swap-oob="innerHTML">')
    assert "$.mappings[0].group_type" in region
    assert "$.mappings[0].group_properties[1].sfdc_field" in region
    assert oob_span(html, "m0-group_type") == "is required"
    assert "&#39;Name&#39; is already mapped at group_properties[0]" in oob_span(
        html, "m0-p1-sfdc_field"
    )
    assert oob_span(html, "m0-p0-sfdc_field") == ""  # the first use is fine
    assert controls(html) == []  # Next and every control stay as they are


async def test_a_valid_form_enables_next_and_shows_the_export_json(client: Client) -> None:
    html, valid = await update(client, "/mapping/validate", FORM)

    assert valid
    assert "No validation failures." in html
    assert "&#34;every_seconds&#34;: 30" in html
    assert controls(html) == []


async def test_structural_changes_redraw_only_their_part(client: Client) -> None:
    html, valid = await update(client, "/mapping/form", {"action": "add_mapping"})
    assert not valid
    assert '<div hx-swap-oob="beforeend:#group-mappings">' in html
    assert html.count('data-testid="group-mapping"') == 1
    assert html.count('data-testid="group-property"') == 1
    assert 'id="m0-sfdc_object"' in html

    html, _ = await update(client, "/mapping/form", {**FORM, "action": "add_property:0"})
    assert '<div hx-swap-oob="beforeend:#m0-rows">' in html
    assert controls(html) == ["m0-p2-sfdc_field", "m0-p2-amplitude_property"]
    assert oob_span(html, "m0-p2-amplitude_property") == "is required"

    html, valid = await update(client, "/mapping/form", {**FORM, "action": "remove_property:0:0"})
    assert valid
    assert '<div hx-swap-oob="delete:#m0-p0-row"></div>' in html
    assert controls(html) == []
    assert oob_span(html, "m0-p1-sfdc_field") == ""  # the row left keeps its number
    assert 'id="err-m0-p0-sfdc_field"' not in html

    html, valid = await update(client, "/mapping/form", {**FORM, "action": "remove_mapping:0"})
    assert not valid
    assert '<div hx-swap-oob="delete:#m0-section"></div>' in html
    assert "$.mappings</code> must not be empty" in html
    assert oob_span(html, "add_mapping") == "must not be empty"


async def test_a_message_reaches_the_row_that_is_left_after_a_removal(client: Client) -> None:
    fields = {k: v for k, v in FORM.items() if not k.startswith("m0.p0.")}
    fields |= {"m0.p2.sfdc_field": "Industry", "m0.p2.amplitude_property": "sector"}
    html, valid = await update(client, "/mapping/validate", fields)
    assert not valid
    assert "already mapped" in oob_span(html, "m0-p2-sfdc_field")
    assert oob_span(html, "m0-p1-sfdc_field") == ""


async def test_choosing_an_object_redraws_only_the_controls_listing_its_fields(
    client: Client,
) -> None:
    fields = {**FORM, "m0.sfdc_object": "Contact", "action": "object:0"}
    html, _ = await update(client, "/mapping/form", fields)
    assert controls(html) == ["m0-group_name_field", "m0-p0-sfdc_field", "m0-p1-sfdc_field"]
    assert '<div id="m0-name-control" class="control" hx-swap-oob="true">' in html
    assert '<option value="Email"' in html  # a field of Contact
    assert '<h3 id="m0-title" hx-swap-oob="innerHTML">Contact → account</h3>' in html


async def test_the_org_supplies_objects_with_change_events_and_fields_id_first(
    client: Client,
) -> None:
    # Without htmx (no script), a structural change redraws the whole page.
    html = await post(client, "/mapping/form", {**FORM, "action": "refresh"})

    assert "<h1>Mapping setup</h1>" in html
    assert '<option value="Account" selected>Account (Account, change events)</option>' in html
    names = html[html.index('id="m0-group_name_field"') :]
    first = names.index('<option value="Id"')
    assert first < names.index('<option value="External_Id__c"') < names.index('"Industry"')
    assert "Industry (Industry, picklist): not unique" in names


async def test_import_then_export_equals_sfamp_config_export(
    client: Client, stack: SandboxStack, settings: Settings, topic_prefix: str, tmp_path: Path
) -> None:
    text = json.dumps(MAPPING)
    csrf = await csrf_of(client)
    form = aiohttp.FormData({"csrf_token": csrf})
    form.add_field("file", text.encode(), filename="mapping.json")
    response = await client.post("/mapping/import", data=form, headers={"HX-Request": "true"})
    html = await response.text()
    assert response.status == 200, html
    assert 'value="06:30"' in html
    assert 'name="reconcile_minute" min="0" max="59" value="15"' in html
    assert "imported: not saved yet" in html

    exported = await client.get("/mapping/export", params=_fields_of(html))
    assert exported.headers["Content-Disposition"].startswith("attachment")
    body = await exported.text()

    await publish_mapping(settings.kafka, parse_mapping(text), now_ms=1)
    result = await sfamp_in_process(sfamp_env(stack, topic_prefix), "config", "export")
    assert result.exit_code == 0, result.output
    assert body == result.stdout == dump_mapping(parse_mapping(text))
    published = await client.get("/mapping/export")  # no form: the published mapping
    assert await published.text() == body


def _fields_of(html: str) -> dict[str, str]:
    """The values an imported form would submit (inputs and selected options), by name."""
    fields: dict[str, str] = {}
    for match in re.finditer(
        r'<input type="(?:text|time|number)" id="[^"]+" name="([^"]+)" '
        r'(?:min="\d+" max="\d+" )?value="([^"]*)"',
        html,
    ):
        fields[match[1]] = match[2]
    for select in re.finditer(r'<select id="[^"]+" name="([^"]+)"(.*?)</select>', html, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected>', select[2])
        fields[select[1]] = chosen[1] if chosen else ""
    return fields


async def test_next_verifies_online_and_save_publishes_a_revision(
    client: Client, settings: Settings
) -> None:
    html = await post(client, "/mapping/verify", FORM)
    assert '<table aria-label="Final verification">' in html
    assert re.search(r"admin@sandbox.example at http://127.0.0.1:\d+\) and the Amplitude", html)
    assert "Salesforce login" in html
    assert "Amplitude API key" in html
    assert '<button type="submit" id="save" class="primary">Save</button>' in html

    start = html.index('name="mapping" value="') + len('name="mapping" value="')
    mapping_json = html[start : html.index('"', start)].replace("&#34;", '"').replace("&#39;", "'")
    html = await post(client, "/mapping/save", {"mapping": mapping_json})
    assert 'data-testid="saved-revision">1<' in html

    published, _ = await latest_mapping(settings.kafka)
    assert published is not None
    assert published.revision == 1
    assert published.mapping.sync_cadence.model_dump() == {"mode": "interval", "every_seconds": 30}
    assert [p.sfdc_field for p in published.mapping.mappings[0].group_properties] == [
        "Name",
        "Industry",
    ]


async def test_a_failing_check_disables_save_and_save_refuses_it(
    client: Client, settings: Settings
) -> None:
    fields = {**FORM, "m0.p1.sfdc_field": "No_Such_Field__c"}
    csrf = await csrf_of(client)
    response = await client.post("/mapping/verify", data={"csrf_token": csrf, **fields})
    html = await response.text()
    assert response.status == 422
    assert "no field No_Such_Field__c on Account" in html
    assert '<button type="submit" id="save" class="primary" disabled>Save</button>' in html

    mapping = {**MAPPING, "mappings": [{**MAPPING["mappings"][0], "group_name_field": "Nope__c"}]}  # type: ignore[dict-item]
    response = await client.post(
        "/mapping/save", data={"csrf_token": csrf, "mapping": json.dumps(mapping)}
    )
    assert response.status == 422
    assert "not saved" in (await response.text())
    published, _ = await latest_mapping(settings.kafka)
    assert published is None


async def test_next_with_failures_stays_on_the_form(client: Client) -> None:
    csrf = await csrf_of(client)
    fields = {**FORM, "m0.group_type": ""}
    response = await client.post("/mapping/verify", data={"csrf_token": csrf, **fields})
    assert response.status == 422
    html = await response.text()
    assert "<h1>Mapping setup</h1>" in html
    assert "Final verification" not in html


async def test_times_of_day_are_24_hour_text_checked_as_the_mapping_checks_them(
    client: Client,
) -> None:
    page = await (await client.get("/mapping")).text()
    box = page[page.index('id="cadence_at"') - 20 :]
    box = box[: box.index(">")]
    assert '<input type="text" id="cadence_at" name="cadence_at" value="00:00"' in box
    assert 'pattern="([01][0-9]|2[0-3]):[0-5][0-9]"' in box
    assert 'aria-describedby="hint-cadence_at err-cadence_at"' in box
    assert '<span id="hint-cadence_at" class="hint">24-hour clock, HH:MM</span>' in page
    assert 'type="time"' not in page  # the browser's picker shows "12:00 AM" in some locales
    # Drawn again (Back, a reload), the form shows what the server drew, not values the
    # browser refilled beside parts that follow other values.
    assert re.search(r'<form id="mapping-form"[^>]* autocomplete="off"', page)
    assert "data-unsent" not in page  # the published mapping, as it is: nothing to lose

    for typed in ("7:30", "24:00", ""):
        html, valid = await update(
            client, "/mapping/validate", {**FORM, "cadence_mode": "daily", "cadence_at": typed}
        )
        assert not valid, typed
        assert oob_span(html, "cadence_at") == "must be a UTC time HH:MM between 00:00 and 23:59"
    html, valid = await update(
        client, "/mapping/validate", {**FORM, "cadence_mode": "daily", "cadence_at": "07:30"}
    )
    assert valid


async def test_the_failure_list_follows_the_form_top_to_bottom(client: Client) -> None:
    fields = {**FORM, "cadence_mode": "daily", "cadence_at": "9", "m0.group_type": ""}
    fields |= {"m0.p1.sfdc_field": "Name", "m0.on_delete": "drop"}
    html, _ = await update(client, "/mapping/validate", fields)
    listed = re.findall(r"<li><code>([^<]+)</code>", html)
    assert listed == [
        "$.sync_cadence.at",
        "$.mappings[0].group_type",
        "$.mappings[0].group_properties[1].sfdc_field",
        "$.mappings[0].on_delete",
    ]


async def test_a_new_section_asks_for_the_object_before_its_fields(client: Client) -> None:
    html, _ = await update(client, "/mapping/form", {"action": "add_mapping"})
    assert '<select id="m0-group_name_field" name="m0.group_name_field" disabled' in html
    assert '<select id="m0-p0-sfdc_field" name="m0.p0.sfdc_field" disabled' in html
    assert "Choose a Salesforce object first" in html


async def test_a_name_the_org_does_not_know_fails_beside_its_control_before_next(
    client: Client,
) -> None:
    """As Final verification would say it, but now: the list is not "No validation
    failures" while Next would only fail. (Choosing the object drew its fields, and a
    keystroke's validation takes the org's word from what that read.)"""
    await update(client, "/mapping/form", {**FORM, "action": "object:0"})
    html, valid = await update(client, "/mapping/validate", {**FORM, "m0.p1.sfdc_field": "Industy"})
    assert not valid
    message = "no field Industy on Account (did you mean Industry?), or it is not readable"
    assert oob_span(html, "m0-p1-sfdc_field").startswith(message)
    assert "<code>$.mappings[0].group_properties[1].sfdc_field</code>" in html
    assert "Validation failures (1)" in html

    html, valid = await update(client, "/mapping/validate", {**FORM, "m0.sfdc_object": "Acount"})
    assert not valid
    assert (
        oob_span(html, "m0-sfdc_object") == "no object Acount in this org (did you mean Account?)"
    )
    html, valid = await update(client, "/mapping/validate", {**FORM, "m0.sfdc_object": "account"})
    assert oob_span(html, "m0-sfdc_object").startswith("spell it Account")
    html, valid = await update(client, "/mapping/validate", {**FORM, "m0.group_name_field": "id"})
    assert oob_span(html, "m0-group_name_field").startswith("spell it Id")
    assert (await update(client, "/mapping/validate", FORM))[1]


async def test_back_from_verification_fills_the_form_with_the_draft_not_an_import(
    client: Client,
) -> None:
    csrf = await csrf_of(client)
    response = await client.post(
        "/mapping/import", data={"csrf_token": csrf, "mapping": json.dumps(MAPPING)}
    )
    html = await response.text()
    assert response.status == 200, html
    assert 'value="06:30"' in html
    assert "your draft: not saved yet" in html
    assert "imported" not in html
    assert re.search(r'<form id="mapping-form"[^>]* data-unsent', html), "asks before leaving"
