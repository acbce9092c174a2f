"""The streaming service end to end: Salesforce sandbox → CDC → Kafka → Amplitude sandbox."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from structlog.testing import capture_logs

from pipeline.config.validation import load_mapping
from pipeline.errors import ListenError
from pipeline.kafka.config_topic import publish_mapping
from pipeline.runtime.service import Service, run_service
from pipeline.runtime.state import ServiceState
from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import (
    MAPPING,
    REJECTED_VALUE,
    Org,
    group,
    read_dlq,
    running,
    settings_for,
    wait_until,
)
from tests.support.ports import unused_port


def _has(stack: SandboxStack, group_type: str, value: str, expected: dict[str, Any]) -> Any:
    def check() -> bool:
        return group(stack, group_type, value) == expected

    return check


async def test_creates_updates_deletes_and_multi_record_events_reach_amplitude(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    async with running(settings, mapping_file) as service:
        acme = await org.create(
            "Account",
            Name="Acme",
            Industry="Energy",
            AnnualRevenue=1000,
            Regions__c="EMEA;APAC",
            BillingCountry="DE",
            External_Id__c="EXT-1",
            Tier__c="Growth",
        )
        created = {
            "name": "Acme",
            "industry": "Energy",
            "annual_revenue": 1000,
            "regions": ["EMEA", "APAC"],
            "billing_country": "DE",
            "sfdc_deleted": False,
        }
        await wait_until(_has(stack, "account", acme, created), what="the created account")
        await wait_until(_has(stack, "account_ext", "EXT-1", {"name": "Acme", "tier": "Growth"}))

        # Nulling a field unsets it; a name change reaches the group named by External_Id__c,
        # which the event does not carry (looked up from Salesforce at flush time).
        await org.update("Account", acme, Industry=None, Name="Acme 2")
        renamed = {**created, "name": "Acme 2"}
        del renamed["industry"]
        await wait_until(_has(stack, "account", acme, renamed), what="the nulled industry")
        await wait_until(_has(stack, "account_ext", "EXT-1", {"name": "Acme 2", "tier": "Growth"}))

        # Changing the group name field: the new group gets every mapped property.
        await org.update("Account", acme, External_Id__c="EXT-2")
        await wait_until(_has(stack, "account_ext", "EXT-2", {"name": "Acme 2", "tier": "Growth"}))

        # One event naming two records.
        beta = await org.create("Account", Name="Beta", External_Id__c="EXT-B")
        gamma = await org.create("Account", Name="Gamma", External_Id__c="EXT-G", Tier__c="Free")
        await org.multi_update("Account", [beta, gamma], Industry="Banking")
        for record_id, name in ((beta, "Beta"), (gamma, "Gamma")):
            await wait_until(
                lambda r=record_id, n=name: (
                    (group(stack, "account", r) or {}).get("industry") == "Banking"
                    and (group(stack, "account", r) or {}).get("name") == n
                ),
                what=f"the multi-record update of {name}",
            )

        # Delete: on_delete=mark marks, on_delete=unset clears; undelete restores both.
        await org.delete("Account", gamma)
        await wait_until(
            lambda: (group(stack, "account", gamma) or {}).get("sfdc_deleted") is True,
            what="the delete mark",
        )
        await wait_until(_has(stack, "account_ext", "EXT-G", {}), what="the unset on delete")
        await org.undelete("Account", gamma)
        await wait_until(
            lambda: (group(stack, "account", gamma) or {}).get("sfdc_deleted") is False,
            what="the undelete",
        )
        await wait_until(_has(stack, "account_ext", "EXT-G", {"name": "Gamma", "tier": "Free"}))

        await wait_until(lambda: _last_flush_ok(service), what="the last flush to be recorded")
        assert service.state.to_status()["cadence"] == "every 1s"
    assert group(stack, "account_ext", "EXT-1") == {"name": "Acme 2", "tier": "Growth"}


async def test_poison_messages_and_rejected_groups_go_to_the_dlq(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    async with running(settings, mapping_file):
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(
                f"{topic_prefix}.changes.Account", b"{not json", key=b"001POISON"
            )
        finally:
            await producer.stop()
        rejected = await org.create("Account", Name="Bad ext", External_Id__c=REJECTED_VALUE)
        fine = await org.create("Account", Name="Fine", External_Id__c="EXT-FINE")

        await wait_until(_has(stack, "account_ext", "EXT-FINE", {"name": "Fine"}))
        await wait_until(lambda: group(stack, "account", rejected) is not None)

        async def both_in_dlq() -> bool:
            return {entry.reason for entry in await read_dlq(settings)} >= {
                "malformed",
                "rejected",
            }

        await wait_until(both_in_dlq, what="the DLQ entries")
        entries = {entry.reason: entry for entry in await read_dlq(settings)}
        assert entries["malformed"].key == "001POISON"
        assert entries["malformed"].payload == "{not json"
        assert entries["malformed"].source_topic == f"{topic_prefix}.changes.Account"
        assert entries["rejected"].payload["group_value"] == REJECTED_VALUE
        assert "events_with_invalid_fields: groups" in entries["rejected"].detail
        assert group(stack, "account", fine) == {"name": "Fine", "sfdc_deleted": False}


async def test_health_endpoints_report_readiness_status_and_metrics(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    port = unused_port()
    settings = settings_for(
        stack, topic_prefix, runtime={"health_port": port, "health_host": "127.0.0.1"}
    )
    async with running(settings, mapping_file) as service:
        await service.health_started.wait()
        account = await org.create("Account", Name="Observed")
        await wait_until(lambda: group(stack, "account", account) is not None)
        # Amplitude holds the group before the pump records its flush: wait for the record.
        await wait_until(lambda: _last_flush_ok(service), what="the flush to be recorded")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            status = (await http.get("/status")).json()
            metrics = (await http.get("/metrics")).text
        assert status["cadence"] == "every 1s"
        assert status["next_flush_at"]
        assert status["channels"] == ["/data/AccountChangeEvent"]
        assert status["last_flush"]["ok"] is True
        assert 'sfamp_events_ingested_total{object="Account"}' in metrics
        assert "sfamp_last_successful_flush_timestamp_seconds" in metrics
        assert 'sfamp_amplitude_requests_total{status="200"}' in metrics
        concurrency = status["amplitude_concurrency"]
        assert concurrency["ceiling"] == settings.amplitude.max_concurrency
        assert 1 <= concurrency["level"] <= concurrency["ceiling"]
        assert f"sfamp_amplitude_concurrency {float(concurrency['level'])}" in metrics


async def test_the_replay_id_age_is_reported_from_the_subscription_and_grows_while_quiet(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    """A quiet org: the subscribed channel has a series before its first event (what the
    SfampIngestMissing rule looks for), aged at every scrape as ``sfamp replay status`` ages
    it (what SfampReplayIdOld looks for); an event's commit starts it again."""
    settings = settings_for(stack, topic_prefix)
    async with running(settings, mapping_file) as service:

        def age() -> float | None:
            return service.metrics.registry.get_sample_value(
                "sfamp_replay_id_age_seconds", {"channel": "/data/AccountChangeEvent"}
            )

        await wait_until(lambda: age() is not None, what="a series for the quiet channel")
        first = age()
        assert first is not None
        await wait_until(lambda: (age() or 0.0) > first, what="the age to grow while quiet")
        before = age()
        assert before is not None
        await org.create("Account", Name="Ages the replay id again")
        await wait_until(
            lambda: (age() or before) < before, what="the age to count from the new event"
        )


async def test_a_health_port_taken_after_the_check_stops_the_start_before_any_pump(
    stack: SandboxStack, topic_prefix: str, mapping_file: Path
) -> None:
    # Another process took the port after `sfamp run` checked it (two started at once).
    problems: list[str] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _, context: problems.append(str(context.get("message")))
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = settings_for(
            stack, topic_prefix, runtime={"health_port": port, "health_host": "127.0.0.1"}
        )
        service = Service(ServiceState(role="all"))
        with pytest.raises(ListenError, match="address already in use"):
            await run_service(settings, role="all", mapping_file=mapping_file, service=service)
    assert service.deliver is None  # the health endpoint comes first: no pump was made
    assert not service.state.consumer_joined
    gc.collect()  # a consumer left half started says so when it is collected
    assert problems == []


async def test_a_new_mapping_is_picked_up_and_an_invalid_one_refused(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    async with running(settings, mapping_file) as service:
        before = service.state.mapping_revision
        # An invalid edit of the file is refused; the running mapping stays.
        mapping_file.write_text('{"version": 1, "mappings": []}')
        account = await org.create("Account", Name="Still mapped")
        await wait_until(lambda: group(stack, "account", account) is not None)
        assert service.state.mapping_revision == before

        extended = json.loads(json.dumps(MAPPING))
        extended["mappings"][0]["group_properties"].append(
            {"sfdc_field": "Tier__c", "amplitude_property": "tier"}
        )
        new_file = mapping_file.with_name("extended.json")
        new_file.write_text(json.dumps(extended))
        await publish_mapping(settings.kafka, load_mapping(new_file), now_ms=2**42)
        await wait_until(
            lambda: "revision" in service.state.mapping_revision, what="the published mapping"
        )
        await org.update("Account", account, Tier__c="Enterprise")
        await wait_until(
            lambda: (group(stack, "account", account) or {}).get("tier") == "Enterprise",
            what="the newly mapped property",
        )


async def test_status_shows_a_flush_going_on(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    assert stack.amplitude is not None
    async with running(settings, mapping_file) as service:
        async with httpx.AsyncClient(base_url=stack.amplitude.base_url) as http:
            answer = await http.post("/__sandbox/latency", json={"ms": 3000})
            assert answer.status_code == 200, answer.text
            account = await org.create("Account", Name="Slow")
            # Each Amplitude request takes 3 s: the flush is going on for that long.
            await wait_until(
                lambda: service.state.to_status()["flushing_since"] is not None,
                what="the flush going on in /status",
            )
            await wait_until(lambda: group(stack, "account", account) is not None)
            await http.post("/__sandbox/latency", json={"ms": 0})
        await wait_until(
            lambda: service.state.flushing_since is None, what="the flush over in /status"
        )


async def test_amplitude_outage_commits_nothing_and_delivers_after_recovery(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix, amplitude={"retry_deadline_seconds": 1})
    assert stack.amplitude is not None
    async with running(settings, mapping_file) as service:
        async with httpx.AsyncClient(base_url=stack.amplitude.base_url) as http:
            answer = await http.post("/__sandbox/faults", json={"kind": "503", "count": 4})
            assert answer.status_code == 201, answer.text
        with capture_logs() as logs:
            account = await org.create("Account", Name="Patient")
            await wait_until(
                lambda: service.metrics.flush_failures._value.get() >= 1,
                what="a failed flush",
            )
        # The failed flush says what it held and did (its log line; /status until the retry).
        failed = next(line for line in logs if line["event"] == "flush_failed")
        assert failed["groups"] >= 1, failed
        assert failed["requests"] >= 1, failed  # its 503s
        assert service.metrics.flush_duration._sum.get() > 0  # failed flushes are timed too
        assert group(stack, "account", account) is None
        await wait_until(
            lambda: group(stack, "account", account) is not None, timeout=60, what="recovery"
        )
        await wait_until(lambda: _last_flush_ok(service), what="the recovered flush recorded")
        assert orjson.loads(orjson.dumps(service.state.to_status()))["last_flush"]["ok"] is True
        # Every 503 was an answer to a request of this service, failed flushes included.
        requests = service.metrics.amplitude_requests
        assert requests.labels("503")._value.get() == 4
        assert requests.labels("200")._value.get() >= 1


def _last_flush_ok(service: Service) -> bool:
    flush = service.state.last_flush
    return flush is not None and flush.ok
