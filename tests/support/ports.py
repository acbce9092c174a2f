"""Ports for the servers tests start, which nothing else takes between the pick and the listen.

A port picked by binding port 0 comes from the kernel's ephemeral range. Until the process
the test starts listens on it, any outgoing connection of any process may be given that port
as its local one, and the other test worker may pick it too: the server then fails with
"address already in use", once in a few hundred runs. ``unused_port`` picks from outside the
ephemeral range instead, where the kernel never hands out ports, from a slice of its own for
each test worker, and never the same port twice in one worker until its slice wraps round.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

LOWEST = 10_000  # below: ports that well-known services listen on
SLICE = 400  # ports per test worker: a whole run of one worker listens on fewer than that
FEWEST = 50  # a slice smaller than that would wrap round within a test module
EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_EPHEMERAL = (32768, 60999)


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections (Linux's default elsewhere)."""
    try:
        low, high = (int(part) for part in EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        return LINUX_EPHEMERAL
    return low, high


def candidates(ephemeral: tuple[int, int]) -> list[int]:
    """Every port from :data:`LOWEST` up that is not in the ``ephemeral`` range."""
    low, high = ephemeral
    return [port for port in range(LOWEST, 65536) if not low <= port <= high]


def worker_slice(ports: list[int], run: str, worker: str, workers: int) -> list[int]:
    """The ports of test worker ``worker`` (``gwN``) of ``workers`` in test run ``run``.

    A run's slices start at a place of their own (from its id), so two runs on one machine
    seldom share ports; each worker of a run takes the next slice. Raises RuntimeError when
    the ports cannot give each worker a slice of at least :data:`FEWEST`.
    """
    size = min(SLICE, len(ports) // max(workers, 1))
    if size < FEWEST:
        raise RuntimeError(
            f"{len(ports)} ports outside the ephemeral range from {LOWEST} up cannot give "
            f"{workers} test workers {FEWEST} each; widen it in {EPHEMERAL} or run fewer workers"
        )
    slices = len(ports) // size
    start = int.from_bytes(hashlib.sha256(run.encode()).digest()[:4], "big") if run else 0
    index = worker.removeprefix("gw")
    first = ((start + (int(index) if index.isdigit() else 0)) % slices) * size
    return ports[first : first + size]


def _ports() -> Iterator[int]:
    """This process's ports, round its slice from a random place (two runs that share a
    slice then seldom walk it in step)."""
    mine = worker_slice(
        candidates(ephemeral_range()),
        os.environ.get("PYTEST_XDIST_TESTRUNUID", ""),
        os.environ.get("PYTEST_XDIST_WORKER", "gw0"),
        int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")),
    )
    at = random.randrange(len(mine))
    return itertools.cycle(mine[at:] + mine[:at])


_next_ports: Iterator[int] | None = None


def listenable(port: int, host: str = "127.0.0.1", *, reuse_address: bool = False) -> bool:
    """True when ``host:port`` can be listened on. With ``reuse_address`` (as servers bind),
    a closed connection of the port waiting in TIME_WAIT does not count; without, it does."""
    with socket.socket() as sock:
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen()
        except OSError:
            return False
    return True


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, outside the ephemeral range, from this
    test worker's slice. Raises RuntimeError when none of the slice can be listened on."""
    global _next_ports
    if _next_ports is None:
        _next_ports = _ports()
    for _ in range(SLICE):
        port = next(_next_ports)
        if listenable(port):
            return port
    raise RuntimeError("no port of this test worker's slice can be listened on")


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 that nothing listens on, nor will during the test."""
    return f"http://127.0.0.1:{unused_port()}"
