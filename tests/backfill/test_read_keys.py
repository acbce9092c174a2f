"""ReadKeys (pipeline/runtime/backfill/keys.py): a compact set of 64-bit read keys."""

from __future__ import annotations

import random

from pipeline.runtime.backfill.keys import ReadKeys


def test_membership_holds_across_merges_and_small_additions() -> None:
    rng = random.Random(7)
    keys = ReadKeys(rng.getrandbits(64) for _ in range(1_000))
    expected = set(keys)
    for size in (10, 20_000, 3, 500, 1):  # small tails stay unsorted, large ones merge
        batch = [rng.getrandbits(64) for _ in range(size)]
        keys.add(batch)
        expected.update(batch)
        for key in rng.sample(sorted(expected), 200):
            assert key in keys
        for _ in range(200):
            assert rng.getrandbits(64) not in keys
    assert set(keys) == expected
    assert len(keys) == len(expected)


def test_extremes_and_other_types() -> None:
    keys = ReadKeys([0, 2**64 - 1])
    keys.add([5, 5])
    assert all(key in keys for key in (0, 2**64 - 1, 5))
    assert not any(other in keys for other in (1, "5", None))
