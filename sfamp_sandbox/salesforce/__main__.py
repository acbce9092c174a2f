"""``python -m sfamp_sandbox.salesforce [--host H] [--port P] [--latency-ms N]``."""

from __future__ import annotations

from sfamp_sandbox.command import run_until_interrupted
from sfamp_sandbox.salesforce.server import DEFAULT_HOST, DEFAULT_PORT, serve


def main() -> None:
    run_until_interrupted("Salesforce", serve, DEFAULT_HOST, DEFAULT_PORT)


if __name__ == "__main__":
    main()
