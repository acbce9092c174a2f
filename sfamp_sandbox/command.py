"""The ``python -m sfamp_sandbox.<emulator>`` command line, shared by both emulators."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from sfamp_sandbox.latency import MAX_LATENCY_MS

Serve = Callable[..., Coroutine[Any, Any, None]]
# Bind errors that blame the host (not an address of this machine), not the port.
HOST_ERRNOS = frozenset({errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})


def run_until_interrupted(name: str, serve: Serve, host: str, port: int) -> None:
    """Parse ``--host``, ``--port`` and ``--latency-ms``, then ``serve`` until Ctrl-C,
    saying where it listens once it does.

    A port or host that cannot be listened on is one line (naming the option to change)
    and exit status 1.
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m sfamp_sandbox.{name.lower()}",
        description=f"Run the {name} sandbox until interrupted.",
    )
    parser.add_argument("--host", default=host)
    parser.add_argument("--port", type=int, default=port)
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
            asyncio.run(serve(args.host, args.port, ready=_ready(name), latency_ms=args.latency_ms))
    except OSError as exc:  # the port is taken or not ours to open, or the host not ours
        host_refused = isinstance(exc, socket.gaierror) or exc.errno in HOST_ERRNOS
        if isinstance(exc, socket.gaierror):
            reason = "the host name does not resolve"
        else:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        change = "choose another --host" if host_refused else "choose another --port"
        where = f"{args.host}:{args.port}"
        parser.exit(1, f"error: cannot listen on {where}: {reason}; {change}\n")


def _ready(name: str) -> Callable[[str], None]:
    def ready(url: str) -> None:
        print(f"{name} sandbox on {url} (Ctrl-C to stop)", flush=True)

    return ready
