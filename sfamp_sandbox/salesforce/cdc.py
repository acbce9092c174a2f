"""Change Data Capture event bus of the Salesforce sandbox.

The org model reports every committed write as a :class:`RecordChange`; :class:`ChangeEventLog`
turns it into the event Salesforce would deliver over CometD, gives it the next replay id of the
org, and keeps it for the retention window (72 h of emulator time by default) in a bounded ring.

Replay ids here are contiguous integers, which lets a lookup be O(1). Clients must not rely on
that: real replay ids are opaque and have gaps.

The log is synchronous and not thread-safe; call it from the event loop that serves CometD, so
that listeners (which wake held long-polls) run on that loop.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

ALL_CHANGES_CHANNEL = "/data/ChangeEvents"
CHANGE_TYPES = frozenset(
    {
        "CREATE",
        "UPDATE",
        "DELETE",
        "UNDELETE",
        "GAP_CREATE",
        "GAP_UPDATE",
        "GAP_DELETE",
        "GAP_UNDELETE",
        "GAP_OVERFLOW",
    }
)
REPLAY_NEW_EVENTS = -1
REPLAY_ALL_EVENTS = -2
# An arbitrary start that looks like a real system change number; only its monotonicity matters.
_FIRST_COMMIT_NUMBER = 1_100_670_838_951


@dataclass(frozen=True, slots=True)
class RecordChange:
    """One committed change, as the org model reports it to the event log.

    ``fields`` are body fields already in CometD JSON shape (compound fields nested, datetimes as
    ISO strings ending in ``Z``, explicit nulls on UPDATE).
    """

    entity_name: str
    change_type: str
    record_ids: tuple[str, ...]
    fields: Mapping[str, Any]
    changed_fields: tuple[str, ...] = ()
    nulled_fields: tuple[str, ...] = ()
    diff_fields: tuple[str, ...] = ()
    commit_user: str = ""
    change_origin: str = ""
    transaction_key: str = ""
    sequence_number: int = 1


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A published event; ``data_json`` is the serialized ``data`` member of the CometD message,
    encoded once at publish time so delivery only concatenates bytes."""

    replay_id: int
    entity_name: str
    published_at: float
    data_json: bytes

    @property
    def data(self) -> dict[str, Any]:
        decoded: dict[str, Any] = orjson.loads(self.data_json)
        return decoded


class InvalidReplayIdError(ValueError):
    """A subscriber asked to replay from an id the bus does not (or no longer) retain."""

    def __init__(self, replay_id: object) -> None:
        super().__init__(
            f"The replayId {{{replay_id}}} you provided was invalid.  Please provide a valid ID,"
            " -2 to replay all events, or -1 to replay only new events."
        )
        self.replay_id = replay_id


def channel_for_entity(entity_name: str) -> str:
    """``Account`` -> ``/data/AccountChangeEvent``; ``Plan__c`` -> ``/data/Plan__ChangeEvent``."""
    if entity_name.endswith("__c"):
        return f"/data/{entity_name[:-1]}ChangeEvent"
    return f"/data/{entity_name}ChangeEvent"


def entity_for_channel(channel: str) -> str | None:
    """The entity a single-entity channel carries; ``None`` for any other channel name."""
    if not channel.startswith("/data/") or not channel.endswith("ChangeEvent"):
        return None
    stem = channel[len("/data/") : -len("ChangeEvent")]
    if not stem or "/" in stem or stem.endswith("___"):
        return None
    if stem.endswith("__"):
        return f"{stem}c"
    return stem if "__" not in stem else None


def default_schema_id(entity_name: str, generation: int = 0) -> str:
    """A stable 22-character schema id per entity, shaped like Salesforce's fingerprints."""
    digest = hashlib.sha256(f"{entity_name}:{generation}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:22]


def build_header(
    change: RecordChange, *, transaction_key: str, commit_ms: int, commit_number: int
) -> dict[str, Any]:
    """The ``ChangeEventHeader`` of a change, in the order Salesforce prints it."""
    return {
        "entityName": change.entity_name,
        "recordIds": list(change.record_ids),
        "changeType": change.change_type,
        "changeOrigin": change.change_origin,
        "transactionKey": transaction_key,
        "sequenceNumber": change.sequence_number,
        "commitTimestamp": commit_ms,
        "commitNumber": commit_number,
        "commitUser": change.commit_user,
        "nulledFields": list(change.nulled_fields),
        "diffFields": list(change.diff_fields),
        "changedFields": list(change.changed_fields),
    }


class ChangeEventLog:
    """Per-org ordered log of change events with replay ids, retention and a bounded ring."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        retention_seconds: float = 259200.0,
        max_events: int = 2_000_000,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self._clock = clock
        self.retention_seconds = retention_seconds
        self.max_events = max_events
        self._ring: list[StoredEvent | None] = []
        self._latest = 0
        self._oldest = 1  # smallest replay id possibly still retained
        self._commit_number = _FIRST_COMMIT_NUMBER
        self._schemas: dict[str, str] = {}
        self._selected: frozenset[str] | None = None
        self._listeners: list[Callable[[], None]] = []

    # -- writing ------------------------------------------------------------------------------

    def publish(self, change: RecordChange) -> int:
        """Append one event; returns its replay id and wakes every listener."""
        if change.change_type not in CHANGE_TYPES:
            raise ValueError(f"unknown change type {change.change_type!r}")
        now = self._clock()
        self._commit_number += 1
        header = build_header(
            change,
            transaction_key=change.transaction_key or str(uuid.uuid4()),
            commit_ms=int(now * 1000),
            commit_number=self._commit_number,
        )
        replay_id = self._latest + 1
        data = {
            "schema": self.schema_id(change.entity_name),
            "payload": {"ChangeEventHeader": header, **change.fields},
            "event": {"replayId": replay_id},
        }
        self._store(StoredEvent(replay_id, change.entity_name, now, orjson.dumps(data)))
        for listener in tuple(self._listeners):
            listener()
        return replay_id

    def _store(self, event: StoredEvent) -> None:
        index = (event.replay_id - 1) % self.max_events
        if index >= len(self._ring):
            # The ring grows lazily so that a small org does not pay for max_events slots.
            self._ring.extend([None] * (index - len(self._ring) + 1))
        self._ring[index] = event
        self._latest = event.replay_id
        self._oldest = max(self._oldest, self._latest - self.max_events + 1)

    def reset(self) -> None:
        """Forget every event; replay ids keep increasing, as they do across a purge."""
        self._ring.clear()
        self._oldest = self._latest + 1

    # -- schema and channel selection ---------------------------------------------------------

    def schema_id(self, entity_name: str) -> str:
        schema = self._schemas.get(entity_name)
        if schema is None:
            schema = self._schemas[entity_name] = default_schema_id(entity_name)
        return schema

    def change_schema(self, entity_name: str) -> str:
        """Give an entity a new schema id, as when its fields change; returns the new id."""
        old = self.schema_id(entity_name)
        generation = 1
        while (schema := default_schema_id(entity_name, generation)) == old:
            generation += 1
        self._schemas[entity_name] = schema
        return schema

    def select_entities(self, entity_names: Iterable[str] | None) -> None:
        """Limit the per-entity channels to these entities (``None``: accept every entity)."""
        self._selected = None if entity_names is None else frozenset(entity_names)

    def channel_filter(self, channel: str) -> str:
        """The entity a channel carries, ``""`` for all entities; raises KeyError if unknown."""
        if channel == ALL_CHANGES_CHANNEL:
            return ""
        entity = entity_for_channel(channel)
        if entity is None or (self._selected is not None and entity not in self._selected):
            raise KeyError(channel)
        return entity

    # -- listeners ----------------------------------------------------------------------------

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every publish (used to wake held long-polls)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.remove(listener)

    # -- reading ------------------------------------------------------------------------------

    @property
    def latest_replay_id(self) -> int:
        """The replay id of the newest event ever published (0 before the first)."""
        return self._latest

    @property
    def oldest_replay_id(self) -> int | None:
        """The replay id of the oldest event still retained, or None when none is."""
        self._expire()
        return self._oldest if self._oldest <= self._latest else None

    def __len__(self) -> int:
        self._expire()
        return self._latest - self._oldest + 1

    def _expire(self) -> None:
        horizon = self._clock() - self.retention_seconds
        while self._oldest <= self._latest:
            event = self._slot(self._oldest)
            if event is not None and event.published_at >= horizon:
                return
            if event is not None:
                self._ring[(self._oldest - 1) % self.max_events] = None
            self._oldest += 1

    def _slot(self, replay_id: int) -> StoredEvent | None:
        index = (replay_id - 1) % self.max_events
        if index >= len(self._ring):
            return None
        event = self._ring[index]
        return event if event is not None and event.replay_id == replay_id else None

    def resolve_replay(self, replay_from: int) -> int:
        """Turn a subscriber's replay value into a cursor (deliver ids greater than it).

        -1: only new events; -2: every retained event; N: events after N, where N must be the id
        of a retained event. Raises InvalidReplayIdError otherwise.
        """
        self._expire()
        if replay_from == REPLAY_NEW_EVENTS:
            return self._latest
        if replay_from == REPLAY_ALL_EVENTS:
            return self._oldest - 1
        if self._oldest <= replay_from <= self._latest:
            return replay_from
        raise InvalidReplayIdError(replay_from)

    def read_after(
        self, cursor: int, entity_name: str = "", limit: int = 1000
    ) -> tuple[list[StoredEvent], int]:
        """Up to ``limit`` retained events after ``cursor`` (of one entity, or all when empty).

        Returns the events and the new cursor: the last id examined, so that events of other
        entities are not scanned again. A cursor older than the retention window skips ahead
        to the oldest retained event.
        """
        self._expire()
        found: list[StoredEvent] = []
        replay_id = max(cursor, self._oldest - 1)
        while replay_id < self._latest and len(found) < limit:
            replay_id += 1
            event = self._slot(replay_id)
            if event is not None and (not entity_name or event.entity_name == entity_name):
                found.append(event)
        return found, replay_id

    def events_after(
        self, replay_id: int, *, entity_name: str = "", limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The ``data`` members of retained events after ``replay_id``, for inspection in tests
        and the control API (-1 and -2 mean what they mean on subscribe)."""
        cursor = replay_id if replay_id >= 0 else self.resolve_replay(replay_id)
        events, _ = self.read_after(cursor, entity_name, limit if limit is not None else len(self))
        return [event.data for event in events]
