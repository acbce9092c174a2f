"""Backoff between attempts of a long-running loop: grows, jitters, never spins."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pipeline.backoff import exponential_delay


@dataclass
class Backoff:
    """``next()`` gives 1 s, 2 s, 4 s ... up to ``ceiling``, each with ±20 % jitter."""

    first: float = 1.0
    ceiling: float = 60.0
    attempts: int = field(default=0, init=False)

    def next(self) -> float:
        jitter = random.random()  # noqa: S311 - jitter, not security
        delay = exponential_delay(
            self.attempts, jitter, first=self.first, ceiling=self.ceiling, kind="proportional"
        )
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0
