"""A client that goes away mid-request is no error of the sandboxes'."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from sfamp_sandbox.amplitude.identify import IdentifyLimits
from sfamp_sandbox.amplitude.server import build_app as amplitude_app
from sfamp_sandbox.amplitude.state import SandboxState as AmplitudeState
from sfamp_sandbox.disconnects import client_gone
from sfamp_sandbox.salesforce.app import build_app as salesforce_app
from sfamp_sandbox.salesforce.server import SalesforceSandbox


async def test_a_body_cut_short_is_answered_without_an_error_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled = asyncio.Event()

    async def read_body(request: web.Request) -> web.Response:
        try:
            await request.read()
        finally:
            handled.set()
        return web.Response(text="read")

    app = web.Application(middlewares=[client_gone])
    app.router.add_post("/upload", read_body)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
        await writer.drain()
        writer.close()  # 997 bytes short
        await asyncio.wait_for(handled.wait(), timeout=10)
        await asyncio.wait_for(reader.read(), timeout=10)  # the server closed its end too
    finally:
        await runner.cleanup()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def test_both_sandboxes_answer_a_client_that_went_away_quietly() -> None:
    amplitude = amplitude_app(AmplitudeState(), IdentifyLimits(), asyncio.Event())
    salesforce = salesforce_app(SalesforceSandbox().state)
    assert client_gone in amplitude.middlewares
    assert client_gone in salesforce.middlewares
