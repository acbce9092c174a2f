"""``sfamp dlq``: see what sfamp could not deliver, and send it again after a fix.

Replaying depends on why an entry is there:

* ``rejected``: Amplitude refused the identification (400). Its payload is
  that identification; it is sent again through the Group Identify client.
* anything with a ``source_topic`` (``malformed``, ``unresolved`` changes): the
  payload is the original message text; it is produced again to that topic
  under the entry's key, so the running deliver service retries it.

Entries are never deleted (the DLQ is an append-only log). A successful
replay appends a small *marker* entry to the DLQ: same key and reason,
``payload`` null and ``extra = {"replayed_id": <id>, "replayed_how": ...}``.
Readers fold markers onto the entries they name; a marker counts only for the
writes of that id before it, so an entry that fails again shows up again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

import orjson
import typer
from rich.table import Table

from pipeline.amplitude import AmplitudeClient
from pipeline.cli.common import console, print_json
from pipeline.cli.topics_cmd import iso_time, now_ms, require_topic, run_inspection
from pipeline.config.settings import Settings
from pipeline.errors import EnvelopeError, SfampError
from pipeline.kafka.inspect import KafkaInspector, Message, quick_settings
from pipeline.kafka.producer import ChangeProducer, Record
from pipeline.kafka.records import DlqEntry, decode_dlq_entry
from pipeline.kafka.topics import TopicNames
from pipeline.transform.group_update import GroupUpdate

app = typer.Typer(help="List and replay dead-lettered entries.", no_args_is_help=True)

How = Literal["amplitude", "reproduce"]
_DETAIL_WIDTH: Final = 160


@dataclass(frozen=True, slots=True)
class DlqItem:
    """One DLQ entry as an operator sees it: the entry (or why it is unreadable) and its state."""

    id: str
    message: Message
    entry: DlqEntry | None
    problem: str | None = None
    replayed_at_ms: int | None = None
    replayed_how: str | None = None

    def as_json(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "id": self.id,
            "offset": f"{self.message.partition}:{self.message.offset}",
            "malformed": self.problem,
            "replayed_at": iso_time(self.replayed_at_ms),
            "replayed_how": self.replayed_how,
        }
        if self.entry is None:
            return base
        entry = self.entry
        return base | {
            "reason": entry.reason,
            "key": entry.key,
            "at": iso_time(entry.at_ms),
            "detail": entry.detail,
            "source_topic": entry.source_topic,
            "source_partition": entry.source_partition,
            "source_offset": entry.source_offset,
            "payload": entry.payload,
            "extra": entry.extra,
        }


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    id: str
    key: str
    how: How | None
    ok: bool
    detail: str


def replay_marker(entry: DlqEntry, how: How, target: str, at_ms: int) -> DlqEntry:
    """The DLQ record that says ``entry`` was sent again (see the module docstring)."""
    return DlqEntry(
        id=f"replayed:{entry.id}",
        reason=entry.reason,
        detail=f"replayed to {target}",
        at_ms=at_ms,
        key=entry.key,
        payload=None,
        extra={"replayed_id": entry.id, "replayed_how": how},
    )


def fold_dlq(messages: Iterable[Message]) -> list[DlqItem]:
    """Entries in log order, with replay markers applied; unreadable records kept as such."""
    items: dict[str, DlqItem] = {}
    for message in messages:
        try:
            entry = decode_dlq_entry(message.value)
        except EnvelopeError as exc:
            where = f"{message.topic}:{message.partition}:{message.offset}"
            items[where] = DlqItem(where, message, None, problem=str(exc))
            continue
        replayed = entry.extra.get("replayed_id") if isinstance(entry.extra, dict) else None
        if replayed is None:
            items.pop(entry.id, None)  # a later write of the same id replaces it, unreplayed
            items[entry.id] = DlqItem(entry.id, message, entry)
        elif str(replayed) in items:
            how = entry.extra.get("replayed_how")
            items[str(replayed)] = replace(
                items[str(replayed)], replayed_at_ms=entry.at_ms, replayed_how=how
            )
    return list(items.values())


def replay_plan(entry: DlqEntry) -> How | str:
    """How ``entry`` can be sent again, or why it cannot."""
    if entry.reason == "rejected" and isinstance(entry.payload, dict):
        return "amplitude"
    if entry.source_topic and entry.payload is not None:
        return "reproduce"
    return "nothing to send again: no source topic and no Amplitude identification"


def update_from_identification(payload: dict[str, Any]) -> GroupUpdate:
    """The GroupUpdate that produces ``payload`` (a Group Identify identification)."""
    try:
        operations = payload.get("group_properties") or {}
        return GroupUpdate(
            group_type=str(payload["group_type"]),
            group_value=str(payload["group_value"]),
            set=dict(operations.get("$set") or {}),
            unset=frozenset(operations.get("$unset") or {}),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise EnvelopeError(f"not an Amplitude identification: {exc}") from exc


def select(items: Sequence[DlqItem], ids: Sequence[str], everything: bool) -> list[DlqItem]:
    """The entries named by ``--id``, or every readable unreplayed one with ``--all``."""
    if bool(ids) == everything:
        raise SfampError("name entries with --id ID (repeatable) or use --all, not both")
    if everything:
        return [i for i in items if i.entry is not None and i.replayed_at_ms is None]
    known = {item.id: item for item in items}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise SfampError(f"no DLQ entry with id {', '.join(unknown)} (see 'sfamp dlq list')")
    return [known[i] for i in dict.fromkeys(ids)]


def payload_bytes(payload: Any) -> bytes:
    return payload.encode() if isinstance(payload, str) else orjson.dumps(payload)


def rounds(pairs: list[tuple[DlqItem, GroupUpdate]]) -> list[list[tuple[DlqItem, GroupUpdate]]]:
    """Split so that no send holds one group twice (the client sends chunks concurrently)."""
    out: list[list[tuple[DlqItem, GroupUpdate]]] = []
    for pair in pairs:
        free = next((r for r in out if all(u.key != pair[1].key for _, u in r)), None)
        if free is None:
            out.append([pair])
        else:
            free.append(pair)
    return out


# -- commands -----------------------------------------------------------------------


async def _read(inspector: KafkaInspector) -> tuple[str, list[DlqItem]]:
    topic = await require_topic(inspector, inspector.names.dlq)
    return topic, fold_dlq(await inspector.read_all(topic))


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Every DLQ entry: id, reason, key, when, whether it was replayed, and why it is there."""

    async def work(_: Settings, inspector: KafkaInspector) -> tuple[str, list[DlqItem]]:
        return await _read(inspector)

    topic, items = run_inspection(work)
    if as_json:
        print_json([item.as_json() for item in items])
        return
    if not items:
        console.print(f"{topic} is empty: nothing was dead-lettered", highlight=False)
        return
    pending = sum(1 for item in items if item.replayed_at_ms is None)
    table = Table(
        title=f"{topic}: {len(items)} entries, {pending} not replayed", title_justify="left"
    )
    for column in ("id", "reason", "key", "when", "replayed", "detail"):
        table.add_column(column, overflow="fold", no_wrap=column in ("when", "replayed"))
    for item in items:
        table.add_row(*_list_cells(item))
    console.print(table)


def _list_cells(item: DlqItem) -> list[str]:
    if item.entry is None:
        return [
            item.id,
            "[bold red]malformed[/]",
            item.message.key_text,
            "-",
            "-",
            item.problem or "",
        ]
    entry = item.entry
    replayed = "no" if item.replayed_at_ms is None else f"{_short(item.replayed_at_ms)}"
    if item.replayed_how:
        replayed += f" ({item.replayed_how})"
    return [
        entry.id,
        entry.reason,
        entry.key,
        _short(entry.at_ms),
        replayed,
        entry.detail[:_DETAIL_WIDTH],
    ]


def _short(ms: int | None) -> str:
    iso = iso_time(ms)
    return "-" if iso is None else iso[:19].replace("T", " ")


@app.command("replay")
def replay_(
    ids: list[str] = typer.Option([], "--id", help="Entry id to replay (repeatable)."),  # noqa: B008
    everything: bool = typer.Option(False, "--all", help="Every entry not yet replayed."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Send entries again: rejected identifications to Amplitude, others to their source topic.

    Exits 1 when any selected entry could not be replayed.
    """

    async def work(settings: Settings, inspector: KafkaInspector) -> list[ReplayOutcome]:
        _, items = await _read(inspector)
        chosen = select(items, ids, everything)
        return await _replay(settings, chosen)

    outcomes = run_inspection(work)
    _print_outcomes(outcomes, as_json=as_json)
    if any(not outcome.ok for outcome in outcomes):
        raise typer.Exit(1)


async def _replay(settings: Settings, chosen: list[DlqItem]) -> list[ReplayOutcome]:
    outcomes: list[ReplayOutcome] = []
    to_amplitude: list[tuple[DlqItem, GroupUpdate]] = []
    to_kafka: list[DlqItem] = []
    for item in chosen:
        entry = item.entry
        plan = "the record is unreadable" if entry is None else replay_plan(entry)
        if plan == "amplitude" and entry is not None:
            try:
                to_amplitude.append((item, update_from_identification(entry.payload)))
            except EnvelopeError as exc:
                outcomes.append(ReplayOutcome(item.id, entry.key, None, False, str(exc)))
        elif plan == "reproduce":
            to_kafka.append(item)
        else:
            outcomes.append(ReplayOutcome(item.id, _key(item), None, False, plan))
    async with ChangeProducer(quick_settings(settings.kafka)) as producer:
        outcomes += await _reproduce(producer, to_kafka, settings)
        outcomes += await _resend(producer, to_amplitude, settings)
    order = {item.id: n for n, item in enumerate(chosen)}
    return sorted(outcomes, key=lambda o: order.get(o.id, 0))


async def _reproduce(
    producer: ChangeProducer, items: list[DlqItem], settings: Settings
) -> list[ReplayOutcome]:
    """Produce the original messages again; the deliver service picks them up."""
    entries = [item.entry for item in items if item.entry is not None]
    if not entries:
        return []
    records: list[Record] = [
        (e.source_topic or "", e.key.encode(), payload_bytes(e.payload)) for e in entries
    ]
    await producer.send_all(records)
    await _mark(producer, settings, [(e, "reproduce", e.source_topic or "") for e in entries])
    return [
        ReplayOutcome(e.id, e.key, "reproduce", True, f"produced again to {e.source_topic}")
        for e in entries
    ]


async def _resend(
    producer: ChangeProducer, pairs: list[tuple[DlqItem, GroupUpdate]], settings: Settings
) -> list[ReplayOutcome]:
    """Send identifications to Amplitude again; those refused again stay in the DLQ."""
    outcomes: list[ReplayOutcome] = []
    if not pairs:
        return outcomes
    async with AmplitudeClient(settings.amplitude) as client:
        for batch in rounds(pairs):
            report = await client.send([update for _, update in batch])
            refused = {r.update.key: r for r in report.rejected}
            done: list[tuple[DlqEntry, How, str]] = []
            for item, update in batch:
                assert item.entry is not None
                rejection = refused.get(update.key)
                if rejection is None:
                    done.append((item.entry, "amplitude", client.group_identify_url))
                    outcomes.append(
                        ReplayOutcome(item.id, item.entry.key, "amplitude", True, "accepted")
                    )
                else:
                    detail = f"rejected again ({rejection.status}): {rejection.reason}"
                    outcomes.append(
                        ReplayOutcome(item.id, item.entry.key, "amplitude", False, detail)
                    )
            await _mark(producer, settings, done)
    return outcomes


async def _mark(
    producer: ChangeProducer, settings: Settings, done: list[tuple[DlqEntry, How, str]]
) -> None:
    if not done:
        return
    topic = TopicNames(settings.kafka.topic_prefix).dlq
    at = now_ms()
    await producer.send_all(
        [(topic, *replay_marker(entry, how, target, at).encode()) for entry, how, target in done]
    )


def _key(item: DlqItem) -> str:
    return item.entry.key if item.entry is not None else item.message.key_text


def _print_outcomes(outcomes: list[ReplayOutcome], *, as_json: bool) -> None:
    if as_json:
        print_json(
            [
                {"id": o.id, "key": o.key, "how": o.how, "ok": o.ok, "detail": o.detail}
                for o in outcomes
            ]
        )
        return
    if not outcomes:
        console.print("nothing to replay", highlight=False)
        return
    ok = sum(1 for o in outcomes if o.ok)
    table = Table(title=f"replayed {ok} of {len(outcomes)}", title_justify="left")
    for column in ("id", "key", "sent to", "result"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        result = f"[green]{o.detail}[/]" if o.ok else f"[bold red]{o.detail}[/]"
        table.add_row(o.id, o.key, o.how or "-", result)
    console.print(table)
