"""``sfamp replay status``: how old each CDC channel's stored replay id is.

The ages and their levels come from :mod:`pipeline.kafka.replay_age`; this renders them.
"""

from __future__ import annotations

from typing import Final

import typer
from rich.table import Table

from pipeline.cli.common import console, print_json
from pipeline.cli.help import SfampTyper
from pipeline.cli.topics_cmd import format_time, new_table, run_inspection
from pipeline.config.settings import Settings
from pipeline.kafka.inspect import KafkaInspector, Message, format_duration, now_ms
from pipeline.kafka.replay_age import (
    FAIL_AFTER_HOURS,
    RETENTION_HOURS,
    WARN_AFTER_HOURS,
    Level,
    ReplayAge,
    replay_ages,
)
from pipeline.kafka.topic_lookup import find_topic

app = SfampTyper(help="Check the stored CDC replay ids and their age.", no_args_is_help=True)

_STYLE: Final[dict[Level, str]] = {"ok": "green", "warn": "yellow", "fail": "bold red"}
FAIL_HINT: Final = (
    f"A replay id moves only when its channel has an event. Past {RETENTION_HOURS} h, "
    "Salesforce no longer holds the events after it: the running service loses nothing, "
    "but when `sfamp run` subscribes again it re-syncs the channel's objects (every record "
    "read again). A channel of an object no longer mapped needs nothing."
)


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show each CDC channel's stored replay id and its age against the 72-hour retention.

    Warns from 24 h, fails from 60 h; exits 1 when any channel fails or Kafka
    cannot be reached, 0 with "no replay ids stored yet" on a fresh cluster.
    """

    async def work(settings: Settings, inspector: KafkaInspector) -> tuple[str, list[Message]]:
        found = await find_topic(inspector, inspector.names.replay)
        if not found.exists:
            return found.name, []
        return found.name, await inspector.read_all(found.name)

    topic, messages = run_inspection(work)
    ages = replay_ages(messages, now_ms())
    if as_json:
        print_json([age.as_json() for age in ages])
    elif not ages:
        console.print(
            f"no replay ids stored in {topic} yet: ingest has not checkpointed any channel",
            highlight=False,
        )
    else:
        console.print(_table(topic, ages))
    failed = [age for age in ages if age.level == "fail"]
    if any(age.age_seconds is not None for age in failed) and not as_json:
        console.print(FAIL_HINT, highlight=False)
    if failed:
        raise typer.Exit(1)


def _table(topic: str, ages: list[ReplayAge]) -> Table:
    table = new_table(
        f"{topic}: replay ids (Salesforce retains events {RETENTION_HOURS} h; "
        f"warn from {WARN_AFTER_HOURS} h, fail from {FAIL_AFTER_HOURS} h)",
        ("channel", "replay id", "event time", "stored at", "age", "status"),
    )
    for age in ages:
        shown_age = "-" if age.age_seconds is None else format_duration(age.age_seconds)
        verdict = f"[{_STYLE[age.level]}]{age.level}[/]" + (f" ({age.note})" if age.note else "")
        table.add_row(
            age.channel,
            "-" if age.replay_id is None else str(age.replay_id),
            format_time(age.event_ts_ms),
            format_time(age.stored_at_ms),
            shown_age,
            verdict,
        )
    return table
