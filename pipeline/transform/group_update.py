"""The unit of work sent to Amplitude: one group, properties to set and to unset."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

# What Amplitude stores as a group property value.
PropertyValue = str | int | float | bool | list[Any]


class GroupUpdate(msgspec.Struct, frozen=True, gc=False):
    """Set and unset properties of one Amplitude group.

    Only `$set` and `$unset` are ever used, so sending the same update twice
    leaves the same state: replays and retries are harmless.

    A frozen msgspec Struct, built in C (a backfill makes one per record): copy one
    with changes by ``msgspec.structs.replace``. Not tracked by the garbage
    collector: an update never refers back to itself.
    """

    group_type: str
    group_value: str
    set: Mapping[str, PropertyValue] = msgspec.field(default_factory=dict)
    unset: frozenset[str] = frozenset()

    @property
    def key(self) -> tuple[str, str]:
        return (self.group_type, self.group_value)

    def is_empty(self) -> bool:
        return not self.set and not self.unset
