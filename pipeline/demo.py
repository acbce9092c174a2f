"""``sfamp demo``: the whole product, end to end, on the embedded broker and both sandboxes.

Steps: start the stack, seed Accounts, publish a mapping, backfill, start the
service, change records in the Salesforce sandbox, wait for the flush, show
Amplitude's group properties before and after, and shut everything down.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.config.validation import validate_document
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.config_topic import publish_mapping
from pipeline.runtime.backfill import run_backfill
from pipeline.runtime.service import serving
from pipeline.sandbox_stack import SandboxStack, console_url, health_port_for_run
from pipeline.tls import verified_context
from pipeline.wording import plural
from sfamp_sandbox.salesforce.seed import seed

DEMO_MAPPING: dict[str, Any] = {
    "version": 1,
    "sync_cadence": {"mode": "interval", "every_seconds": 2},
    "mappings": [
        {
            "sfdc_object": "Account",
            "group_type": "account",
            "group_name_field": "Id",
            "group_properties": [
                {"sfdc_field": "Name", "amplitude_property": "name"},
                {"sfdc_field": "Industry", "amplitude_property": "industry"},
                {"sfdc_field": "AnnualRevenue", "amplitude_property": "annual_revenue"},
                {"sfdc_field": "Tier__c", "amplitude_property": "tier"},
                {"sfdc_field": "Regions__c", "amplitude_property": "regions"},
            ],
            "on_delete": "mark",
        }
    ],
}
SHOWN = ("name", "industry", "annual_revenue", "tier", "sfdc_deleted")

Backfill = Callable[[Settings, MappingConfig], Awaitable[str]]


@dataclass
class DemoResult:
    changed_groups: int
    seconds: float


async def run_demo(
    console: Console,
    *,
    accounts: int = 300,
    topic_prefix: str = "sfamp",
    backfill: Backfill | None = None,
    wait_seconds: float = 60.0,
    stack: SandboxStack | None = None,
    keep: bool = False,
    finished: Callable[[], None] | None = None,
) -> DemoResult:
    """Run the demo on ``stack`` (free ports by default); ``finished`` is called once its
    last step is done.

    With ``keep`` the stack and its data stay up after the demo until the task is
    cancelled (Ctrl-C or SIGTERM in ``sfamp demo --keep``), and the exports to use it
    are printed.
    """
    started = time.monotonic()
    console.rule("[bold]sfamp demo")
    async with stack or SandboxStack() as running:
        settings = running.settings(
            topic_prefix,
            kafka={"consumer_session_timeout_seconds": 6, "partitions": 3},
            runtime={"drain_timeout_seconds": 10},
        )
        ids = await _prepare(console, running, settings, accounts, backfill)
        changed = await _stream(console, running, settings, ids, started, wait_seconds)
        console.rule("[bold green]demo finished")
        if finished is not None:
            finished()
        if keep:
            _explore(console, running, topic_prefix, ids[0])
            await asyncio.Event().wait()
    _explore_hint(console)
    return DemoResult(changed, time.monotonic() - started)


async def _prepare(
    console: Console,
    stack: SandboxStack,
    settings: Settings,
    accounts: int,
    backfill: Backfill | None,
) -> list[str]:
    """Steps 1-4: the stack, seeded Accounts, the published mapping, the backfill."""
    assert stack.salesforce is not None
    assert stack.amplitude is not None
    _step(
        console,
        "1",
        f"sandboxes up: Kafka {stack.kafka_bootstrap}, "
        f"Salesforce {stack.salesforce.base_url}, Amplitude {stack.amplitude.base_url}",
    )
    ids = seed(stack.salesforce.org, "Account", accounts, seed_value=42)
    _step(console, "2", f"seeded {len(ids)} Accounts in the Salesforce sandbox")

    mapping = _demo_mapping()
    await ensure_topics(settings.kafka, sfamp_topics(settings.kafka, mapping.objects))
    published = await publish_mapping(settings.kafka, mapping, now_ms=int(time.time() * 1000))
    _step(
        console,
        "3",
        f"published the mapping (revision {published.revision}) to "
        f"{settings.kafka.topic_prefix}.config: Account -> account, every 2 s",
    )
    summary = await (backfill or _backfill)(settings, mapping)
    _step(console, "4", f"backfill: {summary}")
    return ids


async def _stream(
    console: Console,
    stack: SandboxStack,
    settings: Settings,
    ids: list[str],
    started: float,
    wait_seconds: float,
) -> int:
    """Steps 5-7: the service follows live changes; Amplitude before and after."""
    assert stack.salesforce is not None
    async with serving(settings, ready_within=wait_seconds):
        _step(console, "5", "service running: CDC subscribed, deliver joined its group")

        async with httpx.AsyncClient(
            base_url=stack.salesforce.base_url, timeout=10, verify=verified_context()
        ) as sf:
            chosen = ids[:3]
            before = {rid: _group(stack, rid) for rid in chosen}
            created, changes = await _live_changes(sf, chosen)
        _step(
            console,
            "6",
            f"made {changes} live changes in Salesforce (create, update, null a field, delete)",
        )

        watched = [*chosen, created]
        await _until(lambda: _settled(stack, watched), wait_seconds)
        _step(
            console,
            "7",
            f"flushed to Amplitude within {time.monotonic() - started:.1f}s of the demo's start",
        )
        console.print(_before_after(stack, before | {created: None}))
    return len(watched)


async def _backfill(settings: Settings, mapping: MappingConfig) -> str:
    with tempfile.TemporaryDirectory(prefix="sfamp-demo-") as state:
        summary = await run_backfill(
            settings, mapping, checkpoint_path=Path(state) / "checkpoint.json", dlq="file"
        )
    if summary.error is not None:
        raise summary.error
    return (
        f"{plural(summary.total('rows_read'), 'record')} read, "
        f"{plural(summary.total('identifications'), 'group')} sent in "
        f"{plural(summary.total('requests'), 'request')}, "
        f"{summary.elapsed_seconds:.1f}s"
    )


def _demo_mapping() -> MappingConfig:
    model, problems = validate_document(DEMO_MAPPING)
    assert model is not None, problems
    return model


async def _live_changes(sf: httpx.AsyncClient, ids: list[str]) -> tuple[str, int]:
    async def call(method: str, path: str, body: Any = None) -> Any:
        response = await sf.request(method, "/__sandbox" + path, json=body)
        response.raise_for_status()
        return response.json()

    created = await call(
        "POST",
        "/records/Account",
        {"Name": "Demo Rockets", "Industry": "Energy", "Tier__c": "Growth"},
    )
    await call(
        "PATCH",
        f"/records/Account/{ids[0]}",
        {"Industry": "Biotechnology", "Tier__c": "Enterprise"},
    )
    await call("PATCH", f"/records/Account/{ids[1]}", {"Industry": None, "AnnualRevenue": 1234567})
    await call("DELETE", f"/records/Account/{ids[2]}")
    return str(created["id"]), 4


def _group(stack: SandboxStack, record_id: str) -> dict[str, Any] | None:
    assert stack.amplitude is not None
    found = stack.amplitude.state.store("us").groups.get(("account", record_id))
    return dict(found) if found is not None else None


def _settled(stack: SandboxStack, ids: list[str]) -> bool:
    created, deleted = _group(stack, ids[-1]), _group(stack, ids[2])
    first = _group(stack, ids[0]) or {}
    return (
        created is not None
        and deleted is not None
        and deleted.get("sfdc_deleted") is True
        and first.get("tier") == "Enterprise"
    )


def _before_after(stack: SandboxStack, before: dict[str, dict[str, Any] | None]) -> Table:
    table = Table(title="Amplitude group properties (group type 'account')", title_justify="left")
    table.add_column("group (Account Id)", style="cyan", no_wrap=True)
    table.add_column("property")
    table.add_column("before", style="red")
    table.add_column("after", style="green")
    for record_id, old in before.items():
        new = _group(stack, record_id) or {}
        for prop in SHOWN:
            was = "-" if old is None else _shown(old.get(prop))
            now = _shown(new.get(prop))
            if was != now:
                table.add_row(record_id, prop, was, now)
            elif prop == "name":  # which account it is, unchanged: dimmed
                table.add_row(record_id, prop, was, now, style="dim")
    return table


def _shown(value: Any) -> str:
    return "(unset)" if value is None else str(value)


def _explore(console: Console, stack: SandboxStack, prefix: str, record_id: str) -> None:
    """How to use the kept stack from another shell; every line works as printed."""
    assert stack.salesforce is not None
    assert stack.amplitude is not None
    record = f"{stack.salesforce.base_url}/__sandbox/records/Account/{record_id}"
    group = f"{stack.amplitude.base_url}/__sandbox/groups/account/{record_id}"
    console.print(
        "\nThe stack keeps running with the demo's data until Ctrl-C. In another shell "
        "(with .venv activated), paste:",
        highlight=False,
    )
    console.print(
        stack.export_block(health_port_for_run(), prefix),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    console.print(
        "then look around:\n"
        "  sfamp topics list\n"
        "  sfamp topics tail changes.Account -n 10\n"
        "  sfamp replay status\n"
        "  sfamp dlq list\n"
        "  sfamp config export\n"
        "  sfamp run                 # follows new changes with the published mapping\n"
        "  sfamp status              # in a third shell, while sfamp run runs\n"
        f"  sfamp console             # the web console at {console_url()}\n"
        "with sfamp run running, change a record in the Salesforce sandbox and, after the\n"
        "next flush (every 2 s), read its Amplitude group back:\n"
        f"  curl -s -X PATCH {record} -H 'Content-Type: application/json' "
        """-d '{"Industry": "Energy"}'\n"""
        f"  curl -s {group}",
        highlight=False,
        soft_wrap=True,
    )


def _explore_hint(console: Console) -> None:
    console.print(
        "\nTo explore further:\n"
        "  . .venv/bin/activate   # after make install / make demo; or call .venv/bin/sfamp\n"
        "  sfamp demo --keep      # this demo, then the stack keeps running with its data\n"
        "  sfamp sandbox up       # an empty stack on the default ports\n"
        "Both print export lines; in the shell where you paste them, sfamp console serves the "
        f'web console at {console_url()} (README.md: "Exploring by hand", "Web console").',
        highlight=False,
        soft_wrap=True,
    )


def _step(console: Console, number: str, text: str) -> None:
    console.print(f"[bold cyan]{number}.[/] {text}", highlight=False)


async def _until(condition: Callable[[], bool], wait_seconds: float) -> None:
    deadline = time.monotonic() + wait_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo waited {wait_seconds:.0f}s for the stack to catch up")
        await asyncio.sleep(0.1)


__all__ = ["DEMO_MAPPING", "DemoResult", "run_demo"]
