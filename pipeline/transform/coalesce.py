"""Many property changes within one flush window -> one group update per group.

Per property the latest commit wins by ``(commit_ts, commit_number,
sequence_number)``, whatever order the changes arrive in: partitions and gap
re-reads interleave, so arrival order is not commit order. A set and an unset
of the same property are resolved by the same rule. On an exact tie the later
arrival wins.

Reads (REST or Bulk re-reads of a whole record, ``source`` other than ``cdc``) are
placed by :class:`ReadOrders` before they are transformed: a read is ordered after
every change of its record that came before it in the partition (same key, same
partition). A read reflects every commit before the moment it was made, and its
``SystemModstamp`` has whole seconds while change events carry milliseconds, so
ordered at its stamp alone it would lose to an older event of the same second. A
change that comes after the read in the partition keeps its own commit order: one
committed after the read wins; one committed before it carries values the read
already holds. A read that is stale (a re-sync's snapshot page that landed after a
newer event) is corrected by the catch-up rounds that end every snapshot
(:mod:`pipeline.runtime.backfill.catch_up`). Across windows, a later window simply
applies after an earlier one, which is the same rule.

The buffer is bounded by group count. :meth:`Coalescer.is_full` tells the
runtime to flush early; a change for a new group while full is refused rather
than dropped, so a forgotten check shows up at once instead of as lost data.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping
from typing import Generic, TypeVar

import msgspec
from msgspec.structs import replace

from pipeline.errors import SfampError
from pipeline.transform.apply import Order, PropertyChanges
from pipeline.transform.envelope import ChangeEnvelope
from pipeline.transform.group_update import GroupUpdate, PropertyValue

SourceT = TypeVar("SourceT", bound=Hashable)


class Stamped(msgspec.Struct, gc=False):
    """A property's pending state: its latest value (None: unset) and the commit that
    wrote it.

    Not tracked by the garbage collector: a window holds one per property of every
    pending group, and as tuples they made up most of what each young-generation
    collection had to scan. It refers to no container that could lead back to it.
    """

    value: PropertyValue | None
    order: Order


class CoalescerFullError(SfampError):
    """A change for a new group arrived while the coalescer was full: flush first."""


class ReadOrders:
    """Per record, the newest order among the changes taken in one window, in arrival order.

    :meth:`place` every envelope as it arrives, before transforming it; keep one per
    window (a new window starts empty, since what came before is already applied).
    """

    __slots__ = ("_newest",)

    def __init__(self) -> None:
        # object -> record id -> newest order: keyed apart rather than by (object, record
        # id), so that placing an envelope builds and hashes no key tuple.
        self._newest: dict[str, dict[str, Order]] = {}

    def place(self, envelope: ChangeEnvelope) -> ChangeEnvelope:
        """``envelope``, a read moved just after its record's newest change so far."""
        try:
            newest = self._newest[envelope.object]
        except KeyError:  # the window's first change of this object
            newest = self._newest[envelope.object] = {}
        record_id = envelope.record_id
        order = (envelope.commit_ts, envelope.commit_number, envelope.sequence_number)
        held = newest.setdefault(record_id, order)
        if held is order:  # the record's first change in this window
            return envelope
        if order > held:
            newest[record_id] = order
        elif envelope.source != "cdc":
            commit_ts, commit_number, sequence_number = held
            envelope = replace(
                envelope,
                commit_ts=commit_ts,
                commit_number=commit_number,
                sequence_number=sequence_number + 1,
            )
            newest[record_id] = envelope.ordering
        return envelope


class _Pending:
    """One group's properties: each one's latest value (None = unset) and the commit that
    wrote it, and the latest commit of all."""

    __slots__ = ("latest", "props")

    def __init__(self) -> None:
        self.props: dict[str, Stamped] = {}
        self.latest: Order = (-1, -1, -1)

    def merged(self, other: _Pending) -> _Pending:
        """A new pending group: per property the latest commit of ``self`` and ``other``
        (on a tie, ``other``'s); neither is changed."""
        both = _Pending()
        both.props = dict(self.props)
        both.latest = max(self.latest, other.latest)
        for prop, item in other.props.items():
            held = both.props.get(prop)
            if held is None or item.order >= held.order:
                both.props[prop] = item
        return both

    def to_update(self, key: tuple[str, str]) -> GroupUpdate:
        values: dict[str, PropertyValue] = {}
        unset: list[str] = []
        for prop, item in sorted(self.props.items()):
            if item.value is None:
                unset.append(prop)
            else:
                values[prop] = item.value
        return GroupUpdate(key[0], key[1], values, frozenset(unset))


def stamp(
    values: Mapping[str, PropertyValue], unset: Collection[str], order: Order
) -> dict[str, Stamped]:
    """One change's sets, then its unsets (a property both set and unset ends unset), each
    stamped with the change's commit ``order``: what :meth:`Coalescer.add_stamped` takes."""
    stamped = {prop: Stamped(value, order) for prop, value in values.items()}
    for prop in unset:
        stamped[prop] = Stamped(None, order)
    return stamped


class Coalescer:
    """Accumulates :class:`PropertyChanges` until :meth:`drain`."""

    def __init__(self, max_groups: int) -> None:
        if max_groups < 1:
            raise ValueError("max_groups must be at least 1")
        self.max_groups = max_groups
        self._groups: dict[tuple[str, str], _Pending] = {}

    @property
    def pending_groups(self) -> int:
        return len(self._groups)

    def is_full(self) -> bool:
        return len(self._groups) >= self.max_groups

    def add(self, change: PropertyChanges) -> None:
        """Merge one change; raises :class:`CoalescerFullError` for a new group when full."""
        self.add_stamped(change.key, change.order, stamp(change.set, change.unset, change.order))

    def add_properties(
        self,
        key: tuple[str, str],
        order: Order,
        values: Mapping[str, PropertyValue],
        unset: Collection[str],
    ) -> None:
        """:meth:`add` without a :class:`PropertyChanges`: set ``values``, then unset ``unset``,
        in group ``key`` (group type, group value) as of commit ``order``."""
        self.add_stamped(key, order, stamp(values, unset, order))

    def add_stamped(self, key: tuple[str, str], order: Order, stamped: dict[str, Stamped]) -> None:
        """:meth:`add_properties` with the properties already :func:`stamp`-ed by ``order``."""
        pending = self._groups.get(key)
        if pending is None:
            if len(self._groups) >= self.max_groups:
                raise CoalescerFullError(
                    f"coalescer holds {self.max_groups} groups; drain before adding more"
                )
            pending = self._groups[key] = _Pending()
        if order >= pending.latest:
            # In commit order, the common case: nothing pending can be newer.
            pending.latest = order
            pending.props.update(stamped)
            return
        props = pending.props
        for prop, item in stamped.items():
            held = props.get(prop)
            if held is None or order >= held.order:
                props[prop] = item

    def drain(self) -> list[GroupUpdate]:
        """Every pending group as one update, sorted by (group type, group value); empties."""
        groups, self._groups = self._groups, {}
        return [groups[key].to_update(key) for key in sorted(groups)]


def _group_order(update: GroupUpdate) -> tuple[str, str]:
    return (update.group_type, update.group_value)


class DrainedBySource(Generic[SourceT]):
    """The groups of several coalescers (one per source: a Kafka partition), drained into
    updates that remember their source, so that a flush can leave some sources out.

    A group only one source changed becomes its update at once, and its pending state is
    freed: a flush holds no more than :meth:`Coalescer.drain` would. A group several
    sources changed keeps each one's pending state, and :meth:`updates` merges them per
    property (latest commit; on a tie, the source drained later).
    """

    def __init__(self, coalescers: Mapping[SourceT, Coalescer]) -> None:
        """Drains every one of ``coalescers``."""
        seen: dict[tuple[str, str], SourceT] = {}
        shared: set[tuple[str, str]] = set()
        for source, coalescer in coalescers.items():
            for key in coalescer._groups:
                if seen.setdefault(key, source) != source:
                    shared.add(key)
        del seen
        self._alone: dict[SourceT, list[GroupUpdate]] = {}
        self._shared: dict[tuple[str, str], list[tuple[SourceT, _Pending]]] = {}
        for source, coalescer in coalescers.items():
            groups, coalescer._groups = coalescer._groups, {}
            alone = self._alone[source] = []
            for key, pending in groups.items():
                if key in shared:
                    self._shared.setdefault(key, []).append((source, pending))
                else:
                    alone.append(pending.to_update(key))

    def holds(self, sources: Collection[SourceT]) -> bool:
        """Whether any group came from one of ``sources``."""
        return any(self._alone.get(source) for source in sources) or any(
            source in sources for parts in self._shared.values() for source, _ in parts
        )

    def updates(self, leaving_out: Collection[SourceT] = ()) -> list[GroupUpdate]:
        """One update per group, from every source but ``leaving_out``, sorted by (group
        type, group value); can be asked again with more sources left out."""
        chosen = [
            update
            for source, updates in self._alone.items()
            if source not in leaving_out
            for update in updates
        ]
        for key, parts in self._shared.items():
            kept = [pending for source, pending in parts if source not in leaving_out]
            if kept:
                merged = kept[0]
                for pending in kept[1:]:
                    merged = merged.merged(pending)
                chosen.append(merged.to_update(key))
        chosen.sort(key=_group_order)
        return chosen
