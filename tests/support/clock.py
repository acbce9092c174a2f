"""A clock that stands still until a test moves it."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class FakeClock(Generic[T]):
    """Call it for the time; set ``now`` to move it (epoch seconds or a datetime)."""

    def __init__(self, now: T) -> None:
        self.now = now

    def __call__(self) -> T:
        return self.now
