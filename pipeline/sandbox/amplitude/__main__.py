"""``python -m pipeline.sandbox.amplitude [--host H] [--port P]``: the sandbox on its own."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from pipeline.sandbox.amplitude.server import DEFAULT_HOST, DEFAULT_PORT, serve


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the Amplitude sandbox until interrupted.")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
