"""Fixtures for the Group Identify client: the sandbox and settings pointing at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pipeline.config.settings import AmplitudeSettings
from sfamp_sandbox.amplitude import US_API_KEY, AmplitudeSandbox


@pytest.fixture
async def amplitude_sandbox() -> AsyncIterator[AmplitudeSandbox]:
    async with AmplitudeSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def sandbox_settings(amplitude_sandbox: AmplitudeSandbox) -> AmplitudeSettings:
    """US key against the sandbox; short timeouts and waits so retries cost little time."""
    return AmplitudeSettings(
        api_key=US_API_KEY,
        transport="groupidentify",
        base_url=amplitude_sandbox.base_url,
        timeout_seconds=5,
        retry_deadline_seconds=30,
        min_429_wait_seconds=0.05,
    )
