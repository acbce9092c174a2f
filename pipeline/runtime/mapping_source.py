"""The mapping a running service uses, and how it changes without a restart.

Two sources feed it: the mapping file (``--mapping`` / ``SFAMP_MAPPING_FILE``)
and the ``sfamp.config`` topic that ``sfamp config import`` writes. At start the
newer of the two wins; afterwards any new, valid version from either replaces
the current one. An invalid new version is refused with a logged reason and the
current mapping keeps running.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import structlog

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import KafkaSettings
from pipeline.config.validation import load_mapping
from pipeline.errors import MappingError
from pipeline.kafka.compacted import follow
from pipeline.kafka.config_topic import KEY, decode_published, latest_mapping

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class MappingVersion:
    mapping: MappingConfig
    source: str  # "file:<path>" or "sfamp.config revision N"


class MappingHolder:
    """The current mapping; pumps read ``current`` and may wait for a change."""

    def __init__(self, version: MappingVersion) -> None:
        self.version = version
        self.generation = 0  # bumped by every replace, so no waiter misses one
        self._changed = asyncio.Condition()

    @property
    def current(self) -> MappingConfig:
        return self.version.mapping

    async def replace(self, version: MappingVersion) -> None:
        if version.mapping == self.current:
            return
        old_objects = set(self.current.objects)
        self.version = version
        self.generation += 1
        log.info(
            "mapping_reloaded",
            source=version.source,
            objects=version.mapping.objects,
            added_objects=sorted(set(version.mapping.objects) - old_objects),
        )
        async with self._changed:
            self._changed.notify_all()

    async def wait_changed(self, seen: int | None = None) -> MappingVersion:
        """The next version; at once if one arrived after generation ``seen``."""
        async with self._changed:
            if seen is None or seen == self.generation:
                await self._changed.wait()
        return self.version


async def initial_mapping(
    settings: KafkaSettings, mapping_file: Path | None
) -> tuple[MappingVersion, int]:
    """The mapping to start with, and the sfamp.config offset to follow from."""
    try:
        published, offset = await latest_mapping(settings)
    except MappingError as exc:
        log.error("published_mapping_refused", reason=str(exc))
        published, offset = None, -1
    file_version = _file_version(mapping_file) if mapping_file else None
    if file_version and published:
        assert mapping_file is not None
        if published.published_at_ms / 1000 > (_mtime(mapping_file) or 0.0):
            return _published_version(published.revision, published.mapping), offset
        return file_version, offset
    if file_version:
        return file_version, offset
    if published:
        return _published_version(published.revision, published.mapping), offset
    raise MappingError(
        "no mapping to run: pass --mapping FILE (or set SFAMP_MAPPING_FILE), "
        "or publish one with 'sfamp config import FILE'"
    )


def _file_version(path: Path) -> MappingVersion:
    return MappingVersion(load_mapping(path), f"file:{path}")


def _published_version(revision: int, mapping: MappingConfig) -> MappingVersion:
    return MappingVersion(mapping, f"sfamp.config revision {revision}")


async def watch_config_topic(holder: MappingHolder, settings: KafkaSettings, offset: int) -> None:
    """Follow sfamp.config and switch to every valid new revision."""
    topic = f"{settings.topic_prefix}.config"
    async for record in follow(settings, topic, max(offset, 0)):
        if record.key != KEY or record.value is None:
            continue
        try:
            published = decode_published(record.value)
        except MappingError as exc:
            log.error("mapping_refused", source=topic, reason=str(exc), problems=_lines(exc))
            continue
        await holder.replace(_published_version(published.revision, published.mapping))


async def watch_file(holder: MappingHolder, path: Path, *, interval: float = 2.0) -> None:
    """Poll the mapping file and switch to it whenever it changes and is valid."""
    last_seen = _mtime(path)
    while True:
        await asyncio.sleep(interval)
        seen = _mtime(path)
        if seen == last_seen:
            continue
        last_seen = seen
        try:
            version = _file_version(path)
        except MappingError as exc:
            log.error("mapping_refused", source=str(path), reason=str(exc), problems=_lines(exc))
            continue
        await holder.replace(version)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return None


def _lines(exc: MappingError) -> list[str]:
    return [str(problem) for problem in exc.problems]
