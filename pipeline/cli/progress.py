"""Progress while a backfill or reconcile reads objects: a rich bar per object on a TTY,
the run's own log lines otherwise (and always with ``--json``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
)
from rich.table import Column

from pipeline.cli.common import err_console

BarsT = TypeVar("BarsT", bound="ObjectBars")
LinesT = TypeVar("LinesT")


class ObjectBars:
    """One bar per object on stderr: the object and how it is read, rows of the total, then
    the command's own ``columns`` over the task ``fields`` it counts (started at their value)."""

    def __init__(self, *columns: ProgressColumn, **fields: Any) -> None:
        # The bar takes the width the figures leave (a line as wide as the terminal), so
        # that on 80 columns the rows and the total are never cut short.
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=None, table_column=Column(ratio=1)),
            MofNCompleteColumn(table_column=Column(no_wrap=True)),
            *columns,
            console=err_console,
            expand=True,
        )
        self._fields = fields
        self._tasks: dict[str, TaskID] = {}
        self._done: dict[str, int] = {}

    def start_object(
        self, sfdc_object: str, total: int | None, method: str, *, done: int = 0
    ) -> None:
        """A bar from ``done`` (a resumed run starts where the stopped one was)."""
        self._done[sfdc_object] = done
        self._tasks[sfdc_object] = self._bar.add_task(
            f"{sfdc_object} ({method})", total=total, completed=done, **self._fields
        )

    def catching_up(self, sfdc_object: str, /) -> None:
        """The bar says the rows are all read and what it waits for now."""
        task_id = self._tasks.get(sfdc_object)
        if task_id is not None:
            task = self._bar.tasks[task_id]
            self._bar.update(task_id, description=f"{task.description} catching up")

    def _finish(self, sfdc_object: str, rows: int) -> None:
        """The bar ends full at the rows read, a stopped run's included (the total was
        only an estimate)."""
        task_id = self._tasks.get(sfdc_object)
        if task_id is not None:
            read = self._done.get(sfdc_object, 0) + rows
            self._bar.update(task_id, total=read, completed=read)

    def __enter__(self) -> Self:
        self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.stop()


def choose_progress(
    as_json: bool, bars: Callable[[], BarsT], lines: Callable[[], LinesT]
) -> BarsT | contextlib.nullcontext[LinesT]:
    """Bars on a TTY unless the summary is JSON; else log lines (nothing to start or stop)."""
    if sys.stderr.isatty() and not as_json:
        return bars()
    return contextlib.nullcontext(lines())
