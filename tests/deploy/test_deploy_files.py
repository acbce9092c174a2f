"""Static checks of docker-compose.yml, .env.example and the image's Dockerfile.

No Docker engine and no image pulls: the Compose file is checked against the Compose
Specification schema that ``check-jsonschema`` vendors and, where a Compose v2 binary
is at hand, rendered by ``config`` (which needs no engine). Optional validators that
are missing make their tests skip.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from pipeline.config.settings import RuntimeSettings, Settings
from pipeline.config.validation import validate_document
from tests.deploy.deploy_files import (
    COMPOSE_FILE,
    DOCKERFILE,
    ENV_EXAMPLE,
    ENV_LINE,
    ROOT,
    SFAMP_SERVICES,
    checkpoint_of,
    compose_command,
    dockerfile_instructions,
    drain_timeout_seconds,
    duration_seconds,
    env_example_entries,
    holding_mount,
    load_compose,
    settings_env_names,
)

# ---------------------------------------------------------------- docker-compose.yml


def test_compose_file_matches_the_compose_specification() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("check_jsonschema")
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_class(schema).iter_errors(load_compose()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_compose_services_reference_only_defined_things() -> None:
    compose = load_compose()
    services: dict[str, dict[str, Any]] = compose["services"]
    volumes = set(compose.get("volumes") or {})
    profiled = {name for name, svc in services.items() if svc.get("profiles")}
    assert {p for svc in services.values() for p in svc.get("profiles", [])} == {"backfill"}
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if not service.get("profiles"):
                assert dependency not in profiled, f"{name} needs a profiled service"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in volumes, f"{name} uses undeclared volume {source}"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    assert "kafka-data" in volumes
    assert any(m.startswith("kafka-data:") for m in services["kafka"]["volumes"])


def test_compose_runs_the_roles_the_cli_has() -> None:
    services = load_compose()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["ingest"]["command"] == ["run", "--role", "ingest"]
    assert services["deliver"]["command"] == ["run", "--role", "deliver"]
    assert services["backfill"]["command"][0] == "backfill"
    assert services["backfill"]["profiles"] == ["backfill"]
    for name, port in (("salesforce-sandbox", "8410"), ("amplitude-sandbox", "8420")):
        command = services[name]["command"]
        assert command[:2] == ["sandbox", name.removesuffix("-sandbox")]
        assert command[command.index("--port") + 1] == port
        assert command[command.index("--host") + 1] == "0.0.0.0"
    for name, service in services.items():
        if name not in SFAMP_SERVICES:
            assert "test" in service["healthcheck"], f"{name} has no healthcheck"


def test_compose_ingest_keeps_the_reconcile_checkpoint_on_a_named_volume() -> None:
    compose = load_compose()
    ingest = compose["services"]["ingest"]
    state = PurePosixPath(ingest["environment"]["SFAMP_RUNTIME__STATE_DIR"])
    mounts = [(entry.split(":")[0], entry.split(":")[1]) for entry in ingest["volumes"]]
    source, _ = holding_mount(mounts, state)
    assert source in compose["volumes"], "a named volume, not a bind mount"
    assert set(compose["services"]["deliver"]["volumes"]) <= set(ingest["volumes"])


def test_compose_backfill_keeps_its_checkpoint_on_a_named_volume() -> None:
    """A container's own filesystem goes with it: the checkpoint lives on a named volume,
    which the image prepares for its user, so --resume-or-start continues after a stop."""
    compose = load_compose()
    services = compose["services"]
    backfill = services["backfill"]
    checkpoint = checkpoint_of(backfill["command"])
    mounts = [tuple(entry.split(":")) for entry in backfill["volumes"]]
    source, target = holding_mount([(m[0], m[1]) for m in mounts], checkpoint)
    assert source in compose["volumes"], "a named volume, not a bind mount"
    assert (source, target) in mounts, "mounted read-write"
    # Its own volumes replace the shared ones: the mapping must still be there.
    assert set(services["deliver"]["volumes"]) <= set(backfill["volumes"])
    user = dict(dockerfile_instructions())["USER"].split(":")[0]
    runs = [text for name, text in dockerfile_instructions() if name == "RUN"]
    assert any(f"-o {user}" in run and str(target) in run.split() for run in runs), (
        f"the image does not create {target} for uid {user}"
    )


def test_compose_sfamp_services_read_dot_env_and_drain_in_time() -> None:
    services = load_compose()["services"]
    for name in SFAMP_SERVICES:
        service = services[name]
        assert [entry["path"] for entry in service["env_file"]] == [".env"], name
        grace = duration_seconds(service["stop_grace_period"])
        assert grace > drain_timeout_seconds(), f"{name} is killed before it drains"
        unknown = set(service.get("environment", {})) - settings_env_names()
        assert not unknown, f"{name} sets unknown settings {unknown}"


def test_compose_deliver_can_scale() -> None:
    deliver = load_compose()["services"]["deliver"]
    assert "container_name" not in deliver
    assert "ports" not in deliver, "a host port allows one replica per host"
    assert "hostname" not in deliver


def test_compose_renders_with_a_compose_binary(tmp_path: Path) -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no Compose v2 binary (docker compose plugin or docker-compose v2)")
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")
    (tmp_path / "deploy").mkdir()
    shutil.copy(DOCKERFILE, tmp_path / "deploy" / "Dockerfile")
    result = subprocess.run(
        [*command, "--profile", "backfill", "config", "--format", "json"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert set(services) == {"kafka", "salesforce-sandbox", "amplitude-sandbox", *SFAMP_SERVICES}
    # environment: wins over env_file, so the one-shot job really has no health port.
    assert services["backfill"]["environment"]["SFAMP_RUNTIME__HEALTH_PORT"] == "0"
    assert services["deliver"]["environment"]["SFAMP_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"


# ---------------------------------------------------------------- .env.example


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    listed = set(env_example_entries())
    expected = settings_env_names()
    assert listed - expected == set(), "not settings of the model"
    assert expected - listed == set(), "settings missing from .env.example"


def test_env_example_explains_every_setting() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        if ENV_LINE.match(line):
            previous = lines[number - 1]
            explained = previous.startswith("# ") and not ENV_LINE.match(previous)
            assert explained, f"line {number + 1} ({line}) has no comment above it"


def test_env_example_loads_and_points_at_the_compose_services(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in settings_env_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env in the working directory
    settings = Settings(_env_file=ENV_EXAMPLE)
    services = load_compose()["services"]
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.salesforce.login_url == "http://salesforce-sandbox:8410"
    assert settings.amplitude.base_url == "http://amplitude-sandbox:8420"
    assert {"kafka", "salesforce-sandbox", "amplitude-sandbox"} <= set(services)
    mounts = [m.split(":")[1] for m in services["ingest"]["volumes"]]
    assert str(settings.mapping_file) in mounts
    # Optional settings stay commented out: an empty value is not "unset".
    assert all(value for active, value in env_example_entries().values() if active)


def test_compose_mapping_is_a_valid_mapping() -> None:
    mount = load_compose()["services"]["ingest"]["volumes"][0]
    source = ROOT / mount.split(":")[0]
    config, problems = validate_document(json.loads(source.read_text()))
    assert problems == []
    assert config is not None


# ---------------------------------------------------------------- Dockerfile


def test_image_entrypoint_is_the_console_script() -> None:
    (entrypoint,) = [arg for op, arg in dockerfile_instructions() if op == "ENTRYPOINT"]
    command = json.loads(entrypoint)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command == ["sfamp"]
    assert command[0] in scripts


def test_image_healthcheck_probes_healthz_on_the_health_port() -> None:
    (healthcheck,) = [arg for op, arg in dockerfile_instructions() if op == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    assert "SFAMP_RUNTIME__HEALTH_PORT" in healthcheck
    default_port = RuntimeSettings.model_fields["health_port"].default
    assert f"'{default_port}'" in healthcheck
    assert ("EXPOSE", str(default_port)) in dockerfile_instructions()


def test_image_copies_only_files_that_exist() -> None:
    for op, arg in dockerfile_instructions():
        if op == "COPY" and not arg.startswith("--from"):
            *sources, _destination = arg.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file"
