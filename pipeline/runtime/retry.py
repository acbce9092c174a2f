"""Backoff between attempts of a long-running loop: grows, jitters, never spins."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """``next()`` gives 1 s, 2 s, 4 s ... up to ``ceiling``, each with ±20 % jitter."""

    first: float = 1.0
    ceiling: float = 60.0
    attempts: int = field(default=0, init=False)

    def next(self) -> float:
        delay = min(self.ceiling, self.first * 2.0**self.attempts)
        self.attempts += 1
        jitter: float = random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
        return delay * jitter

    def reset(self) -> None:
        self.attempts = 0
