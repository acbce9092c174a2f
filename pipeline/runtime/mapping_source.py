"""The mapping a running service uses, and how it changes without a restart.

Two sources feed it: the mapping file (``--mapping`` / ``SFAMP_MAPPING_FILE``)
and the ``sfamp.config`` topic that ``sfamp config import`` writes. At start the
newer of the two wins (:func:`initial_mapping`, the rule of every command that runs
a mapping); afterwards any new version from either that is valid and
passes the service's check (the org still has its objects and fields, its topics
keep data long enough) replaces the current one. A refused version is logged,
kept in ``refusal`` for ``/status``, and the current mapping keeps running.

A file counts from when its content was first seen, not from its modification time
alone: a Kubernetes ConfigMap is written again in every new pod, and would otherwise
pass for newer than every revision imported since (``sfamp.config`` keeps the content
last seen, :class:`~pipeline.kafka.config_topic.FileSeen`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import KafkaSettings
from pipeline.errors import (
    ConfigError,
    KafkaError,
    KafkaUnavailableError,
    MappingError,
    Problem,
    SfampError,
    TopicConfigError,
)
from pipeline.kafka.compacted import follow
from pipeline.kafka.config_topic import (
    KEY,
    FileSeen,
    PublishedMapping,
    decode_published,
    stored_revision,
)
from pipeline.runtime.mapping_file import (
    MappingVersion,
    counted_since,
    digest_of,
    file_seen,
    file_version,
    modified_at,
    remember,
)
from pipeline.runtime.retry import Backoff

log = structlog.get_logger(__name__)

# Checks a mapping before it runs: raises a REFUSALS error to refuse it, any other
# SfampError when it cannot tell yet (Salesforce or Kafka unreachable, login refused);
# returns warnings.
MappingCheck = Callable[[MappingConfig], Awaitable[list[Problem]]]
REFUSALS = (ConfigError, TopicConfigError)


@dataclass(frozen=True, slots=True)
class MappingRefusal:
    """A new mapping version that was not switched to, and why."""

    source: str
    reason: str
    problems: tuple[str, ...] = ()
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def of(cls, source: str, exc: SfampError) -> MappingRefusal:
        """The refusal ``exc`` says: its first line, and the problems it lists."""
        problems = tuple(str(problem) for problem in getattr(exc, "problems", ()))
        return cls(source, str(exc).splitlines()[0], problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "reason": self.reason,
            "problems": list(self.problems),
            "at": self.at.isoformat(),
        }


async def checked(
    check: MappingCheck, mapping: MappingConfig, *, source: str, backoff: Backoff | None = None
) -> list[Problem]:
    """Run ``check`` until it answers; log its warnings.

    A refusal (the mapping or a topic must be fixed) raises. Anything else, even a
    refused login, is retried with backoff like the pumps retry it: someone fixes
    it outside sfamp, and the check then runs.
    """
    backoff = backoff or Backoff(first=1.0, ceiling=30.0)
    while True:
        try:
            warnings = await check(mapping)
        except REFUSALS:
            raise
        except SfampError as exc:
            delay = backoff.next()
            # Retried either way: a refused login waits for someone to fix it, and says
            # so at level error, as ``ingest_interrupted`` does.
            say = log.warning if exc.retriable else log.error
            say(
                "mapping_check_retrying",
                source=source,
                reason=str(exc),
                fix_needed=not exc.retriable,
                retry_in=round(delay, 1),
            )
            await asyncio.sleep(delay)
            continue
        if warnings:
            log.warning("mapping_warnings", source=source, warnings=[str(w) for w in warnings])
        return warnings


class MappingHolder:
    """The current mapping; pumps read ``current`` and may wait for a change."""

    def __init__(
        self,
        version: MappingVersion,
        *,
        check: MappingCheck | None = None,
        on_refusal: Callable[[MappingRefusal | None], None] | None = None,
    ) -> None:
        self.version = version
        self.generation = 0  # bumped by every replace, so no waiter misses one
        self.refusal: MappingRefusal | None = None
        self._check = check
        self._on_refusal = on_refusal
        self._changed = asyncio.Condition()

    @property
    def current(self) -> MappingConfig:
        return self.version.mapping

    async def offer(self, version: MappingVersion) -> bool:
        """Switch to ``version`` if it passes the check; else keep running the current one."""
        if version.mapping == self.current:
            self._set_refusal(None)  # the source agrees with what runs again
            return False
        if self._check is not None:
            try:
                await checked(self._check, version.mapping, source=version.source)
            except REFUSALS as exc:
                self.refuse(version.source, exc)
                return False
        await self.replace(version)
        return True

    def refuse(self, source: str, exc: SfampError) -> None:
        """Keep the current mapping; log and record why ``source`` was not switched to."""
        refusal = MappingRefusal.of(source, exc)
        log.error(
            "mapping_refused",
            source=source,
            reason=refusal.reason,
            problems=list(refusal.problems),
        )
        self._set_refusal(refusal)

    def _set_refusal(self, refusal: MappingRefusal | None) -> None:
        self.refusal = refusal
        if self._on_refusal is not None:
            self._on_refusal(refusal)

    async def replace(self, version: MappingVersion) -> None:
        if version.mapping == self.current:
            return
        old = self.current
        self.version = version
        self.generation += 1
        self._set_refusal(None)
        log.info(
            "mapping_reloaded",
            source=version.source,
            objects=version.mapping.objects,
            added_objects=sorted(set(version.mapping.objects) - set(old.objects)),
            # What existing groups get only from a backfill of these objects.
            backfill_objects=version.mapping.objects_to_backfill(old),
        )
        async with self._changed:
            self._changed.notify_all()

    async def wait_changed(self, seen: int | None = None) -> MappingVersion:
        """The next version; at once if one arrived after generation ``seen``."""
        async with self._changed:
            if seen is None or seen == self.generation:
                await self._changed.wait()
        return self.version


class PublishedMappingUnusable(MappingError):
    """The published revision is one this version refuses, and no file is given: the
    start waits for the next import (:func:`pipeline.runtime.start.starting_mapping`)."""


class NoMappingToRun(MappingError):
    """No mapping file is given and nothing is published in sfamp.config: a backfill or a
    replay ends with this message; ``sfamp run`` waits for the first import."""


async def initial_mapping(
    settings: KafkaSettings, mapping_file: Path | None, *, topics_exist: bool = False
) -> tuple[MappingVersion, int]:
    """The mapping to run, and the sfamp.config offset to follow from.

    One rule for ``sfamp run``, ``sfamp backfill`` and ``sfamp dlq replay``: when both
    a file and a published mapping exist, the newer wins (the time the file's content
    was first seen, :func:`~pipeline.runtime.mapping_file.counted_since`, against the
    revision's publication time). A new content is recorded in sfamp.config when the
    topic holds records already, or with ``topics_exist`` (the caller created the
    control topics, as the service does). A running service applies whichever
    source changed last, so "newer" is the only rule under which a restart, a
    backfill or a replay uses the mapping the service is running right now; letting
    an explicit file win would make a backfill send, and a restart silently go back
    to, a file that ``sfamp config import`` has since replaced. A published mapping
    that is invalid, or that cannot be read because Kafka does not answer while a
    file is given (a backfill needs no Kafka), is logged and the file runs. With no
    file, an invalid one raises :class:`PublishedMappingUnusable` (the service waits
    for the import that replaces it; a command says so in one line). With neither,
    :class:`NoMappingToRun` is raised (the service waits for the first import).
    """
    published, offset, seen = await _published(settings, mapping_file)
    from_file = file_version(mapping_file) if mapping_file else None
    if from_file and offset >= 0:  # Kafka answered: the content's first sight counts
        from_file, new_content = counted_since(from_file, seen)
        # Kept where sfamp.config exists (``topics_exist``: the service made it), never
        # by creating it: a command that fails next would leave topics behind.
        if new_content is not None and (topics_exist or offset > 0):
            await remember(settings, new_content)
    if from_file and published:
        assert mapping_file is not None
        if _newer(published, from_file):
            chosen = _published_version(published.revision, published.mapping)
            if published.mapping == from_file.mapping:
                return chosen, offset  # the file, published: nothing to warn about
            modified = modified_at(mapping_file) or 0.0
            since = from_file.since if from_file.since is not None else modified
            unchanged = {"file_unchanged_since": _utc(since)} if since < modified else {}
            # Said every time: the file named (--mapping, SFAMP_MAPPING_FILE) does not run.
            log.warning(
                "mapping_file_older_than_published",
                mapping_file=str(mapping_file),
                file_modified=_utc(modified),
                **unchanged,
                revision=published.revision,
                published_at=_utc(published.published_at_ms / 1000),
            )
            return replace(chosen, passed_over=from_file), offset
        if published.mapping != from_file.mapping:
            superseded = _published_version(published.revision, published.mapping)
            return replace(from_file, supersedes=superseded), offset
        return from_file, offset
    if from_file:
        return from_file, offset
    if published:
        return _published_version(published.revision, published.mapping), offset
    raise NoMappingToRun(
        "no mapping to run: pass --mapping FILE (or set SFAMP_MAPPING_FILE), "
        "or publish one with 'sfamp config import FILE'"
    )


async def accepted_version(
    version: MappingVersion, accept: Callable[[MappingConfig], Awaitable[object]]
) -> tuple[MappingVersion, SfampError | None]:
    """``version`` once ``accept`` takes it (it raises one of :data:`REFUSALS` to refuse).

    A published mapping the org refuses, preferred to a file only for being newer,
    gives way to that file: a service that refused the revision while running goes on
    running the file after a restart instead of refusing to start, and a backfill runs
    the file it was given. Returns the version taken and, then, why the other was not.
    """
    try:
        await accept(version.mapping)
    except REFUSALS as exc:
        fallback = version.passed_over
        if fallback is None:
            raise
        log.warning(
            "mapping_file_runs_instead",
            refused=version.source,
            reason=str(exc).splitlines()[0],
            mapping_file=fallback.source.removeprefix("file:"),
        )
        await accept(fallback.mapping)
        return fallback, exc
    return version, None


async def _published(
    settings: KafkaSettings, mapping_file: Path | None
) -> tuple[PublishedMapping | None, int, FileSeen | None]:
    """The usable published mapping, the offset to follow from (-1: Kafka did not
    answer) and the mapping file content last seen."""
    try:
        stored = await stored_revision(settings)
    except KafkaError as exc:
        if mapping_file is None and isinstance(exc, KafkaUnavailableError):
            raise KafkaUnavailableError(
                f"{exc}; with no mapping file (--mapping FILE or SFAMP_MAPPING_FILE) the "
                "published mapping is needed"
            ) from exc
        if mapping_file is None:
            raise
        log.warning("published_mapping_unreadable", reason=str(exc), mapping_file=str(mapping_file))
        return None, -1, None
    if stored.problem is None:
        return stored.published, stored.end, stored.file_seen
    if mapping_file is None:
        raise PublishedMappingUnusable(
            f"revision {stored.revision} in {settings.topic_prefix}.config cannot be used: "
            f"{stored.problem}",
            stored.problem.problems,
        )
    log.error(
        "published_mapping_refused", reason=str(stored.problem), mapping_file=str(mapping_file)
    )
    return None, stored.end, stored.file_seen  # followed from here: its history is not run again


def _newer(published: PublishedMapping, running: MappingVersion) -> bool:
    """Whether ``published`` is newer than the file ``running`` runs (any version but a
    file: yes): the one rule of the start and of a watcher that could not read at it."""
    if not running.source.startswith("file:"):
        return True
    since = running.since if running.since is not None else modified_at(Path(running.source[5:]))
    return published.published_at_ms / 1000 > (since or 0.0)


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _published_version(revision: int, mapping: MappingConfig) -> MappingVersion:
    return MappingVersion(mapping, f"sfamp.config revision {revision}")


async def watch_config_topic(
    holder: MappingHolder, settings: KafkaSettings, offset: int, backoff: Backoff | None = None
) -> None:
    """Follow sfamp.config and switch to every valid new revision. While Kafka does not
    answer, it is waited for with backoff (``config_topic_unreachable``), then followed
    again from the record after the last one read."""
    topic = f"{settings.topic_prefix}.config"
    backoff = backoff or Backoff(first=1.0, ceiling=30.0)
    while True:
        try:
            if offset < 0:  # not read at the start: of its history, only the latest may be news
                stored = await stored_revision(settings)
                offset = stored.end
                if stored.published is not None and _newer(stored.published, holder.version):
                    await holder.offer(
                        _published_version(stored.published.revision, stored.published.mapping)
                    )
            # Closed however the loop ends: its consumer leaves with it, not when collected.
            async with contextlib.aclosing(follow(settings, topic, offset)) as records:
                async for record in records:
                    offset = record.offset + 1
                    backoff.reset()
                    await _offer_published(holder, topic, record.key, record.value)
        except KafkaUnavailableError as exc:
            delay = backoff.next()
            retry_in = round(delay, 1)
            log.warning("config_topic_unreachable", topic=topic, reason=str(exc), retry_in=retry_in)
            await asyncio.sleep(delay)


async def _offer_published(
    holder: MappingHolder, topic: str, key: bytes | None, value: bytes | None
) -> None:
    if key != KEY or value is None:
        return
    try:
        published = decode_published(value)
    except MappingError as exc:
        holder.refuse(topic, exc)
        return
    await holder.offer(_published_version(published.revision, published.mapping))


async def watch_file(
    holder: MappingHolder,
    path: Path,
    settings: KafkaSettings | None = None,
    *,
    interval: float = 2.0,
) -> None:
    """Look at the mapping file every ``interval`` seconds (:meth:`FileWatch.look`)."""
    watch = FileWatch(holder, path, settings)
    while True:
        await asyncio.sleep(interval)
        await watch.look()


class FileWatch:
    """Switches to the mapping file whenever its content changes and is valid.

    A file written again with the same content (touched, or a ConfigMap mounted again)
    is no new version, as at a start. A new content is kept in sfamp.config with
    ``settings`` (:class:`~pipeline.kafka.config_topic.FileSeen`), so that a restart
    counts the file from then, not from the time it is mounted again.
    """

    def __init__(
        self, holder: MappingHolder, path: Path, settings: KafkaSettings | None = None
    ) -> None:
        self.holder, self.path, self.settings = holder, path, settings
        self._modified, self._content = modified_at(path), digest_of(path)

    async def look(self) -> None:
        """Offer the file to the holder if it changed since the last look."""
        modified = modified_at(self.path)
        if modified == self._modified:
            return
        self._modified = modified
        try:
            version = file_version(self.path)
        except MappingError as exc:
            self.holder.refuse(f"file:{self.path}", exc)
            return
        record = file_seen(version)
        if record.digest == self._content:
            return
        self._content = record.digest
        if self.settings is not None:
            await remember(self.settings, record)
        await self.holder.offer(version)
