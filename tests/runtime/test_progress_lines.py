"""Progress log lines of a backfill and a reconcile come on their interval, also while
nothing advances (a slow Amplitude holds every batch), and stop with the object."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from pipeline.runtime import progress as progress_module
from pipeline.runtime.backfill.report import LogProgress as BackfillLines
from pipeline.runtime.backfill.report import ObjectSummary
from pipeline.runtime.progress import ticking
from pipeline.runtime.reconcile.report import LogProgress as ReconcileLines
from tests.support.clock import FakeClock


def lines(logs: list[dict[str, object]], event: str) -> list[dict[str, object]]:
    return [line for line in logs if line["event"] == event]


def test_a_due_line_is_written_on_a_tick_when_nothing_advanced() -> None:
    clock = FakeClock(100.0)
    progress = BackfillLines(10.0, clock=clock)
    with capture_logs() as logs:
        progress.start_object("Account", 1_000, "bulk")
        clock.now += 5
        progress.tick()
        assert lines(logs, "backfill_progress") == []  # not due yet
        clock.now += 5.5
        progress.tick()
        [first] = lines(logs, "backfill_progress")
        assert (first["rows_read"], first["identifications"], first["eta_seconds"]) == (0, 0, None)

        clock.now += 1
        progress.advance("Account", 400, 400)  # a line came 1 s ago: none now
        clock.now += 9.5
        progress.tick()
        second = lines(logs, "backfill_progress")[-1]
        assert (second["rows_read"], second["identifications"]) == (400, 400)
        assert second["rows_per_second"] == 19  # 400 rows in 21 s
        assert second["eta_seconds"] == 31.5  # 600 rows left at that rate

        progress.finish_object(ObjectSummary("Account", rows_read=1_000))
        clock.now += 60
        progress.tick()
        assert len(lines(logs, "backfill_progress")) == 2  # none after the object's end


def test_a_resumed_object_counts_from_what_the_stopped_run_read() -> None:
    """Rows read and the ETA are the object's, the stopped run's included; the rate is
    this run's alone."""
    clock = FakeClock(0.0)
    progress = BackfillLines(10.0, clock=clock)
    with capture_logs() as logs:
        progress.start_object("Account", 1_000, "bulk", done=600)
        [started] = lines(logs, "backfill_object_started")
        assert started["already_read"] == 600
        clock.now += 10
        progress.advance("Account", 200, 200)
        [line] = lines(logs, "backfill_progress")
        assert line["rows_read"] == 800
        assert line["rows_per_second"] == 20  # 200 rows in 10 s
        assert line["eta_seconds"] == 10.0  # 200 rows left at that rate

    reconcile = ReconcileLines(0.0, clock=clock)
    with capture_logs() as logs:
        reconcile.start_object("Account", 1_000, "bulk", done=300)
        reconcile.advance("Account", 100, 2)
        [line] = lines(logs, "reconcile_progress")
        assert line["records_read"] == 400


def test_a_fresh_object_names_nothing_already_read() -> None:
    with capture_logs() as logs:
        BackfillLines(10.0, clock=FakeClock(0.0)).start_object("Account", 10, "rest")
    [started] = lines(logs, "backfill_object_started")
    assert "already_read" not in started


def test_an_interval_of_0_writes_a_line_per_advance_and_none_on_ticks() -> None:
    clock = FakeClock(0.0)
    progress = ReconcileLines(0.0, clock=clock)
    with capture_logs() as logs:
        progress.start_object("Account", None, "rest")
        clock.now += 3
        progress.tick()
        assert lines(logs, "reconcile_progress") == []
        progress.advance("Account", 200, 3)
        [line] = lines(logs, "reconcile_progress")
        assert (line["records_read"], line["properties_differing"]) == (200, 3)


async def test_ticking_ticks_while_the_work_runs_and_stops_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress_module, "TICK_SECONDS", 0.01)
    ticks: list[int] = []
    ticked_twice = asyncio.Event()

    class Ticks:
        def tick(self) -> None:
            ticks.append(1)
            if len(ticks) == 2:
                ticked_twice.set()

    async def work() -> str:
        await ticked_twice.wait()
        return "done"

    assert await asyncio.wait_for(ticking(Ticks(), work()), timeout=10) == "done"
    # The ticker ended with the work: no task is left but this test's own.
    assert asyncio.all_tasks() == {asyncio.current_task()}

    async def plain() -> str:
        return "plain"

    assert await ticking(object(), plain()) == "plain"  # a progress without tick(): the work


async def test_a_failing_tick_is_logged_and_the_run_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress_module, "TICK_SECONDS", 0.01)
    ticked_twice = asyncio.Event()
    calls: list[int] = []

    class Failing:
        def tick(self) -> None:
            calls.append(1)
            if len(calls) == 2:
                ticked_twice.set()
            raise OSError("stderr is gone")

    async def work() -> str:
        await ticked_twice.wait()  # ticks went on after the first one failed
        return "done"

    with capture_logs() as logs:
        assert await asyncio.wait_for(ticking(Failing(), work()), timeout=10) == "done"
    assert lines(logs, "progress_line_failed")[0]["reason"] == "OSError: stderr is gone"
