"""The test suite's own port picker: outside the ephemeral range, one slice per worker."""

from __future__ import annotations

import pytest

from tests.support import ports

LINUX = ports.LINUX_EPHEMERAL


@pytest.mark.parametrize(
    "ephemeral",
    [LINUX, (10_500, 65_000), (1024, 60_999), (49_152, 65_535)],
    ids=["linux", "high-only-few", "low-start", "iana"],
)
def test_the_workers_of_a_run_pick_from_slices_of_their_own_outside_the_range(
    ephemeral: tuple[int, int],
) -> None:
    candidates = ports.candidates(ephemeral)
    first, second = (set(ports.worker_slice(candidates, "run-1", w, 2)) for w in ("gw0", "gw1"))
    assert len(first) >= ports.FEWEST
    assert not first & second, "two workers of one run share ports"
    low, high = ephemeral
    assert not [port for port in first | second if low <= port <= high]


def test_a_run_without_workers_has_one_slice() -> None:
    candidates = ports.candidates(LINUX)
    assert len(ports.worker_slice(candidates, "", "gw0", 1)) == ports.SLICE


def test_too_few_ports_for_the_workers_is_one_clear_error() -> None:
    with pytest.raises(RuntimeError, match="cannot give 2 test workers"):
        ports.worker_slice(ports.candidates((ports.LOWEST, 65_535)), "run-1", "gw0", 2)


def test_no_picked_port_is_one_the_kernel_hands_out() -> None:
    low, high = ports.ephemeral_range()
    picked = [ports.unused_port() for _ in range(20)]
    assert len(set(picked)) == len(picked), picked
    assert not [port for port in picked if low <= port <= high], (low, high, picked)
