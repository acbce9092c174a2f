"""Settings: environment names, defaults, and one clear problem per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.settings import SalesforceSettings, load_settings, setting_names
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


def test_a_dotenv_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"\xef\xbb\xbfSFAMP_KAFKA__TOPIC_PREFIX=marked\n")
    assert load_settings().kafka.topic_prefix == "marked"


def test_a_dotenv_file_that_is_not_utf8_is_one_problem(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SFAMP_KAFKA__TOPIC_PREFIX=x\n", encoding="utf-16")
    with pytest.raises(SettingsError) as info:
        load_settings()
    [problem] = info.value.problems
    assert problem.path == ".env"
    assert problem.message.startswith("is not UTF-8 text: byte 0xff at offset 0")
    assert "UTF-16" in problem.message


def test_a_dotenv_line_that_cannot_be_read_is_named_without_its_value(tmp_path: Path) -> None:
    """python-dotenv skips such a line with a warning, and the setting with it. A line of
    another tool's is left to python-dotenv, as before: the file may be shared."""
    (tmp_path / ".env").write_text(
        'SFAMP_KAFKA__PARTITIONS=3\nGREETING="hello" world\n\n\n'
        'export SFAMP_AMPLITUDE__API_KEY="s3cret\n',
        encoding="utf-8",
    )
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert [str(p) for p in info.value.problems] == [
        ".env:5: line (SFAMP_AMPLITUDE__API_KEY=...) is not NAME=value (an unclosed quote?)"
    ]
    assert "s3cret" not in str(info.value)


def test_a_dotenv_line_of_another_tool_does_not_stop_sfamp(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "OTHER_PASSWORD='it'\\''s'\nSFAMP_KAFKA__TOPIC_PREFIX=shared\n", encoding="utf-8"
    )
    assert load_settings().kafka.topic_prefix == "shared"


def test_a_name_that_is_no_variable_name_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    """``SFAMP_X:value`` (a '=' typed as ':') holds what may be a secret after the name."""
    monkeypatch.setenv("SFAMP_AMPLITUDE__API_KEY:s3cr3t", "")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert [str(p) for p in info.value.problems] == [
        "SFAMP_AMPLITUDE__API_KEY:...: is not a variable name (it holds ':')"
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SFAMP_SALESFORCE__LOGIN_URL", "http://127.0.0.1:99999"),
        ("SFAMP_AMPLITUDE__BASE_URL", "http://127.0.0.1:0"),
        ("SFAMP_CONSOLE__SERVICE_URL", "http://127.0.0.1:70000/"),
    ],
)
def test_a_url_port_out_of_range_is_a_problem(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert [str(p) for p in info.value.problems] == [f"{name}: the port of {value} must be 1-65535"]


@pytest.mark.parametrize("servers", ["k1:70000", "k1:9092,k2:0"])
def test_a_bootstrap_port_out_of_range_is_a_problem(
    monkeypatch: pytest.MonkeyPatch, servers: str
) -> None:
    monkeypatch.setenv("SFAMP_KAFKA__BOOTSTRAP_SERVERS", servers)
    with pytest.raises(SettingsError) as info:
        load_settings()
    [problem] = info.value.problems
    assert problem.path == "SFAMP_KAFKA__BOOTSTRAP_SERVERS"
    assert problem.message.endswith("must be 1-65535")


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


@pytest.mark.parametrize(
    ("name", "nearest"),
    [
        ("SFAMP_MAPING_FILE", "SFAMP_MAPPING_FILE"),
        ("SFAMP_KAFKA_BOOTSTRAP_SERVERS", "SFAMP_KAFKA__BOOTSTRAP_SERVERS"),
        ("SFAMP_KAFKA__BOOTSTRAP_SERVER", "SFAMP_KAFKA__BOOTSTRAP_SERVERS"),
        ("sfamp_amplitude__apikey", "SFAMP_AMPLITUDE__API_KEY"),
    ],
)
def test_a_misspelt_variable_is_an_error_naming_the_nearest_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, nearest: str
) -> None:
    monkeypatch.setenv(name, "127.0.0.1:9092")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert [str(p) for p in info.value.problems] == [
        f"{name.upper()}: is not an sfamp setting; did you mean {nearest}?"
    ]


def test_a_misspelt_variable_in_the_env_file_is_an_error_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SFAMP_KAFKA__TOPIC_PREFIXX=acme\n")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert info.value.problems[0].path == "SFAMP_KAFKA__TOPIC_PREFIXX"
    assert "did you mean SFAMP_KAFKA__TOPIC_PREFIX?" in info.value.problems[0].message


def test_unknown_names_are_listed_with_the_invalid_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFAMP_TOTALLY_UNRELATED", "x")
    monkeypatch.setenv("SFAMP_KAFKA__PARTITIONS", "0")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert {p.path: p.message for p in info.value.problems}.keys() == {
        "SFAMP_TOTALLY_UNRELATED",
        "SFAMP_KAFKA__PARTITIONS",
    }
    assert info.value.problems[0].message == "is not an sfamp setting"


def test_variables_that_are_not_settings_and_whole_sections_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SFAMP_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.setenv("SFAMP_KAFKA_LOG", "debug")
    monkeypatch.setenv("SFAMP_CHROMIUM", "/usr/bin/chromium")
    monkeypatch.setenv("SFAMP_RUNTIME", '{"health_port": 0}')
    assert load_settings().runtime.health_port == 0


def test_every_setting_has_its_variable_name() -> None:
    names = setting_names()
    assert {
        "SFAMP_MAPPING_FILE",
        "SFAMP_KAFKA__CHANGES_RETENTION_HOURS",
        "SFAMP_AMPLITUDE__MAX_GROUP_TYPES",
        "SFAMP_SALESFORCE__LOGIN_URL",
    } <= names
    assert not any(name.startswith("SFAMP_KAFKA__KAFKA") for name in names)


@pytest.mark.parametrize(
    ("env", "group"),
    [
        ({}, "sfamp-deliver"),
        ({"SFAMP_KAFKA__TOPIC_PREFIX": "acme"}, "acme-deliver"),
        (
            {"SFAMP_KAFKA__TOPIC_PREFIX": "acme", "SFAMP_KAFKA__CONSUMER_GROUP": "mine"},
            "mine",
        ),
    ],
)
def test_the_deliver_group_follows_the_topic_prefix_unless_set(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], group: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings().kafka.consumer_group == group


def test_limits_default_to_amplitude_and_kafka_norms() -> None:
    settings = load_settings()
    assert settings.amplitude.max_group_types == 5
    assert settings.kafka.changes_retention_hours == 7 * 24


def test_credential_problems_cover_amplitude_when_sending() -> None:
    settings = load_settings()
    sending = {p.path for p in settings.credential_problems()}
    assert "SFAMP_AMPLITUDE__API_KEY" in sending
    assert "SFAMP_SALESFORCE__CLIENT_ID" in sending
    assert "SFAMP_AMPLITUDE__API_KEY" not in {
        p.path for p in settings.credential_problems(amplitude=False)
    }


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_amplitude_key_is_no_key(monkeypatch: pytest.MonkeyPatch, blank: str) -> None:
    """Refused at the start like a missing one, not at the first flush with data."""
    monkeypatch.setenv("SFAMP_AMPLITUDE__API_KEY", blank)
    settings = load_settings()
    assert settings.amplitude.api_key is None
    assert "SFAMP_AMPLITUDE__API_KEY" in {p.path for p in settings.credential_problems()}


def test_a_short_console_token_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SFAMP_CONSOLE__TOKEN", "hunter2")
    with pytest.raises(SettingsError) as info:
        load_settings()
    (problem,) = info.value.problems
    assert problem.path == "SFAMP_CONSOLE__TOKEN"
    assert "at least 16 characters" in str(problem)
    assert "hunter2" not in str(info.value)


def test_a_setting_outside_its_set_names_the_value_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFAMP_AMPLITUDE__TRANSPORT", "httpap")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert [str(problem) for problem in info.value.problems] == [
        "SFAMP_AMPLITUDE__TRANSPORT: 'httpap' is not one of 'groupidentify', 'httpapi' "
        "(did you mean 'httpapi'?)"
    ]


def test_a_misspelt_name_from_the_env_file_says_where_it_is(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SFAMP_AMPLITUDE__REGON=eu\n", encoding="utf-8")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert [str(p) for p in info.value.problems] == [
        "SFAMP_AMPLITUDE__REGON: is not an sfamp setting (set in .env); "
        "did you mean SFAMP_AMPLITUDE__REGION?"
    ]
