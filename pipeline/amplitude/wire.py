"""How planned chunks travel: the request body, splits, and what an answer says per item.

One ``Wire`` per transport; ``Delivery`` drives either the same way.

- ``FormWire``: ``/groupidentify``, form-encoded identifications. A 400 names no
  identification, so a refused request is bisected to find the bad one.
- ``EventWire`` (in :mod:`pipeline.amplitude.httpapi`): ``/2/httpapi``,
  ``$groupidentify`` events. A 400 lists the failing events by index, a 429
  the throttled ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from pipeline.amplitude.planning import Chunk, make_chunk


class Wire(Protocol):
    url: str
    content_type: str

    def body(self, chunk: Chunk) -> bytes: ...

    def halves(self, chunk: Chunk) -> tuple[Chunk, Chunk]: ...

    def pick(self, chunk: Chunk, indexes: Iterable[int]) -> Chunk: ...

    def refused_items(self, chunk: Chunk, text: str) -> dict[int, str]:
        """Index -> reason for the items a 400 names; empty when it names none."""
        ...

    def throttled_items(self, chunk: Chunk, text: str) -> set[int]:
        """Indexes a 429 names as throttled; empty when it names none (all are)."""
        ...


class FormWire:
    """``/groupidentify``: ``api_key=...&identification=[...]``, form-encoded."""

    content_type = "application/x-www-form-urlencoded"

    def __init__(self, url: str, prefix: bytes) -> None:
        self.url = url
        self.prefix = prefix

    def body(self, chunk: Chunk) -> bytes:
        return chunk.body(self.prefix)

    def halves(self, chunk: Chunk) -> tuple[Chunk, Chunk]:
        return chunk.halves(len(self.prefix))

    def pick(self, chunk: Chunk, indexes: Iterable[int]) -> Chunk:
        return make_chunk([chunk.items[i] for i in indexes], len(self.prefix))

    def refused_items(self, chunk: Chunk, text: str) -> dict[int, str]:
        return {}

    def throttled_items(self, chunk: Chunk, text: str) -> set[int]:
        return set()
