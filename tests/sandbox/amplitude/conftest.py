"""The Amplitude sandbox, started in-process on a free port for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from sfamp_sandbox.amplitude import AmplitudeSandbox


@pytest.fixture
async def amplitude_sandbox() -> AsyncIterator[AmplitudeSandbox]:
    async with AmplitudeSandbox() as sandbox:
        yield sandbox


@pytest.fixture
async def http(amplitude_sandbox: AmplitudeSandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=amplitude_sandbox.base_url, timeout=10) as client:
        yield client
