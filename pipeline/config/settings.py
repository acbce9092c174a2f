"""The typed settings tree, read once from ``SFAMP_*`` variables and ``.env``.

Nested settings use ``__``: ``SFAMP_KAFKA__BOOTSTRAP_SERVERS``. Adapters never
read the environment themselves; they get their part of this tree.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import Problem, SettingsError

ENV_PREFIX = "SFAMP_"
_API_VERSION = re.compile(r"^v\d{2,3}\.\d$")

AuthFlow = Literal["password", "refresh_token", "client_credentials", "jwt"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SalesforceSettings(_Section):
    """Where the org is and how sfamp logs in to it."""

    login_url: str = Field(
        "https://login.salesforce.com",
        description="Token host: login/test.salesforce.com, a My Domain URL, or the sandbox URL.",
    )
    auth_flow: AuthFlow = "password"
    client_id: str = ""
    client_secret: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = Field(
        None, description="Appended to the password for the password flow, if the org needs it."
    )
    refresh_token: SecretStr | None = None
    jwt_private_key_file: Path | None = None
    jwt_audience: str | None = Field(None, description="JWT 'aud'; defaults to the login URL.")
    api_version: str = "v62.0"
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    replay_start: Literal["latest", "earliest"] = Field(
        "latest", description="Where a channel with no stored replay id starts: -1 or -2."
    )
    cdc_channel: str | None = Field(
        None, description="A custom multi-entity channel to use instead of one per object."
    )

    @field_validator("login_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL such as https://login.salesforce.com")
        return value.rstrip("/")

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _API_VERSION.match(value):
            raise ValueError("must look like v62.0")
        return value

    def credential_problems(self) -> list[Problem]:
        """What the chosen auth flow still needs; checked only by commands that log in."""
        needed: dict[str, tuple[str, ...]] = {
            "password": ("client_id", "client_secret", "username", "password"),
            "refresh_token": ("client_id", "refresh_token"),
            "client_credentials": ("client_id", "client_secret"),
            "jwt": ("client_id", "username", "jwt_private_key_file"),
        }
        return [
            Problem(
                f"{ENV_PREFIX}SALESFORCE__{name.upper()}",
                f"required for auth_flow={self.auth_flow}",
            )
            for name in needed[self.auth_flow]
            if not getattr(self, name)
        ]


class KafkaSettings(_Section):
    """The Kafka-compatible cluster that buffers changes."""

    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    topic_prefix: str = Field("sfamp", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    partitions: int = Field(6, ge=1, le=1000)
    replication_factor: int = Field(1, ge=1, le=10)
    consumer_group: str = Field("sfamp-deliver", min_length=1)
    request_timeout_seconds: float = Field(30.0, gt=0, le=600)
    consumer_session_timeout_seconds: float = Field(
        30.0, ge=1, le=600, description="How long a silent deliver instance keeps its partitions."
    )
    metadata_max_age_seconds: float = Field(
        30.0, ge=1, le=3600, description="How soon deliver notices a new changes topic."
    )
    idempotent_producer: Literal["auto", "true", "false"] = Field(
        "auto",
        description="auto: idempotent when the broker supports it, else acks=all alone.",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers or any(not re.match(r"^[^:\s]+:\d{1,5}$", s) for s in servers):
            raise ValueError("must be host:port[,host:port...]")
        return ",".join(servers)


class AmplitudeSettings(_Section):
    """The Amplitude project that receives group properties."""

    api_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    region: Literal["us", "eu"] = "us"
    base_url: str | None = Field(
        None, description="Overrides the region's host, e.g. the Amplitude sandbox."
    )
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    max_concurrency: int = Field(4, ge=1, le=64)
    retry_deadline_seconds: float = Field(300.0, gt=0)
    min_429_wait_seconds: float = Field(15.0, ge=0)
    property_limit_scope: Literal["request", "identification"] = Field(
        "request",
        description="How to read Amplitude's 1024 group properties limit: summed per request "
        "(safe) or per identification (up to 1024 groups per request).",
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/") if value else value


class RuntimeSettings(_Section):
    """How the long-running service behaves."""

    health_port: int = Field(8080, ge=0, le=65535, description="0 turns the HTTP endpoint off.")
    health_host: str = "0.0.0.0"  # noqa: S104 - probes come from outside the pod
    drain_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    max_pending_groups: int = Field(
        200_000, ge=1, description="Flush early when this many groups wait (bounds memory)."
    )
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(BaseSettings):
    """Everything sfamp reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    salesforce: SalesforceSettings = SalesforceSettings()
    kafka: KafkaSettings = KafkaSettings()
    amplitude: AmplitudeSettings = AmplitudeSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    mapping_file: Path | None = None


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings, or raise one SettingsError listing every problem."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError([_problem(error) for error in exc.errors()]) from exc


def _problem(error: object) -> Problem:
    loc = [str(part) for part in error["loc"]]  # type: ignore[index]
    name = ENV_PREFIX + "__".join(part.upper() for part in loc)
    return Problem(name, str(error["msg"]))  # type: ignore[index]
