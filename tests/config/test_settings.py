"""Settings: environment names, defaults, and one clear problem per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.settings import SalesforceSettings, load_settings
from pipeline.errors import SettingsError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SFAMP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults() -> None:
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.kafka.topic_prefix == "sfamp"
    assert settings.amplitude.region == "us"
    assert settings.salesforce.api_version == "v62.0"
    assert settings.runtime.health_port == 8080


def test_design_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "SFAMP_SALESFORCE__LOGIN_URL": "http://127.0.0.1:8410/",
        "SFAMP_SALESFORCE__AUTH_FLOW": "client_credentials",
        "SFAMP_SALESFORCE__CLIENT_ID": "sandbox-client",
        "SFAMP_SALESFORCE__CLIENT_SECRET": "sandbox-secret",
        "SFAMP_SALESFORCE__USERNAME": "admin@sandbox.example",
        "SFAMP_SALESFORCE__PASSWORD": "sandbox",
        "SFAMP_SALESFORCE__API_VERSION": "v61.0",
        "SFAMP_KAFKA__BOOTSTRAP_SERVERS": "k1:9092, k2:9092",
        "SFAMP_KAFKA__TOPIC_PREFIX": "acme",
        "SFAMP_AMPLITUDE__API_KEY": "key",
        "SFAMP_AMPLITUDE__REGION": "eu",
        "SFAMP_AMPLITUDE__BASE_URL": "http://127.0.0.1:8420/eu",
        "SFAMP_MAPPING_FILE": "mapping.json",
        "SFAMP_RUNTIME__HEALTH_PORT": "9000",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert s.salesforce.login_url == "http://127.0.0.1:8410"
    assert s.salesforce.client_secret is not None
    assert s.salesforce.client_secret.get_secret_value() == "sandbox-secret"
    assert "sandbox-secret" not in repr(s)
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert s.amplitude.region == "eu"
    assert s.mapping_file == Path("mapping.json")
    assert s.runtime.health_port == 9000


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SFAMP_KAFKA__TOPIC_PREFIX=fromfile\n")
    assert load_settings().kafka.topic_prefix == "fromfile"


def test_every_problem_is_reported_with_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFAMP_SALESFORCE__AUTH_FLOW", "magic")
    monkeypatch.setenv("SFAMP_SALESFORCE__API_VERSION", "62")
    monkeypatch.setenv("SFAMP_KAFKA__PARTITIONS", "0")
    monkeypatch.setenv("SFAMP_KAFKA__BOOTSTRAP_SERVERS", "nohostport")
    monkeypatch.setenv("SFAMP_AMPLITUDE__REGION", "mars")
    monkeypatch.setenv("SFAMP_RUNTIME__HEALTH_PORT", "70000")
    with pytest.raises(SettingsError) as info:
        load_settings()
    names = {p.path for p in info.value.problems}
    assert names == {
        "SFAMP_SALESFORCE__AUTH_FLOW",
        "SFAMP_SALESFORCE__API_VERSION",
        "SFAMP_KAFKA__PARTITIONS",
        "SFAMP_KAFKA__BOOTSTRAP_SERVERS",
        "SFAMP_AMPLITUDE__REGION",
        "SFAMP_RUNTIME__HEALTH_PORT",
    }


@pytest.mark.parametrize(
    ("flow", "missing"),
    [
        ("password", {"CLIENT_ID", "CLIENT_SECRET", "USERNAME", "PASSWORD"}),
        ("refresh_token", {"CLIENT_ID", "REFRESH_TOKEN"}),
        ("client_credentials", {"CLIENT_ID", "CLIENT_SECRET"}),
        ("jwt", {"CLIENT_ID", "USERNAME", "JWT_PRIVATE_KEY_FILE"}),
    ],
)
def test_credential_problems_per_flow(flow: str, missing: set[str]) -> None:
    settings = SalesforceSettings(auth_flow=flow)  # type: ignore[arg-type]
    assert {p.path.removeprefix("SFAMP_SALESFORCE__") for p in settings.credential_problems()} == (
        missing
    )
    complete = SalesforceSettings(
        auth_flow=flow,  # type: ignore[arg-type]
        client_id="c",
        client_secret="s",  # type: ignore[arg-type]
        username="u",
        password="p",  # type: ignore[arg-type]
        refresh_token="r",  # type: ignore[arg-type]
        jwt_private_key_file=Path("key.pem"),
    )
    assert complete.credential_problems() == []
