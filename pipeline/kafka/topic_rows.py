"""Messages of sfamp's topics as rows: decoded per topic kind, malformed ones shown as such.

Pure (no Kafka, no I/O): ``sfamp topics tail`` renders these rows as a table or JSON lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pipeline.errors import MappingError, SfampError
from pipeline.kafka.config_topic import FILE_KEY, decode_file_seen, decode_published
from pipeline.kafka.inspect import Message, TopicKind, iso_time
from pipeline.kafka.records import decode_dlq_entry, decode_replay_mark
from pipeline.kafka.sent import decode_sent_digest, decode_sent_key
from pipeline.transform.envelope import decode
from pipeline.wording import plural

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RELATIVE: Final = re.compile(r"^(\d+)\s*([smhd])$")
_RAW_PREVIEW: Final = 120


def parse_since(text: str, now: datetime) -> int:
    """``15m`` / ``2h`` / ``3d`` before ``now``, or an ISO 8601 time (UTC if no zone), in ms.

    Anything else is a :class:`ValueError` saying what is accepted.
    """
    relative = _RELATIVE.match(text.strip().lower())
    if relative:
        seconds = int(relative[1]) * _UNITS[relative[2]]
        return int((now - timedelta(seconds=seconds)).timestamp() * 1000)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is neither a relative time (15m, 2h, 1d) nor an ISO 8601 time"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def decode_row(kind: TopicKind, message: Message) -> dict[str, Any]:
    """One message as a flat row: where it is, and its decoded fields or why it is malformed."""
    row: dict[str, Any] = {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "timestamp": iso_time(message.timestamp_ms),
        "key": message.key_text,
        "malformed": None,
    }
    if message.value is None:
        return row | {"tombstone": True}
    try:
        return row | _DECODERS[kind](message)
    except (SfampError, UnicodeDecodeError) as exc:
        raw = message.value.decode("utf-8", errors="replace")
        return row | {"malformed": str(exc).splitlines()[0], "raw": raw[:_RAW_PREVIEW]}


def _change(message: Message) -> dict[str, Any]:
    env = decode(message.value or b"")
    changed = (
        list(env.changed)
        if not env.full
        else [f"(full record: {plural(len(env.fields), 'field')})"]
    )
    return {
        "object": env.object,
        "record_id": env.record_id,
        "op": env.op,
        "changed": changed,
        "nulled": list(env.nulled),
        "commit_time": iso_time(env.commit_ts),
        "replay_id": env.replay_id,
        "source": env.source,
        "fields": dict(env.fields),
    }


def _replay(message: Message) -> dict[str, Any]:
    mark = decode_replay_mark(message.key, message.value)
    assert mark is not None  # tombstones are handled before decoding
    return {
        "channel": mark.channel,
        "replay_id": mark.replay_id,
        "event_time": iso_time(mark.event_ts_ms),
        "stored_at": iso_time(mark.stored_at_ms),
    }


def _config(message: Message) -> dict[str, Any]:
    if message.key == FILE_KEY:  # the mapping file content seen last, not a revision
        seen = decode_file_seen(message.value)
        if seen is None:
            raise MappingError("the record in sfamp.config is not a mapping file's")
        return {
            "revision": f"file {seen.path}",
            "published_at": iso_time(seen.since_ms),
            "objects": sorted(seen.objects),
            "cadence": None,
            "digest": seen.digest,
        }
    published = decode_published(message.value or b"")
    cadence = published.mapping.sync_cadence.model_dump(mode="json", exclude_none=True)
    return {
        "revision": published.revision,
        "published_at": iso_time(published.published_at_ms),
        "objects": sorted(published.mapping.objects),
        "cadence": " ".join(f"{k}={v}" for k, v in cadence.items()),
    }


def _dlq(message: Message) -> dict[str, Any]:
    entry = decode_dlq_entry(message.value)
    return {
        "id": entry.id,
        "reason": entry.reason,
        "key": entry.key,
        "at": iso_time(entry.at_ms),
        "detail": entry.detail,
        "replayed_id": entry.extra.get("replayed_id"),
    }


def _sent(message: Message) -> dict[str, Any]:
    key = decode_sent_key(message.key)
    digest = decode_sent_digest(message.value)
    if key is None or digest is None:
        raise SfampError("not a sent digest: [group_type, group_value, property] -> 16 hex digits")
    group_type, group_value, prop = key
    return {
        "group_type": group_type,
        "group_value": group_value,
        "property": prop,
        "digest": f"{digest:016x}",
    }


def _other(message: Message) -> dict[str, Any]:
    return {"value": (message.value or b"").decode("utf-8", errors="replace")[:_RAW_PREVIEW]}


_DECODERS: Final[dict[TopicKind, Callable[[Message], dict[str, Any]]]] = {
    "changes": _change,
    "replay": _replay,
    "config": _config,
    "dlq": _dlq,
    "sent": _sent,
    "other": _other,
}
