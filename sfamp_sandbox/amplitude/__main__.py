"""``python -m sfamp_sandbox.amplitude [--host H] [--port P] [--latency-ms N]``."""

from __future__ import annotations

from sfamp_sandbox.amplitude.server import DEFAULT_HOST, DEFAULT_PORT, serve
from sfamp_sandbox.command import run_until_interrupted


def main() -> None:
    run_until_interrupted("Amplitude", serve, DEFAULT_HOST, DEFAULT_PORT)


if __name__ == "__main__":
    main()
