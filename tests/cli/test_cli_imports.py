"""What a command loads: never the emulators, and only the libraries it uses.

`sfamp backfill`, `sfamp config ...` and `sfamp --version` start in a fraction of the
time it takes to load the service, the console and the CometD client; these tests
look at ``sys.modules`` in a fresh interpreter after the command was looked up (or
run) as the ``sfamp`` entry point does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipeline.cli import sandbox_cmd
from sfamp_sandbox import amplitude as amplitude_sandbox
from sfamp_sandbox import kafka as embedded_kafka
from sfamp_sandbox import latency
from sfamp_sandbox import salesforce as salesforce_sandbox

ROOT = Path(__file__).resolve().parents[2]

# Libraries (and sfamp modules) only the service, the console or the CDC check use.
STREAMING_AND_SERVING = (
    "aiohttp",
    "aiosfstream_ng",
    "aiocometd_ng",
    "jinja2",
    "jwt",
    "pipeline.console",
    "pipeline.runtime.service",
    "pipeline.runtime.ingest",
    "pipeline.salesforce.cdc",
)

LOADED = """
import json, sys
def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in {{"sfamp_sandbox", "aiohttp",
        "aiosfstream_ng", "aiocometd_ng", "jinja2", "jwt"}} or m.startswith("pipeline."))
{body}
print(json.dumps(loaded()))
"""


def loaded_after(body: str, *args: str) -> list[str]:
    """The modules of interest loaded once ``body`` ran in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", LOADED.format(body=body), *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.stdout.strip(), result.stderr
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


def as_sfamp(*args: str) -> str:
    """A probe body that runs ``sfamp args`` as the entry point does; it must succeed."""
    return (
        f"import runpy, sys\nsys.argv = ['sfamp', *{list(args)!r}]\n"
        "try:\n"
        "    runpy.run_module('pipeline', run_name='__main__')\n"
        "except SystemExit as stop:\n"
        "    assert not stop.code, stop.code"
    )


def heavy(modules: list[str]) -> list[str]:
    """Which of ``STREAMING_AND_SERVING`` are loaded: a library by its package name."""
    return sorted(
        {m if m.startswith("pipeline.") else m.split(".")[0] for m in modules}
        & set(STREAMING_AND_SERVING)
    )


def test_loading_every_command_loads_no_emulator_module() -> None:
    body = (
        "import typer; from pipeline.cli import app\n"
        "root = typer.main.get_command(app); context = typer.Context(root)\n"
        "names = root.list_commands(context)\n"
        "assert len(names) >= 10, names\n"
        "for name in names: assert root.get_command(context, name) is not None, name"
    )
    emulators = [m for m in loaded_after(body) if m.startswith("sfamp_sandbox")]
    assert emulators == [], f"the commands loaded emulator modules: {emulators}"


def test_the_backfill_command_loads_no_streaming_console_or_service_module() -> None:
    body = (
        "import typer; from pipeline.cli import app\n"
        "root = typer.main.get_command(app)\n"
        "assert root.get_command(typer.Context(root), 'backfill') is not None\n"
        "import pipeline.runtime.backfill"
    )
    modules = loaded_after(body)
    assert "pipeline.cli.backfill_cmd" in modules  # the probe did load the command
    assert heavy(modules) == [], f"`sfamp backfill` loads {heavy(modules)}"


def test_a_config_command_loads_no_streaming_console_or_service_module() -> None:
    modules = loaded_after(as_sfamp("config", "validate", "examples/mapping.json"))
    assert "pipeline.cli.config_cmd" in modules
    assert heavy(modules) == [], f"`sfamp config validate` loads {heavy(modules)}"


def test_the_version_loads_no_command() -> None:
    loaded = loaded_after(as_sfamp("--version"))
    commands = [m for m in loaded if m.startswith(("pipeline.cli.", "pipeline.run"))]
    assert commands == ["pipeline.cli.help"], commands


def test_the_streaming_check_still_finds_its_client() -> None:
    """The CometD client is loaded where it is used: the authenticator the service and
    `config verify` hand it comes from the module that owns aiosfstream."""
    body = (
        "from pipeline.config.settings import SalesforceSettings\n"
        "from pipeline.salesforce.auth import SalesforceAuth\n"
        "from aiosfstream_ng.auth import AuthenticatorBase\n"
        "import httpx\n"
        "auth = SalesforceAuth(SalesforceSettings(), httpx.AsyncClient())\n"
        "assert isinstance(auth.streaming_authenticator(), AuthenticatorBase)"
    )
    assert "pipeline.salesforce.cdc" in loaded_after(body)


def test_the_sandbox_commands_defaults_are_the_emulators_own() -> None:
    assert sandbox_cmd.KAFKA_PORT == embedded_kafka.DEFAULT_PORT
    assert sandbox_cmd.SALESFORCE_PORT == salesforce_sandbox.DEFAULT_PORT
    assert sandbox_cmd.AMPLITUDE_PORT == amplitude_sandbox.DEFAULT_PORT
    assert sandbox_cmd.MAX_LATENCY_MS == latency.MAX_LATENCY_MS
