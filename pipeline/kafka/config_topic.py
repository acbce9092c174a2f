"""The current mapping, kept in the compacted ``sfamp.config`` topic under key ``mapping``.

`sfamp config import` publishes here; running services follow the topic and
switch to a new mapping after validating it. Key ``mapping-file`` holds the mapping
file content last seen and since when (:class:`FileSeen`), so that a file written
again with the same content (a Kubernetes ConfigMap mounted in a new pod) is not
taken for a newer mapping.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import KafkaSettings
from pipeline.config.validation import dump_mapping, validate_document
from pipeline.errors import MappingError
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.compacted import read_table
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.topics import TopicNames

KEY = b"mapping"
FILE_KEY = b"mapping-file"


@dataclass(frozen=True, slots=True)
class PublishedMapping:
    revision: int
    published_at_ms: int
    mapping: MappingConfig


def encode_published(published: PublishedMapping) -> bytes:
    return orjson.dumps(
        {
            "revision": published.revision,
            "published_at_ms": published.published_at_ms,
            "mapping": published.mapping.model_dump(mode="json"),
        }
    )


def decode_published(value: bytes) -> PublishedMapping:
    """Parse and validate a published mapping; MappingError says why it cannot be used."""
    try:
        data = orjson.loads(value)
        revision, published_at = int(data["revision"]), int(data["published_at_ms"])
        document = data["mapping"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise MappingError(f"the record in sfamp.config is not a published mapping: {exc}") from exc
    model, problems = validate_document(document)
    if model is None:
        raise MappingError(f"published mapping revision {revision} is invalid", problems)
    return PublishedMapping(revision, published_at, model)


async def latest_mapping(settings: KafkaSettings) -> tuple[PublishedMapping | None, int]:
    """The mapping currently published (or None) and the offset to follow from."""
    table, end = await read_table(settings, TopicNames(settings.topic_prefix).config)
    value = table.get(KEY, (None, -1))[0]
    return (decode_published(value) if value else None), end


@dataclass(frozen=True, slots=True)
class FileSeen:
    """The mapping file content a command last started with (or a service switched to), by
    digest (:func:`file_digest`), and ``since_ms``: the file's modification time when that
    content was first seen, in ms since the epoch. ``path`` and ``objects`` are for people
    reading the topic; ``mapping`` (the document, as exported) tells what a new content
    changed (:meth:`MappingConfig.objects_to_backfill`)."""

    digest: str
    since_ms: int
    path: str = ""
    objects: tuple[str, ...] = ()
    mapping: Any = None

    @property
    def config(self) -> MappingConfig | None:
        """The mapping it records, or None when it holds none this version can read."""
        try:
            return None if self.mapping is None else MappingConfig.model_validate(self.mapping)
        except ValidationError:
            return None


def file_digest(mapping: MappingConfig) -> str:
    """The SHA-256 of the mapping as exported: equal for equal mappings, however written."""
    return hashlib.sha256(dump_mapping(mapping).encode()).hexdigest()


def encode_file_seen(seen: FileSeen) -> bytes:
    return orjson.dumps(
        {
            "digest": seen.digest,
            "since_ms": seen.since_ms,
            "path": seen.path,
            "objects": list(seen.objects),
            "mapping": seen.mapping,
        }
    )


def decode_file_seen(value: bytes | None) -> FileSeen | None:
    """The record, or None when there is none or it cannot be read (then the file's
    modification time alone counts, as if none was kept)."""
    try:
        data = orjson.loads(value or b"")
        return FileSeen(
            str(data["digest"]),
            int(data["since_ms"]),
            str(data.get("path", "")),
            tuple(map(str, data.get("objects", ()))),
            data.get("mapping"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


async def remember_file(settings: KafkaSettings, seen: FileSeen) -> None:
    """Record ``seen`` under :data:`FILE_KEY`. The topic must exist: a write could create
    a missing one without its compaction.

    Raises :class:`~pipeline.errors.KafkaError` when Kafka does not answer or refuses.
    """
    async with ChangeProducer(settings) as producer:
        await producer.send(
            TopicNames(settings.topic_prefix).config, FILE_KEY, encode_file_seen(seen)
        )


@dataclass(frozen=True, slots=True)
class StoredRevision:
    """What ``sfamp.config`` holds, usable or not: its revision (0: none yet), the mapping
    when it is valid, and otherwise why not (``problem``)."""

    revision: int
    published: PublishedMapping | None
    problem: MappingError | None = None
    end: int = 0  # the offset to follow the topic from
    document: Any = None  # the stored mapping as written, usable or not (None: none)
    file_seen: FileSeen | None = None  # the mapping file content last seen, and since when

    @property
    def mapping(self) -> MappingConfig | None:
        """The stored mapping, or as much of one as the format still reads (what a new
        revision is compared with, for the backfill it calls for); None when none."""
        if self.published is not None:
            return self.published.mapping
        try:
            return MappingConfig.model_validate(self.document)
        except ValidationError:
            return None


async def stored_revision(settings: KafkaSettings) -> StoredRevision:
    """The current revision for publishing over it: one this version refuses (written by
    an older one, before a rule it breaks) is still replaced by the next import or Save,
    never a dead end."""
    table, end = await read_table(settings, TopicNames(settings.topic_prefix).config)
    value = table.get(KEY, (None, -1))[0]
    seen = decode_file_seen(table.get(FILE_KEY, (None, -1))[0])
    if not value:
        return StoredRevision(0, None, end=end, file_seen=seen)
    try:
        published = decode_published(value)
    except MappingError as exc:
        revision, document = _stored_parts(value)
        return StoredRevision(revision, None, exc, end, document, seen)
    return StoredRevision(published.revision, published, None, end, published.mapping, seen)


def stored_text(stored: StoredRevision) -> str:
    """The stored mapping as ``sfamp config export`` writes it; one this version refuses
    as it was written (to be put right and imported again)."""
    if stored.published is not None:
        return dump_mapping(stored.published.mapping)
    return orjson.dumps(stored.document, option=orjson.OPT_INDENT_2).decode() + "\n"


def _stored_parts(value: bytes) -> tuple[int, Any]:
    """The revision number (0: none) and the mapping document of a stored record, however
    unusable the rest."""
    try:
        data = orjson.loads(value)
        return int(data["revision"]), data.get("mapping")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return 0, None


def same_mapping(first: MappingConfig, second: MappingConfig) -> bool:
    """Whether two mappings say the same (compared as exported, defaults written out)."""
    return dump_mapping(first) == dump_mapping(second)


async def publish_changed_mapping(
    settings: KafkaSettings, mapping: MappingConfig, *, now_ms: int
) -> tuple[PublishedMapping, PublishedMapping | None]:
    """Publish ``mapping`` unless it is the one published already: the revision that holds
    it, and the one it replaced (None when nothing usable was published; the same one
    when it was unchanged)."""
    current = (await stored_revision(settings)).published
    if current is not None and same_mapping(current.mapping, mapping):
        return current, current
    return await publish_mapping(settings, mapping, now_ms=now_ms), current


async def publish_mapping(
    settings: KafkaSettings, mapping: MappingConfig, *, now_ms: int
) -> PublishedMapping:
    """Publish a new revision; returns once Kafka acknowledged it."""
    await ensure_topics(settings, sfamp_topics(settings, mapping.objects))
    current = await stored_revision(settings)
    published = PublishedMapping(current.revision + 1, now_ms, mapping)
    async with ChangeProducer(settings) as producer:
        await producer.send(
            TopicNames(settings.topic_prefix).config, KEY, encode_published(published)
        )
    return published
