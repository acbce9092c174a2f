"""Whether a Kafka cluster answers: metadata requests over a client of their own.

Used by a running service (``pipeline.runtime.kafka_watch``) to tell a lost Kafka from a
quiet one. A client of its own leaves the producer's connections, and the lock aiokafka
holds while it opens one, to the producer.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError as AIOKafkaError

from pipeline.config.settings import KafkaSettings
from pipeline.errors import KafkaUnavailableError
from pipeline.kafka.connection import bootstrap_through_cancel, client_options, describe_failure

PER_BROKER_SECONDS: Final = 3.0  # a broker that takes longer is passed over for the next


class MetadataProbe:
    """Metadata requests over a client of its own, connected at the first one.

    :meth:`cluster_answers` raises :class:`KafkaUnavailableError` when no broker answered
    in time; whoever makes one calls :meth:`aclose`.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._client: AIOKafkaClient | None = None

    async def cluster_answers(self, timeout_seconds: float) -> None:
        try:
            async with asyncio.timeout(timeout_seconds):
                client = self._client or await self._connected()
                await client.fetch_all_metadata()
        except (AIOKafkaError, OSError, TimeoutError) as exc:
            reason = describe_failure(exc, timeout_seconds)
            raise KafkaUnavailableError(f"no broker answers a metadata request: {reason}") from exc

    async def _connected(self) -> AIOKafkaClient:
        options = client_options(self._settings)
        options["request_timeout_ms"] = int(PER_BROKER_SECONDS * 1000)
        client = AIOKafkaClient(**options)
        # A cancel waits for the bootstrap to end by itself (each bootstrap server is given
        # PER_BROKER_SECONDS to connect, to name its versions and to answer): cancelled
        # while it asks for metadata, aiokafka would leave its connection open.
        servers = len(self._settings.bootstrap_servers.split(","))
        try:
            await bootstrap_through_cancel(client, within=3 * PER_BROKER_SECONDS * servers)
        except BaseException:
            await client.close()
            raise
        self._client = client
        return client

    async def aclose(self) -> None:
        """Close the client's connections (a probe never asked has none)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()
