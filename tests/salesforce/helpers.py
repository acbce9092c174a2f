"""Helpers shared by the Salesforce adapter tests: sandbox settings, control calls, a fake sleep."""

from __future__ import annotations

from typing import Any

import httpx

from pipeline.config.settings import SalesforceSettings
from sfamp_sandbox.salesforce import SalesforceSandbox

CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-secret"
USERNAME = "admin@sandbox.example"
PASSWORD = "sandbox"
REFRESH_TOKEN = "sandbox-refresh-token"


class Sleeps:
    """A sleep that takes no time and remembers what it was asked to wait."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def sandbox_settings(sandbox: SalesforceSandbox, **overrides: Any) -> SalesforceSettings:
    """Password-flow settings for the sandbox; ``overrides`` change any field."""
    values: dict[str, Any] = {
        "login_url": sandbox.base_url,
        "auth_flow": "password",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "username": USERNAME,
        "password": PASSWORD,
        "timeout_seconds": 10,
    }
    values.update(overrides)
    return SalesforceSettings(**values)


async def seed(control: httpx.AsyncClient, sfdc_object: str, count: int) -> list[str]:
    response = await control.post("/__sandbox/seed", json={"object": sfdc_object, "count": count})
    response.raise_for_status()
    ids: list[str] = response.json()["ids"]
    return ids


async def fault(control: httpx.AsyncClient, kind: str, count: int = 1) -> None:
    response = await control.post("/__sandbox/faults", json={"kind": kind, "count": count})
    response.raise_for_status()
