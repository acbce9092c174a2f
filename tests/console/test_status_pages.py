"""Status and Dead letters over HTTP, against a service running in the test's loop."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from aiohttp.test_utils import TestClient

from pipeline.config.settings import ConsoleSettings, Settings
from pipeline.config.validation import parse_mapping
from pipeline.kafka.config_topic import publish_mapping
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.topics import TopicNames
from pipeline.sandbox_stack import SandboxStack
from sfamp_sandbox.amplitude.state import Fault
from tests.console.conftest import console_client, csrf_of
from tests.console.test_mapping_pages import FORM, post
from tests.runtime.conftest import MAPPING, Org, group, running, settings_for, wait_until
from tests.support.dlq import rejected
from tests.support.ports import closed_port_url, unused_port

Client = TestClient[Any, Any]


async def test_status_shows_the_flush_and_the_per_minute_chart(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    port = unused_port()
    settings = settings_for(
        stack, topic_prefix, kafka={"partitions": 1}, runtime={"health_port": port}
    )
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_text(json.dumps(MAPPING))
    org = Org(stack)
    console_settings = settings.model_copy(
        update={"console": ConsoleSettings(service_url=f"http://127.0.0.1:{port}")}
    )
    async with running(settings, mapping_file), console_client(console_settings) as client:
        await org.create("Account", Name="Status Co", Industry="Energy")

        async def flushed() -> bool:
            async with httpx.AsyncClient(timeout=2) as http:
                status = (await http.get(f"http://127.0.0.1:{port}/status")).json()
            minutes = status["per_minute"]
            return (
                bool(sum(m["changes_ingested"] for m in minutes))
                and bool(sum(m["groups_flushed"] for m in minutes))
                and bool(status["recent_flushes"])
            )

        await wait_until(flushed, timeout=30, what="a change ingested and flushed")
        live = await (await client.get("/status/live")).text()
    await org.close()
    assert live.startswith('<div id="status-live"')
    assert 'data-testid="throughput-chart"' in live
    assert "Changes ingested (1) and groups flushed (1)" in live
    assert '<span class="ok-text">ok</span>' in live  # the last flush
    assert "/data/AccountChangeEvent" in live  # its replay id's age
    assert 'data-testid="dlq-count">0 not replayed' in live
    assert f'data-testid="service-mapping">file:{mapping_file}; cadence' in live
    assert re.search(
        r'data-testid="reconcile">daily at 03:00 UTC; next <time datetime="[^"]+"', live
    )
    assert re.search(
        r'data-testid="last-flush"><time datetime="[^"]+" title="[^"]+">'
        r"\d\d:\d\d:\d\d UTC \((now|\d+s ago)\)</time>: ",
        live,
    )
    # The empty flushes that follow every second do not hide the one that delivered it.
    assert re.search(
        r'data-testid="last-busy-flush"><time datetime="[^"]+" title="[^"]+">[^<]+</time>: '
        r'<span class="ok-text">ok</span>, 1 group, 1 change, 1 request<',
        live,
    )


async def test_status_shows_a_flush_that_is_retrying(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    """As sfamp status says it: "flushing since", while Amplitude answers 429 to it."""
    port = unused_port()
    settings = settings_for(stack, topic_prefix, runtime={"health_port": port})
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_text(json.dumps(MAPPING))
    org = Org(stack)
    console_settings = settings.model_copy(
        update={"console": ConsoleSettings(service_url=f"http://127.0.0.1:{port}")}
    )
    assert stack.amplitude is not None
    stack.amplitude.state.add_fault(Fault("429", remaining=1000, retry_after=1))
    async with running(settings, mapping_file), console_client(console_settings) as client:
        await org.create("Account", Name="Held Co")

        async def flushing() -> bool:
            async with httpx.AsyncClient(timeout=2) as http:
                status = (await http.get(f"http://127.0.0.1:{port}/status")).json()
            return bool(status["flushing_since"]) and bool(status["amplitude_retrying"])

        await wait_until(flushing, timeout=30, what="a flush held by 429s")
        live = await (await client.get("/status/live")).text()
    await org.close()
    assert re.search(r'data-testid="flushing-since">since <time datetime="[^"]+"', live)
    # Why it is held, not only since when.
    retried = r"retrying: Amplitude answers 429 \(\d+ times? in this flush, last <time"
    assert re.search(retried, live)


async def test_final_verification_says_a_save_takes_over_from_the_service_s_mapping_file(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    """The newer of the file and the published revision runs: a Save takes over from the
    file the service runs, which nothing on the page said (its properties went silently)."""
    port = unused_port()
    settings = settings_for(stack, topic_prefix, runtime={"health_port": port})
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_text(json.dumps(MAPPING))
    console_settings = settings.model_copy(
        update={"console": ConsoleSettings(service_url=f"http://127.0.0.1:{port}")}
    )
    async with running(settings, mapping_file), console_client(console_settings) as client:
        html = await post(client, "/mapping/verify", FORM)
    assert (
        f'data-testid="service-file">The service runs its mapping file {mapping_file}: a '
        "revision saved now is newer, so it runs that instead"
    ) in html


async def test_status_without_a_service_says_so(settings: Settings) -> None:
    service_url = closed_port_url()
    console_settings = settings.model_copy(
        update={"console": ConsoleSettings(service_url=service_url)}
    )
    async with console_client(console_settings) as client:
        response = await client.get("/status")
        html = await response.text()
    assert response.status == 200, html
    assert "<h1>Status</h1>" in html
    assert 'hx-get="/status/live" hx-trigger="every 5s"' in html
    assert "no service answers at" in html
    # A newcomer may not have started it yet: that comes first, the setting second.
    assert (
        'data-testid="service-hint">Start the service (<code>sfamp run</code>) with the same '
        "settings; if it runs elsewhere, set SFAMP_CONSOLE__SERVICE_URL to its health port."
    ) in html
    assert "The chart needs a running service" in html


async def test_status_with_the_health_endpoint_off_names_the_setting(client: Client) -> None:
    """The console's settings turn the endpoint off (``health_port`` 0): nothing is asked
    at port 0, and starting a service with the same settings would not help."""
    html = await (await client.get("/status")).text()
    assert "not asked: SFAMP_RUNTIME__HEALTH_PORT=0 turns the health endpoint off" in html
    assert "SFAMP_CONSOLE__SERVICE_URL" in html
    assert "127.0.0.1:0" not in html
    assert 'data-testid="service-hint"' not in html


async def test_dead_letters_list_and_replay_one(
    client: Client, stack: SandboxStack, settings: Settings
) -> None:
    empty = await (await client.get("/dead-letters")).text()
    assert "<h1>Dead letters</h1>" in empty
    assert "nothing was dead-lettered" in empty

    org = Org(stack)
    record_id = await org.create("Account", Name="Replayed Co", Industry="Retail")
    await org.close()
    await publish_mapping(settings.kafka, parse_mapping(json.dumps(MAPPING)), now_ms=1)
    entry = rejected(record_id, {"name": "stale"})
    async with ChangeProducer(settings.kafka) as producer:
        await producer.send_all([(TopicNames(settings.kafka.topic_prefix).dlq, *entry.encode())])

    listed = await (await client.get("/dead-letters")).text()
    assert f'data-id="{entry.id}"' in listed
    assert "invalid_identification" in listed
    assert ">Replay all</button>" in listed

    csrf = await csrf_of(client, "/dead-letters")
    response = await client.post(
        "/dead-letters/replay", data={"csrf_token": csrf, "id": entry.id}, allow_redirects=False
    )
    # Post/Redirect/Get: the list with what was done; its reload replays nothing again.
    assert response.status == 303
    assert response.headers["Location"].startswith("/dead-letters?replay=")
    response = await client.get(response.headers["Location"])
    html = await response.text()
    assert response.status == 200, html
    assert "Replayed 1 of 1" in html
    bare = await client.get("/dead-letters/replay", allow_redirects=False)
    assert (bare.status, bare.headers["Location"]) == (303, "/dead-letters")
    stored = group(stack, "account", record_id)
    assert stored is not None
    assert stored["name"] == "Replayed Co"  # what Salesforce holds now, not the stale payload
    assert "1 not replayed" not in html


async def test_dead_letters_dismiss_one_and_every_unreplayable_one(
    client: Client, settings: Settings
) -> None:
    """As ``sfamp dlq dismiss --id`` and ``--unreplayable``: marked settled, still listed."""
    await publish_mapping(settings.kafka, parse_mapping(json.dumps(MAPPING)), now_ms=1)
    named = rejected("001RM0000000zzzYAA")
    topic = TopicNames(settings.kafka.topic_prefix).dlq
    async with ChangeProducer(settings.kafka) as producer:
        await producer.send_all([(topic, *named.encode()), (topic, b"junk", b"not a DLQ entry")])
    listed = await (await client.get("/dead-letters")).text()
    assert listed.count(">Dismiss</button>") == 2, "one per waiting entry, malformed ones too"
    assert ">Dismiss unreplayable</button>" in listed

    forged = await client.post("/dead-letters/dismiss", data={"id": named.id})
    assert forged.status == 403, "a dismissal needs the session's CSRF token"
    csrf = await csrf_of(client, "/dead-letters")
    response = await client.post(
        "/dead-letters/dismiss", data={"csrf_token": csrf, "id": named.id}, allow_redirects=False
    )
    assert response.status == 303
    assert response.headers["Location"].startswith("/dead-letters?dismiss=")
    html = await (await client.get(response.headers["Location"])).text()
    assert "Dismissed 1 of 1" in html
    assert f"<code>{named.id}</code> account:001RM0000000zzzYAA: dismissed in the console" in html

    response = await client.post(
        "/dead-letters/dismiss",
        data={"csrf_token": csrf, "unreplayable": "1"},
        allow_redirects=False,
    )
    html = await (await client.get(response.headers["Location"])).text()
    assert "Dismissed 1 of 1" in html, "the malformed record: nothing can replay it"
    assert ">Dismiss</button>" not in html, "both are settled now"
    assert "0 not replayed" in html
    assert html.count(">dismissed <time") == 2, "as sfamp dlq list says it: dismissed <time>"
    bare = await client.get("/dead-letters/dismiss", allow_redirects=False)
    assert (bare.status, bare.headers["Location"]) == (303, "/dead-letters")
