"""Garbage-collector thresholds for sfamp's long-running, allocation-heavy processes.

CPython's cyclic collector runs after every 700 new container objects, and its
older generations walk every live object. A backfill, a deliver pump or a
sandbox allocates millions of short-lived dicts, lists and tuples (reference
counting frees them; the collector finds nothing) while holding large pages of
records, so at the default thresholds a fifth or more of the CPU time goes to
collections. sfamp makes few reference cycles: collecting less often costs a
few megabytes at most and raises backfill throughput by about a sixth
(``benchmarks/bench_backfill.py``).
"""

from __future__ import annotations

import gc
from typing import Final

# New container objects between young-generation collections (CPython's default: 700).
YOUNG_THRESHOLD: Final = 50_000
# Young collections per middle one, and middle ones per full one (defaults: 10, 10).
OLDER_THRESHOLDS: Final = (20, 20)


def tune_gc() -> None:
    """Collect less often; called once per process by the CLI (like logging set-up)."""
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
