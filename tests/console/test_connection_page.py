"""Connection (home): Salesforce, Amplitude, Kafka and the established connection."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from pipeline.config.settings import Settings
from pipeline.config.validation import parse_mapping
from pipeline.kafka.config_topic import publish_mapping
from tests.console.conftest import console_client
from tests.runtime.conftest import MAPPING
from tests.support.ports import closed_port_url

Client = TestClient[Any, Any]


async def test_connection_shows_user_org_key_kafka_and_the_published_mapping(
    client: Client, settings: Settings
) -> None:
    before = await (await client.get("/")).text()
    assert "No mapping is published yet." in before

    await publish_mapping(settings.kafka, parse_mapping(json.dumps(MAPPING)), now_ms=1000)
    marked = await (await client.get("/")).text()
    # Long values carry where they may wrap: after @ and / and before dots.
    assert 'data-testid="salesforce-user">admin@<wbr>sandbox<wbr>.example<' in marked
    html = marked.replace("<wbr>", "")
    assert 'data-testid="salesforce-user">admin@sandbox.example<' in html
    assert f"<dd>{settings.salesforce.login_url}</dd>" in html  # the org URL
    assert "<dd>v62.0</dd>" in html
    assert '<span class="ok-text">accepted</span>' in html
    assert f"<dd>{settings.kafka.bootstrap_servers}</dd>" in html
    assert 'data-testid="mapping-revision">1<' in html
    assert "cadence every 1s" in html
    assert '<a class="button" href="/mapping">Edit the mapping</a>' in html
    assert "Connect to Salesforce" not in html


async def test_without_salesforce_credentials_connect_to_salesforce_is_offered(
    settings: Settings,
) -> None:
    bare = settings.model_copy(
        update={"salesforce": settings.salesforce.model_copy(update={"password": None})}
    )
    async with console_client(bare) as client:
        html = await (await client.get("/")).text()
        form = await (await client.get("/mapping")).text()
    assert '<a class="button primary" href="/oauth/start">Connect to Salesforce</a>' in html
    assert "SFAMP_SALESFORCE__PASSWORD" in html
    # The form still works, with API names typed in.
    assert '<input type="text" id="m0-sfdc_object"' not in form  # no section yet
    assert "cannot be listed (no Salesforce credentials are set)" in form


async def test_a_refused_amplitude_key_is_shown_without_the_key(settings: Settings) -> None:
    refused = settings.model_copy(
        update={
            "amplitude": settings.amplitude.model_copy(
                update={"api_key": settings.amplitude.api_key.__class__("not-the-key-12345")}
            )
        }
    )
    async with console_client(refused) as client:
        html = await (await client.get("/")).text()
    assert "refused:" in html
    assert "not-the-key-12345" not in html


async def test_an_amplitude_that_does_not_answer_leaves_the_key_not_checked(
    settings: Settings,
) -> None:
    """An outage says nothing of the key: it is not shown as refused."""
    silent = settings.model_copy(
        update={"amplitude": settings.amplitude.model_copy(update={"base_url": closed_port_url()})}
    )
    async with console_client(silent) as client:
        html = await (await client.get("/")).text()
    assert (
        '<span class="warning">not checked: Amplitude did not answer (connection refused)</span>'
        in html
    )
    assert "refused:" not in html
