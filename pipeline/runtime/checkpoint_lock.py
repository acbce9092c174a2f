"""One run per checkpoint at a time, across processes: an advisory lock file beside it.

``sfamp backfill`` and ``sfamp reconcile`` (and the service's scheduled reconcile) each
take the lock of their checkpoint for the whole run, so two runs never interleave their
saves in one file (a resume would then pick up either's position).
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import ConfigError


@contextlib.contextmanager
def exclusive(checkpoint: Path, command: str, *, running: str) -> Iterator[None]:
    """Hold ``<checkpoint>.lock`` while the block runs.

    ``command`` names the run in messages ("backfill", "reconcile"); ``running`` says who
    may hold it already. Raises :class:`~pipeline.errors.ConfigError` when another process
    holds it, or when the lock file cannot be written.
    """
    lock_path = checkpoint.with_name(checkpoint.name + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("a")
    except OSError as exc:
        raise ConfigError(
            f"cannot write the {command} checkpoint {checkpoint}: {exc.strerror or exc}; "
            "choose a writable, persistent path with --checkpoint or SFAMP_RUNTIME__STATE_DIR"
        ) from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ConfigError(
                f"a {command} is already running with the checkpoint {checkpoint} "
                f"({running}): run this one once it has ended"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
