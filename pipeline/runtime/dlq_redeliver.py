"""Redelivering dead letters (``sfamp dlq replay``): send what Salesforce holds now,
never the stale payload.

"Replay" elsewhere in sfamp means CometD replay ids; re-sending a dead letter is called
*redelivery* in the code, while the command and its output keep the word "replay".

An entry in ``sfamp.dlq`` keeps what was sent (or read) back then. Sending that
again could put an old value over a newer one delivered since, so a redelivery
obeys "newest wins" like every other write path:

1. re-read the records behind each entry (:mod:`pipeline.runtime.dlq_targets`)
   through the Salesforce client, with every field the mapping reads;
2. turn them into group updates with the service's own transform (a record that
   is gone is a delete and follows ``on_delete``) and send them to Amplitude;
3. read the records again. Equal to what was sent: the value sent is the
   newest, and any later change reaches Amplitude through the stream after it.
   Changed in between (the stream may have delivered the newer value first):
   send the newer one and check again, up to :data:`MAX_ROUNDS` times.

An entry that cannot be re-read (no record can be named, Salesforce refuses
the read) or that Amplitude rejects again stays in the DLQ with the reason;
the others get a redelivery marker, written as ``replayed:<id>`` (see :mod:`pipeline.kafka.dlq`).
One that names no record can never be replayed: an operator dismisses it
(:mod:`pipeline.runtime.dlq_dismiss`). A login or API key that is refused is no
entry's fault: it stops the whole replay with that one reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog

from pipeline.amplitude import AmplitudeClient
from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.errors import (
    AmplitudeAuthError,
    AmplitudeError,
    ConfigError,
    SalesforceAuthError,
    SalesforceError,
)
from pipeline.kafka.dlq import DlqItem, append_markers, read_dlq, redelivery_marker, select
from pipeline.kafka.inspect import KafkaInspector, iso_time, now_ms
from pipeline.kafka.topics import TopicNames
from pipeline.runtime.dlq_targets import (
    Changes,
    Read,
    Target,
    changes_of,
    group_literal,
    targets_of,
)
from pipeline.runtime.mapping_source import initial_mapping
from pipeline.runtime.reconcile.recorder import LazyKafkaWrite, SentRecorder
from pipeline.runtime.salesforce_reads import (
    RecordReads,
    RestReads,
    SchemaCache,
    fields_to_read,
    read_records,
)
from pipeline.salesforce.client import SalesforceClient
from pipeline.transform.coalesce import Coalescer
from pipeline.transform.group_update import GroupUpdate
from pipeline.wording import plural

log = structlog.get_logger(__name__)

MAX_ROUNDS: Final = 3
REPLAYED_HOW: Final = "reread"
UNREPLAYABLE_HINT: Final = "nothing can replay it: 'sfamp dlq dismiss --unreplayable' settles it"
_COALESCER_CAPACITY: Final = 1 << 40


@dataclass(frozen=True, slots=True)
class RedeliveryOutcome:
    """What became of one selected entry."""

    id: str
    key: str
    ok: bool
    detail: str
    groups: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "ok": self.ok,
            "groups": self.groups,
            "detail": self.detail,
        }


@dataclass
class _Work:
    """One entry on its way: its targets, the latest read of them, and what was sent."""

    item: DlqItem
    targets: list[Target]
    reads: list[Read] = field(default_factory=list)
    problem: str | None = None
    sent: list[GroupUpdate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def replay_dead_letters(
    settings: Settings,
    inspector: KafkaInspector,
    ids: Sequence[str],
    everything: bool,
    mapping_file: Path | None,
) -> list[RedeliveryOutcome]:
    """``sfamp dlq replay`` (and the console's Replay): the entries named by ``ids``, or every
    pending one with ``everything``, redelivered under the mapping that runs now (the newer
    of ``mapping_file`` and the published one)."""
    chosen = select((await read_dlq(inspector)).items, ids, everything)
    if not chosen:
        return []
    version, _ = await initial_mapping(settings.kafka, mapping_file)
    return await redeliver_items(settings, version.mapping, chosen)


async def redeliver_items(
    settings: Settings, config: MappingConfig, chosen: Sequence[DlqItem]
) -> list[RedeliveryOutcome]:
    """Re-read and send ``chosen`` entries; mark the replayed ones in the DLQ."""
    outcomes: dict[str, RedeliveryOutcome] = {}
    works: list[_Work] = []
    for item in chosen:
        targets = (
            "the record is unreadable" if item.entry is None else targets_of(item.entry, config)
        )
        if isinstance(targets, str):
            settled = f"dismissed {iso_time(item.replayed_at_ms)} already" if item.dismissed else ""
            detail = f"{targets}; {settled or UNREPLAYABLE_HINT}"
            outcomes[item.id] = RedeliveryOutcome(item.id, item.key, False, detail)
        else:
            works.append(_Work(item, targets))
    if works:
        problems = settings.salesforce.credential_problems()
        if problems:
            raise ConfigError(
                "a replay re-reads the records from Salesforce, which needs credentials: "
                + "; ".join(map(str, problems))
            )
        writer = LazyKafkaWrite(settings.kafka)  # what a reconcile compares (sfamp.sent)
        async with (
            SalesforceClient.from_settings(settings.salesforce) as salesforce,
            AmplitudeClient(settings.amplitude) as amplitude,
        ):
            reader = _Reader(salesforce.rest, config)
            topic = TopicNames(settings.kafka.topic_prefix).sent
            reader.sent = SentRecorder(writer, topic, reader._schemas)
            try:
                outcomes |= await _redeliver(reader, amplitude, works)
            finally:
                await writer.aclose()
        await _mark(settings, [w.item for w in works if outcomes[w.item.id].ok], outcomes)
    return [outcomes[item.id] for item in chosen]


async def _redeliver(
    reader: _Reader, amplitude: AmplitudeClient, works: list[_Work]
) -> dict[str, RedeliveryOutcome]:
    done: dict[str, RedeliveryOutcome] = {}
    live = works
    await reader.read(live)
    for _ in range(MAX_ROUNDS):
        live = _settled(live, done)
        if not live:
            return done
        before = {id(w): list(w.reads) for w in live}
        await _send(amplitude, reader, live)
        live = _settled(live, done)
        await reader.read([w for w in live if w.sent])  # the proof: still what was sent?
        live = _settled(live, done)
        for work in live:
            if not work.sent or work.reads == before[id(work)]:
                done[work.item.id] = _succeeded(work)
        live = [w for w in live if w.item.id not in done]
        if live:
            log.info("dlq_replay_record_changed", entries=[w.item.id for w in live])
    for work in live:
        done[work.item.id] = _failed(
            work, f"the record kept changing during {MAX_ROUNDS} rounds; replay it again"
        )
    return done


def _settled(works: list[_Work], done: dict[str, RedeliveryOutcome]) -> list[_Work]:
    """Record the works that hit a problem as failed; the rest go on."""
    for work in works:
        if work.problem is not None:
            done[work.item.id] = _failed(work, work.problem)
    return [work for work in works if work.problem is None]


async def _send(amplitude: AmplitudeClient, reader: _Reader, works: list[_Work]) -> None:
    """Send the updates the latest reads mean; note rejections and problems on each work."""
    updates, owners = _plan(reader, works)
    if not updates:
        return
    try:
        report = await amplitude.send(updates)
    except AmplitudeAuthError:
        raise  # no entry's fault: the whole replay stops with the one reason
    except AmplitudeError as exc:
        for work in works:
            if work.problem is None:
                work.problem = f"Amplitude did not take the re-read values: {exc}"
        return
    for rejection in report.rejected:
        for work in owners[rejection.update.key]:
            work.problem = f"rejected again ({rejection.status}): {rejection.reason}"
    if reader.sent is not None:
        await reader.sent.record(reader._config, updates, report)


def _plan(
    reader: _Reader, works: list[_Work]
) -> tuple[list[GroupUpdate], dict[tuple[str, str], list[_Work]]]:
    """One update per group over every work (latest read wins), and the works behind each."""
    coalescer = Coalescer(_COALESCER_CAPACITY)
    owners: dict[tuple[str, str], list[_Work]] = {}
    at = now_ms()
    for work in works:
        work.sent = []
        parts = [reader.changes(t, r, at) for t, r in zip(work.targets, work.reads, strict=True)]
        problems = [p for part in parts for p in part.problems]
        if problems:
            work.problem = "; ".join(problems)
            continue
        work.notes = [n for part in parts for n in part.notes]
        for change in (c for part in parts for c in part.changes):
            coalescer.add(change)
            sharing = owners.setdefault(change.key, [])
            if not any(other is work for other in sharing):
                sharing.append(work)
    updates = coalescer.drain()
    for update in updates:
        for work in owners[update.key]:
            work.sent.append(update)
    return updates, owners


def _succeeded(work: _Work) -> RedeliveryOutcome:
    groups = len(work.sent)
    if groups:
        them = "it" if groups == 1 else "them"
        detail = f"sent {plural(groups, 'group')} as Salesforce holds {them} now"
    else:
        detail = "nothing to send: " + ("; ".join(dict.fromkeys(work.notes)) or "no change")
    return RedeliveryOutcome(work.item.id, work.item.key, True, detail, groups)


def _failed(work: _Work, why: str) -> RedeliveryOutcome:
    return RedeliveryOutcome(work.item.id, work.item.key, False, why, len(work.sent))


async def _mark(
    settings: Settings, items: Iterable[DlqItem], outcomes: dict[str, RedeliveryOutcome]
) -> None:
    entries = [item.entry for item in items if item.entry is not None]
    at = now_ms()
    markers = [redelivery_marker(e, REPLAYED_HOW, outcomes[e.id].detail, at) for e in entries]
    await append_markers(settings.kafka, markers)


class _Reader:
    """Reads the records behind targets, one query per object (ids) or per group."""

    def __init__(self, rest: RestReads, config: MappingConfig) -> None:
        self._rest = rest
        self._config = config
        self._schemas = SchemaCache(rest)
        self.sent: SentRecorder | None = None  # records what Amplitude accepted

    def changes(self, target: Target, read: Read, at_ms: int) -> Changes:
        schema = self._schemas.cached(target.sfdc_object)
        return changes_of(target, read, self._config, schema, at_ms)

    async def read(self, works: list[_Work]) -> None:
        """Replace each work's reads with the records as they are now (or set its problem)."""
        by_object: dict[str, set[str]] = {}
        for work in works:
            for target in work.targets:
                if not target.by_group:
                    by_object.setdefault(target.sfdc_object, set()).update(target.record_ids)
        found: dict[str, RecordReads | str] = {}
        for sfdc_object, ids in by_object.items():
            found[sfdc_object] = await self._by_id(sfdc_object, ids)
        for work in works:
            try:
                work.reads = [await self._target(t, found) for t in work.targets]
            except SalesforceAuthError:
                raise  # no entry's fault: the whole replay stops with the one reason
            except SalesforceError as exc:
                work.problem = f"cannot re-read the record from Salesforce: {exc}"

    async def _target(self, target: Target, found: dict[str, RecordReads | str]) -> Read:
        if target.by_group:
            return await self._by_group(target)
        reads = found[target.sfdc_object]
        if isinstance(reads, str):
            raise SalesforceError(reads)
        refused = [reads.refused[i] for i in target.record_ids if i in reads.refused]
        if refused:  # a bad id fails its own entry, not its neighbours
            raise SalesforceError("; ".join(refused))
        return {record_id: reads.found.get(record_id) for record_id in target.record_ids}

    async def _fields(self, sfdc_object: str) -> list[str]:
        # Fields the describe omits are left out of the read, and said (once) in the log.
        await self._schemas.ensure_mapped(self._config, [sfdc_object])
        return fields_to_read(self._config, sfdc_object, self._schemas.cached(sfdc_object))

    async def _by_id(self, sfdc_object: str, ids: set[str]) -> RecordReads | str:
        try:
            return await read_records(self._rest, sfdc_object, ids, await self._fields(sfdc_object))
        except SalesforceAuthError:
            raise
        except SalesforceError as exc:
            return str(exc)

    async def _by_group(self, target: Target) -> Read:
        assert target.mapping is not None
        assert target.group_value is not None
        fields = await self._fields(target.sfdc_object)
        schema = self._schemas.cached(target.sfdc_object)
        name_field = target.mapping.group_name_field
        literal = group_literal(
            target.group_value, schema.type_of(name_field) if schema is not None else None
        )
        if literal is None:
            raise SalesforceError(
                f"cannot look {target.sfdc_object} up by {name_field} = {target.group_value!r}"
            )
        select = ", ".join(dict.fromkeys(["Id", "IsDeleted", *fields]))
        # Names come from a validated mapping; the value is a quoted or checked literal.
        soql = f"SELECT {select} FROM {target.sfdc_object} WHERE {name_field} = {literal}"  # noqa: S608
        return {str(r["Id"]): r async for r in self._rest.query(soql, all_rows=True)}
