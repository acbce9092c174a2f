"""The Salesforce sandbox on a free port, and settings and a client that log in to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from pipeline.config.settings import SalesforceSettings
from pipeline.salesforce.client import SalesforceClient
from sfamp_sandbox.salesforce import SalesforceSandbox
from tests.salesforce.helpers import Sleeps, sandbox_settings


@pytest.fixture
async def salesforce_sandbox() -> AsyncIterator[SalesforceSandbox]:
    """A started sandbox with an empty org; Bulk jobs complete without delay."""
    async with SalesforceSandbox(bulk_job_seconds=0.0) as sandbox:
        yield sandbox


@pytest.fixture
def sf_settings(salesforce_sandbox: SalesforceSandbox) -> SalesforceSettings:
    return sandbox_settings(salesforce_sandbox)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def sf_client(
    sf_settings: SalesforceSettings, sleeps: Sleeps
) -> AsyncIterator[SalesforceClient]:
    async with SalesforceClient.from_settings(sf_settings, sleep=sleeps) as client:
        yield client


@pytest.fixture
async def control(salesforce_sandbox: SalesforceSandbox) -> AsyncIterator[httpx.AsyncClient]:
    """The sandbox's control API (``/__sandbox/...``, no auth)."""
    async with httpx.AsyncClient(base_url=salesforce_sandbox.base_url, timeout=30) as client:
        yield client
