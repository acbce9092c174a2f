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

import contextlib
import gc
from collections.abc import Iterator
from typing import Final

# New container objects between young-generation collections (CPython's default: 700).
YOUNG_THRESHOLD: Final = 50_000
# Young collections per middle one, and middle ones per full one (defaults: 10, 10).
OLDER_THRESHOLDS: Final = (20, 20)


def tune_gc() -> None:
    """Collect less often; called once per process by the CLI (like logging set-up)."""
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


@contextlib.contextmanager
def startup_objects_frozen() -> Iterator[None]:
    """Leave the objects alive now out of every collection while the block runs.

    For one-shot commands (``sfamp backfill``, ``sfamp reconcile``), around the whole
    run. They run a full collection per result page
    (:func:`pipeline.runtime.backfill.read.collect_page_garbage`), and a full
    collection walks every tracked object: the modules, classes and schemas of the
    interpreter (about 100,000) as much as the page's own garbage. Frozen
    (``gc.freeze``), they are skipped: 30-50 ms a page became about 11 ms in
    ``benchmarks/trace_backfill.py``. Garbage is collected first, so none is frozen
    with them, and they are handed back to the collector afterwards
    (``gc.unfreeze``). Not for a long-running service: what it frees later among
    them would wait for the unfreeze.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
