"""The test suite's own port picker: outside the ephemeral range, one slice per worker."""

from __future__ import annotations

import itertools

import pytest

from tests.support import ports


def _slice(monkeypatch: pytest.MonkeyPatch, run: str, worker: str) -> set[int]:
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", run)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    return set(itertools.islice(ports._ports(), ports.SLICE))


def test_the_workers_of_a_run_pick_from_slices_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = (_slice(monkeypatch, "run-1", worker) for worker in ("gw0", "gw1"))
    assert len(first) == len(second) == ports.SLICE
    assert not first & second


def test_no_picked_port_is_one_the_kernel_hands_out() -> None:
    low, high = ports._ephemeral_range()
    picked = [ports.unused_port() for _ in range(20)]
    assert len(set(picked)) == len(picked), picked
    assert not [port for port in picked if low <= port <= high], (low, high, picked)
