"""A "broker" that accepts connections and never answers: a Kafka that hangs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class SilentKafka:
    """Where it listens, and whether a client has connected yet."""

    bootstrap: str
    connected: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def silent_kafka() -> AsyncIterator[SilentKafka]:
    """Listen on a free port until the block ends; each client is held until it goes."""
    silent: SilentKafka | None = None

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert silent is not None
        silent.connected.set()
        await reader.read()  # until the client goes
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    silent = SilentKafka(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        yield silent
    finally:
        server.close()
