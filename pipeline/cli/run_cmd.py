"""``sfamp run``: the long-running service (ingest, deliver, or both)."""

from __future__ import annotations

import asyncio
from enum import StrEnum
from pathlib import Path

import structlog
import typer

from pipeline.cli.common import MAPPING, fail, given_mapping_file, one_of, settings_or_exit
from pipeline.errors import SfampError
from pipeline.runtime.health import check_health_port
from pipeline.runtime.service import run_service

log = structlog.get_logger(__name__)


class RoleChoice(StrEnum):
    all = "all"
    ingest = "ingest"
    deliver = "deliver"


ROLE = typer.Option(
    RoleChoice.all,
    "--role",
    parser=one_of(RoleChoice),
    help="ingest: CDC -> Kafka (one per org). deliver: Kafka -> Amplitude (scale out). "
    "all: both in one process.",
)


def run(role: RoleChoice = ROLE, mapping: Path | None = MAPPING) -> None:
    """Follow Salesforce CDC and keep Amplitude group properties in step.

    Runs until SIGTERM or Ctrl-C, then drains within
    SFAMP_RUNTIME__DRAIN_TIMEOUT_SECONDS. Health: /healthz, /readyz, /status and
    /metrics on SFAMP_RUNTIME__HEALTH_PORT. With no mapping file and nothing
    published, it waits for the first import ('sfamp config import', or Save in
    the console).
    """
    settings = settings_or_exit()
    try:
        check_health_port(settings.runtime)
        mapping_file = given_mapping_file(mapping, settings)
        asyncio.run(
            run_service(settings, role=role.value, mapping_file=mapping_file, handle_signals=True)
        )
    except SfampError as exc:
        fail(exc)
    except ExceptionGroup as group:
        known = first_known(group)
        if known is None:
            raise
        log.error("service_stopped_on_error", error=type(known).__name__, reason=str(known))
        fail(known)


def first_known(group: BaseExceptionGroup[BaseException]) -> SfampError | None:
    """The first project error inside a task group's exception group, if any."""
    for exc in group.exceptions:
        if isinstance(exc, SfampError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = first_known(exc)
            if found is not None:
                return found
    return None
