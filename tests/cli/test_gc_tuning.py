"""Every sfamp process collects garbage at the tuned thresholds, not CPython's defaults."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref

from pipeline.gc_tuning import OLDER_THRESHOLDS, YOUNG_THRESHOLD, startup_objects_frozen

PROBE = """
import gc, sys
from pipeline.cli import main
sys.argv = ["sfamp", "--version"]
try:
    main()
except SystemExit:
    pass
print(gc.get_threshold())
"""


def test_the_cli_tunes_the_collector() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    assert out.strip().splitlines()[-1] == str((YOUNG_THRESHOLD, *OLDER_THRESHOLDS))
    assert YOUNG_THRESHOLD > 700  # CPython's default, which the tuning exists to raise


def test_startup_objects_are_frozen_for_the_block_and_handed_back() -> None:
    assert gc.get_freeze_count() == 0
    with startup_objects_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the interpreter's modules, classes and functions
        ref = weakref.ref(Cyclic())
        gc.collect()  # garbage made inside the block is still collected
        assert ref() is None
    assert gc.get_freeze_count() == 0  # nothing stays frozen for good


class Cyclic:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it
