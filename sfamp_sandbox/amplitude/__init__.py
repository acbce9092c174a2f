"""A local Amplitude that speaks the real ingestion APIs.

``/groupidentify``, ``/2/httpapi`` and ``/batch`` with Amplitude's documented
limits, answers and property operations; US keys at the root, EU keys under
``/eu``; plus test-only read-back, request log and fault injection under
``/__sandbox``. See ``AmplitudeSandbox`` (in-process) and ``serve`` (CLI).
"""

from __future__ import annotations

from sfamp_sandbox.amplitude.identify import IdentifyLimits
from sfamp_sandbox.amplitude.server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    AmplitudeSandbox,
    build_app,
    serve,
)
from sfamp_sandbox.amplitude.state import EU_API_KEY, SECRET_KEY, US_API_KEY, SandboxState

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "EU_API_KEY",
    "SECRET_KEY",
    "US_API_KEY",
    "AmplitudeSandbox",
    "IdentifyLimits",
    "SandboxState",
    "build_app",
    "serve",
]
