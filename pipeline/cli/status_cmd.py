"""``sfamp status``: one screen on the health of a deployment.

The report comes from :mod:`pipeline.runtime.status_report`; this renders it. Each
part that cannot be reached is shown as such instead of failing the whole command;
the exit code then says that something is wrong (see :func:`status`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Final

import typer
from rich.markup import escape

from pipeline.cli.common import console, print_json
from pipeline.cli.topics_cmd import inspection_settings, new_table
from pipeline.config.settings import http_url
from pipeline.kafka.inspect import format_duration
from pipeline.runtime.status_report import (
    default_service_url,
    failed_dependencies,
    gather_status,
)
from pipeline.wording import plural


def _service_url(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return http_url(value, " such as http://127.0.0.1:8080")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


SERVICE_URL = typer.Option(
    None,
    "--service-url",
    callback=_service_url,
    help="Base URL of a running service's health port "
    "(default http://127.0.0.1:$SFAMP_RUNTIME__HEALTH_PORT).",
)
JSON = typer.Option(False, "--json", help="Machine-readable output.")


def status(service_url: str | None = SERVICE_URL, as_json: bool = JSON) -> None:
    """Show a deployment's health on one screen.

    Salesforce connection, mapping, cadence, lag, replay age, last flush, DLQ size
    and the reconcile (schedule, next run, last run).

    Exits 1 when Kafka cannot be reached or Salesforce refuses the login (or has
    no credentials): a deployment cannot work without either. No service
    answering on the health port is shown but is no failure (it may run
    elsewhere).
    """
    settings = inspection_settings()
    url = service_url or default_service_url(settings)
    report = asyncio.run(gather_status(settings, url))
    if as_json:
        print_json(report)
    else:
        _render(report)
    if failed_dependencies(report):
        raise typer.Exit(1)


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
        table.add_row("Mapping", mapping_lines(mapping, service))
        lag = plural(kafka["lag_messages"], "message")
        if kafka["lag_messages"]:
            lag += f", oldest unflushed change {format_duration(kafka['lag_seconds'])} old"
        table.add_row("Lag", lag)
        replay = kafka["replay"] or [{"channel": "(none stored yet)", "status": "ok"}]
        table.add_row(
            "Replay ids",
            "\n".join(
                f"{r['channel']}: {r.get('status')}"
                + (f", {format_duration(r['age_seconds'])} old" if r.get("age_seconds") else "")
                for r in replay
            ),
        )
        table.add_row("DLQ", f"{plural(kafka['dlq_pending'], 'entry', 'entries')} not replayed")
    table.add_row("Service", _error(service) or service_line(service))
    if service.get("reconcile"):
        table.add_row("Reconcile", _reconcile_line(service["reconcile"]))
    unreadable = dict.fromkeys(u["reason"] for u in service.get("unreadable_fields") or ())
    if unreadable:
        table.add_row("Unreadable fields", "\n".join(f"[red]{r}[/]" for r in unreadable))
    console.print(table)


# The refused mapping's problems listed under it; the rest are in the mapping_refused log.
MAX_PROBLEMS_SHOWN: Final = 5


def mapping_lines(mapping: dict[str, Any] | None, service: dict[str, Any]) -> str:
    """The Mapping row: the revision published in sfamp.config and its relations, and,
    when the service refused its latest mapping, that it runs the one it had (a refused
    revision is published all the same)."""
    if mapping is None:
        text = "none published (sfamp config import FILE)"
    elif "error" in mapping:
        text = f"[red]{escape(mapping['error'])}[/]"
    else:
        text = f"revision {mapping['revision']}, {mapping['cadence']}\n" + "\n".join(
            mapping["relations"]
        )
    refused = service.get("mapping_refused")
    # What the service runs, as its source says it: "sfamp.config revision 4", "file:..."
    running = service.get("mapping_revision")
    revision = None if mapping is None else mapping.get("revision")
    if running and not refused and running != f"sfamp.config revision {revision}":
        # A mapping file newer than the published revision (or one published since the
        # service read it): the published one above is not what it runs.
        than = ", not this revision" if revision is not None else ""
        text += f"\n[yellow]the service runs {escape(running)}{than}[/]"
    if refused:
        kept = running
        if not kept:  # refused at start: nothing runs until a revision passes
            runs = "it waits for a revision that passes"
        elif kept == refused.get("source"):  # a file changed under it: its earlier content
            runs = f"it runs what {kept} held before"
        else:
            runs = f"it runs {kept}"
        text += (
            f"\n[red]the service refused {refused.get('source')}: {refused.get('reason')}; "
            f"{runs}[/]"
        )
        problems = [str(problem) for problem in refused.get("problems") or ()]
        shown = problems[:MAX_PROBLEMS_SHOWN]
        text += "".join(f"\n[red]  {escape(problem)}[/]" for problem in shown)
        if len(problems) > len(shown):
            text += f"\n[red]  and {len(problems) - len(shown)} more (the service's log)[/]"
    return text


def to_seconds(stamp: object) -> str | None:
    """An ISO time of /status to the second (its microseconds tell a reader nothing);
    None stays None, and anything that is not an ISO time is shown as it is."""
    if stamp is None:
        return None
    try:
        return datetime.fromisoformat(str(stamp)).isoformat(timespec="seconds")
    except ValueError:
        return str(stamp)


def service_line(service: dict[str, Any]) -> str:
    """The Service row: role, URL and readiness; for a role that delivers, the cadence,
    next flush, pending groups and last flush (an ingest-only process flushes nothing)."""
    waiting = service.get("waiting_for") or []
    readiness = "ready" if service.get("ready") else "not ready"
    if not service.get("ready") and waiting:
        readiness += f" ({'; '.join(waiting)})"  # e.g. "waiting for Kafka: ..."
    head = f"{service.get('role')} at {service['url']}, {readiness}"
    if service.get("role") == "ingest":
        return head
    last = service.get("last_flush") or {}
    flush = (
        "no flush yet"
        if not last
        else f"last flush {to_seconds(last.get('at'))}: "
        + ("ok" if last.get("ok") else f"failed ({last.get('error')})")
        + f", {plural(last.get('groups', 0), 'group')}, "
        + plural(last.get("requests", 0), "request")
        + (f", {last['dlq']} to the DLQ" if last.get("dlq") else "")
    )
    if service.get("flushing_since"):
        retrying = service.get("amplitude_retrying")
        why = (
            f" (retrying: Amplitude {retrying['answer']}, {plural(retrying['tries'], 'time')}"
            " in this flush)"
            if retrying
            else ""
        )
        flush = f"flushing since {to_seconds(service['flushing_since'])}{why}; {flush}"
    return (
        f"{head}; cadence {service.get('cadence')}, "
        f"next flush {to_seconds(service.get('next_flush_at')) or 'not scheduled yet'}; "
        f"{plural(service.get('pending_groups') or 0, 'group')} pending; {flush}"
    )


def _reconcile_line(reconcile: dict[str, Any]) -> str:
    """Schedule, the run going on or the next one, and how the last one ended."""
    running, last = reconcile.get("running"), reconcile.get("last") or {}
    line = str(reconcile.get("schedule"))
    if running:
        line += (
            f"; running since {to_seconds(running.get('started_at'))} "
            f"({running.get('object') or 'starting'}, "
            f"{plural(running.get('records_read', 0), 'record')} read)"
        )
    else:
        line += f"; next {to_seconds(reconcile.get('next_at')) or 'not scheduled'}"
    if last.get("error"):
        line += f"\n[red]last failed {to_seconds(last.get('finished_at'))}: {last['error']}[/]"
    elif last:
        line += f"\nlast finished {to_seconds(last.get('finished_at'))}"
        if "records_read" in last:
            line += (
                f": {plural(last['records_read'], 'record')} read, "
                f"{plural(last['properties_sent'], 'property', 'properties')} sent for "
                f"{plural(last['groups'], 'group')}"
            )
    return line


def _error(part: dict[str, Any]) -> str | None:
    return f"[yellow]{part['error']}[/]" if "error" in part else None
