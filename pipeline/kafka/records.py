"""Codecs of the small control records sfamp keeps in Kafka: replay marks, re-sync requests
and DLQ entries.

Change envelopes have their own module (:mod:`pipeline.transform.envelope`). These
stay pure: bytes in, dataclasses out, time passed in by the caller.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

from pipeline.errors import EnvelopeError

DlqReason = Literal["malformed", "rejected", "unresolved", "resync_failed"]
# Key prefix of re-sync requests, kept in sfamp.replay beside the replay marks.
RESYNC_PREFIX = "resync:"


@dataclass(frozen=True, slots=True)
class ReplayMark:
    """The last replay id of a CDC channel that Kafka holds durably (``sfamp.replay``)."""

    channel: str
    replay_id: int
    stored_at_ms: int
    event_ts_ms: int | None = None  # commit time of that event, for the replay age

    def encode(self) -> tuple[bytes, bytes]:
        return self.channel.encode(), orjson.dumps(asdict(self))


def decode_replay_mark(key: bytes | None, value: bytes | None) -> ReplayMark | None:
    """None for a tombstone; EnvelopeError for anything unreadable."""
    if value is None:
        return None
    try:
        data = orjson.loads(value)
        return ReplayMark(
            channel=str(data.get("channel") or (key or b"").decode()),
            replay_id=int(data["replay_id"]),
            stored_at_ms=int(data["stored_at_ms"]),
            event_ts_ms=data.get("event_ts_ms"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EnvelopeError(f"not a replay mark: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ResyncRequest:
    """An object ingest must read whole into Kafka, and why; removed (tombstone) once done."""

    sfdc_object: str
    cause: str  # "gap_overflow" | "replay_id_expired" | "requested"
    requested_at_ms: int

    def encode(self) -> tuple[bytes, bytes]:
        return (
            f"{RESYNC_PREFIX}{self.sfdc_object}".encode(),
            orjson.dumps(
                {
                    "kind": "resync",
                    "object": self.sfdc_object,
                    "cause": self.cause,
                    "requested_at_ms": self.requested_at_ms,
                }
            ),
        )


def decode_resync(value: bytes) -> ResyncRequest:
    try:
        data = orjson.loads(value)
        return ResyncRequest(str(data["object"]), str(data["cause"]), int(data["requested_at_ms"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise EnvelopeError(f"not a re-sync request: {exc}") from exc


@dataclass(frozen=True, slots=True)
class DlqEntry:
    """Something sfamp could not deliver, kept with why, when and the payload (``sfamp.dlq``).

    ``payload`` is what to send again: for ``rejected`` the Amplitude
    identification, for ``malformed`` the raw message text.
    """

    id: str
    reason: DlqReason
    detail: str
    at_ms: int
    key: str
    payload: Any
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, bytes]:
        return self.key.encode(), orjson.dumps(asdict(self))


def decode_dlq_entry(value: bytes | None) -> DlqEntry:
    if value is None:
        raise EnvelopeError("empty DLQ record")
    try:
        data = orjson.loads(value)
        return DlqEntry(**data)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise EnvelopeError(f"not a DLQ entry: {exc}") from exc


def dlq_id(topic: str, partition: int, offset: int) -> str:
    """A stable id for an entry derived from where its input came from."""
    return f"{topic}:{partition}:{offset}"


def rejection_id(source: str, key: str, identification: Mapping[str, Any]) -> str:
    """A stable id for an identification Amplitude refused: ``<source>:<group key>:<digest>``,
    the digest (12 hex digits) of the identification itself.

    The same identification refused again (its changes read again after a flush that
    could not commit, a resumed backfill sending a batch again) writes the same id, which
    readers fold into one entry (:func:`pipeline.kafka.dlq.fold_dlq`) rather than list twice.
    """
    digest = hashlib.blake2b(orjson.dumps(identification, option=orjson.OPT_SORT_KEYS))
    return f"{source}:{key}:{digest.hexdigest()[:12]}"
