"""``sfamp status``: one screen on the health of a deployment.

Gathers what Kafka and Salesforce know (connection, mapping, lag, replay age,
DLQ size) and, when a service answers on its health port, what the service
knows (cadence, next flush, last flush). Each part that cannot be reached is
shown as such instead of failing the whole command; the exit code then says
that something is wrong (see :func:`status`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import typer

from pipeline.cli.common import console, print_json
from pipeline.cli.replay_cmd import replay_ages
from pipeline.cli.topics_cmd import inspection_settings, new_table
from pipeline.config.settings import Settings
from pipeline.errors import SfampError
from pipeline.kafka.config_topic import latest_mapping
from pipeline.kafka.dlq import fold_dlq
from pipeline.kafka.inspect import KafkaInspector, format_duration, quick_settings
from pipeline.runtime.cadence import describe
from pipeline.salesforce.client import SalesforceClient

SERVICE_URL = typer.Option(
    None,
    "--service-url",
    help="Base URL of a running service's health port "
    "(default http://127.0.0.1:$SFAMP_RUNTIME__HEALTH_PORT).",
)
JSON = typer.Option(False, "--json", help="Machine-readable output.")


def status(service_url: str | None = SERVICE_URL, as_json: bool = JSON) -> None:
    """Salesforce connection, mapping, cadence, lag, replay age, last flush and DLQ size.

    Exits 1 when Kafka cannot be reached or Salesforce refuses the login (or has
    no credentials): a deployment cannot work without either. No service
    answering on the health port is shown but is no failure (it may run elsewhere).
    """
    settings = inspection_settings()
    url = service_url or f"http://127.0.0.1:{settings.runtime.health_port}"
    report = asyncio.run(gather_status(settings, url))
    if as_json:
        print_json(report)
    else:
        _render(report)
    if failed_dependencies(report):
        raise typer.Exit(1)


def failed_dependencies(report: dict[str, Any]) -> list[str]:
    """The dependencies a status report found refusing or unreachable."""
    return [name for name in ("salesforce", "kafka") if "error" in report[name]]


async def gather_status(settings: Settings, service_url: str) -> dict[str, Any]:
    salesforce, kafka, service = await asyncio.gather(
        _salesforce(settings), _kafka(settings), _service(service_url)
    )
    return {"salesforce": salesforce, "kafka": kafka, "service": service}


async def _salesforce(settings: Settings) -> dict[str, Any]:
    if settings.salesforce.credential_problems():
        return {"error": "Salesforce credentials are not configured"}
    try:
        async with SalesforceClient.from_settings(settings.salesforce, max_attempts=1) as sf:
            user = await sf.rest.userinfo()
            token = await sf.auth.token()
    except SfampError as exc:
        return {"error": str(exc)}
    return {"instance_url": token.instance_url, "user_email": user.get("email")}


async def _kafka(settings: Settings) -> dict[str, Any]:
    now = int(time.time() * 1000)
    try:
        published, _ = await latest_mapping(quick_settings(settings.kafka, 5.0))
        async with KafkaInspector(settings.kafka) as inspector:
            states = [s for s in await inspector.states() if s.kind == "changes"]
            topics = set(await inspector.topics())
            replay = (
                await inspector.read_all(inspector.names.replay)
                if inspector.names.replay in topics
                else []
            )
            dlq = (
                await inspector.read_all(inspector.names.dlq)
                if inspector.names.dlq in topics
                else []
            )
    except SfampError as exc:
        return {"error": str(exc)}
    lag_seconds = [s.lag_seconds(now) for s in states]
    return {
        "bootstrap_servers": settings.kafka.bootstrap_servers,
        "mapping": None
        if published is None
        else {
            "revision": published.revision,
            "cadence": describe(published.mapping.sync_cadence),
            "relations": [
                f"{m.sfdc_object} -> {m.group_type} (name: {m.group_name_field}, "
                f"{len(m.group_properties)} properties)"
                for m in published.mapping.mappings
            ],
        },
        "lag_messages": sum(s.lag or 0 for s in states),
        "lag_seconds": max((x for x in lag_seconds if x is not None), default=0.0),
        "replay": [age.as_json() for age in replay_ages(replay, now)],
        "dlq_pending": sum(1 for item in fold_dlq(dlq) if item.pending),
    }


async def _service(url: str) -> dict[str, Any]:
    try:
        async with httpx.AsyncClient(timeout=2.0) as http:
            response = await http.get(f"{url.rstrip('/')}/status")
        response.raise_for_status()
        return {"url": url, **response.json()}
    except (httpx.HTTPError, ValueError) as exc:
        return {"url": url, "error": f"no service answers at {url} ({type(exc).__name__})"}


def _render(report: dict[str, Any]) -> None:
    table = new_table("sfamp status", ("what", "value"), show_header=False)
    sf, kafka, service = report["salesforce"], report["kafka"], report["service"]
    table.add_row(
        "Salesforce",
        f"[red]{sf['error']}[/]"
        if "error" in sf
        else f"{sf['user_email']} on {sf['instance_url']}",
    )
    if "error" in kafka:
        table.add_row("Kafka", f"[red]{kafka['error']}[/]")
    else:
        mapping = kafka["mapping"]
        table.add_row("Kafka", kafka["bootstrap_servers"])
        table.add_row(
            "Mapping",
            "none published (sfamp config import FILE)"
            if mapping is None
            else f"revision {mapping['revision']}, {mapping['cadence']}\n"
            + "\n".join(mapping["relations"]),
        )
        table.add_row(
            "Lag",
            f"{kafka['lag_messages']} message(s), oldest unflushed change "
            f"{format_duration(kafka['lag_seconds'])} old",
        )
        replay = kafka["replay"] or [{"channel": "(none stored yet)", "status": "ok"}]
        table.add_row(
            "Replay ids",
            "\n".join(
                f"{r['channel']}: {r.get('status')}"
                + (f", {format_duration(r['age_seconds'])} old" if r.get("age_seconds") else "")
                for r in replay
            ),
        )
        table.add_row("DLQ", f"{kafka['dlq_pending']} entr(y/ies) not replayed")
    table.add_row("Service", _error(service) or _service_line(service))
    unreadable = dict.fromkeys(u["reason"] for u in service.get("unreadable_fields") or ())
    if unreadable:
        table.add_row("Unreadable fields", "\n".join(f"[red]{r}[/]" for r in unreadable))
    console.print(table)


def _service_line(service: dict[str, Any]) -> str:
    last = service.get("last_flush") or {}
    flush = (
        "no flush yet"
        if not last
        else f"last flush {last.get('at')}: "
        + ("ok" if last.get("ok") else f"failed ({last.get('error')})")
        + f", {last.get('groups', 0)} group(s), {last.get('requests', 0)} request(s)"
    )
    return (
        f"{service.get('role')} at {service['url']}, "
        f"{'ready' if service.get('ready') else 'not ready'}; cadence {service.get('cadence')}, "
        f"next flush {service.get('next_flush_at')}; {service.get('pending_groups')} group(s) "
        f"pending; {flush}"
    )


def _error(part: dict[str, Any]) -> str | None:
    return f"[yellow]{part['error']}[/]" if "error" in part else None
