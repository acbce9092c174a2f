"""Rendering of online verification (``sfamp config verify`` and ``config import``).

The checks themselves live in :mod:`pipeline.config.verify`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Final

from rich.table import Table

from pipeline.cli.common import console, print_json
from pipeline.config.checks import VerifyReport
from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.config.verify import verify_mapping
from pipeline.wording import plural

_STYLE: Final[Mapping[str, str]] = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def run_verify(
    settings: Settings, mapping: MappingConfig, *, json_output: bool = False
) -> VerifyReport:
    """Verify and print the report (a table, or JSON for scripts); the caller picks the exit."""
    if json_output:
        report = asyncio.run(verify_mapping(settings, mapping))
        print_json(report.as_json())
        return report
    with console.status("checking the mapping against Salesforce and Amplitude..."):
        report = asyncio.run(verify_mapping(settings, mapping))
    render(report)
    return report


def render(report: VerifyReport) -> None:
    title = "online checks"
    if report.instance_url:
        title += f" as {report.user_email or '?'} at {report.instance_url}"
    table = Table(title=title, title_justify="left")
    table.add_column("check", style="cyan")
    table.add_column("result", no_wrap=True)
    table.add_column("detail")
    for check in report.checks:
        table.add_row(check.name, f"[{_STYLE[check.status]}]{check.status}[/]", check.detail)
    console.print(table)
    summary = f"{report.count('pass')} passed, {plural(report.count('warn'), 'warning')}"
    if report.ok:
        console.print(f"[green]verified[/]: {summary}", highlight=False)
    else:
        console.print(f"[bold red]{plural(report.count('fail'), 'check')} failed[/], {summary}")
