"""The Salesforce sandbox, started in-process on a free port for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from sfamp_sandbox.salesforce import SalesforceSandbox

CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-secret"
USERNAME = "admin@sandbox.example"
PASSWORD = "sandbox"
API = "/services/data/v62.0"


@pytest.fixture
async def salesforce_sandbox() -> AsyncIterator[SalesforceSandbox]:
    """A started sandbox with an empty org; Bulk jobs complete without delay."""
    async with SalesforceSandbox(bulk_job_seconds=0.0) as sandbox:
        yield sandbox


@pytest.fixture
async def sf_token(salesforce_sandbox: SalesforceSandbox) -> str:
    """An access token from the password grant."""
    async with httpx.AsyncClient(base_url=salesforce_sandbox.base_url, timeout=10) as client:
        response = await client.post(
            "/services/oauth2/token",
            data={
                "grant_type": "password",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "username": USERNAME,
                "password": PASSWORD,
            },
        )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


@pytest.fixture
async def sf_http(
    salesforce_sandbox: SalesforceSandbox, sf_token: str
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the sandbox that sends a valid bearer token."""
    async with httpx.AsyncClient(
        base_url=salesforce_sandbox.base_url,
        headers={"Authorization": f"Bearer {sf_token}"},
        timeout=10,
    ) as client:
        yield client
