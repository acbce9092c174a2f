"""Every HTTPS client shares one verified TLS context (pipeline/tls.py)."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from pipeline.amplitude import AmplitudeClient
from pipeline.config.settings import AmplitudeSettings, SalesforceSettings
from pipeline.runtime.status_report import service_status
from pipeline.salesforce.client import SalesforceClient
from pipeline.tls import verified_context


def test_the_context_verifies_and_is_built_once() -> None:
    context = verified_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert verified_context() is context


async def test_clients_load_no_ca_bundle_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    verified_context()  # the process's one load
    loads: list[Any] = []
    load = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append((args, kwargs))
        load(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    async with SalesforceClient.from_settings(SalesforceSettings()):
        pass
    async with AmplitudeClient(AmplitudeSettings(api_key="key")):
        pass
    answer = await service_status("http://127.0.0.1:9")  # nothing listens: an error answer
    assert "error" in answer
    assert loads == [], f"clients loaded CA bundles of their own: {loads}"
