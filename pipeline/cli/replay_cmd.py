"""``sfamp replay status``: how old each CDC channel's stored replay id is.

Salesforce keeps change events for 72 hours. Ingest resumes a channel from the
replay id in ``sfamp.replay``; once the event behind it is older than the
retention, Salesforce refuses the replay id and the object must be re-synced.
A quiet channel ages too (its replay id only moves when an event arrives), so
this warns early: from 24 h, and fails from 60 h, leaving half a day to act.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

import typer
from rich.table import Table

from pipeline.cli.common import console, print_json
from pipeline.cli.topics_cmd import find_topic, format_time, new_table, run_inspection
from pipeline.config.settings import Settings
from pipeline.errors import EnvelopeError
from pipeline.kafka.inspect import KafkaInspector, Message, format_duration, iso_time, now_ms
from pipeline.kafka.records import RESYNC_PREFIX, ReplayMark, decode_replay_mark

app = typer.Typer(help="Stored CDC replay ids and their age.", no_args_is_help=True)

RETENTION_HOURS: Final = 72
WARN_AFTER_HOURS: Final = 24
FAIL_AFTER_HOURS: Final = 60

Level = Literal["ok", "warn", "fail"]
_STYLE: Final[dict[Level, str]] = {"ok": "green", "warn": "yellow", "fail": "bold red"}


@dataclass(frozen=True, slots=True)
class ReplayAge:
    """A channel's stored replay id measured against Salesforce's retention."""

    channel: str
    level: Level
    replay_id: int | None = None
    stored_at_ms: int | None = None
    event_ts_ms: int | None = None
    age_seconds: float | None = None
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "status": self.level,
            "replay_id": self.replay_id,
            "event_time": iso_time(self.event_ts_ms),
            "stored_at": iso_time(self.stored_at_ms),
            "age_seconds": self.age_seconds,
            "retention_seconds": RETENTION_HOURS * 3600,
            "note": self.note or None,
        }


def age_level(age_seconds: float) -> Level:
    hours = age_seconds / 3600
    if hours >= FAIL_AFTER_HOURS:
        return "fail"
    return "warn" if hours >= WARN_AFTER_HOURS else "ok"


def replay_age(mark: ReplayMark, now: int) -> ReplayAge:
    """Age of the event behind the replay id (its commit time; else when it was stored)."""
    since = mark.event_ts_ms if mark.event_ts_ms is not None else mark.stored_at_ms
    age = max(0.0, (now - since) / 1000)
    note = "" if mark.event_ts_ms is not None else "no event time stored; aged from stored_at"
    return ReplayAge(
        mark.channel, age_level(age), mark.replay_id, mark.stored_at_ms, mark.event_ts_ms, age, note
    )


def replay_ages(messages: Iterable[Message], now: int) -> list[ReplayAge]:
    """The latest mark per channel (a compacted table read in order), sorted by channel."""
    latest: dict[str, ReplayAge | None] = {}
    for message in messages:
        channel = message.key_text
        if channel.startswith(RESYNC_PREFIX):
            # A re-sync the ingest service still owes (removed when it finishes).
            latest[channel] = (
                None
                if message.value is None
                else ReplayAge(channel, "warn", note="object re-sync pending or running")
            )
            continue
        try:
            mark = decode_replay_mark(message.key, message.value)
        except EnvelopeError as exc:
            latest[channel] = ReplayAge(channel, "fail", note=f"unreadable: {exc}")
            continue
        latest[channel] = None if mark is None else replay_age(mark, now)
    return [age for _, age in sorted(latest.items()) if age is not None]


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Per CDC channel: stored replay id and its age against the 72-hour retention.

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
    if any(age.level == "fail" for age in ages):
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
