"""The bars on a TTY: a resumed object's bar starts where the stopped run was."""

from __future__ import annotations

import io

from rich.console import Console

from pipeline.cli.backfill_cmd import RichProgress
from pipeline.cli.reconcile_cmd import RichProgress as ReconcileBars
from pipeline.runtime.backfill.report import ObjectSummary
from pipeline.runtime.reconcile.report import ObjectReconcile


def test_a_resumed_backfill_bar_starts_at_the_rows_already_read_and_ends_full() -> None:
    bars = RichProgress()
    bars.start_object("Account", 1_000, "bulk", done=600)
    [task] = bars._bar.tasks
    assert (task.completed, task.total) == (600, 1_000)
    bars.advance("Account", 100, 100)
    assert task.completed == 700
    # This run read 400 rows (the summary's count): the bar ends at the object's 1,000.
    bars.finish_object(ObjectSummary("Account", rows_read=400))
    assert (task.completed, task.total) == (1_000, 1_000)


def test_a_fresh_bar_starts_at_0() -> None:
    bars = ReconcileBars()
    bars.start_object("Account", 50, "rest")
    [task] = bars._bar.tasks
    assert task.completed == 0
    bars.finish_object(ObjectReconcile("Account", records_read=50))
    assert (task.completed, task.total) == (50, 50)


def test_an_80_column_bar_shows_the_rows_and_the_total_whole() -> None:
    bars = RichProgress()
    bars.start_object("Opportunity", 1_250_000, "bulk", done=400_000)
    bars.advance("Opportunity", 11_000, 11_000)
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(bars._bar.get_renderable())
    [line] = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert "411000/1250000 rows" in line, line
    assert "…" not in line, line
    assert len(line) <= 80


def test_a_bar_says_when_its_rows_are_read_and_the_catch_up_runs() -> None:
    """Else it sits full and still while the catch-up's Bulk job runs."""
    bars = RichProgress()
    bars.start_object("Account", 50_000, "bulk")
    bars.advance("Account", 50_000, 50_000)
    bars.catching_up("Account")
    [task] = bars._bar.tasks
    assert task.description == "Account (bulk) catching up"
