"""The dead-letter topic as operators see it: entries folded with their replay markers.

Entries are never deleted (``sfamp.dlq`` is an append-only log). A successful
replay appends a small *marker* entry: same key and reason, ``payload`` null and
``extra = {"replayed_id": <id>, "replayed_how": ...}``. Readers fold markers onto
the entries they name; a marker counts only for the writes of that id before
it, so an entry that fails again shows up again.

An entry nothing can replay (it names no record, or the record is not even a DLQ
entry) is *dismissed* by an operator with the same kind of marker,
``replayed_how = "dismissed"`` and the operator's note as its detail: it stops
counting as waiting, and older readers see it as settled too.

Pure apart from :func:`read_dlq`, which reads the topic through a
:class:`~pipeline.kafka.inspect.KafkaInspector`, and :func:`append_markers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from pipeline.config.settings import KafkaSettings
from pipeline.errors import ConfigError, EnvelopeError
from pipeline.kafka.inspect import KafkaInspector, Message, iso_time, quick_settings
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.records import DlqEntry, decode_dlq_entry
from pipeline.kafka.topics import TopicNames

DISMISSED: Final = "dismissed"  # the replayed_how of a dismissal marker


@dataclass(frozen=True, slots=True)
class DlqItem:
    """One DLQ entry as an operator sees it: the entry (or why it is unreadable) and its state."""

    id: str
    message: Message
    entry: DlqEntry | None
    problem: str | None = None
    replayed_at_ms: int | None = None
    replayed_how: str | None = None
    replayed_detail: str | None = None  # what the replay sent, or why it was dismissed

    @property
    def settled(self) -> bool:
        """Replayed or dismissed: no longer waiting."""
        return self.replayed_at_ms is not None

    @property
    def dismissed(self) -> bool:
        return self.settled and self.replayed_how == DISMISSED

    @property
    def pending(self) -> bool:
        """Not settled yet, readable or not: what ``sfamp status`` counts as not replayed and
        ``dlq replay --all`` picks (where an unreadable one says what settles it)."""
        return not self.settled

    @property
    def key(self) -> str:
        return self.entry.key if self.entry is not None else self.message.key_text

    def as_json(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "id": self.id,
            "offset": f"{self.message.partition}:{self.message.offset}",
            "malformed": self.problem,
            "replayed_at": iso_time(self.replayed_at_ms),
            "replayed_how": self.replayed_how,
            "replayed_detail": self.replayed_detail,
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
class DlqView:
    """The DLQ topic's name and its folded entries (none when nothing was written yet)."""

    topic: str
    items: list[DlqItem]
    exists: bool = True

    @property
    def pending(self) -> list[DlqItem]:
        return [item for item in self.items if item.pending]


def redelivery_marker(entry: DlqEntry, how: str, detail: str, at_ms: int) -> DlqEntry:
    """The DLQ record that says ``entry`` was replayed (see the module docstring)."""
    return DlqEntry(
        id=f"replayed:{entry.id}",
        reason=entry.reason,
        detail=detail,
        at_ms=at_ms,
        key=entry.key,
        payload=None,
        extra={"replayed_id": entry.id, "replayed_how": how},
    )


def dismissal_marker(item: DlqItem, note: str, at_ms: int) -> DlqEntry:
    """The DLQ record that settles ``item`` without a replay (a replay marker saying so)."""
    if item.entry is not None:
        return redelivery_marker(item.entry, DISMISSED, note, at_ms)
    return DlqEntry(
        id=f"{DISMISSED}:{item.id}",
        reason="malformed",
        detail=note,
        at_ms=at_ms,
        key=item.key,
        payload=None,
        extra={"replayed_id": item.id, "replayed_how": DISMISSED},
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
                items[str(replayed)],
                replayed_at_ms=entry.at_ms,
                replayed_how=how,
                replayed_detail=entry.detail,
            )
    return list(items.values())


def select(items: Sequence[DlqItem], ids: Sequence[str], everything: bool) -> list[DlqItem]:
    """The entries named by ``ids``, or every pending one with ``everything``."""
    check_one_choice(ids, everything, "--all")
    if everything:
        return [item for item in items if item.pending]
    return by_ids(items, ids)


def check_one_choice(ids: Sequence[str], flag_set: bool, flag: str) -> None:
    """Refuse (:class:`ConfigError`) a command that names entries and sets ``flag``, or
    does neither."""
    if ids and flag_set:
        raise ConfigError(f"name entries with --id ID (repeatable) or use {flag}, not both")
    if not ids and not flag_set:
        raise ConfigError(f"say which entries: --id ID (repeatable), or {flag}")


def by_ids(items: Sequence[DlqItem], ids: Sequence[str]) -> list[DlqItem]:
    """The entries named by ``ids``, each once; an unknown id is a :class:`ConfigError`."""
    known = {item.id: item for item in items}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ConfigError(f"no DLQ entry with id {', '.join(unknown)} (see 'sfamp dlq list')")
    return [known[i] for i in dict.fromkeys(ids)]


async def read_dlq(inspector: KafkaInspector) -> DlqView:
    """Every entry of the DLQ topic; an empty view when the topic does not exist yet."""
    topic = inspector.names.dlq
    if await inspector.resolve(topic) is None:
        return DlqView(topic, [], exists=False)
    return DlqView(topic, fold_dlq(await inspector.read_all(topic)))


async def append_markers(settings: KafkaSettings, markers: Sequence[DlqEntry]) -> None:
    """Write replay or dismissal markers to the DLQ topic (acknowledged before returning)."""
    if not markers:
        return
    topic = TopicNames(settings.topic_prefix).dlq
    async with ChangeProducer(quick_settings(settings)) as producer:
        await producer.send_all([(topic, *marker.encode()) for marker in markers])
