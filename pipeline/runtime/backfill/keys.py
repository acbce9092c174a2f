"""The read keys a catch-up remembers, 8 bytes each.

A snapshot remembers one 64-bit key per delivered read inside its catch-up window,
which after a bulk load is every record of the object. A Python set of ints costs
about 70 bytes a key, and a million small ints allocated between the snapshot's
short-lived batches keep those batches' memory from being returned. So the keys
live in arrays: those added since the last look-up in one array, the rest sorted in
another, merged (one sort) on the first look-up after many were added, which is the
start of a catch-up round. Look-ups are a binary search, or a small set of the keys
added since the merge.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Final

# Keys added since the merge are looked up in a set up to this many (and an eighth of
# the sorted ones); beyond, they are merged into the sorted array first.
_SMALL: Final = 4096


class ReadKeys:
    """A set of 64-bit keys (duplicates allowed, never observable) for catch-up rounds."""

    def __init__(self, keys: Iterable[int] = ()) -> None:
        self._sorted = array("Q", sorted(keys))
        self._added = array("Q")
        self._added_set: set[int] | None = None

    def add(self, keys: Iterable[int]) -> None:
        self._added.extend(keys)
        self._added_set = None

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, int):
            return False
        if self._added:
            if len(self._added) > max(_SMALL, len(self._sorted) // 8):
                self._merge()
            else:
                if self._added_set is None:
                    self._added_set = set(self._added)
                if key in self._added_set:
                    return True
        keys = self._sorted
        index = bisect_left(keys, key)
        return index < len(keys) and keys[index] == key

    def __len__(self) -> int:
        return len(self._sorted) + len(self._added)

    def __iter__(self) -> Iterator[int]:
        return chain(self._sorted, self._added)

    def _merge(self) -> None:
        self._sorted = array("Q", sorted(chain(self._sorted, self._added)))
        self._added = array("Q")
        self._added_set = None
