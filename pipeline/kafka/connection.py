"""aiokafka connection options from KafkaSettings: plaintext, TLS, SASL over TLS."""

from __future__ import annotations

import ssl
from typing import Any

from pipeline.config.settings import KafkaSettings
from pipeline.errors import Problem, SettingsError


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
