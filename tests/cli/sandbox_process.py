"""The real ``sfamp`` CLI in a child process, for the sandbox, demo and port tests."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.ports import listenable

ROOT = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment without any SFAMP_* setting of the machine running the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFAMP_")}
    env.update({"PYTHONPATH": str(ROOT), "COLUMNS": "200"}, **extra)
    return env


def sfamp(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def run_sfamp(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``sfamp ARGS`` run to its end in a child process, its output captured as text."""
    return subprocess.run(
        sfamp(*args),
        cwd=ROOT,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def held_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port another program listens on for the duration of the block."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (bound as servers bind, with SO_REUSEADDR)."""
    return listenable(port, host, reuse_address=True)


def pid_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its new parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(FileNotFoundError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


class CliProcess:
    """``sfamp ARGS`` running in the background, its stdout and stderr in files."""

    def __init__(self, args: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.stdout_path = workdir / "stdout.txt"
        self.stderr_path = workdir / "stderr.txt"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                sfamp(*args), cwd=ROOT, env=env or cli_env(), stdout=out, stderr=err
            )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def output(self) -> str:
        return self.stdout + self.stderr_path.read_text()

    def wait_for_output(self, text: str, timeout: float = 60.0) -> None:
        def shown() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"sfamp exited early: {self.output[-3000:]}")
            # The whole line: a value after ``text`` may still be on its way through the pipe.
            at = self.stdout.find(text)
            return at >= 0 and "\n" in self.stdout[at:]

        wait_for(shown, timeout=timeout, what=f"a line with {text!r} in the output")

    def exports(self) -> dict[str, str]:
        """The variables of the printed ``export NAME=VALUE`` block, as a shell reads them."""
        found = {}
        for line in self.stdout.splitlines():
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                found[name] = " ".join(shlex.split(value))
        return found

    def broker_pid(self) -> int:
        brokers = [pid for pid in children(self.process.pid) if "tansu" in command_line(pid)]
        assert len(brokers) == 1, f"expected one broker child, found {brokers}"
        return brokers[0]

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"sfamp ignored {sig.name}: {self.output[-3000:]}") from None
