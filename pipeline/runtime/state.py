"""What a running service knows about itself: readiness, liveness, the last flush.

Pumps write here; the health endpoints and `sfamp status` read it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.runtime.throughput import MinuteCounts


@dataclass(frozen=True, slots=True)
class FlushResult:
    at: datetime
    ok: bool
    groups: int = 0
    requests: int = 0
    rejected: int = 0
    changes: int = 0
    dlq: int = 0  # changes written to the dead-letter topic
    duration_seconds: float = 0.0
    error: str | None = None

    @property
    def busy(self) -> bool:
        """Whether it held, sent or dead-lettered anything (an idle flush did not)."""
        return bool(self.changes or self.groups or self.dlq)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return data


@dataclass
class ServiceState:
    """Shared by the pumps of one process; touched only from its event loop."""

    role: str
    stale_after_seconds: float = 120.0
    channels_expected: set[str] = field(default_factory=set)
    channels_subscribed: set[str] = field(default_factory=set)
    consumer_joined: bool = False
    partitions: list[str] = field(default_factory=list)
    heartbeats: dict[str, float] = field(default_factory=dict)
    last_flush: FlushResult | None = None
    # The last flushes that did or held something or failed, oldest first: a flush halted
    # or stopped early stays visible after the next one replaces it as `last_flush`.
    recent_flushes: deque[FlushResult] = field(default_factory=lambda: deque(maxlen=20))
    last_successful_flush: datetime | None = None
    next_flush_at: datetime | None = None
    # A flush going on (sending, committing): see the flushing_since property.
    _flushing_since: datetime | None = None
    # The answers of the flush going on that Amplitude's client tries again (429, 5xx,
    # none): the last one, when, and how many; what /status says beside flushing_since.
    amplitude_retrying: dict[str, Any] | None = None
    cadence: str = ""
    pending_groups: int = 0
    mapping_revision: str = ""
    mapping_objects: list[str] = field(default_factory=list)
    mapping_refused: dict[str, Any] | None = None  # the last new mapping that was not taken
    resyncs: list[dict[str, Any]] = field(default_factory=list)
    # "Object.Field" -> why sfamp cannot read a mapped field; nothing is unset meanwhile.
    unreadable_fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The reconcile's schedule, next run, the run going on and the last one (ingest role).
    reconcile: dict[str, Any] = field(default_factory=dict)
    # The Amplitude client's adaptive concurrency (level, ceiling, moves), read live.
    amplitude_concurrency: Callable[[], dict[str, Any]] | None = None
    # Changes ingested and groups flushed per minute over the last hour (the console's chart).
    per_minute: MinuteCounts = field(default_factory=MinuteCounts)
    # What the start is doing or waiting for ("waiting for Kafka: ..."); None once it ran.
    starting: str | None = None
    # Since when (ISO 8601) and why Kafka does not answer once running; None while it does.
    kafka_unreachable: dict[str, str] | None = None

    def flushed(self, result: FlushResult) -> None:
        """Record a flush's result (a failed one too) as the last, and among the recent
        unless it was idle (nothing held, nothing sent, no error)."""
        self.last_flush = result
        if result.busy or not result.ok or result.error:
            self.recent_flushes.append(result)

    @property
    def flushing_since(self) -> datetime | None:
        return self._flushing_since

    @flushing_since.setter
    def flushing_since(self, moment: datetime | None) -> None:
        """A flush begins (a time) or ends (None): either way, no retry of its is known."""
        self._flushing_since = moment
        self.amplitude_retrying = None

    def amplitude_answered(self, retriable: bool, described: str) -> None:
        """Note an Amplitude answer the client tries again ("answers 503", "does not answer
        (timeout)"). Requests go out side by side, so another's success ends nothing:
        the count is the flush's."""
        if not retriable:
            return
        tries = (self.amplitude_retrying or {}).get("tries", 0) + 1
        at = datetime.now(UTC).isoformat()
        self.amplitude_retrying = {"answer": described, "at": at, "tries": tries}

    def beat(self, pump: str) -> None:
        """A pump made progress (or is idle but looping): liveness evidence."""
        self.heartbeats[pump] = time.monotonic()

    @property
    def runs_ingest(self) -> bool:
        return self.role in ("all", "ingest")

    @property
    def runs_deliver(self) -> bool:
        return self.role in ("all", "deliver")

    def ready(self) -> tuple[bool, list[str]]:
        """Ready once started, while Kafka answers, every CDC subscription is confirmed and
        deliver joined its group; else what it waits for."""
        if self.starting is not None:  # the pumps' own conditions would only add noise
            return False, [self.starting]
        waiting = []
        if self.kafka_unreachable is not None:
            since, error = self.kafka_unreachable["since"], self.kafka_unreachable["error"]
            waiting.append(f"Kafka unreachable since {since}: {error}")
        if self.runs_ingest:
            missing = self.channels_expected - self.channels_subscribed
            if missing or not self.channels_expected:
                waiting.append(f"subscriptions pending: {sorted(missing) or 'none configured'}")
        if self.runs_deliver and not self.consumer_joined:
            waiting.append("deliver consumer has not joined its group")
        return not waiting, waiting

    def fields_unreadable(
        self, sfdc_object: str, fields: list[str], reason: str, at_ms: int
    ) -> None:
        """Mapped fields Salesforce will not let sfamp read (field-level security)."""
        for name in fields:
            key = f"{sfdc_object}.{name}"
            since = self.unreadable_fields.get(key, {}).get("since_ms", at_ms)
            self.unreadable_fields[key] = {
                "object": sfdc_object,
                "field": name,
                "reason": reason,
                "since_ms": since,
                "last_seen_ms": at_ms,
            }

    def fields_readable(self, sfdc_object: str, hidden: Collection[str] = ()) -> list[str]:
        """The object's mapped fields but ``hidden`` can be read: forget their problem;
        answers those fields."""
        cleared = [
            v["field"]
            for v in self.unreadable_fields.values()
            if v["object"] == sfdc_object and v["field"] not in hidden
        ]
        for name in cleared:
            del self.unreadable_fields[f"{sfdc_object}.{name}"]
        return cleared

    def alive(self, now: float | None = None) -> tuple[bool, list[str]]:
        now = time.monotonic() if now is None else now
        stale = [
            f"{pump} silent for {now - seen:.0f}s"
            for pump, seen in self.heartbeats.items()
            if now - seen > self.stale_after_seconds
        ]
        return not stale, stale

    def to_status(self) -> dict[str, Any]:
        ready, waiting = self.ready()
        return {
            "role": self.role,
            "ready": ready,
            "waiting_for": waiting,
            "cadence": self.cadence,
            "next_flush_at": self.next_flush_at.isoformat() if self.next_flush_at else None,
            "pending_groups": self.pending_groups,
            "flushing_since": self.flushing_since.isoformat() if self.flushing_since else None,
            "amplitude_retrying": self.amplitude_retrying if self.flushing_since else None,
            "last_flush": self.last_flush.to_json() if self.last_flush else None,
            "recent_flushes": [flush.to_json() for flush in self.recent_flushes],
            "last_successful_flush_at": (
                self.last_successful_flush.isoformat() if self.last_successful_flush else None
            ),
            "kafka_unreachable": self.kafka_unreachable,
            "mapping_revision": self.mapping_revision,
            "mapping_objects": self.mapping_objects,
            "mapping_refused": self.mapping_refused,
            "channels": sorted(self.channels_subscribed),
            "partitions": self.partitions,
            "resyncs": self.resyncs[-20:],
            "unreadable_fields": sorted(
                self.unreadable_fields.values(), key=lambda v: (v["object"], v["field"])
            ),
            "reconcile": self.reconcile or None,
            "amplitude_concurrency": (
                self.amplitude_concurrency() if self.amplitude_concurrency else None
            ),
            "per_minute": self.per_minute.last_hour(time.time()),
        }
