"""The world outside the console, as the browser tests touch it: a user editing a record
through Salesforce's REST API, Amplitude's read-back of group properties, and the
``sfamp`` command line for comparisons."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx

from pipeline.sandbox_stack import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
)

API = "/services/data/v62.0"


class SalesforceRest:
    """Records created and edited through the REST API, signed in as the sandbox's user."""

    def __init__(self, login_url: str) -> None:
        self.login_url = login_url

    async def _client(self) -> httpx.AsyncClient:
        async with httpx.AsyncClient(base_url=self.login_url, timeout=10) as http:
            answer = await http.post(
                "/services/oauth2/token",
                data={
                    "grant_type": "password",
                    "client_id": SANDBOX_CLIENT_ID,
                    "client_secret": SANDBOX_CLIENT_SECRET,
                    "username": SANDBOX_USERNAME,
                    "password": SANDBOX_PASSWORD,
                },
            )
        assert answer.status_code == 200, answer.text
        token = answer.json()
        return httpx.AsyncClient(
            base_url=token["instance_url"] + API,
            headers={"Authorization": f"Bearer {token['access_token']}"},
            timeout=10,
        )

    async def create(self, sobject: str, **fields: Any) -> str:
        async with await self._client() as http:
            answer = await http.post(f"/sobjects/{sobject}", json=fields)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def update(self, sobject: str, record_id: str, **fields: Any) -> None:
        async with await self._client() as http:
            answer = await http.patch(f"/sobjects/{sobject}/{record_id}", json=fields)
        assert answer.status_code == 204, answer.text


async def hide_field(salesforce_url: str, sobject: str, field: str, *, hidden: bool) -> None:
    """Field-level security in the org: the integration user can no longer read ``field``."""
    async with httpx.AsyncClient(base_url=salesforce_url, timeout=10) as http:
        answer = await http.post(
            "/__sandbox/field-security",
            json={"object": sobject, "field": field, "readable": not hidden},
        )
    assert answer.status_code < 300, answer.text


async def amplitude_group(amplitude_url: str, group_type: str, value: str) -> dict[str, Any]:
    """The properties Amplitude holds for one group ({} while it has none)."""
    async with httpx.AsyncClient(base_url=amplitude_url, timeout=10) as http:
        answer = await http.get(f"/__sandbox/groups/{group_type}/{value}")
    if answer.status_code == 404:
        return {}
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["properties"])


async def sfamp(env: dict[str, str], cwd: Path, *args: str) -> str:
    """``sfamp ARGS``; its standard output, after asserting it succeeded."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, f"sfamp {' '.join(args)} failed: {err.decode()[-2000:]}"
    return out.decode()
