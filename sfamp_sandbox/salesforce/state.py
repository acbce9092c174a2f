"""Everything one running sandbox holds, shared by its route handlers through the app."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from sfamp_sandbox.latency import Latency
from sfamp_sandbox.salesforce.api_error import (
    ApiError,
    invalid_session,
    request_limit_exceeded,
)
from sfamp_sandbox.salesforce.cdc import ChangeEventLog
from sfamp_sandbox.salesforce.clock import SandboxClock
from sfamp_sandbox.salesforce.oauth import Session, SessionStore
from sfamp_sandbox.salesforce.org import Org

if TYPE_CHECKING:
    from sfamp_sandbox.salesforce.bulk import BulkJobs
    from sfamp_sandbox.salesforce.cometd import CometdServer
    from sfamp_sandbox.salesforce.rest import QueryCursors

REST_FAULTS = frozenset({"http_500", "http_503", "request_limit", "slow"})
COMETD_FAULTS = frozenset({"drop_long_poll", "unknown_client", "expire_sessions"})
MAX_PENDING_FAULTS = 1000


@dataclass(slots=True)
class ApiUsage:
    """The rolling 24 h API request allocation, echoed in ``Sforce-Limit-Info``."""

    max: int = 15_000
    used: int = 0

    def charge(self) -> None:
        if self.used >= self.max:
            raise request_limit_exceeded()
        self.used += 1

    @property
    def header(self) -> str:
        return f"api-usage={self.used}/{self.max}"


@dataclass(slots=True)
class Fault:
    kind: str
    remaining: int
    delay_seconds: float = 0.0


@dataclass(slots=True)
class FaultPlan:
    """Scripted failures for the next REST/Bulk requests, consumed in the order added."""

    pending: deque[Fault] = field(default_factory=deque)

    def add(self, kind: str, count: int, delay_seconds: float) -> None:
        if len(self.pending) >= MAX_PENDING_FAULTS:
            raise ValueError("too many pending faults")
        self.pending.append(Fault(kind, count, delay_seconds))

    def take(self) -> Fault | None:
        while self.pending and self.pending[0].remaining <= 0:
            self.pending.popleft()
        if not self.pending:
            return None
        fault = self.pending[0]
        fault.remaining -= 1
        return fault

    async def apply(self, usage: ApiUsage) -> None:
        """Raise or delay as the next pending fault says; no-op when none is pending."""
        fault = self.take()
        if fault is None:
            return
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay_seconds or 1.0)
        elif fault.kind == "http_500":
            raise ApiError(
                500,
                "UNKNOWN_EXCEPTION",
                "An unexpected error occurred. Please"
                " include this ErrorId if you contact support: 1957271213-1 (-1)",
            )
        elif fault.kind == "http_503":
            raise ApiError(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable")
        elif fault.kind == "request_limit":
            raise request_limit_exceeded()


@dataclass(slots=True)
class SandboxState:
    clock: SandboxClock
    org: Org
    events: ChangeEventLog
    sessions: SessionStore
    cursors: QueryCursors
    jobs: BulkJobs
    usage: ApiUsage = field(default_factory=ApiUsage)
    faults: FaultPlan = field(default_factory=FaultPlan)
    cometd: CometdServer | None = None
    options: dict[str, Any] = field(default_factory=dict)
    latency: Latency = field(default_factory=Latency)


STATE = web.AppKey("sfamp_salesforce_sandbox", SandboxState)


def json_response(
    body: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="UTF-8",
    )


def error_response(error: ApiError) -> web.Response:
    return json_response(error.body(), error.status)


def session_of(request: web.Request) -> Session:
    """The session of this request (the API middleware has already checked it)."""
    session = request.app[STATE].sessions.lookup(request.headers.get("Authorization"))
    if session is None:
        raise invalid_session()
    return session
