"""``sfamp demo`` (what ``make demo`` runs) completes end to end and exits 0; ``--keep`` leaves
the stack and its data running, usable with the exports it prints, until SIGTERM; a demo
stopped before it finished exits 130 (Ctrl-C) or 143 (SIGTERM)."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from rich.console import Console

from pipeline.demo import _explore_hint
from tests.cli.sandbox_process import (
    ROOT,
    CliProcess,
    cli_env,
    pid_gone,
    port_free,
    sfamp,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
def test_the_demo_runs_end_to_end(tmp_path: Path) -> None:
    done = subprocess.run(
        sfamp("demo", "--accounts", "120"),
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "backfill: " in output
    assert "Biotechnology" in output  # the live update reached Amplitude
    assert "demo finished" in output
    assert "Traceback" not in output
    closing = done.stdout.strip().splitlines()[-5:]
    assert closing[0] == "To explore further:", closing
    assert any(line.strip().startswith("sfamp demo --keep") for line in closing), closing


@pytest.mark.timeout(180)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_demo_keep_leaves_the_stack_and_its_data_running(tmp_path: Path) -> None:
    demo = CliProcess(["demo", "--keep", "--accounts", "20"], tmp_path)
    try:
        demo.wait_for_output("SFAMP_RUNTIME__HEALTH_PORT=", timeout=150)
        exports = demo.exports()
        broker = demo.broker_pid()

        # The printed read-back command shows the demo's live update, kept in Amplitude. It is
        # the last line printed, after the exports: wait for the whole line.
        read_back = r"curl -s (http://\S+/__sandbox/groups/account/\S+)\n"
        wait_for(
            lambda: re.search(read_back, demo.stdout) is not None,
            timeout=30,
            what="the read-back curl line in the output",
        )
        group_url = re.search(read_back, demo.stdout)
        assert group_url is not None, demo.stdout
        group = httpx.get(group_url[1], timeout=5).json()
        assert group["properties"]["tier"] == "Enterprise", group

        # Pasted exports reach the kept Kafka: the mapping the demo published is there.
        exported = subprocess.run(
            sfamp("config", "export"),
            cwd=ROOT,
            env=cli_env(**exports),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert exported.returncode == 0, exported.stderr
        assert '"Tier__c"' in exported.stdout
    finally:
        code = demo.stop()
    assert code == 0, demo.output[-3000:]
    assert demo.stdout.rstrip().endswith("stopped")
    kafka_port = int(exports["SFAMP_KAFKA__BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
    salesforce_port = urlsplit(exports["SFAMP_SALESFORCE__LOGIN_URL"]).port
    assert salesforce_port is not None
    wait_for(lambda: pid_gone(broker), timeout=15, what="the broker to stop with the demo")
    wait_for(lambda: port_free(kafka_port), timeout=15, what="the Kafka port to be free")
    assert port_free(salesforce_port)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_demo_stopped_before_it_finished_exits_as_interrupted(
    sig: signal.Signals, tmp_path: Path
) -> None:
    demo = CliProcess(["demo", "--accounts", "20"], tmp_path)
    try:
        demo.wait_for_output("seeded 20 Accounts", timeout=90)
    finally:
        code = demo.stop(sig)
    assert code == 128 + sig.value, demo.output[-3000:]
    assert demo.stdout.rstrip().endswith("stopped"), demo.output[-3000:]
    assert "Traceback" not in demo.output


def test_the_closing_hint_reads_plainly_and_as_the_readme_quotes_it() -> None:
    out = io.StringIO()
    _explore_hint(Console(file=out, width=80))
    lines = out.getvalue().strip().splitlines()
    assert lines[0] == "To explore further:"
    assert lines[-1].startswith("Both print export lines; in the shell where you paste them, ")
    assert lines[-1] in (ROOT / "README.md").read_text()  # the README quotes it as printed
