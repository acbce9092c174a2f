"""What a delivery did (or, for a dry run, would do)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pipeline.amplitude.planning import Chunk
from pipeline.transform.group_update import GroupUpdate


@dataclass(frozen=True, slots=True)
class Rejection:
    """One identification Amplitude refused, with its answer (for the DLQ)."""

    update: GroupUpdate
    reason: str
    status: int


@dataclass(slots=True)
class DeliveryReport:
    """Outcome of one ``send``: every non-empty update is delivered or rejected."""

    delivered: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    skipped: int = 0
    requests: int = 0
    bytes_sent: int = 0
    retries: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    concurrency: int = 0  # requests allowed in flight when the send ended (adaptive)
    # Values cut to Amplitude's 1,024 characters, per (group type, property).
    truncated: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def all_delivered(self) -> bool:
        return not self.rejected


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    identifications: int
    property_keys: int
    bytes: int


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    """The requests a ``send`` of the same updates starts with (before any split)."""

    url: str
    requests: tuple[PlannedRequest, ...]
    skipped: int

    @property
    def identifications(self) -> int:
        return sum(request.identifications for request in self.requests)

    @property
    def total_bytes(self) -> int:
        return sum(request.bytes for request in self.requests)

    @classmethod
    def from_chunks(cls, url: str, chunks: list[Chunk], skipped: int) -> DeliveryPlan:
        requests = tuple(
            PlannedRequest(len(chunk), chunk.property_keys, chunk.body_bytes) for chunk in chunks
        )
        return cls(url, requests, skipped)


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """Result of :meth:`AmplitudeClient.verify_api_key` (a refused key raises instead)."""

    accepted: bool
    url: str
    status: int
    detail: str
