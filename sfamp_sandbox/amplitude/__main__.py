"""``python -m sfamp_sandbox.amplitude [--host H] [--port P] [--latency-ms N]``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from sfamp_sandbox.amplitude.server import DEFAULT_HOST, DEFAULT_PORT, serve
from sfamp_sandbox.latency import MAX_LATENCY_MS


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the Amplitude sandbox until interrupted.")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--latency-ms",
        type=int,
        default=0,
        help="answer every API request this many milliseconds later, like a WAN round trip",
    )
    args = parser.parse_args()
    if not 0 <= args.latency_ms <= MAX_LATENCY_MS:
        parser.error(f"--latency-ms must be from 0 to {MAX_LATENCY_MS}")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.host, args.port, latency_ms=args.latency_ms))
    except OSError as exc:  # the port is taken or not ours to open
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        where = f"{args.host}:{args.port}"
        parser.exit(1, f"error: cannot listen on {where}: {reason}; choose another --port\n")


if __name__ == "__main__":
    main()
