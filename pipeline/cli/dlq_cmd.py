"""``sfamp dlq``: see what sfamp could not deliver, replay it after a fix, or dismiss it.

The DLQ logic lives in the library (:mod:`pipeline.kafka.dlq` folds entries and
replay markers; :mod:`pipeline.runtime.dlq_redeliver` re-reads and redelivers;
:mod:`pipeline.runtime.dlq_dismiss` settles what nothing can replay); this module
only renders.
"""

from __future__ import annotations

import shlex
import textwrap
from pathlib import Path
from typing import Final

import typer

from pipeline.cli.common import MAPPING, console, fail, given_mapping_file, print_json
from pipeline.cli.help import SfampTyper
from pipeline.cli.topics_cmd import format_time, run_inspection
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.kafka.dlq import DlqItem, DlqView, check_one_choice, read_dlq
from pipeline.kafka.inspect import KafkaInspector
from pipeline.runtime.dlq_dismiss import Dismissal, dismiss_dead_letters
from pipeline.runtime.dlq_redeliver import RedeliveryOutcome, replay_dead_letters
from pipeline.wording import plural

app = SfampTyper(help="List, replay and dismiss dead-lettered entries.", no_args_is_help=True)

_DETAIL_WIDTH: Final = 160
NO_KEY: Final = "(no key)"  # a record of the DLQ topic written without a Kafka key


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List every DLQ entry: id, reason, key, time, whether it was replayed, and why.

    Each entry's id (what --id takes) is on a line of its own, never wrapped.

    Exits 0 with "empty" when nothing was dead-lettered yet (also before the
    topic exists); 1 only when Kafka cannot be reached.
    """

    async def work(_: Settings, inspector: KafkaInspector) -> DlqView:
        return await read_dlq(inspector)

    view = run_inspection(work)
    if as_json:
        print_json([item.as_json() for item in view.items])
        return
    if not view.items:
        console.print(f"{view.topic} is empty: nothing was dead-lettered", highlight=False)
        return
    waiting = sum(1 for item in view.items if not item.settled)
    dismissed = sum(1 for item in view.items if item.dismissed)
    title = f"{view.topic}: {plural(len(view.items), 'entry', 'entries')}, {waiting} not replayed"
    console.print(title + (f", {dismissed} dismissed" if dismissed else ""), highlight=False)
    for item in view.items:
        _print_entry(*entry_lines(item))


def _print_entry(entry_id: str, *lines: str, style: str = "") -> None:
    """One entry after a blank line: its id alone and whole at any width (what --id takes,
    quoted when a shell would split it), then ``lines`` indented, wrapped indented too."""
    console.print()
    console.print(
        shlex.quote(entry_id), style="bold", markup=False, highlight=False, soft_wrap=True
    )
    width = max(20, console.width - 2)
    for line in lines:
        for part in textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False):
            console.print("  " + part, style=style, markup=False, highlight=False, soft_wrap=True)


def _result(key: str, detail: str) -> str:
    return f"{key or NO_KEY} · {detail}"


def entry_lines(item: DlqItem) -> list[str]:
    """One entry as plain lines: its id alone on the first (what ``--id`` takes, printed
    whole at any width), then reason, key, time and replay, then the detail."""
    replayed = "not replayed"
    if item.dismissed:
        replayed = f"dismissed {format_time(item.replayed_at_ms)}"
    elif item.replayed_at_ms is not None:
        replayed = f"replayed {format_time(item.replayed_at_ms)}"
        replayed += f" ({item.replayed_how})" if item.replayed_how else ""
    if item.entry is None:
        facts = ["malformed", item.key or NO_KEY, "-", replayed]
        detail = item.problem or ""
    else:
        entry = item.entry
        facts = [entry.reason, entry.key, format_time(entry.at_ms), replayed]
        detail = entry.detail[:_DETAIL_WIDTH]
    return [item.id, " · ".join(facts), *([detail] if detail else [])]


@app.command("replay")
def replay_(
    ids: list[str] = typer.Option(  # noqa: B008
        [], "--id", metavar="<id>", help="Entry id to replay (repeatable)."
    ),
    everything: bool = typer.Option(False, "--all", help="Every entry not yet replayed."),
    mapping: Path | None = MAPPING,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Re-read the records behind entries from Salesforce and send their current values.

    The stale payload kept in the DLQ is never sent again: each entry's records
    are read as Salesforce holds them now (a deleted record follows the
    mapping's on_delete) and sent to Amplitude; a read after the send checks
    that nothing newer was written in between. Replayed entries are marked in
    the DLQ; entries that cannot be re-read or are rejected again stay, with
    the reason. Exits 1 when any selected entry could not be replayed, or when
    neither --id nor --all is given (or both are).
    """
    _one_choice(ids, everything, "--all")

    async def work(settings: Settings, inspector: KafkaInspector) -> list[RedeliveryOutcome]:
        file = given_mapping_file(mapping, settings)
        return await replay_dead_letters(settings, inspector, ids, everything, file)

    outcomes = run_inspection(work)
    _print_outcomes(outcomes, as_json=as_json)
    if any(not outcome.ok for outcome in outcomes):
        raise typer.Exit(1)


def _print_outcomes(outcomes: list[RedeliveryOutcome], *, as_json: bool) -> None:
    if as_json:
        print_json([o.as_json() for o in outcomes])
        return
    if not outcomes:
        console.print("nothing to replay", highlight=False)
        return
    ok = sum(1 for o in outcomes if o.ok)
    console.print(f"replayed {ok} of {len(outcomes)}", highlight=False)
    for o in outcomes:
        _print_entry(o.id, _result(o.key, o.detail), style="green" if o.ok else "bold red")


@app.command("dismiss")
def dismiss(
    ids: list[str] = typer.Option(  # noqa: B008
        [], "--id", metavar="<id>", help="Entry id to dismiss (repeatable)."
    ),
    unreplayable: bool = typer.Option(
        False, "--unreplayable", help="Every waiting entry that names no record to replay."
    ),
    note: str | None = typer.Option(
        None,
        "--note",
        help="Why, kept in the DLQ with the dismissal (default: the reason it cannot be replayed).",
    ),
    mapping: Path | None = MAPPING,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Settle entries no replay can deliver, so that they stop counting as waiting.

    An entry that names no record (an undecodable change, a CDC event without a
    readable header, a group type no longer mapped) can never be replayed. A
    dismissal is written to the DLQ as a marker, as a replay is; the entry stays
    listed, shown as dismissed, and sfamp status and dlq replay --all stop
    counting it. --unreplayable picks those entries under the mapping that runs
    now; --id dismisses any entry you name. Exits 0 unless Kafka cannot be
    reached, an id is unknown, or neither --id nor --unreplayable is given (or
    both are).
    """
    _one_choice(ids, unreplayable, "--unreplayable")

    async def work(settings: Settings, inspector: KafkaInspector) -> list[Dismissal]:
        file = given_mapping_file(mapping, settings)
        return await dismiss_dead_letters(settings, inspector, ids, unreplayable, file, note)

    _print_dismissals(run_inspection(work), as_json=as_json)


def _one_choice(ids: list[str], flag_set: bool, flag: str) -> None:
    """One line and exit 1, before Kafka is asked anything, unless the command names
    entries by --id or sets ``flag`` (not both)."""
    try:
        check_one_choice(ids, flag_set, flag)
    except ConfigError as exc:
        fail(exc)


def _print_dismissals(outcomes: list[Dismissal], *, as_json: bool) -> None:
    if as_json:
        print_json([o.as_json() for o in outcomes])
        return
    if not outcomes:
        # Also when nothing waits at all: "every waiting entry can be replayed" would mislead.
        console.print(
            "nothing to dismiss: no waiting entry that a replay cannot deliver", highlight=False
        )
        return
    done = sum(1 for o in outcomes if o.dismissed)
    console.print(f"dismissed {done} of {len(outcomes)}", highlight=False)
    for o in outcomes:
        _print_entry(o.id, _result(o.key, o.detail), style="" if o.dismissed else "dim")
