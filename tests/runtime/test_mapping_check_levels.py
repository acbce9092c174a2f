"""The start's check of the mapping against the org, retried until it answers, logs a failure
that only a person can fix (a refused login) at level error, one that clears by itself at
warning: as ``ingest_interrupted`` does."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from pipeline.config.mapping import MappingConfig
from pipeline.errors import Problem, SalesforceAuthError, SalesforceUnavailableError, SfampError
from pipeline.runtime.mapping_source import checked
from pipeline.runtime.retry import Backoff
from tests.runtime.conftest import MAPPING


@pytest.mark.parametrize(
    ("failure", "level", "fix_needed"),
    [
        (SalesforceAuthError("invalid_grant: authentication failure"), "error", True),
        (SalesforceUnavailableError("Salesforce did not answer"), "warning", False),
    ],
    ids=["refused-login", "no-answer"],
)
async def test_a_check_retried_says_how_much_it_needs_a_person(
    failure: SfampError, level: str, fix_needed: bool
) -> None:
    failures = [failure]

    async def check(mapping: MappingConfig) -> list[Problem]:
        if failures:
            raise failures.pop()
        return []

    with capture_logs() as logs:
        found = await checked(
            check, MappingConfig.model_validate(MAPPING), source="file:mapping.json",
            backoff=Backoff(first=0.0, ceiling=0.0),
        )  # fmt: skip
    assert found == []
    [retried] = [line for line in logs if line["event"] == "mapping_check_retrying"]
    assert (retried["log_level"], retried["fix_needed"]) == (level, fix_needed), retried
