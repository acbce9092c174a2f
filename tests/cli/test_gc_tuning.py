"""Every sfamp process collects garbage at the tuned thresholds, not CPython's defaults."""

from __future__ import annotations

import subprocess
import sys

from pipeline.gc_tuning import OLDER_THRESHOLDS, YOUNG_THRESHOLD

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
