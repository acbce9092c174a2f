"""The read keys a catch-up remembers, 8 bytes each.

A snapshot remembers one 64-bit key per delivered read inside its catch-up window,
which after a bulk load is every record of the object. A Python set of ints costs
about 70 bytes a key, and a million small ints allocated between the snapshot's
short-lived batches keep those batches' memory from being returned. So the keys
live in arrays, in 256 buckets by their top byte: those added since the last
look-up in one array per bucket, the rest sorted in another, merged on the first
look-up after many were added (the start of a catch-up round) one bucket at a
time, so the sort never holds more than a bucket's keys as Python ints. Look-ups
are a binary search in one bucket, or a small set of the keys added since the merge.

A checkpoint keeps them as text chunks (:func:`pack_keys`, :func:`pack_latest`), in
the order they were delivered, so that a resumed run remembers what this one did.
"""

from __future__ import annotations

import base64
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Final

import orjson

# Keys added since the merge are looked up in a set up to this many (and an eighth of
# the sorted ones); beyond, they are merged into the sorted arrays first.
_SMALL: Final = 4096
_BUCKETS: Final = 256
_SHIFT: Final = 56  # the top byte of a 64-bit key names its bucket
# Marks a chunk of (record id, read key) pairs; base64 never holds a colon.
_LATEST: Final = "latest:"
# The read key of a pair whose read was being sent: unlike any read, so sent again.
UNDELIVERED: Final = 0


class ReadKeys:
    """A set of 64-bit keys (duplicates allowed, never observable) for catch-up rounds."""

    def __init__(self, keys: Iterable[int] = ()) -> None:
        self._sorted = [array("Q") for _ in range(_BUCKETS)]
        self._added = [array("Q") for _ in range(_BUCKETS)]
        self._sorted_count = self._added_count = 0
        self._added_set: set[int] | None = None
        self.add(keys)

    def add(self, keys: Iterable[int]) -> None:
        added = self._added
        count = 0
        for key in keys:
            added[key >> _SHIFT].append(key)
            count += 1
        if count:
            self._added_count += count
            self._added_set = None

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, int) or not 0 <= key >> _SHIFT < _BUCKETS:
            return False
        if self._added_count:
            if self._added_count > max(_SMALL, self._sorted_count // 8):
                self._merge()
            else:
                if self._added_set is None:
                    self._added_set = set(chain.from_iterable(self._added))
                if key in self._added_set:
                    return True
        keys = self._sorted[key >> _SHIFT]
        index = bisect_left(keys, key)
        return index < len(keys) and keys[index] == key

    def __len__(self) -> int:
        return self._sorted_count + self._added_count

    def __iter__(self) -> Iterator[int]:
        return chain(chain.from_iterable(self._sorted), chain.from_iterable(self._added))

    def _merge(self) -> None:
        for bucket, added in enumerate(self._added):
            if added:
                self._sorted[bucket] = array("Q", sorted(chain(self._sorted[bucket], added)))
                self._added[bucket] = array("Q")
        self._sorted_count += self._added_count
        self._added_count = 0
        self._added_set = None


def pack_keys(keys: array[int]) -> str:
    """One checkpoint chunk of read keys: packed 64-bit numbers, base64."""
    return base64.b64encode(keys.tobytes()).decode()


def pack_latest(pairs: list[tuple[str, int]]) -> str:
    """One checkpoint chunk of (record id, read key) pairs: the reads a round delivered
    last for those records (:data:`UNDELIVERED`: one it was sending), which a later
    pair for the same record replaces."""
    return _LATEST + base64.b64encode(orjson.dumps(pairs)).decode()


def load_seen(saved: object) -> tuple[array[int], dict[str, int]]:
    """Every read key a checkpoint's chunks hold, and the latest read key by record id.

    Anything else (an older checkpoint's layout) is forgotten: its records are only
    sent once more, which ``$set`` makes harmless.
    """
    keys = array("Q")
    latest: dict[str, int] = {}
    if not isinstance(saved, list) or not all(isinstance(chunk, str) for chunk in saved):
        return keys, latest
    try:
        for chunk in saved:
            if chunk.startswith(_LATEST):
                pairs = orjson.loads(base64.b64decode(chunk[len(_LATEST) :], validate=True))
                latest.update((str(record_id), int(key)) for record_id, key in pairs)
                keys.extend(int(key) for _, key in pairs if key != UNDELIVERED)
            else:
                keys.frombytes(base64.b64decode(chunk, validate=True))
    except (ValueError, TypeError, OverflowError):
        return array("Q"), {}
    return keys, latest
