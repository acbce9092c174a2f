"""What operators are shown about sfamp's topics: offsets, lag, retention, raw messages.

Pure data and helpers; :class:`~pipeline.kafka.inspect.KafkaInspector` fills them
from the broker.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pipeline.errors import EnvelopeError
from pipeline.kafka.topics import TopicNames
from pipeline.transform.envelope import decode

TopicKind = Literal["changes", "replay", "config", "dlq", "sent", "other"]


@dataclass(frozen=True, slots=True)
class PartitionState:
    """Offsets of one partition, and where the deliver group stands in it."""

    partition: int
    begin: int
    end: int
    committed: int | None = None  # None: the group never committed here (or not asked)

    @property
    def messages(self) -> int:
        return max(0, self.end - self.begin)

    @property
    def next_unflushed(self) -> int:
        """The offset deliver resumes from: the committed one, or the first retained."""
        return self.begin if self.committed is None else max(self.committed, self.begin)

    @property
    def lag(self) -> int:
        return max(0, self.end - self.next_unflushed)


@dataclass(frozen=True, slots=True)
class TopicState:
    """One topic as ``topics list`` / ``topics describe`` show it."""

    name: str
    kind: TopicKind
    partitions: tuple[PartitionState, ...]
    config: Mapping[str, str] | None  # None: the broker does not answer DescribeConfigs
    oldest_unflushed_ms: int | None = None  # commit time of the oldest unflushed change

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.partitions)

    @property
    def lag(self) -> int | None:
        """Deliver's lag in messages; None for topics deliver does not read."""
        return sum(p.lag for p in self.partitions) if self.kind == "changes" else None

    def lag_seconds(self, now_ms: int) -> float | None:
        """Age of the oldest unflushed change; 0 when nothing waits, None if not a changes topic."""
        if self.kind != "changes":
            return None
        if not self.lag or self.oldest_unflushed_ms is None:
            return 0.0
        return max(0.0, (now_ms - self.oldest_unflushed_ms) / 1000)

    @property
    def retention(self) -> str:
        return describe_retention(self.config)


@dataclass(frozen=True, slots=True)
class Message:
    """One raw Kafka message; decoding is up to whoever shows it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None

    @property
    def key_text(self) -> str:
        return "" if self.key is None else self.key.decode("utf-8", errors="replace")


def topic_kind(names: TopicNames, topic: str) -> TopicKind:
    if names.object_of(topic) is not None:
        return "changes"
    fixed: dict[str, TopicKind] = {
        names.replay: "replay",
        names.config: "config",
        names.dlq: "dlq",
        names.sent: "sent",
    }
    return fixed.get(topic, "other")


def resolve_topic(names: TopicNames, wanted: str, existing: set[str]) -> str | None:
    """The full name of an existing topic: `sfamp.dlq`, `dlq`, `changes.Account`, `Account`."""
    candidates = [wanted, f"{names.prefix}.{wanted}", names.changes(wanted)]
    return next((name for name in candidates if name in existing), None)


def expected_topic(names: TopicNames, wanted: str) -> str | None:
    """The full name of one of sfamp's control topics named by ``wanted``, existing or not.

    ``dlq``, ``replay``, ``config`` and ``sent`` (short or with the prefix) are created on
    first write; before that they are empty, not missing. A changes topic is
    created when ingest starts for a mapped object, so a missing one is a name
    sfamp does not know (a misspelled object, another prefix).
    """
    return next((c for c in (wanted, f"{names.prefix}.{wanted}") if c in names.control), None)


def describe_retention(config: Mapping[str, str] | None) -> str:
    """A short human form of a topic's retention: ``compact``, ``7d``, ``forever``, ..."""
    if config is None:
        return "unknown"
    if "compact" in config.get("cleanup.policy", ""):
        return "compact"
    raw = config.get("retention.ms")
    if raw is None:
        return "broker default"
    try:
        ms = int(raw)
    except ValueError:
        return raw
    return "forever" if ms < 0 else format_duration(ms / 1000)


def format_duration(seconds: float) -> str:
    """``45s``, ``12m``, ``3h``, ``2d 4h``: the two largest units that matter."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        hours, minutes = divmod(whole // 60, 60)
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(whole // 3600, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def iso_time(ms: int | None) -> str | None:
    """A Kafka or Salesforce time in ms as ISO 8601 (UTC); None stays None.

    A producer may stamp any 64-bit number: one past year 9999 is shown as the number.
    """
    if ms is None:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms (not a date)"


def now_ms() -> int:
    return int(time.time() * 1000)


def change_time_ms(message: Message) -> int:
    """When the change in ``message`` was committed in Salesforce (else: its Kafka time)."""
    if message.value is not None:
        with contextlib.suppress(EnvelopeError):
            return decode(message.value).commit_ts
    return message.timestamp_ms
