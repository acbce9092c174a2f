"""aiokafka connection options from KafkaSettings (plaintext, TLS, SASL over TLS), and
the one line that says why Kafka does not answer.

aiokafka reports a cluster it cannot reach as "Unable to bootstrap from [('host', 9092,
<AddressFamily.AF_INET: 2>)]" and logs the actual cause separately. :func:`unavailable`
turns that into "Kafka at host:9092 is not answering (connection refused)": on a
failed bootstrap it tries a plain TCP connection to each server, once and briefly, to
tell a refused connection from an unknown host, silence, or a listener that does not
speak Kafka as configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import ssl
from typing import Any, Final, Protocol

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError
from aiokafka.errors import KafkaError as AIOKafkaError

from pipeline.config.settings import KafkaSettings
from pipeline.errors import KafkaUnavailableError, Problem, SettingsError

PROBE_SECONDS: Final = 1.0
# How long a cancelled caller still waits for an aiokafka client's start to end: a
# broker answers the metadata request in milliseconds; one that does not answer is
# not worth a longer wait (the start would not have left a connection open to it).
FINISH_START_SECONDS: Final = 1.0
HANDSHAKE: Final = "accepts connections"  # the probe's verdict on a listener that answers
_REPR: Final = re.compile(
    r"<([\w.]+): [^<>]*>"
)  # <AddressFamily.AF_INET: 2> -> AddressFamily.AF_INET


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka producer, consumer and admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": int(settings.request_timeout_seconds * 1000),
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = _ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        options.update(_sasl_options(settings))
    return options


def _ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    cafile = str(settings.ssl_cafile) if settings.ssl_cafile else None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            [Problem("SFAMP_KAFKA__SSL_CAFILE", f"cannot load CA file {cafile}: {exc}")]
        ) from exc


def _sasl_options(settings: KafkaSettings) -> dict[str, Any]:
    problems = [
        Problem(f"SFAMP_KAFKA__{name.upper()}", f"required for {settings.security_protocol}")
        for name in ("sasl_mechanism", "sasl_username", "sasl_password")
        if not getattr(settings, name)
    ]
    if problems:
        raise SettingsError(problems)
    assert settings.sasl_password is not None
    return {
        "sasl_mechanism": settings.sasl_mechanism,
        "sasl_plain_username": settings.sasl_username,
        "sasl_plain_password": settings.sasl_password.get_secret_value(),
    }


def describe_failure(exc: BaseException, timeout_seconds: float | None = None) -> str:
    """A short clause on why a connection or a request failed, without Python reprs."""
    if isinstance(exc, TimeoutError):
        if timeout_seconds is None:
            return "no answer in time"
        return f"no answer within {timeout_seconds:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    if _bootstrap_failed(exc):
        return "no bootstrap server answered"
    text = _REPR.sub(r"\1", str(exc)).strip()
    if isinstance(exc, AIOKafkaError):
        text = text.removeprefix(f"{type(exc).__name__}: ")
    return text.splitlines()[0] if text else type(exc).__name__


async def unavailable(
    settings: KafkaSettings,
    exc: BaseException,
    *,
    timeout_seconds: float | None = None,
    starting: bool = False,
) -> KafkaUnavailableError:
    """The error that says, in one line, that the cluster is not answering and why.

    ``starting``: ``exc`` ended a client's start (its bootstrap), whatever it is (a
    timeout of the caller's own comes before aiokafka's "Unable to bootstrap").
    """
    servers = settings.bootstrap_servers
    reason = describe_failure(exc, timeout_seconds)
    bootstrapping = starting or _bootstrap_failed(exc)
    if bootstrapping:
        reason = await probe(servers)
    if reason == HANDSHAKE:
        return KafkaUnavailableError(
            f"Kafka at {servers} accepts connections but no Kafka handshake succeeds: the "
            "broker is stuck, or SFAMP_KAFKA__SECURITY_PROTOCOL and the TLS and SASL "
            "settings do not match its listener"
        )
    # No bootstrap server answered: the address may be wrong. A request that timed out
    # later in a session reached the cluster, so the address is not the question.
    check = "; check SFAMP_KAFKA__BOOTSTRAP_SERVERS" if bootstrapping else ""
    return KafkaUnavailableError(f"Kafka at {servers} is not answering ({reason}){check}")


async def probe(bootstrap_servers: str, seconds: float = PROBE_SECONDS) -> str:
    """Why the servers cannot be reached over TCP, or :data:`HANDSHAKE` when they can."""
    reasons: dict[str, str] = {}
    for server in (s.strip() for s in bootstrap_servers.split(",") if s.strip()):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            reasons[server] = "not host:port"
            continue
        try:
            async with asyncio.timeout(seconds):
                _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except (OSError, TimeoutError) as exc:
            reasons[server] = describe_failure(exc, seconds)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        reasons[server] = HANDSHAKE
    if len(set(reasons.values())) == 1:
        return next(iter(reasons.values()))
    return "; ".join(f"{server}: {reason}" for server, reason in reasons.items())


def _bootstrap_failed(exc: BaseException) -> bool:
    """aiokafka's "Unable to bootstrap from [...]": no server answered; the cause was logged."""
    return isinstance(exc, KafkaConnectionError) and "bootstrap" in str(exc)


class _Startable(Protocol):
    async def start(self) -> None: ...


async def start_through_cancel(client: _Startable, *, within: float = FINISH_START_SECONDS) -> None:
    """``await client.start()`` (an aiokafka consumer, producer or admin client), which a
    cancel of the caller does not cut short.

    aiokafka closes the connection it bootstraps from only on the errors it expects: a
    start cancelled while that connection asks for the cluster's metadata leaves it
    open, out of reach of ``stop()`` (``AIOKafkaClient.bootstrap``), and it warns when
    collected. So a cancel waits up to ``within`` seconds for the start to end,
    whatever its outcome, and is raised then: the caller's cancel handling stops the
    client as before, with every connection it holds. Raises what ``start()`` raises
    when not cancelled.
    """
    await _through_cancel(asyncio.ensure_future(client.start()), within)


class _Stoppable(Protocol):
    async def stop(self) -> None: ...


async def stop_through_cancel(client: _Stoppable, *, within: float) -> None:
    """``await client.stop()`` (an aiokafka consumer) in a task of its own, so that a
    cancel of the caller is never lost in it: a consumer's stop awaits its fetcher's
    cancelled task under ``suppress(CancelledError)`` (``Fetcher.close``), which
    swallows a cancel that lands meanwhile, and the caller would go on as if never
    stopped. A cancel waits up to ``within`` seconds for the stop and is raised then.
    """
    await _through_cancel(asyncio.ensure_future(client.stop()), within)


async def bootstrap_through_cancel(client: AIOKafkaClient, *, within: float) -> None:
    """``await client.bootstrap()`` (a bare client's start), which a cancel of the caller
    does not cut short for up to ``within`` seconds (see :func:`start_through_cancel`)."""
    await _through_cancel(asyncio.ensure_future(client.bootstrap()), within)


async def _through_cancel(work: asyncio.Future[None], within: float) -> None:
    work.add_done_callback(_retrieved)  # an outcome nobody waits for is not reported
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(within):
                await asyncio.shield(work)
        if not work.done():
            work.cancel()
        raise


def _retrieved(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
