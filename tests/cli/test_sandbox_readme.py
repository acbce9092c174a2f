"""The README's explore-by-hand pages stay true: the files it shows exist and give the output
it shows, the export block names what ``sandbox up`` prints, and every control route of the
sandboxes is documented."""

from __future__ import annotations

import asyncio
import re
import subprocess

from sfamp_sandbox.amplitude import IdentifyLimits, SandboxState
from sfamp_sandbox.amplitude import build_app as amplitude_app
from sfamp_sandbox.salesforce import SalesforceSandbox
from sfamp_sandbox.salesforce.app import build_app as salesforce_app
from tests.cli.sandbox_process import ROOT, cli_env, sfamp
from tests.cli.test_sandbox_up import EXPECTED

README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def test_examples_bad_json_gives_the_problems_the_readme_shows() -> None:
    done = subprocess.run(
        sfamp("config", "validate", "examples/bad.json"),
        cwd=ROOT,
        env=cli_env(COLUMNS="120"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    shown = README[README.index("$ sfamp config validate examples/bad.json") :]
    shown = shown[: shown.index("$ echo $?")]
    assert "examples/bad.json: 3 problems" in done.stdout
    for path in re.findall(r"\$\.[\w\[\].]+", shown):
        assert path in done.stdout, path
    assert len(re.findall(r"\$\.[\w\[\].]+", shown)) == 3


def test_the_readme_export_block_is_the_one_sandbox_up_prints() -> None:
    block = _section("Exploring by hand")
    assert set(re.findall(r"^export (SFAMP_\w+)=", block, flags=re.MULTILINE)) == EXPECTED


def test_every_sandbox_control_route_is_documented() -> None:
    documented = _section("Sandboxes")
    salesforce = salesforce_app(SalesforceSandbox().state, poll_timeout=1, client_timeout=1)
    amplitude = amplitude_app(SandboxState(), IdentifyLimits(), asyncio.Event())
    paths = {
        route.resource.canonical
        for app in (salesforce, amplitude)
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/__sandbox")
    }
    missing = sorted(path for path in paths if path not in documented)
    assert not missing, f"undocumented control routes: {missing}"
