"""Save over HTTP: Post/Redirect/Get, Save only over the revision the form was loaded from,
nothing published for an unchanged mapping; Import refusing a file that is not a mapping.

The console runs in-process behind aiohttp's test client, against the sandboxes and the
real broker; what is published is read back from sfamp.config.
"""

from __future__ import annotations

import html as markup
import json
import re
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from pipeline.config.settings import Settings
from pipeline.config.validation import parse_mapping
from pipeline.console.pages_mapping import NOT_A_MAPPING, read_import
from pipeline.errors import MappingError
from pipeline.kafka.config_topic import latest_mapping, publish_mapping
from tests.console.conftest import csrf_of
from tests.console.test_mapping_pages import FORM, MAPPING
from tests.support.mappings import marked_twice

Client = TestClient[Any, Any]


def hidden(html: str, name: str, form_action: str) -> str:
    """The value of hidden input ``name`` in the form posting to ``form_action``."""
    start = re.search(rf'<form[^>]* action="{form_action}"', html)
    assert start is not None, f"no form to {form_action}"
    form = html[start.start() :]
    found = re.search(rf'name="{name}" value="([^"]*)"', form[: form.index("</form>")])
    assert found is not None, f"no {name} in the form to {form_action}"
    return markup.unescape(found[1])


async def verify(client: Client, fields: dict[str, str]) -> str:
    """Next from the form; answers the Final verification page."""
    csrf = await csrf_of(client)
    response = await client.post("/mapping/verify", data={"csrf_token": csrf, **fields})
    html = await response.text()
    assert response.status == 200, html
    return html


async def save(client: Client, verification: str) -> aiohttp.ClientResponse:
    """Save as the verification page's form posts it (the redirect not followed)."""
    fields = {
        name: hidden(verification, name, "/mapping/save")
        for name in ("csrf_token", "base_revision", "mapping")
    }
    return await client.post("/mapping/save", data=fields, allow_redirects=False)


async def revision(settings: Settings) -> int:
    published, _ = await latest_mapping(settings.kafka)
    return 0 if published is None else published.revision


async def test_save_redirects_to_the_saved_page_whose_reload_publishes_nothing(
    client: Client, settings: Settings
) -> None:
    form_page = await (await client.get("/mapping")).text()
    assert hidden(form_page, "base_revision", "/mapping/import") == "0"
    verification = await verify(client, {**FORM, "base_revision": "0"})
    assert hidden(verification, "base_revision", "/mapping/save") == "0"

    answer = await save(client, verification)
    assert answer.status == 303
    saved_url = answer.headers["Location"]
    assert saved_url.startswith("/mapping/saved?result=")
    for _ in range(2):  # the page and its reload
        page = await client.get(saved_url)
        html = await page.text()
        assert page.status == 200, html
        assert 'data-testid="saved-revision">1<' in html
        assert "Published revision" in html
        # The first revision: the org's records reach Amplitude from a whole backfill.
        assert "Amplitude from one: <code>sfamp backfill</code>;" in html
    assert await revision(settings) == 1

    # A GET of Save's address (a bookmark, a typed URL) goes to the form, never a bare 405.
    bare = await client.get("/mapping/save", allow_redirects=False)
    assert (bare.status, bare.headers["Location"]) == (303, "/mapping")
    unknown = await client.get("/mapping/saved?result=nothing", allow_redirects=False)
    assert (unknown.status, unknown.headers["Location"]) == (303, "/mapping")


async def test_saving_the_current_mapping_again_publishes_nothing(
    client: Client, settings: Settings
) -> None:
    await publish_mapping(settings.kafka, parse_mapping(json.dumps(MAPPING)), now_ms=1)
    form_page = await (await client.get("/mapping")).text()
    assert "Editing published revision 1." in form_page
    assert 'name="base_revision" value="1"' in form_page

    verification = await verify(client, {**_fields(MAPPING), "base_revision": "1"})
    answer = await save(client, verification)
    assert answer.status == 303
    html = await (await client.get(answer.headers["Location"])).text()
    assert "Unchanged: revision" in html
    assert 'data-testid="saved-revision">1<' in html
    assert "is current; nothing was published." in html
    assert await revision(settings) == 1


async def test_saving_a_new_property_says_which_backfill_brings_it(
    client: Client, settings: Settings
) -> None:
    await publish_mapping(settings.kafka, parse_mapping(json.dumps(MAPPING)), now_ms=1)
    fields = {
        **_fields(MAPPING),
        "m0.p2.sfdc_field": "AnnualRevenue",
        "m0.p2.amplitude_property": "annual_revenue",
        "base_revision": "1",
    }
    answer = await save(client, await verify(client, fields))
    assert answer.status == 303
    html = await (await client.get(answer.headers["Location"])).text()
    assert 'data-testid="saved-revision">2<' in html
    assert "<code>sfamp backfill --object Account</code>" in html
    # A new cadence alone needs no backfill.
    cadence = {**fields, "cadence_mode": "hourly", "base_revision": "2"}
    answer = await save(client, await verify(client, cadence))
    html = await (await client.get(answer.headers["Location"])).text()
    assert 'data-testid="saved-revision">3<' in html
    assert "saved-backfill" not in html


async def test_save_replaces_a_published_revision_this_version_refuses(
    client: Client, settings: Settings
) -> None:
    await publish_mapping(settings.kafka, marked_twice(MAPPING), now_ms=1)

    home = markup.unescape(await (await client.get("/")).text())
    assert "saving a mapping here replaces it" in home
    assert 'Reachable</dt><dd><span class="ok-text">yes' in home  # not Kafka's fault
    form_page = await (await client.get("/mapping")).text()
    assert "Save replaces it" in markup.unescape(form_page)
    assert 'value="AccountId"' in form_page  # the stored mapping, to be put right
    assert hidden(form_page, "base_revision", "/mapping/import") == "1"
    answer = await save(client, await verify(client, {**FORM, "base_revision": "1"}))
    assert answer.status == 303
    html = await (await client.get(answer.headers["Location"])).text()
    assert 'data-testid="saved-revision">2<' in html
    assert await revision(settings) == 2


async def test_save_refuses_when_another_revision_was_published_since_the_form_loaded(
    client: Client, settings: Settings
) -> None:
    await publish_mapping(settings.kafka, parse_mapping(json.dumps(MAPPING)), now_ms=1)
    verification = await verify(client, {**FORM, "base_revision": "1"})
    # Meanwhile `sfamp config import` (or another tab) publishes revision 2.
    newer = {**MAPPING, "sync_cadence": {"mode": "hourly"}}
    await publish_mapping(settings.kafka, parse_mapping(json.dumps(newer)), now_ms=2)

    answer = await save(client, verification)
    html = await answer.text()
    assert answer.status == 409, html
    assert (
        "revision 2 was published since you loaded this form; reload to see it"
        in markup.unescape(html)
    )
    assert 'id="save"' not in html  # no Save to press again over revision 2
    assert "Open the published mapping (revision 2)" in html
    # The draft can go back to the form, then based on revision 2.
    assert hidden(html, "base_revision", "/mapping/import") == "2"
    published, _ = await latest_mapping(settings.kafka)
    assert published is not None
    assert (published.revision, published.mapping.sync_cadence.mode) == (2, "hourly")


def _fields(document: dict[str, Any]) -> dict[str, str]:
    """The form fields of ``document`` (one section)."""
    cadence, reconcile = document["sync_cadence"], document["reconcile"]
    (section,) = document["mappings"]
    fields = {
        "cadence_mode": cadence["mode"],
        "cadence_at": cadence.get("at", ""),
        "reconcile_mode": reconcile["mode"],
        "reconcile_minute": str(reconcile.get("minute", "")),
        **{f"m0.{key}": section[key] for key in ("sfdc_object", "group_type", "group_name_field")},
        "m0.on_delete": section["on_delete"],
    }
    for p, row in enumerate(section["group_properties"]):
        fields |= {f"m0.p{p}.{key}": value for key, value in row.items()}
    return fields


def test_a_file_that_is_not_a_mapping_document_says_why_in_one_line() -> None:
    def refusal(raw: bytes) -> str:
        try:
            read_import(raw)
        except MappingError as exc:
            return str(exc)
        raise AssertionError(f"{raw!r} was read")

    assert refusal(b'{"version": 1, "mappings": [') == (
        "the file is not JSON (unexpected end of data at line 1, column 29)"
    )
    assert refusal(b'{\n  "version": 1,\n  x}') == (
        "the file is not JSON (unexpected character, expected a string key at line 3, column 3)"
    )
    assert refusal(b"[1, 2]") == NOT_A_MAPPING
    assert refusal(b'"mapping"') == NOT_A_MAPPING
    assert refusal(b"\xff\xfe{\x00}\x00") == "the file is not UTF-8 text"
    assert refusal(b"  \n") == "the file is empty"
    assert read_import(b'\xef\xbb\xbf{"version": 1}') == {"version": 1}  # a BOM is fine


def test_a_document_the_form_cannot_hold_whole_is_refused_not_cut() -> None:
    """Filling the form would drop a misspelt key (and publish the default in its place),
    so the import names it, as ``sfamp config validate`` does, and fills nothing."""

    def refusal(document: dict[str, Any]) -> str:
        try:
            read_import(json.dumps(document).encode())
        except MappingError as exc:
            return str(exc)
        raise AssertionError(f"{document!r} was read")

    section = MAPPING["mappings"][0]  # type: ignore[index]
    misspelt = {key: value for key, value in section.items() if key != "on_delete"}
    assert refusal({**MAPPING, "mappings": [{**misspelt, "on_delet": "unset"}]}) == (
        "$.mappings[0].on_delet is not a known key of the mapping format "
        "(did you mean 'on_delete'?)"
    )
    assert refusal({**MAPPING, "bogus": True, "other": 1}) == (
        "$.bogus is not a known key of the mapping format (and 1 more)"
    )
    assert refusal({**MAPPING, "mappings": [section, "Contact"]}) == (
        "$.mappings[1] must be a JSON object ({...}), not text 'Contact'"
    )
    hourly = {"mode": "hourly", "at": "01:00"}
    assert refusal({**MAPPING, "sync_cadence": hourly}).startswith(
        "$.sync_cadence.at is not a key of mode 'hourly'"
    )
    # A null the form would show as its default: that default would be published.
    assert refusal({**MAPPING, "mappings": [{**section, "on_delete": None}]}).startswith(
        "$.mappings[0].on_delete"
    )
    assert refusal({**MAPPING, "reconcile": None}).startswith("$.reconcile")
    # What the form shows as it was (a wrong value, an empty name) is kept, for its checks.
    shown = {**section, "group_type": "", "group_name_field": None, "on_delete": "sometimes"}
    assert read_import(json.dumps({**MAPPING, "mappings": [shown]}).encode())
    assert read_import(json.dumps({**MAPPING, "version": 1.0}).encode())


async def test_a_bad_import_leaves_the_form_and_a_document_with_problems_fills_it(
    client: Client,
) -> None:
    csrf = await csrf_of(client)

    async def upload(content: bytes, **headers: str) -> aiohttp.ClientResponse:
        form = aiohttp.FormData({"csrf_token": csrf, "base_revision": "0"})
        form.add_field("file", content, filename="mapping.json")
        return await client.post("/mapping/import", data=form, headers=headers)

    broken = await upload(b'{"version": 1, "mappings": [', **{"HX-Request": "true"})
    # htmx swaps nothing on a 422 (the form stays as it was); console.js shows the line.
    assert broken.status == 422
    assert await broken.text() == (
        "Import config: the file is not JSON (unexpected end of data at line 1, column 29); "
        "the form is unchanged.\n"
    )
    misspelt = {**MAPPING, "reconcile": {"mode": "hourly", "minut": 5}}
    dropped = await upload(json.dumps(misspelt).encode(), **{"HX-Request": "true"})
    assert dropped.status == 422
    assert await dropped.text() == (
        "Import config: $.reconcile.minut is not a key of mode 'hourly', which takes "
        "'minute' (did you mean 'minute'?); the form is unchanged.\n"
    )
    listed = await upload(b"[]", **{"HX-Request": "true"})
    assert listed.status == 422
    assert NOT_A_MAPPING in await listed.text()

    without_script = await upload(b"\xff\xfe")
    html = await without_script.text()
    assert without_script.status == 422
    assert "<h1>Mapping setup</h1>" in html
    assert "Import config: the file is not UTF-8 text; the form is unchanged." in html

    doubtful = {**MAPPING, "sync_cadence": {"mode": "daily", "at": "7:30"}}
    filled = await upload(json.dumps(doubtful).encode(), **{"HX-Request": "true"})
    html = await filled.text()
    assert filled.status == 200, html
    assert 'id="m0-group_type" name="m0.group_type" value="account"' in html
    assert "Validation failures (1)" in html
    assert "must be a UTC time HH:MM between 00:00 and 23:59" in html
