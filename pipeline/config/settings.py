"""The typed settings tree, read once from ``SFAMP_*`` variables and ``.env``.

Nested settings use ``__``: ``SFAMP_KAFKA__BOOTSTRAP_SERVERS``. Adapters never
read the environment themselves; they get their part of this tree. A variable
under the prefix that names no setting is an error (with the nearest name), not
silently ignored: a misspelt name would otherwise leave its default in force.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipeline.config.env_file import read_env_file
from pipeline.errors import Problem, SettingsError
from pipeline.wording import nearest, not_one_of

ENV_PREFIX = "SFAMP_"
ENV_FILE = ".env"
# Under the prefix but not settings: the embedded broker's log level, the tests' Kafka and
# the Chromium the browser tests and ``make screenshots`` launch.
NOT_SETTINGS: Final = frozenset(("SFAMP_KAFKA_LOG", "SFAMP_TEST_KAFKA_BOOTSTRAP", "SFAMP_CHROMIUM"))
_API_VERSION = re.compile(r"^v\d{2,3}\.\d$")

AuthFlow = Literal["password", "refresh_token", "client_credentials", "jwt"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def http_url(value: str, example: str = "") -> str:
    """``value`` without a trailing slash; ValueError unless it is an http(s) URL with a
    host, and a port (when given) in 1-65535 (a socket refuses any other)."""
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"must be an http(s) URL{example}")
    try:
        port = urlsplit(value).port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"the port of {value} must be 1-65535")
    return value.rstrip("/")


# The settings each Salesforce auth flow logs in with.
FLOW_CREDENTIALS: Final[dict[str, tuple[str, ...]]] = {
    "password": ("client_id", "client_secret", "username", "password"),
    "refresh_token": ("client_id", "refresh_token"),
    "client_credentials": ("client_id", "client_secret"),
    "jwt": ("client_id", "username", "jwt_private_key_file"),
}


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
        "earliest", description="Where channels start while sfamp.replay is empty: -1 or -2."
    )
    cdc_channel: str | None = Field(
        None, description="A custom multi-entity channel to use instead of one per object."
    )

    @field_validator("login_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value, " such as https://login.salesforce.com")

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _API_VERSION.match(value):
            raise ValueError("must look like v62.0")
        return value

    def credential_problems(self) -> list[Problem]:
        """What the chosen auth flow still needs; checked only by commands that log in."""
        return [
            Problem(
                f"{ENV_PREFIX}SALESFORCE__{name.upper()}",
                f"required for auth_flow={self.auth_flow}",
            )
            for name in FLOW_CREDENTIALS[self.auth_flow]
            if not getattr(self, name)
        ]

    def credential_variables(self) -> list[str]:
        """The variables that hold the chosen auth flow's credentials (what to check when
        Salesforce refuses the login); the password flow's security token among them, as
        Salesforce wants it unless the caller's address is trusted."""
        names = FLOW_CREDENTIALS[self.auth_flow]
        if self.auth_flow == "password":
            names = (*names, "security_token")
        return [f"{ENV_PREFIX}SALESFORCE__{name.upper()}" for name in names]


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
    changes_retention_hours: int = Field(
        168,
        ge=1,
        le=87_600,
        description="retention.ms of the changes topics sfamp creates: must outlast the "
        "cadence plus a day, or changes expire before they are delivered.",
    )
    consumer_group: str = Field(
        "sfamp-deliver",
        min_length=1,
        description="Consumer group of the deliver instances; defaults to <topic_prefix>-deliver.",
    )
    request_timeout_seconds: float = Field(30.0, gt=0, le=600)
    consumer_session_timeout_seconds: float = Field(
        30.0, ge=1, le=600, description="How long a silent deliver instance keeps its partitions."
    )
    consumer_max_poll_interval_seconds: float = Field(
        300.0,
        ge=1,
        le=3600,
        description="How long deliver may go without polling before the group gives its "
        "partitions away; a flush keeps polling, so only a stuck process reaches it.",
    )
    metadata_max_age_seconds: float = Field(
        30.0, ge=1, le=3600, description="How soon deliver notices a new changes topic."
    )
    idempotent_producer: Literal["auto", "true", "false"] = Field(
        "auto",
        description="auto: idempotent when the broker supports it, else acks=all alone.",
    )

    @model_validator(mode="before")
    @classmethod
    def _group_follows_prefix(cls, data: Any) -> Any:
        # Two deployments with different prefixes must not share (and rebalance) one group.
        if isinstance(data, dict) and "consumer_group" not in data:
            prefix = data.get("topic_prefix", "sfamp")
            return {**data, "consumer_group": f"{prefix}-deliver"}
        return data

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers or any(not re.match(r"^[^:\s]+:\d{1,5}$", s) for s in servers):
            raise ValueError("must be host:port[,host:port...]")
        for server in servers:
            if not 1 <= int(server.rpartition(":")[2]) <= 65535:
                raise ValueError(f"the port of {server} must be 1-65535")
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
    max_concurrency: int = Field(
        16,
        ge=1,
        le=64,
        description="Ceiling of requests in flight; the level adapts below it (starts at 4).",
    )
    slow_answer_seconds: float = Field(
        5.0, gt=0, description="An answer slower than this does not raise the concurrency."
    )
    transport: Literal["groupidentify", "httpapi"] = Field(
        "httpapi",
        description="groupidentify: /groupidentify form requests; httpapi: $groupidentify "
        "events through HTTP V2 (/2/httpapi).",
    )
    retry_deadline_seconds: float = Field(300.0, gt=0)
    min_429_wait_seconds: float = Field(15.0, ge=0)
    max_group_types: int = Field(
        5,
        ge=1,
        le=1000,
        description="Group types Amplitude tracks per project (5); it ignores any beyond.",
    )
    property_limit_scope: Literal["request", "identification"] = Field(
        "request",
        description="How to read Amplitude's 1024 group properties limit: summed per request "
        "(safe) or per identification (up to 1024 groups per request).",
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return http_url(value) if value is not None else None

    @field_validator("api_key", "secret_key")
    @classmethod
    def _blank_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        """``SFAMP_AMPLITUDE__API_KEY=`` (an empty line of an env file) sets no key."""
        return value if value is not None and value.get_secret_value().strip() else None


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
    state_dir: Path = Field(
        Path(".sfamp"),
        description="Where the reconcile keeps its checkpoint; persistent, so that an "
        "interrupted reconcile resumes instead of starting over.",
    )


MIN_CONSOLE_TOKEN_LENGTH: Final = 16


class ConsoleSettings(_Section):
    """Where ``sfamp console`` listens and who may change things through it."""

    host: str = Field("127.0.0.1", description="Any address but a loopback one requires a token.")
    port: int = Field(8430, ge=1, le=65535)
    token: SecretStr | None = Field(
        None, description="Required to sign in and for every state-changing request."
    )
    service_url: str | None = Field(
        None,
        description="The running service's health endpoint, for the Status page; "
        "defaults to http://127.0.0.1:<runtime.health_port>.",
    )
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(
        default_factory=list,
        description="Reverse proxies (addresses or networks, comma-separated) whose "
        "X-Forwarded-For, -Proto, -Host and -Port name the client, scheme and host; "
        "needs the token.",
    )

    @field_validator("service_url")
    @classmethod
    def _service_url(cls, value: str | None) -> str | None:
        return http_url(value, " such as http://127.0.0.1:8080") if value is not None else None

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        parts = value.split(",") if isinstance(value, str) else value
        if not isinstance(parts, list):
            return value
        networks = []
        for part in parts:
            text = str(part).strip()
            if not text:
                continue
            try:
                networks.extend(_as_clients_appear(ipaddress.ip_network(text, strict=False)))
            except ValueError:
                raise ValueError(f"{text!r} is not an IP address or network") from None
        return networks

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # The token is all that stands between the network and a published mapping.
        if value is not None and len(value.get_secret_value()) < MIN_CONSOLE_TOKEN_LENGTH:
            raise ValueError(
                f"must be at least {MIN_CONSOLE_TOKEN_LENGTH} characters; "
                "python3 -c 'import secrets; print(secrets.token_urlsafe())' makes one"
            )
        return value


_IPV4_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")


def _as_clients_appear(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``network`` as the console compares it: client addresses written IPv4-mapped
    (``::ffff:10.0.0.1``, what a dual-stack socket reports) are read as IPv4, so a
    network written that way becomes its IPv4 form, and one holding them all
    (``::/0``) holds every IPv4 address too."""
    if not isinstance(network, ipaddress.IPv6Network):
        return [network]
    if network.subnet_of(_IPV4_MAPPED):
        address = ipaddress.IPv4Address(int(network.network_address) & 0xFFFFFFFF)
        return [ipaddress.IPv4Network((address, network.prefixlen - 96))]
    if network.supernet_of(_IPV4_MAPPED):
        return [network, ipaddress.IPv4Network("0.0.0.0/0")]
    return [network]


class Settings(BaseSettings):
    """Everything sfamp reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=ENV_FILE,
        env_file_encoding="utf-8-sig",  # a byte-order mark (Notepad writes one) is skipped
        extra="ignore",
        frozen=True,
    )

    salesforce: SalesforceSettings = SalesforceSettings()
    kafka: KafkaSettings = KafkaSettings()
    amplitude: AmplitudeSettings = AmplitudeSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    console: ConsoleSettings = ConsoleSettings()
    mapping_file: Path | None = None

    def credential_problems(self, *, amplitude: bool = True) -> list[Problem]:
        """What logging in to Salesforce (and, with ``amplitude``, sending) still needs."""
        problems = self.salesforce.credential_problems()
        if amplitude and self.amplitude.api_key is None:
            problems.append(
                Problem(f"{ENV_PREFIX}AMPLITUDE__API_KEY", "required to send to Amplitude")
            )
        return problems


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings, or raise one SettingsError listing every problem.

    Unknown ``SFAMP_*`` names in the environment or the ``.env`` file are problems too.
    """
    env_file = overrides.get("_env_file", ENV_FILE)
    names, unreadable = read_env_file(env_file, ENV_PREFIX)
    if unreadable:
        raise SettingsError(unreadable)
    unknown = unknown_variable_problems(
        [*os.environ, *names], in_file=set(names) - set(os.environ), file=str(env_file)
    )
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        named = {problem.path for problem in unknown}
        every = [_problem(error) for error in exc.errors()]
        # A name that is no variable name was reported above without what follows it.
        problems = [
            problem
            for problem in every
            if problem.path not in named and re.fullmatch(r"[A-Z0-9_]+", problem.path)
        ]
        raise SettingsError(unknown + problems if unknown or problems else every) from exc
    if unknown:
        raise SettingsError(unknown)
    return settings


def setting_names(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> set[str]:
    """Every variable the settings tree reads: nested sections joined with ``__``."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= setting_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def unknown_variable_problems(
    names: Iterable[str], *, in_file: Collection[str] = (), file: str = ENV_FILE
) -> list[Problem]:
    """A problem for each ``SFAMP_*`` name that is no setting, with the nearest known name;
    one set only by the env file (``in_file``) says so, as it is not in the shell."""
    from_file = {name.upper() for name in in_file}
    known = setting_names()
    # A whole section may also come as JSON: SFAMP_KAFKA='{"partitions": 3}'.
    sections = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    problems = []
    for name in sorted({name.upper() for name in names}):
        if not name.startswith(ENV_PREFIX) or name in known | sections | NOT_SETTINGS:
            continue
        valid = re.match(r"[A-Z0-9_]*", name)
        if valid is not None and valid.group() != name:
            # Not a variable name (SFAMP_X:value, a '=' typed as ':'): what follows the
            # name may be a secret, so it is not shown.
            bad = name[valid.end()]
            problems.append(
                Problem(f"{valid.group()}{bad}...", f"is not a variable name (it holds {bad!r})")
            )
            continue
        close = nearest(name, known)
        where = f" (set in {file})" if name in from_file else ""
        hint = f"; did you mean {close}?" if close else ""
        problems.append(Problem(name, f"is not an sfamp setting{where}{hint}"))
    return problems


def _problem(error: ErrorDetails) -> Problem:
    loc = [str(part) for part in error["loc"]]
    name = ENV_PREFIX + "__".join(part.upper() for part in loc)
    if error["type"] == "literal_error":
        return Problem(
            name, not_one_of(error.get("input"), error.get("ctx", {}).get("expected", ""))
        )
    return Problem(name, str(error["msg"]).removeprefix("Value error, "))
