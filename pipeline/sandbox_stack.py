"""All three stand-ins at once: the embedded broker, the Salesforce and the Amplitude sandbox.

``sfamp sandbox up`` and ``sfamp demo`` run this stack; its :meth:`environment`
is the set of ``SFAMP_*`` variables that point sfamp at it, the same names a
production deployment sets.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Protocol

from pipeline.config.settings import ConsoleSettings, RuntimeSettings, Settings
from pipeline.errors import KafkaUnavailableError, ListenError
from pipeline.runtime.listen import bind_error
from sfamp_sandbox.amplitude import SECRET_KEY, US_API_KEY, AmplitudeSandbox
from sfamp_sandbox.kafka import EmbeddedKafka, EmbeddedKafkaError, free_port
from sfamp_sandbox.salesforce import SalesforceSandbox

SANDBOX_CLIENT_ID = "sandbox-client"
SANDBOX_CLIENT_SECRET = "sandbox-secret"  # noqa: S105 - the sandbox's documented credential
SANDBOX_USERNAME = "admin@sandbox.example"
SANDBOX_PASSWORD = "sandbox"  # noqa: S105 - the sandbox's documented credential
OTHER_HOST = "choose another address with --host"


def export_lines(variables: dict[str, str]) -> str:
    """Shell ``export NAME=value`` lines, values quoted for the shell."""
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in variables.items())


def salesforce_environment(login_url: str) -> dict[str, str]:
    """The ``SFAMP_SALESFORCE__*`` variables that log in to the Salesforce sandbox at
    ``login_url`` with its documented password-flow credentials."""
    return {
        "SFAMP_SALESFORCE__LOGIN_URL": login_url,
        "SFAMP_SALESFORCE__AUTH_FLOW": "password",
        "SFAMP_SALESFORCE__CLIENT_ID": SANDBOX_CLIENT_ID,
        "SFAMP_SALESFORCE__CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
        "SFAMP_SALESFORCE__USERNAME": SANDBOX_USERNAME,
        "SFAMP_SALESFORCE__PASSWORD": SANDBOX_PASSWORD,
    }


# The embedded broker answers a group join after half the session timeout: 6 s lets
# deliver start in about 3 s instead of 15 (what `sandbox up` and `sandbox kafka` export).
EMBEDDED_KAFKA_TUNING: Final = {"SFAMP_KAFKA__CONSUMER_SESSION_TIMEOUT_SECONDS": "6"}


def amplitude_environment(base_url: str) -> dict[str, str]:
    """The ``SFAMP_AMPLITUDE__*`` variables for the Amplitude sandbox at ``base_url``: its
    US project's keys, the secret one included (``config verify`` checks the pair)."""
    return {
        "SFAMP_AMPLITUDE__BASE_URL": base_url,
        "SFAMP_AMPLITUDE__API_KEY": US_API_KEY,
        "SFAMP_AMPLITUDE__SECRET_KEY": SECRET_KEY,
    }


class _Server(Protocol):
    """A stand-in started on ``port`` (0: one it picks, set once it listens)."""

    port: int

    def start(self) -> Awaitable[object]: ...


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
        """Start all three; a taken port raises :class:`ListenError` naming its option."""
        try:
            if self.kafka_bootstrap is None:
                kafka = EmbeddedKafka(self.kafka_port, host=self.host)
                await self._listen("embedded Kafka broker", kafka, "kafka")
                self.kafka, self.kafka_bootstrap = kafka, kafka.bootstrap_servers
            options = {"api_max": 5_000_000, **self.salesforce_options}
            self.salesforce = SalesforceSandbox(self.host, self.salesforce_port, **options)
            await self._listen("Salesforce sandbox", self.salesforce, "salesforce")
            self.amplitude = AmplitudeSandbox(
                self.host, self.amplitude_port, **self.amplitude_options
            )
            await self._listen("Amplitude sandbox", self.amplitude, "amplitude")
        except BaseException:
            await self.stop()
            raise
        return self

    async def _listen(self, what: str, server: _Server, name: str) -> None:
        try:
            await server.start()
        except OSError as exc:  # the port read now: the broker may have picked another one
            change = f"choose another port with --{name}-port"
            raise ListenError(
                what, self.host, server.port, exc, change, change_host=OTHER_HOST
            ) from exc
        except EmbeddedKafkaError as exc:
            raise KafkaUnavailableError(str(exc)) from exc

    async def stop(self) -> None:
        try:
            if self.amplitude is not None:
                await self.amplitude.stop()
            if self.salesforce is not None:
                await self.salesforce.stop()
        finally:
            if self.kafka is not None:  # never leave the broker process behind
                self.kafka.stop()

    def environment(self, topic_prefix: str = "sfamp") -> dict[str, str]:
        """The ``SFAMP_*`` variables that point sfamp at this stack."""
        assert self.salesforce is not None
        assert self.amplitude is not None
        assert self.kafka_bootstrap is not None
        return {
            **salesforce_environment(self.salesforce.base_url),
            "SFAMP_KAFKA__BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "SFAMP_KAFKA__TOPIC_PREFIX": topic_prefix,
            "SFAMP_AMPLITUDE__API_KEY": US_API_KEY,
            "SFAMP_AMPLITUDE__BASE_URL": self.amplitude.base_url,
        }

    def export_block(self, health_port: int, topic_prefix: str = "sfamp") -> str:
        """Shell ``export`` lines that make ``sfamp run`` (and every other command) use this
        stack: Salesforce's password flow, Kafka, both URLs, the Amplitude keys, the health
        port."""
        assert self.amplitude is not None
        variables = {
            **self.environment(topic_prefix),
            **amplitude_environment(self.amplitude.base_url),  # the secret key too
            **EMBEDDED_KAFKA_TUNING,
            "SFAMP_RUNTIME__HEALTH_PORT": str(health_port),
        }
        return export_lines(variables)

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


def console_url() -> str:
    """Where ``sfamp console`` serves by default (what the demo and ``sandbox up`` print)."""
    defaults = ConsoleSettings()
    return f"http://{defaults.host}:{defaults.port}"


HEALTH_PORT_FALLBACKS = range(18080, 18180)


def health_port_for_run() -> int:
    """The health port to export for ``sfamp run``: its default (8080) when free, else the
    first free one of :data:`HEALTH_PORT_FALLBACKS`, else one the kernel picks.

    The fallbacks lie below Linux's range of ports for outgoing connections (32768-60999,
    ``/proc/sys/net/ipv4/ip_local_port_range``): a port from that range may be given to
    any connection this machine opens before ``sfamp run`` starts listening on it.
    """
    defaults = RuntimeSettings.model_fields
    host = str(defaults["health_host"].default)
    ports: list[int] = [int(defaults["health_port"].default), *HEALTH_PORT_FALLBACKS]
    for port in ports:
        if bind_error(host, port) is None:
            return port
    return free_port(host)
