"""A mapping version, and a mapping file's versions: read, and counted from when their
content was first seen (:class:`~pipeline.kafka.config_topic.FileSeen` in ``sfamp.config``).

A file's modification time alone does not say when its mapping changed: a Kubernetes
ConfigMap is written again in every new pod, so a file that has not changed would pass
for newer than every revision ``sfamp config import`` published since. The content seen
last is kept in ``sfamp.config`` with the time it was first seen, and a file holding it
counts from then (:func:`counted_since`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import KafkaSettings
from pipeline.config.validation import load_mapping
from pipeline.errors import KafkaError, MappingError
from pipeline.kafka.config_topic import FileSeen, file_digest, remember_file

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class MappingVersion:
    mapping: MappingConfig
    source: str  # "file:<path>" or "sfamp.config revision N"
    # The file this published version was preferred to (it is newer), which runs instead
    # if the org refuses this one (see accepted_version).
    passed_over: MappingVersion | None = None
    # The published version this file was preferred to (the file is newer and differs):
    # what a service that follows sfamp.config alone still runs.
    supersedes: MappingVersion | None = None
    # A file's: when its content counts from (seconds since the epoch), the earlier of
    # its modification time and the time sfamp.config says this content was first seen.
    since: float | None = None
    # A file's new content: the content sfamp.config last saw, which it replaced (what
    # the new one needs a backfill for; see MappingConfig.objects_to_backfill).
    file_before: MappingConfig | None = None


def file_version(path: Path) -> MappingVersion:
    """The file's mapping, counted from its modification time; raises
    :class:`~pipeline.errors.MappingError` when it cannot be read or is invalid."""
    return MappingVersion(load_mapping(path), f"file:{path}", since=modified_at(path))


def counted_since(
    version: MappingVersion, seen: FileSeen | None
) -> tuple[MappingVersion, FileSeen | None]:
    """A file's ``version`` counted from when ``seen`` says its content was first seen
    (when it is the content seen last); else as it is, with the record to keep for it."""
    record = file_seen(version)
    if seen is None:
        return version, record
    if seen.digest == record.digest:
        return replace(version, since=min(version.since or 0.0, seen.since_ms / 1000)), None
    return replace(version, file_before=seen.config), record


def file_seen(version: MappingVersion) -> FileSeen:
    """The record of a file ``version``'s content, first seen at its modification time."""
    return FileSeen(
        file_digest(version.mapping),
        int((version.since or 0.0) * 1000),
        version.source.removeprefix("file:"),
        tuple(version.mapping.objects),
        version.mapping.model_dump(mode="json"),
    )


async def remember(settings: KafkaSettings, seen: FileSeen) -> None:
    """Keep ``seen`` in sfamp.config; when Kafka refuses, say so and go on (the file's
    modification time then counts alone at the next start)."""
    try:
        await remember_file(settings, seen)
    except KafkaError as exc:
        log.warning("mapping_file_unrecorded", mapping_file=seen.path, reason=str(exc))


def digest_of(path: Path) -> str | None:
    """The digest of the file's mapping; None when it cannot be read or is invalid."""
    try:
        return file_digest(load_mapping(path))
    except MappingError:
        return None


def modified_at(path: Path) -> float | None:
    """The file's modification time in seconds since the epoch; None when it is gone."""
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return None
