"""Production Kafka settings: SASL (PLAIN, SCRAM) over TLS with a custom CA."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pipeline.config.settings import KafkaSettings, load_settings
from pipeline.errors import SettingsError
from pipeline.kafka.connection import client_options


def _ca_file(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sfamp test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_tls_with_a_custom_ca(tmp_path: Path, mechanism: str) -> None:
    ca = _ca_file(tmp_path / "ca.pem")
    settings = KafkaSettings(
        bootstrap_servers="broker-1:9093,broker-2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism=mechanism,  # type: ignore[arg-type]
        sasl_username="sfamp",
        sasl_password="s3cret",  # type: ignore[arg-type]
        ssl_cafile=ca,
    )
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == mechanism
    assert options["sasl_plain_username"] == "sfamp"
    assert options["sasl_plain_password"] == "s3cret"
    context: ssl.SSLContext = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    subjects = [dict(item[0] for item in c["subject"]) for c in context.get_ca_certs()]
    assert {"commonName": "sfamp test CA"} in subjects


def test_tls_without_a_ca_file_uses_the_system_trust_store() -> None:
    options = client_options(KafkaSettings(security_protocol="SSL"))
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in options


def test_missing_sasl_parts_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as caught:
        client_options(KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN"))
    names = {problem.path for problem in caught.value.problems}
    assert names == {"SFAMP_KAFKA__SASL_USERNAME", "SFAMP_KAFKA__SASL_PASSWORD"}


def test_an_unreadable_ca_file_is_one_clear_problem(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(SettingsError) as caught:
        client_options(KafkaSettings(security_protocol="SSL", ssl_cafile=bad))
    assert [p.path for p in caught.value.problems] == ["SFAMP_KAFKA__SSL_CAFILE"]


def test_the_environment_names_of_the_production_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "SFAMP_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "SFAMP_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "SFAMP_KAFKA__SASL_USERNAME": "sfamp",
        "SFAMP_KAFKA__SASL_PASSWORD": "pw",
        "SFAMP_KAFKA__SSL_CAFILE": str(_ca_file(tmp_path / "ca.pem")),
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert client_options(settings.kafka)["sasl_mechanism"] == "SCRAM-SHA-512"
    assert "pw" not in repr(settings)
