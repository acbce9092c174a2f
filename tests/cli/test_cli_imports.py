"""The command line loads none of the emulators: `sfamp run` imports only the product."""

from __future__ import annotations

import json
import subprocess
import sys

from pipeline.cli import sandbox_cmd
from sfamp_sandbox import amplitude as amplitude_sandbox
from sfamp_sandbox import kafka as embedded_kafka
from sfamp_sandbox import latency
from sfamp_sandbox import salesforce as salesforce_sandbox

PROBE = (
    "import json, sys; import pipeline.cli; "
    "print(json.dumps(sorted(m for m in sys.modules if m.startswith('sfamp_sandbox'))))"
)


def test_importing_the_cli_loads_no_emulator_module() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"import pipeline.cli loaded emulator modules: {loaded}"


def test_the_sandbox_commands_defaults_are_the_emulators_own() -> None:
    assert sandbox_cmd.KAFKA_PORT == embedded_kafka.DEFAULT_PORT
    assert sandbox_cmd.SALESFORCE_PORT == salesforce_sandbox.DEFAULT_PORT
    assert sandbox_cmd.AMPLITUDE_PORT == amplitude_sandbox.DEFAULT_PORT
    assert sandbox_cmd.MAX_LATENCY_MS == latency.MAX_LATENCY_MS
