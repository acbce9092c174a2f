"""What the deliver pump holds between two flushes, and what a flush learns from rebalances."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from pipeline.config.mapping import MappingConfig, ObjectMapping
from pipeline.errors import EnvelopeError
from pipeline.kafka.consumer import Partition, Record
from pipeline.kafka.records import DlqEntry, DlqReason, dlq_id, rejection_id
from pipeline.runtime.cadence import now_ms
from pipeline.runtime.mapping_source import MappingHolder
from pipeline.transform.apply import (
    NeedsLookup,
    NeedsReread,
    NeedsResync,
    NothingToDo,
    Outcome,
    PropertyChanges,
)
from pipeline.transform.coalesce import Coalescer, DrainedBySource, ReadOrders
from pipeline.transform.compiled import CompiledConfig
from pipeline.transform.envelope import ChangeEnvelope, decode, encode
from pipeline.transform.schema import ObjectSchema

log = structlog.get_logger(__name__)

# Far above any real flush: the pump flushes early at settings.runtime.max_pending_groups.
_COALESCER_CAPACITY = 1 << 40


@dataclass(frozen=True, slots=True)
class Source:
    """Where a change came from, for DLQ entries."""

    topic: str
    partition: int
    offset: int
    key: str

    @property
    def partition_of(self) -> Partition:
        """The topic partition the change was read from."""
        return Partition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class Lookup:
    """A change that needs Salesforce data before it names its group (resolved at flush)."""

    envelope: ChangeEnvelope
    mapping: ObjectMapping
    fields: tuple[str, ...]
    full_record: bool
    source: Source


@dataclass
class FlushWindow:
    """What the pump holds between two flushes; thrown away whole on failure or rebalance.

    The changes of each partition coalesce apart, so that a flush can leave out a
    partition the group gives to another member while the flush runs (see
    :meth:`drain`).
    """

    coalescers: dict[Partition, Coalescer] = field(default_factory=dict)
    reads: ReadOrders = field(default_factory=ReadOrders)  # reads after what came before
    offsets: dict[Partition, int] = field(default_factory=dict)  # next offset to read
    firsts: dict[Partition, int] = field(default_factory=dict)  # first offset taken
    lookups: list[Lookup] = field(default_factory=list)
    dlq: list[DlqEntry] = field(default_factory=list)
    changes: int = 0
    # The mappings its changes were transformed under (set by the first take).
    mappings: list[ObjectMapping] | None = None

    @property
    def empty(self) -> bool:
        return not self.offsets

    def means(self, config: MappingConfig) -> bool:
        """Whether what the window holds is what ``config`` makes of its changes.

        Changes are transformed as they are taken. A mapping revision that maps other
        fields, properties or group names makes what was taken before it stale: sent
        after the revision (and after the backfill that applies it), it would land the
        old meaning last. A revision of the cadence alone changes nothing held.
        """
        return self.mappings is None or self.mappings == config.mappings

    @property
    def pending_groups(self) -> int:
        """Groups held, counted once per partition that changed them."""
        return sum(coalescer.pending_groups for coalescer in self.coalescers.values())

    def coalescer(self, tp: Partition) -> Coalescer:
        """Where the changes read from ``tp`` coalesce."""
        held = self.coalescers.get(tp)
        if held is None:
            held = self.coalescers[tp] = Coalescer(_COALESCER_CAPACITY)
        return held

    def drain(self) -> DrainedBySource[Partition]:
        """Every group held, as updates that remember their partition (empties the
        coalescers): a flush can leave out a partition the group takes meanwhile."""
        return DrainedBySource(self.coalescers)

    def add(
        self, envelope: ChangeEnvelope, mapping: ObjectMapping, outcome: Outcome, source: Source
    ) -> None:
        """Hold what one change means for one mapping until the flush."""
        if isinstance(outcome, PropertyChanges):
            self.coalescer(source.partition_of).add(outcome)
        elif isinstance(outcome, NeedsLookup):
            fields = (*outcome.fields, mapping.group_name_field)
            self.lookups.append(Lookup(envelope, mapping, fields, outcome.full_record, source))
        elif isinstance(outcome, NeedsReread | NeedsResync):
            # Ingest answers gap and overflow events itself (a re-read, a re-sync) and
            # never writes them to Kafka; one here is only informative.
            log.info("deliver_saw_gap_event", object=outcome.sfdc_object, reason=outcome.reason)
        elif isinstance(outcome, NothingToDo):
            pass

    def take(
        self,
        tp: Partition,
        records: list[Record],
        start: int,
        table: CompiledConfig,
        schemas: Mapping[str, ObjectSchema | None],
        max_groups: int,
    ) -> int:
        """Take ``records[start:]`` until groups and lookups reach ``max_groups``; returns
        how far it got.

        ``schemas`` holds the describe of every mapped object. This runs once per Kafka
        message, so it keeps to local names and leaves the rare cases (lookups, gap
        events, malformed messages) to :meth:`add` and :meth:`to_dlq`.
        """
        if self.mappings is None:
            self.mappings = table.config.mappings
        coalescer, lookups, place = self.coalescer(tp), self.lookups, self.reads.place
        # One change adds at most one group or lookup per mapping: check for a full window
        # only once this many changes could have filled it.
        growth = max(1, len(table.config.mappings))
        room = max_groups - (self.pending_groups - coalescer.pending_groups)  # others' share out
        spare = room - coalescer.pending_groups - len(lookups)
        index, end, changes = start, len(records), 0
        while index < end and spare > 0:
            record = records[index]
            index += 1
            try:
                envelope = decode(record.value)
            except EnvelopeError as exc:
                self.to_dlq("malformed", str(exc), source_of(record), text(record.value))
                continue
            if envelope.object not in schemas:
                continue  # an object no longer mapped
            envelope = place(envelope)  # a read after the changes it reflects
            changes += 1
            rest = table.fold(envelope, schemas[envelope.object], coalescer)
            if rest:  # the rare cases: build the source reference only for them
                source = source_of(record)
                for mapping, outcome in rest:
                    self.add(envelope, mapping, outcome, source)
            spare -= growth
            if spare <= 0:
                spare = room - coalescer.pending_groups - len(lookups)
        self.changes += changes
        if index > start:
            self.offsets[tp] = records[index - 1].offset + 1
            self.firsts.setdefault(tp, records[start].offset)
        return index

    def taken_runs(self) -> dict[Partition, tuple[int, int]]:
        """Per partition, the offsets ``(first, next)`` of the run this window holds."""
        return {tp: (first, self.offsets[tp]) for tp, first in self.firsts.items()}

    def to_dlq(self, reason: DlqReason, detail: str, source: Source, payload: Any) -> None:
        """Park one change, with why, for the flush to write to ``sfamp.dlq``."""
        self.dlq.append(
            DlqEntry(
                id=dlq_id(source.topic, source.partition, source.offset),
                reason=reason,
                detail=detail,
                at_ms=now_ms(),
                key=source.key,
                payload=payload,
                source_topic=source.topic,
                source_partition=source.partition,
                source_offset=source.offset,
            )
        )

    def reject(self, identification: dict[str, Any], status: int, reason: str) -> None:
        """Park one identification Amplitude refused."""
        key = f"{identification['group_type']}:{identification['group_value']}"
        self.dlq.append(
            DlqEntry(
                id=rejection_id("rejected", key, identification),
                reason="rejected",
                detail=f"Amplitude answered {status}: {reason}",
                at_ms=now_ms(),
                key=key,
                payload=identification,
            )
        )


# How long a flush due waits for what a rewind dropped to be read again (a partition
# that stopped feeding must not hold every flush back).
REREAD_SECONDS: Final = 60.0


@dataclass
class Reread:
    """Offsets a rewind dropped (per partition, the next one the window had read), to read
    again before the flush due sends: it then sends them whole, rather than the first
    fetch at once and the rest a cadence period later. Times are monotonic seconds."""

    held: dict[Partition, int] = field(default_factory=dict)
    since: float | None = None  # the first look after a rewind: the wait counts from there

    def add(self, offsets: Mapping[Partition, int]) -> None:
        self.held |= offsets
        self.since = None  # a retry's backoff is no part of the wait

    def keep(self, partitions: Collection[Partition]) -> None:
        """After a rebalance: what another member reads now is not waited for."""
        self.held = {tp: end for tp, end in self.held.items() if tp in partitions}

    def reached(self, offsets: Mapping[Partition, int]) -> None:
        """Let the partitions ``offsets`` (a window's) reached leave the wait, whatever
        window reads on."""
        self.held = {tp: end for tp, end in self.held.items() if offsets.get(tp, -1) < end}

    def done(self, offsets: Mapping[Partition, int], now: float) -> bool:
        """Whether ``offsets`` (a window's) reached all that was held, or the wait is over."""
        self.reached(offsets)
        if not self.held:
            return True
        self.since = now if self.since is None else self.since
        if now - self.since < REREAD_SECONDS:
            return False
        self.held = {}
        return True


@dataclass
class Flushing:
    """A window being flushed, and what rebalances took from it meanwhile."""

    window: FlushWindow
    member_id: str
    lost: set[Partition] = field(default_factory=set)
    rebalanced: bool = False
    reassigned: asyncio.Event = field(default_factory=asyncio.Event)
    revoked: asyncio.Event = field(default_factory=asyncio.Event)  # every partition read
    lost_more: asyncio.Event = field(default_factory=asyncio.Event)  # another one of them
    halted: asyncio.Event = field(default_factory=asyncio.Event)  # revoked, or stale: stop
    stale: bool = False  # the mapping changed what the window's changes mean

    async def halt_when_stale(self, holder: MappingHolder) -> None:
        """Halt the flush once ``holder`` runs a mapping under which what the window holds
        means something else (see :meth:`FlushWindow.means`): nothing more is sent."""
        while True:
            seen = holder.generation
            if not self.window.means(holder.current):
                self.stale = True
                self.halted.set()
                return
            await holder.wait_changed(seen)

    def assigned(self, partitions: set[Partition], member_id: str) -> None:
        """Another member may own, or have owned, what this member no longer holds."""
        read = set(self.window.offsets)
        # A new member id means the group dropped this member: it kept nothing.
        lost = read - partitions if member_id == self.member_id else read
        if not lost <= self.lost:
            self.lost |= lost
            self.lost_more.set()
        self.rebalanced = True
        self.reassigned.set()
        if read and self.lost >= read:
            self.revoked.set()
            self.halted.set()

    def note(
        self, *, stopped: bool, committed: Mapping[Partition, int], stale: bool = False
    ) -> str | None:
        """What the flush result says about the group, or None when nothing happened."""
        lost = ", ".join(partition_names(self.lost))
        if stale:
            return "the mapping changed during the flush: its changes are read again under it"
        if stopped:
            return f"stopped early: the group gave {lost} to another member, which reads them again"
        if lost:
            return f"the group gave {lost} to another member during the flush; it reads them again"
        if self.window.offsets and not committed:
            return "offsets not committed: the group was rebalancing; they are read again"
        return None


def unread(highwaters: Mapping[Partition, int | None], offsets: Mapping[Partition, int]) -> int:
    """Messages past ``offsets`` (what a window read) below each partition's high-water
    mark (None: not known yet): the consumer lag."""
    lag = 0
    for tp, highwater in highwaters.items():
        position = offsets.get(tp)
        if highwater is not None and position is not None:
            lag += max(0, highwater - position)
    return lag


def source_of(record: Record) -> Source:
    return Source(record.topic, record.partition, record.offset, text(record.key))


def text(raw: bytes | None) -> str:
    return "" if raw is None else raw.decode("utf-8", errors="replace")


def envelope_payload(envelope: ChangeEnvelope) -> str:
    return encode(envelope).decode()


def partition_names(partitions: set[Partition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)
