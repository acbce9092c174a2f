"""What ``sfamp status`` reports: the health of a deployment as one JSON-ready dict.

Gathers what Kafka and Salesforce know (connection, mapping, lag, replay age,
DLQ size) and, when a service answers on its health port, what the service
knows (cadence, next flush, last flush). A part that cannot be reached carries
an ``error`` instead of failing the whole report.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

import httpx

from pipeline.config.settings import Settings
from pipeline.errors import MappingError, SfampError
from pipeline.http_failures import describe_transport_failure
from pipeline.kafka.config_topic import KEY, PublishedMapping, decode_published
from pipeline.kafka.dlq import fold_dlq
from pipeline.kafka.inspect import KafkaInspector, Message
from pipeline.kafka.replay_age import replay_ages
from pipeline.runtime.cadence import describe
from pipeline.salesforce.client import SalesforceClient
from pipeline.tls import verified_context
from pipeline.wording import plural


def failed_dependencies(report: dict[str, Any]) -> list[str]:
    """The dependencies a status report found refusing or unreachable."""
    return [name for name in ("salesforce", "kafka") if "error" in report[name]]


HEALTH_ENDPOINT_OFF: Final = (
    "not asked: SFAMP_RUNTIME__HEALTH_PORT=0 turns the health endpoint off here; name a "
    "running service's health port (sfamp status --service-url, the console's "
    "SFAMP_CONSOLE__SERVICE_URL)"
)


def default_service_url(settings: Settings) -> str | None:
    """Where this configuration's service answers /status: its health port on this machine,
    or None when ``SFAMP_RUNTIME__HEALTH_PORT=0`` turns the endpoint off."""
    port = settings.runtime.health_port
    return f"http://127.0.0.1:{port}" if port else None


async def gather_status(settings: Settings, service_url: str | None) -> dict[str, Any]:
    salesforce, kafka, service = await asyncio.gather(
        salesforce_status(settings), kafka_status(settings), service_status(service_url)
    )
    return {"salesforce": salesforce, "kafka": kafka, "service": service}


async def salesforce_status(settings: Settings) -> dict[str, Any]:
    """The connected user's email and the org's URL, or an ``error``."""
    missing = [problem.path for problem in settings.salesforce.credential_problems()]
    if missing:
        return {"error": f"Salesforce credentials are not configured: set {', '.join(missing)}"}
    try:
        async with SalesforceClient.from_settings(settings.salesforce, max_attempts=1) as sf:
            user = await sf.rest.userinfo()
            token = await sf.auth.token()
    except SfampError as exc:
        return {"error": str(exc)}
    return {"instance_url": token.instance_url, "user_email": user.get("email")}


async def kafka_status(settings: Settings) -> dict[str, Any]:
    """Mapping, lag, replay id ages and DLQ size as Kafka holds them, or an ``error``.

    One connection, one offsets round for every topic; the small control topics
    are then read up to the offsets that round found.
    """
    now = int(time.time() * 1000)
    try:
        async with KafkaInspector(settings.kafka) as inspector:
            states = {state.name: state for state in await inspector.states()}
            names = inspector.names
            config, replay, dlq = [
                await inspector.read_state(states[name]) if name in states else []
                for name in (names.config, names.replay, names.dlq)
            ]
        mapping = _mapping_of(config)
    except SfampError as exc:
        return {"error": str(exc)}
    changes = [state for state in states.values() if state.kind == "changes"]
    lag_seconds = [state.lag_seconds(now) for state in changes]
    return {
        "bootstrap_servers": settings.kafka.bootstrap_servers,
        "mapping": mapping,
        "lag_messages": sum(state.lag or 0 for state in changes),
        "lag_seconds": max((x for x in lag_seconds if x is not None), default=0.0),
        "replay": [age.as_json() for age in replay_ages(replay, now)],
        "dlq_pending": sum(1 for item in fold_dlq(dlq) if item.pending),
    }


def _mapping_of(config: list[Message]) -> dict[str, Any] | None:
    """What the last record of ``sfamp.config`` publishes (None after a tombstone); a
    revision this version refuses as ``{"error": ...}``: Kafka answered all the same."""
    latest = [message.value for message in config if message.key == KEY]
    if not latest or not latest[-1]:
        return None
    try:
        return _mapping_summary(decode_published(latest[-1]))
    except MappingError as exc:
        reason = str(exc).splitlines()[0]
        return {"error": f"{reason}; the next 'sfamp config import' replaces it"}


def _mapping_summary(published: PublishedMapping) -> dict[str, Any]:
    return {
        "revision": published.revision,
        "cadence": describe(published.mapping.sync_cadence),
        "relations": [
            f"{m.sfdc_object} -> {m.group_type} (name: {m.group_name_field}, "
            f"{plural(len(m.group_properties), 'property', 'properties')})"
            for m in published.mapping.mappings
        ],
    }


async def service_status(url: str | None) -> dict[str, Any]:
    """A running service's own /status, or an ``error`` when none answers at ``url`` (None:
    the health endpoint is off, so there is nothing to ask)."""
    if url is None:
        return {"url": None, "error": HEALTH_ENDPOINT_OFF}
    try:
        async with httpx.AsyncClient(timeout=2.0, verify=verified_context()) as http:
            response = await http.get(f"{url.rstrip('/')}/status")
        response.raise_for_status()
        return {"url": url, **response.json()}
    except (httpx.HTTPError, ValueError) as exc:
        return {"url": url, "error": f"no service answers at {url} ({_unanswered(exc)})"}


def _unanswered(exc: httpx.HTTPError | ValueError) -> str:
    if isinstance(exc, httpx.TransportError):
        return describe_transport_failure(exc)
    if isinstance(exc, httpx.HTTPStatusError):
        return f"/status answered {exc.response.status_code}"
    return "/status did not answer with a status report"  # not JSON, or not readable
