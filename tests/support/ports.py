"""Ports for the servers tests start, which nothing else takes between the pick and the listen.

A port picked by binding port 0 comes from the kernel's ephemeral range. Until the process
the test starts listens on it, any outgoing connection of any process may be given that port
as its local one, and the other test worker may pick it too: the server then fails with
"address already in use", once in a few hundred runs. ``unused_port`` picks from below the
ephemeral range instead, where the kernel never hands out ports, from a slice of its own for
each test worker, and never the same port twice in one worker.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
from collections.abc import Iterator
from pathlib import Path

LOWEST = 10_000
SLICE = 400  # ports per test worker: a whole run of one worker listens on fewer than that
EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_EPHEMERAL = (32768, 60999)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        return LINUX_EPHEMERAL
    return low, high


def _candidates() -> list[int]:
    low, high = _ephemeral_range()
    below = range(LOWEST, low)
    return list(below) if len(below) >= 2 * SLICE else list(range(high + 1, 65536))


def _slice_index() -> int:
    """This worker's slice: the run's slices start at a place of their own, so two test runs
    on one machine seldom share ports, and each worker of a run takes the next one."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")
    start = int.from_bytes(hashlib.sha256(run.encode()).digest()[:4], "big") if run else 0
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return start + (int(worker) if worker.isdigit() else 0)


def _ports() -> Iterator[int]:
    candidates = _candidates()
    slices = max(1, len(candidates) // SLICE)
    first = (_slice_index() % slices) * SLICE
    return itertools.cycle(candidates[first : first + SLICE])


_next_ports = _ports()


def _listenable(port: int, host: str = "127.0.0.1") -> bool:
    """True when ``host:port`` can be listened on without SO_REUSEADDR (so nothing listens
    on it and no closed connection of it waits in TIME_WAIT)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
            sock.listen()
        except OSError:
            return False
    return True


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, outside the ephemeral range, that this
    test worker has not handed out before in this run (until its slice wraps round)."""
    for _ in range(SLICE):
        port = next(_next_ports)
        if _listenable(port):
            return port
    raise RuntimeError(f"no port of this worker's slice of {SLICE} can be listened on")


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 that nothing listens on, nor will during the test."""
    return f"http://127.0.0.1:{unused_port()}"
