"""The dead-letter topic as operators see it: entries folded with their replay markers.

Entries are never deleted (``sfamp.dlq`` is an append-only log). A successful
replay appends a small *marker* entry: same key and reason, ``payload`` null and
``extra = {"replayed_id": <id>, "replayed_how": ...}``. Readers fold markers onto
the entries they name; a marker counts only for the writes of that id before
it, so an entry that fails again shows up again.

Pure apart from :func:`read_dlq`, which reads the topic through a
:class:`~pipeline.kafka.inspect.KafkaInspector`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pipeline.errors import ConfigError, EnvelopeError
from pipeline.kafka.inspect import KafkaInspector, Message, iso_time
from pipeline.kafka.records import DlqEntry, decode_dlq_entry


@dataclass(frozen=True, slots=True)
class DlqItem:
    """One DLQ entry as an operator sees it: the entry (or why it is unreadable) and its state."""

    id: str
    message: Message
    entry: DlqEntry | None
    problem: str | None = None
    replayed_at_ms: int | None = None
    replayed_how: str | None = None

    @property
    def pending(self) -> bool:
        """Readable and not replayed yet: what ``dlq replay --all`` picks."""
        return self.entry is not None and self.replayed_at_ms is None

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


def select(items: Sequence[DlqItem], ids: Sequence[str], everything: bool) -> list[DlqItem]:
    """The entries named by ``ids``, or every pending one with ``everything``."""
    if bool(ids) == everything:
        raise ConfigError("name entries with --id ID (repeatable) or use --all, not both")
    if everything:
        return [item for item in items if item.pending]
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
