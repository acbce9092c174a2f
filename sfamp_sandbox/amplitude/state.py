"""What the Amplitude sandbox remembers: projects, groups, history, requests, faults.

Plain synchronous objects; the HTTP layer calls them and tests may read them
directly (``AmplitudeSandbox.state``). Every collection is bounded.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sfamp_sandbox.amplitude.operations import apply_operations
from sfamp_sandbox.fault_limits import fault_count, fault_delay
from sfamp_sandbox.latency import Latency

Region = Literal["us", "eu"]
US_API_KEY = "sandbox-api-key"
EU_API_KEY = "sandbox-eu-api-key"
SECRET_KEY = "sandbox-secret-key"  # noqa: S105 - the documented sandbox key
MAX_GROUP_TYPES = 5
HISTORY_PER_GROUP = 50
REQUEST_LOG_SIZE = 1000
INSERT_ID_MEMORY = 200_000
DEDUP_WINDOW_SECONDS = 7 * 24 * 3600
FAULT_KINDS = frozenset({"429", "500", "503", "timeout", "500_after_apply"})
MAX_QUEUED_FAULTS = 100


@dataclass(frozen=True, slots=True)
class Project:
    name: str
    region: Region
    api_key: str
    secret_key: str


DEFAULT_PROJECTS = (
    Project("sandbox-us", "us", US_API_KEY, SECRET_KEY),
    Project("sandbox-eu", "eu", EU_API_KEY, SECRET_KEY),
)


GroupKey = tuple[str, str]  # (group type, group value)
# One identification applied to a group: the stamp of its request (shared by every
# identification of that request) and its operations, as received.
Applied = tuple[dict[str, Any], dict[str, Any]]


class History(Mapping[GroupKey, list[dict[str, Any]]]):
    """Per group, its last ``HISTORY_PER_GROUP`` identifications as records, oldest first:
    ``{"request_id", "at", "path", "operations"}``. A read-only view, built when read."""

    __slots__ = ("_applied",)

    def __init__(self, applied: dict[GroupKey, list[Applied]]) -> None:
        self._applied = applied

    def __getitem__(self, key: GroupKey) -> list[dict[str, Any]]:
        return [{**stamp, "operations": operations} for stamp, operations in self._applied[key]]

    def __iter__(self) -> Iterator[GroupKey]:
        return iter(self._applied)

    def __len__(self) -> int:
        return len(self._applied)


@dataclass(slots=True)
class GroupStore:
    """The groups of one project (one region)."""

    groups: dict[GroupKey, dict[str, Any]] = field(default_factory=dict)
    # What ``history`` shows, kept as (stamp, operations) pairs in a list: a backfill
    # stores one per group, and a record dict in a deque took four times the memory.
    # Memory the sandbox touches for the first time costs it page faults, which made
    # it the slowest part of a benchmarked backfill (``benchmarks/trace_backfill.py``:
    # 580 MB for 200,000 groups before, 430 MB now; CPU 3.1 s before, 1.7 s now).
    applied: dict[GroupKey, list[Applied]] = field(default_factory=dict)
    group_types: set[str] = field(default_factory=set)
    ignored_group_types: set[str] = field(default_factory=set)
    seen_insert_ids: OrderedDict[tuple[str, str], float] = field(default_factory=OrderedDict)

    def apply(
        self, group_type: str, group_value: str, operations: dict[str, Any], entry: dict[str, Any]
    ) -> bool:
        """Apply operations to one group; False when its type is past the 5-type limit.

        Amplitude stops tracking past its limits instead of refusing the call, so a
        sixth group type is accepted and ignored.
        """
        if group_type not in self.group_types:
            if len(self.group_types) >= MAX_GROUP_TYPES:
                self.ignored_group_types.add(group_type)
                return False
            self.group_types.add(group_type)
        key = (group_type, group_value)
        properties = self.groups.get(key)
        if properties is None:
            properties = self.groups[key] = {}
        apply_operations(properties, operations)
        applied = self.applied.get(key)
        if applied is None:
            self.applied[key] = [(entry, operations)]
        else:
            applied.append((entry, operations))
            if len(applied) > HISTORY_PER_GROUP:
                del applied[0]
        return True

    @property
    def history(self) -> History:
        """Per group, its last identifications as records (see :class:`History`)."""
        return History(self.applied)

    def first_seen(self, device_id: str, insert_id: str, now: float) -> bool:
        """True unless this insert id was seen (for this device) within the dedup window."""
        key = (device_id, insert_id)
        seen_ids = self.seen_insert_ids
        seen = seen_ids.get(key)
        if seen is not None:
            if now - seen < DEDUP_WINDOW_SECONDS:
                return False
            seen_ids.move_to_end(key)  # a new key is added at the end already
        seen_ids[key] = now
        while len(seen_ids) > INSERT_ID_MEMORY:
            seen_ids.popitem(last=False)
        return True


@dataclass(slots=True)
class Fault:
    """A scripted answer for the next ``remaining`` ingestion calls."""

    kind: str
    remaining: int = 1
    delay_seconds: float = 60.0
    retry_after: float | None = None
    path: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "remaining": self.remaining,
            "delay_seconds": self.delay_seconds,
            "retry_after": self.retry_after,
            "path": self.path,
        }


def parse_fault(payload: object) -> Fault:
    """Read a ``POST /__sandbox/faults`` body; ValueError names what is wrong."""
    if not isinstance(payload, dict):
        raise ValueError("body must be a JSON object")
    kind = str(payload.get("kind"))
    if kind not in FAULT_KINDS:
        raise ValueError(f"kind must be one of {sorted(FAULT_KINDS)}")
    count, delay = payload.get("count", 1), payload.get("delay_seconds", 60.0)
    retry_after, path = payload.get("retry_after"), payload.get("path")
    count, delay = fault_count(count), fault_delay(delay)
    if retry_after is not None and (not isinstance(retry_after, int | float) or retry_after < 0):
        raise ValueError("retry_after must be a non-negative number")
    if path is not None and not isinstance(path, str):
        raise ValueError("path must be a string such as /groupidentify")
    return Fault(kind, count, delay, retry_after, path)


@dataclass(slots=True)
class SandboxState:
    """Everything the emulator holds; :meth:`reset` empties it all but the projects and the
    simulated latency (settings, not data)."""

    projects: tuple[Project, ...] = DEFAULT_PROJECTS
    stores: dict[str, GroupStore] = field(default_factory=dict)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE))
    faults: deque[Fault] = field(default_factory=lambda: deque(maxlen=MAX_QUEUED_FAULTS))
    request_count: int = 0
    latency: Latency = field(default_factory=Latency)
    # Group values refused as an invalid ``groups`` field (POST /__sandbox/blocked), besides
    # the ones the sandbox was started with (IdentifyLimits.blocked_group_values).
    blocked_group_values: set[str] = field(default_factory=set)

    def project_for(self, api_key: str | None, region: Region) -> Project | None:
        """The project of a key, only on its own region's endpoints (else: invalid key)."""
        for project in self.projects:
            if project.api_key == api_key and project.region == region:
                return project
        return None

    def key_pair_valid(self, api_key: str, secret_key: str, region: Region) -> bool:
        project = self.project_for(api_key, region)
        return project is not None and project.secret_key == secret_key

    def store(self, region: str) -> GroupStore:
        return self.stores.setdefault(region, GroupStore())

    def add_fault(self, fault: Fault) -> None:
        self.faults.append(fault)

    def take_fault(self, path: str) -> Fault | None:
        """Consume one use of the first queued fault that applies to ``path``."""
        for fault in self.faults:
            if fault.path in (None, path):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def next_request_id(self) -> int:
        self.request_count += 1
        return self.request_count

    def log_request(self, entry: dict[str, Any]) -> None:
        self.requests.append(entry)

    def recent_requests(self, limit: int) -> list[dict[str, Any]]:
        return list(self.requests)[-limit:] if limit > 0 else []

    def reset(self) -> None:
        self.stores.clear()
        self.requests.clear()
        self.faults.clear()
        self.blocked_group_values.clear()
        self.request_count = 0


def request_entry(request_id: int, method: str, path: str, region: str) -> dict[str, Any]:
    return {
        "id": request_id,
        "at": time.time(),
        "method": method,
        "path": path,
        "region": region,
    }


def group_listing(
    store: GroupStore, group_type: str | None, limit: int
) -> tuple[int, list[dict[str, str]]]:
    keys: Iterable[tuple[str, str]] = store.groups
    if group_type is not None:
        keys = [key for key in store.groups if key[0] == group_type]
    keys = list(keys)
    shown = [{"group_type": t, "group_value": v} for t, v in keys[:limit]]
    return len(keys), shown
