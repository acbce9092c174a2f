"""How ``sfamp backfill`` shows its summary: the totals, each object, shared group values
and (dry run) a sample of identifications."""

from __future__ import annotations

from typing import Any

import orjson
from rich.table import Table

from pipeline.cli.common import console
from pipeline.runtime.backfill import BackfillSummary
from pipeline.wording import plural


def print_summary(summary: BackfillSummary) -> None:
    """The final table, per-object rows, duplicate group values and (dry run) a sample."""
    verb = "would send" if summary.dry_run else "sent"
    # Delivered: accepted by Amplitude (a run stopped early may have sent more).
    delivered = "would send" if summary.dry_run else "delivered"
    title = "backfill" + (" (dry run)" if summary.dry_run else "")
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("", style="cyan", no_wrap=True)
    table.add_column("", justify="right")
    rejected = summary.total("rejected")
    rows: list[tuple[str, Any]] = [
        ("mapping", (summary.mapping or "-").removeprefix("file:")),
        ("rows read", f"{summary.total('rows_read'):,}"),
        (f"identifications {delivered}", f"{summary.total('identifications'):,}"),
        (f"Amplitude requests ({verb})", f"{summary.total('requests'):,}"),
        ("bytes", f"{summary.total('bytes'):,}"),
        ("rejected", f"{rejected:,}" + (f" -> {_rejected_to(summary)}" if rejected else "")),
        ("duplicate group values", f"{_duplicate_values(summary):,}"),
        ("records without a group value", f"{summary.total('without_group'):,}"),
        ("re-sent by the catch-up reads", _caught_up(summary)),
        ("deletes from the recycle bin", f"{summary.total('recycle_bin'):,}"),
        ("Salesforce API calls", f"{summary.api_calls:,}"),
        ("Bulk jobs", f"{summary.bulk_jobs:,}"),
        ("elapsed", f"{summary.elapsed_seconds:.1f} s"),
        ("status", _status(summary)),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    _print_objects(summary)
    _print_duplicates(summary)
    if summary.dry_run and summary.sample:
        console.print("[bold]sample identifications[/]")
        for identification in summary.sample:
            console.print_json(orjson.dumps(identification).decode())


def _status(summary: BackfillSummary) -> str:
    if summary.interrupted is not None:
        return f"[yellow]interrupted[/] ({summary.next_step()})"
    if summary.error is not None:
        return f"[red]stopped[/] ({summary.next_step()})"
    rejected = summary.total("rejected")
    if rejected:
        return f"[yellow]complete, {rejected:,} rejected[/]"
    return "[green]complete[/]"


def _caught_up(summary: BackfillSummary) -> str:
    text = f"{summary.total('caught_up'):,}"
    if summary.completed and not summary.quiescent:  # a run stopped early never got there
        text += " [yellow](records kept changing: see the log)[/]"
    return text


def _duplicate_values(summary: BackfillSummary) -> int:
    return sum(int(found["values"]) for found in summary.duplicates.values())


def _print_objects(summary: BackfillSummary) -> None:
    table = Table(title="objects", title_justify="left")
    for column in ("object", "via", "rows", "identifications", "requests", "rejected", "state"):
        table.add_column(column, justify="left" if column in ("object", "via") else "right")
    for item in summary.objects:
        state = "already done" if item.already_done else ("done" if item.finished else "partial")
        table.add_row(
            item.sfdc_object,
            item.method or "-",
            f"{item.rows_read:,}",
            f"{item.identifications:,}",
            f"{item.requests:,}",
            f"{item.rejected:,}",
            state,
        )
    console.print(table)


def _print_duplicates(summary: BackfillSummary) -> None:
    if not summary.duplicates:
        return
    table = Table(title="group values shared by several records", title_justify="left")
    table.add_column("group type", style="cyan")
    table.add_column("group value")
    table.add_column("records", justify="right")
    for group_type, found in summary.duplicates.items():
        for value, count in found["top"].items():
            table.add_row(group_type, value, f"{count:,}")
        shown = len(found["top"])
        if found["values"] > shown:
            table.add_row(group_type, f"... {plural(found['values'] - shown, 'more value')}", "")
    console.print(table)


def _rejected_to(summary: BackfillSummary) -> str:
    """Where the rejected identifications went; none when writing them failed (the error
    says why, and a --resume sends them again)."""
    return summary.rejected_to or "not written (see the error)"
