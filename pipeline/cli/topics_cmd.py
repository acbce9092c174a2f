"""``sfamp topics``: list, describe and tail sfamp's Kafka topics.

Read-only: nothing here joins a consumer group or writes to Kafka, so it is
safe to run next to a live service. ``run_inspection`` and ``new_table`` are
shared with the ``replay``, ``dlq`` and ``status`` commands; what they decide
(which topic a name means, how a message reads) is in :mod:`pipeline.kafka`.

Exit codes are the same everywhere: 0 with an "empty" answer when sfamp's own
topics were not written yet (a fresh cluster), 1 when Kafka cannot be reached
or an unknown topic is named.

Tables fit the terminal, or 80 columns when stdout is no terminal (cron,
pipes): columns wrap instead of being cut; ``--json`` is always complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

import orjson
import typer
from rich.table import Table

from pipeline.cli.common import console, fail, print_json, reporting_settings
from pipeline.cli.help import SfampTyper
from pipeline.config.settings import Settings
from pipeline.errors import SfampError
from pipeline.kafka.inspect import (
    KafkaInspector,
    TopicKind,
    TopicState,
    format_duration,
    iso_time,
    now_ms,
    topic_kind,
)
from pipeline.kafka.topic_lookup import find_topic
from pipeline.kafka.topic_rows import decode_row, parse_since
from pipeline.kafka.topics import TopicNames
from pipeline.wording import plural

T = TypeVar("T")

app = SfampTyper(
    help="Inspect sfamp's Kafka topics (read-only); alone, as 'sfamp topics list'.",
    invoke_without_command=True,
)


JSON = typer.Option(False, "--json", help="Machine-readable output.")


@app.callback()
def _topics(
    ctx: typer.Context,
    as_json: bool = typer.Option(
        False, "--json", help="Machine-readable output of the list (each command takes its own)."
    ),
) -> None:
    if ctx.invoked_subcommand is None:
        list_(as_json=as_json)
    elif as_json:
        raise typer.BadParameter(
            f"give it after the command: sfamp topics {ctx.invoked_subcommand} ... --json",
            param_hint="'--json'",
        )


TOPIC = typer.Argument(
    ..., help="Topic: full name, or short as changes.Account, Account, dlq, replay, config, sent."
)

# -- shared by the topics, replay and dlq command groups ------------------------


inspection_settings = reporting_settings  # the name the replay, dlq and status commands use


def run_inspection(work: Callable[[Settings, KafkaInspector], Awaitable[T]]) -> T:
    """Run ``work`` with an inspector on the configured cluster; known errors end the process."""
    settings = inspection_settings()

    async def inspect() -> T:
        async with KafkaInspector(settings.kafka) as inspector:
            return await work(settings, inspector)

    try:
        return asyncio.run(inspect())
    except SfampError as exc:
        fail(exc)


def new_table(
    title: str,
    columns: tuple[str, ...],
    *,
    right: tuple[str, ...] = (),
    show_header: bool = True,
) -> Table:
    """A table readable at 80 columns: every column may wrap (long words fold), none is cut."""
    table = Table(title=title, title_justify="left", show_header=show_header)
    justify: dict[bool, Literal["left", "right"]] = {True: "right", False: "left"}
    for column in columns:
        table.add_column(column, overflow="fold", justify=justify[column in right])
    return table


def format_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):  # any 64-bit stamp can be produced
        return f"{ms} ms (not a date)"


# -- topics list --------------------------------------------------------------------


@app.command("list")
def list_(as_json: bool = JSON) -> None:
    """List every sfamp topic with its partitions, messages, retention and lag."""

    async def work(_: Settings, inspector: KafkaInspector) -> list[TopicState]:
        return await inspector.states()

    states = run_inspection(work)
    now = now_ms()
    if as_json:
        print_json([_state_json(state, now) for state in states])
        return
    if not states:
        console.print("no sfamp topics yet (nothing has run with this prefix)", highlight=False)
        return
    table = new_table(
        "sfamp topics",
        ("topic", "kind", "parts", "messages", "retention", "lag", "lag age"),
        right=("parts", "messages", "lag"),
    )
    for state in states:
        lag, lag_time = _lag_cells(state, now)
        table.add_row(
            state.name,
            state.kind,
            str(len(state.partitions)),
            f"{state.messages:,}",
            state.retention,
            lag,
            lag_time,
        )
    console.print(table)


def _lag_cells(state: TopicState, now: int) -> tuple[str, str]:
    seconds = state.lag_seconds(now)
    if state.lag is None or seconds is None:
        return "-", "-"
    return f"{state.lag:,}", format_duration(seconds)


def _state_json(state: TopicState, now: int) -> dict[str, Any]:
    return {
        "topic": state.name,
        "kind": state.kind,
        "partitions": len(state.partitions),
        "messages": state.messages,
        "retention": state.retention,
        "config": None if state.config is None else dict(state.config),
        "lag_messages": state.lag,
        "lag_seconds": state.lag_seconds(now),
        "oldest_unflushed": iso_time(state.oldest_unflushed_ms),
    }


# -- topics describe ------------------------------------------------------------------


@app.command()
def describe(topic: str = TOPIC, as_json: bool = JSON) -> None:
    """Show a topic's begin, end and committed offsets per partition, its lag and config."""

    async def work(settings: Settings, inspector: KafkaInspector) -> tuple[TopicState | str, str]:
        found = await find_topic(inspector, topic)
        if not found.exists:
            return found.name, settings.kafka.consumer_group
        return await inspector.state(found.name), settings.kafka.consumer_group

    state, deliver_group = run_inspection(work)
    if isinstance(state, str):
        if as_json:
            print_json({"topic": state, "exists": False, "messages": 0})
        else:
            console.print(f"{state} does not exist yet: nothing was written to it", highlight=False)
        return
    group = deliver_group if state.kind == "changes" else None
    now = now_ms()
    if as_json:
        print_json(
            _state_json(state, now)
            | {
                "consumer_group": group,
                "partitions": [_partition_json(p) for p in state.partitions],
            }
        )
        return
    console.print(
        f"[bold]{state.name}[/] ({state.kind}, {plural(len(state.partitions), 'partition')}, "
        f"{plural(state.messages, 'message')}, retention {state.retention})",
        highlight=False,
    )
    if group is not None:
        _, lag_time = _lag_cells(state, now)
        lag = "-" if state.lag is None else plural(state.lag, "message")
        oldest = f", oldest unflushed change {lag_time} old" if state.lag else ""
        console.print(f"deliver group {group}: lag {lag}{oldest}", highlight=False)
    console.print(_partition_table(state))
    console.print(_config_table(state))


def _partition_json(part: Any) -> dict[str, Any]:
    return {
        "partition": part.partition,
        "begin": part.begin,
        "end": part.end,
        "messages": part.messages,
        "committed": part.committed,
        "lag": part.lag,
    }


def _partition_table(state: TopicState) -> Table:
    columns = ("partition", "begin", "end", "messages", "committed", "lag")
    table = new_table("partitions", columns, right=columns)
    changes = state.kind == "changes"
    for part in state.partitions:
        table.add_row(
            str(part.partition),
            str(part.begin),
            str(part.end),
            str(part.messages),
            (str(part.committed) if part.committed is not None else "none") if changes else "-",
            str(part.lag) if changes else "-",
        )
    return table


def _config_table(state: TopicState) -> Table:
    table = new_table("config", ("name", "value"))
    if state.config is None:
        table.add_row("(unknown)", "the broker does not describe topic configs")
    elif not state.config:
        table.add_row("(none set)", "broker defaults apply")
    for name, value in sorted((state.config or {}).items()):
        table.add_row(name, value)
    return table


# -- topics tail ----------------------------------------------------------------------


@app.command()
def tail(
    topic: str = TOPIC,
    lines: int = typer.Option(
        20, "--lines", "-n", min=0, help="How many messages to show (0 with -f: only new ones)."
    ),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new messages."),
    key: str | None = typer.Option(None, "--key", help="Only this record id (Kafka key)."),
    since: str | None = typer.Option(
        None, "--since", help="Only messages Kafka received after: 15m, 2h, 1d or ISO time."
    ),
    max_messages: int | None = typer.Option(
        None, "--max-messages", min=1, help="With --follow: stop after this many new messages."
    ),
    for_seconds: float | None = typer.Option(
        None, "--for", min=0, help="With --follow: stop after this many seconds."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Print the latest messages of a topic, decoded (malformed ones shown as such).

    --key shows one record's history; --follow keeps going until Ctrl-C
    (or --max-messages / --for).
    """
    if not follow and (max_messages is not None or for_seconds is not None):
        given = "--max-messages" if max_messages is not None else "--for"
        raise typer.BadParameter(
            "needs --follow; without it, --lines sets how many messages are shown",
            param_hint=given,
        )
    since_ms = _since_ms(since)

    async def work(settings: Settings, inspector: KafkaInspector) -> None:
        found = await find_topic(inspector, topic)
        name = found.name
        if not found.exists:
            if not as_json:
                console.print(f"{name}: the topic is empty (nothing was written yet)")
            return
        kind = topic_kind(TopicNames(settings.kafka.topic_prefix), name)
        messages, ends = await inspector.tail(name, lines, key=key, since_ms=since_ms)
        rows = [decode_row(kind, m) for m in messages]
        empty = "no messages match" if key or since_ms is not None else "the topic is empty"
        quiet = follow or lines == 0  # nothing was asked for, or what comes is
        _print_tail(name, kind, rows, as_json=as_json, empty=None if quiet else empty)
        if follow:
            await _follow(inspector, name, kind, ends, key, as_json, max_messages, for_seconds)

    run_inspection(work)


def _since_ms(since: str | None) -> int | None:
    if since is None:
        return None
    try:
        return parse_since(since, datetime.now(UTC))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _print_tail(
    topic: str, kind: TopicKind, rows: list[dict[str, Any]], *, as_json: bool, empty: str | None
) -> None:
    if as_json:
        for row in rows:
            _print_json_line(row)
        return
    if not rows:
        if empty is not None:
            console.print(f"{topic}: {empty}", highlight=False)
        return
    headers = tuple(column.replace("_", " ") for column in COLUMNS[kind])
    table = new_table(f"{topic}: last {plural(len(rows), 'message')}", ("p:offset", *headers))
    for row in rows:
        table.add_row(*cells(kind, row))
    console.print(table)


async def _follow(
    inspector: KafkaInspector,
    topic: str,
    kind: TopicKind,
    start: dict[int, int],
    key: str | None,
    as_json: bool,
    max_messages: int | None,
    for_seconds: float | None,
) -> None:
    seen = 0
    wanted = None if key is None else key.encode()
    messages = inspector.follow(topic, start)
    try:
        async with asyncio.timeout(for_seconds), contextlib.aclosing(messages):
            async for message in messages:
                if wanted is not None and message.key != wanted:
                    continue
                row = decode_row(kind, message)
                if as_json:
                    _print_json_line(row)
                else:
                    console.print("  ".join(cells(kind, row)), highlight=False, soft_wrap=True)
                seen += 1
                if max_messages is not None and seen >= max_messages:
                    return
    except TimeoutError:
        return


def _print_json_line(row: dict[str, Any]) -> None:
    typer.echo(orjson.dumps(row, default=str).decode())


# Table columns of `tail` per topic kind; keys of the decoded row (pipeline/kafka/topic_rows.py).
COLUMNS: Final[dict[TopicKind, tuple[str, ...]]] = {
    "changes": ("object", "record_id", "op", "changed", "commit_time", "replay_id"),
    "replay": ("channel", "replay_id", "event_time", "stored_at"),
    "config": ("revision", "published_at", "objects", "cadence"),
    "dlq": ("id", "reason", "key", "at", "detail"),
    "sent": ("group_type", "group_value", "property", "digest"),
    "other": ("key", "value"),
}


def cells(kind: TopicKind, row: dict[str, Any]) -> list[str]:
    """The table cells of a decoded row, under ``COLUMNS[kind]`` after a partition:offset."""
    where = f"{row['partition']}:{row['offset']}"
    width = len(COLUMNS[kind])
    if row["malformed"] is not None:
        detail = f"{row['malformed']} | {row['raw']}"
        return [where, "[bold red]malformed[/]", detail, *[""] * (width - 2)]
    if row.get("tombstone"):
        return [where, "[dim]tombstone[/]", row["key"], *[""] * (width - 2)]
    shown = [_cell(row.get(column)) for column in COLUMNS[kind]]
    if kind == "changes" and row.get("source", "cdc") != "cdc":
        # A record read again (a gap's, a re-sync's, a reconcile's), not a change event.
        at = COLUMNS[kind].index("op")
        shown[at] = f"{shown[at]} ({row['source']} read)"
    return [where, *shown]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, str) and re.match(r"^\d{4}-\d\d-\d\dT", value):
        return value[:19].replace("T", " ")
    return str(value)
