"""The embedded broker's port: one it picked itself and found taken is picked again; one the
caller chose is not. The health port ``sfamp sandbox up`` exports avoids the ephemeral range."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

import pytest

import pipeline.sandbox_stack as sandbox_stack
import sfamp_sandbox.kafka as embedded
from pipeline.errors import ListenError
from pipeline.sandbox_stack import HEALTH_PORT_FALLBACKS, SandboxStack, health_port_for_run
from sfamp_sandbox.kafka import PICKS, EmbeddedKafka, _answers_metadata
from tests.cli.sandbox_process import held_port
from tests.support.ports import unused_port

pytestmark = pytest.mark.integration

IN_USE = "[Aa]ddress already in use"


@contextlib.contextmanager
def held_ports(count: int) -> Iterator[list[int]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(held_port()) for _ in range(count)]


@contextlib.contextmanager
def picked_taken(monkeypatch: pytest.MonkeyPatch, count: int) -> Iterator[list[int]]:
    """``count`` ports another program holds, the broker's picks in that order."""
    with held_ports(count) as taken:
        picks = iter(taken)
        monkeypatch.setattr(embedded, "free_port", lambda host: next(picks))
        yield taken


async def test_a_picked_port_taken_before_the_broker_listens_is_picked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    free = unused_port()
    with held_ports(1) as taken:
        picks = iter([*taken, free])
        monkeypatch.setattr(embedded, "free_port", lambda host: next(picks))
        broker = await EmbeddedKafka().start()
        try:
            assert broker.port == free, f"the broker listens on {broker.port}"
            assert await _answers_metadata(broker.bootstrap_servers)
        finally:
            broker.stop()


async def test_picked_ports_taken_every_time_end_with_the_last_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with picked_taken(monkeypatch, PICKS) as taken:
        broker = EmbeddedKafka()
        with pytest.raises(OSError, match=IN_USE):
            await broker.start()
    assert broker.port == taken[-1], f"the last port tried was {broker.port}, not {taken[-1]}"


async def test_a_port_the_caller_chose_is_tried_once(monkeypatch: pytest.MonkeyPatch) -> None:
    picked: list[int] = []

    def pick(host: str) -> int:
        picked.append(unused_port())
        return picked[-1]

    monkeypatch.setattr(embedded, "free_port", pick)
    with held_port() as taken, pytest.raises(OSError, match=IN_USE):
        await EmbeddedKafka(taken).start()
    assert picked == [], "another port was picked for a port the caller chose"


async def test_a_picked_port_taken_after_the_check_is_picked_again_when_the_broker_exits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    free = unused_port()
    checks = iter([None])  # the first check passes: the port is taken just after it

    def checked(host: str, port: int) -> OSError | None:
        return next(checks, None) if port != free else None

    with held_ports(1) as taken:
        picks = iter([*taken, free])
        monkeypatch.setattr(embedded, "free_port", lambda host: next(picks))
        monkeypatch.setattr(embedded, "bind_error", checked)
        broker = await EmbeddedKafka().start()
        try:
            assert broker.port == free, f"the broker listens on {broker.port}"
        finally:
            broker.stop()


async def test_the_stacks_error_names_the_last_port_the_broker_tried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with picked_taken(monkeypatch, PICKS) as taken, pytest.raises(ListenError) as refused:
        await SandboxStack().start()
    assert f":{taken[-1]} " in str(refused.value), str(refused.value)
    assert "--kafka-port" in str(refused.value)


def test_the_exported_health_port_falls_back_outside_the_ephemeral_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    in_use = {8080, HEALTH_PORT_FALLBACKS[0]}
    refused = OSError(errno.EADDRINUSE, "Address already in use")
    monkeypatch.setattr(
        sandbox_stack, "bind_error", lambda host, port: refused if port in in_use else None
    )
    assert health_port_for_run() == HEALTH_PORT_FALLBACKS[1]
