"""The emulator clock: real time plus an offset that the control API moves forward."""

from __future__ import annotations

import time


class SandboxClock:
    """Epoch seconds as the org sees them; ``advance`` jumps ahead without waiting."""

    def __init__(self, offset_seconds: float = 0.0) -> None:
        self._offset = offset_seconds

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        """Move the clock forward (never backward) and return the new now."""
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        self._offset += seconds
        return self.now()
