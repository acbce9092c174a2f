"""All three stand-ins at once: the embedded broker, the Salesforce and the Amplitude sandbox.

``sfamp sandbox up`` and ``sfamp demo`` run this stack; its :meth:`environment`
is the set of ``SFAMP_*`` variables that point sfamp at it, the same names a
production deployment sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from pipeline.config.settings import Settings
from pipeline.sandbox.amplitude import US_API_KEY, AmplitudeSandbox
from pipeline.sandbox.kafka import EmbeddedKafka
from pipeline.sandbox.salesforce import SalesforceSandbox

SANDBOX_CLIENT_ID = "sandbox-client"
SANDBOX_CLIENT_SECRET = "sandbox-secret"  # noqa: S105 - the sandbox's documented credential
SANDBOX_USERNAME = "admin@sandbox.example"
SANDBOX_PASSWORD = "sandbox"  # noqa: S105 - the sandbox's documented credential


@dataclass
class SandboxStack:
    """Start with ``async with SandboxStack(...) as stack``; ports 0 pick free ones.

    ``kafka_bootstrap`` uses an existing broker instead of starting the embedded one.
    """

    host: str = "127.0.0.1"
    kafka_port: int = 0
    salesforce_port: int = 0
    amplitude_port: int = 0
    kafka_bootstrap: str | None = None
    salesforce_options: dict[str, Any] = field(default_factory=dict)
    amplitude_options: dict[str, Any] = field(default_factory=dict)
    kafka: EmbeddedKafka | None = field(default=None, init=False)
    salesforce: SalesforceSandbox | None = field(default=None, init=False)
    amplitude: AmplitudeSandbox | None = field(default=None, init=False)

    async def start(self) -> SandboxStack:
        try:
            if self.kafka_bootstrap is None:
                self.kafka = await EmbeddedKafka(self.kafka_port, host=self.host).start()
                self.kafka_bootstrap = self.kafka.bootstrap_servers
            options = {"api_max": 5_000_000, **self.salesforce_options}
            self.salesforce = SalesforceSandbox(self.host, self.salesforce_port, **options)
            await self.salesforce.start()
            self.amplitude = AmplitudeSandbox(
                self.host, self.amplitude_port, **self.amplitude_options
            )
            await self.amplitude.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        if self.amplitude is not None:
            await self.amplitude.stop()
        if self.salesforce is not None:
            await self.salesforce.stop()
        if self.kafka is not None:
            self.kafka.stop()

    def environment(self, topic_prefix: str = "sfamp") -> dict[str, str]:
        """The ``SFAMP_*`` variables that point sfamp at this stack."""
        assert self.salesforce is not None
        assert self.amplitude is not None
        assert self.kafka_bootstrap is not None
        return {
            "SFAMP_SALESFORCE__LOGIN_URL": self.salesforce.base_url,
            "SFAMP_SALESFORCE__AUTH_FLOW": "password",
            "SFAMP_SALESFORCE__CLIENT_ID": SANDBOX_CLIENT_ID,
            "SFAMP_SALESFORCE__CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
            "SFAMP_SALESFORCE__USERNAME": SANDBOX_USERNAME,
            "SFAMP_SALESFORCE__PASSWORD": SANDBOX_PASSWORD,
            "SFAMP_KAFKA__BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "SFAMP_KAFKA__TOPIC_PREFIX": topic_prefix,
            "SFAMP_AMPLITUDE__API_KEY": US_API_KEY,
            "SFAMP_AMPLITUDE__BASE_URL": self.amplitude.base_url,
        }

    def settings(self, topic_prefix: str = "sfamp", **sections: dict[str, Any]) -> Settings:
        """Settings for this stack, without reading the process environment or ``.env``."""
        assert self.salesforce is not None
        assert self.amplitude is not None
        assert self.kafka_bootstrap is not None
        salesforce = {
            "login_url": self.salesforce.base_url,
            "auth_flow": "password",
            "client_id": SANDBOX_CLIENT_ID,
            "client_secret": SANDBOX_CLIENT_SECRET,
            "username": SANDBOX_USERNAME,
            "password": SANDBOX_PASSWORD,
            **sections.get("salesforce", {}),
        }
        kafka = {
            "bootstrap_servers": self.kafka_bootstrap,
            "topic_prefix": topic_prefix,
            **sections.get("kafka", {}),
        }
        amplitude = {
            "api_key": US_API_KEY,
            "base_url": self.amplitude.base_url,
            **sections.get("amplitude", {}),
        }
        runtime = {"health_port": 0, **sections.get("runtime", {})}
        return Settings(
            _env_file=None,
            salesforce=salesforce,
            kafka=kafka,
            amplitude=amplitude,
            runtime=runtime,
        )

    async def __aenter__(self) -> SandboxStack:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
