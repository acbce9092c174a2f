"""The convergence oracle: does Amplitude hold exactly the mapping applied to Salesforce?

After a scenario, every Amplitude group must equal the mapping applied to the current
Salesforce record it comes from, and no other group of a mapped group type may exist.
The oracle reads both sandboxes' own state (never sfamp's transform code) and derives the
expected groups from the documented rules (DESIGN.md "Semantics that must hold", README
"The mapping"):

- the group value is the group name field's value as text: numbers without a redundant
  ``.0`` (``250.0`` names ``250``), booleans ``true``/``false``, datetimes as below, a
  multi-select picklist as its raw ``A;B`` text; a record whose group name is null names no
  group;
- properties: strings as strings (Amplitude keeps their first 1,024 characters), numbers
  as numbers (``250`` and ``250.0`` are equal, booleans are not numbers), booleans as
  booleans, dates ``YYYY-MM-DD``, datetimes ISO 8601 in UTC with milliseconds
  (``2024-04-26T18:38:05.000Z``), multi-select picklists as arrays, an address flattened
  to one property per component (``billing_address.City``), null as an absent property;
- a deleted record follows ``on_delete``: ``ignore`` keeps its properties, ``unset`` leaves
  none, ``mark`` adds ``sfdc_deleted: true`` (``false`` on every live record). Its group is
  optional, since a record deleted before sfamp saw it never had one;
- records that share a group value (a group name field that is not unique) share one
  group: each property may hold the value of any of them.

Entry points: :func:`check_convergence` (a :class:`ConvergenceReport`),
:func:`assert_converged` and :func:`wait_converged` (raise ``AssertionError`` with the
report), and the parts :func:`expected_groups`, :func:`amplitude_groups`, :func:`compare`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pipeline.config.mapping import MappingConfig
from sfamp_sandbox.amplitude import server as amplitude_server
from sfamp_sandbox.amplitude.state import SandboxState as AmplitudeState
from sfamp_sandbox.salesforce import SalesforceSandbox
from sfamp_sandbox.salesforce.org import Org

from .expected import (
    ABSENT,
    DELETED_PROPERTY,
    ExpectedGroup,
    GroupKey,
    expected_group_value,
    expected_groups,
    expected_value,
    matches,
)

__all__ = [
    "ABSENT",
    "DELETED_PROPERTY",
    "ConvergenceReport",
    "ExpectedGroup",
    "Mismatch",
    "amplitude_groups",
    "assert_converged",
    "check_convergence",
    "compare",
    "expected_group_value",
    "expected_groups",
    "expected_value",
    "wait_converged",
]

SHOWN_PER_KIND: Final = 20


@dataclass(frozen=True, slots=True)
class Mismatch:
    group_type: str
    group_value: str
    prop: str
    expected: tuple[Any, ...]
    actual: Any
    sources: tuple[str, ...]


@dataclass(slots=True)
class ConvergenceReport:
    """Missing groups, extra groups and per-property mismatches, with a readable text."""

    checked: int
    missing: list[ExpectedGroup] = field(default_factory=list)
    extra: list[tuple[GroupKey, dict[str, Any]]] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.mismatches)

    def describe(self) -> str:
        if self.ok:
            return f"Amplitude matches Salesforce ({self.checked} expected groups checked)"
        lines = [
            f"Amplitude has not converged to Salesforce: {len(self.missing)} missing group(s),"
            f" {len(self.extra)} extra group(s), {len(self.mismatches)} property mismatch(es)"
            f" ({self.checked} expected groups checked)"
        ]
        lines += _section("missing groups", [_missing_line(g) for g in self.missing])
        lines += _section("extra groups", [f"{t}/{v}: {props!r}" for (t, v), props in self.extra])
        lines += _section("mismatches", [_mismatch_line(m) for m in self.mismatches])
        return "\n".join(lines)


# -- reading Amplitude and comparing --------------------------------------------------------


def amplitude_groups(
    amplitude: amplitude_server.AmplitudeSandbox | AmplitudeState, region: str = "us"
) -> dict[GroupKey, dict[str, Any]]:
    """Every group the Amplitude sandbox holds in ``region``, with its properties (a copy)."""
    state = (
        amplitude.state if isinstance(amplitude, amplitude_server.AmplitudeSandbox) else amplitude
    )
    return {key: dict(props) for key, props in state.store(region).groups.items()}


def _compare_group(
    expected: ExpectedGroup, actual: dict[str, Any], unchecked_props: frozenset[str]
) -> list[Mismatch]:
    found = []
    for name in sorted(set(expected.properties) | set(actual)):
        if name in unchecked_props and name not in expected.properties:
            continue
        candidates = expected.properties.get(name, [ABSENT])
        value = actual.get(name, ABSENT)
        if any(matches(c, value) for c in candidates):
            continue
        found.append(
            Mismatch(
                expected.group_type,
                expected.group_value,
                name,
                tuple(candidates),
                value,
                tuple(expected.sources),
            )
        )
    return found


def compare(
    expected: Mapping[GroupKey, ExpectedGroup],
    actual: Mapping[GroupKey, dict[str, Any]],
    *,
    group_types: Iterable[str],
    allow_extra: Iterable[GroupKey] = (),
    unchecked_props: Iterable[str] = (),
) -> ConvergenceReport:
    """Missing, extra (of ``group_types`` only, except ``allow_extra``) and mismatching
    groups. Properties in ``unchecked_props`` may be present on a group without being
    expected (what an unchecked field left there)."""
    types, allowed, skip = (
        frozenset(group_types),
        frozenset(allow_extra),
        frozenset(unchecked_props),
    )
    report = ConvergenceReport(checked=len(expected))
    for key in sorted(expected):
        group = expected[key]
        if key not in actual:
            if group.required:
                report.missing.append(group)
            continue
        report.mismatches += _compare_group(group, actual[key], skip)
    for key in sorted(actual):
        if key[0] in types and key not in expected and key not in allowed:
            report.extra.append((key, actual[key]))
    return report


def check_convergence(
    salesforce: SalesforceSandbox | Org,
    amplitude: amplitude_server.AmplitudeSandbox | AmplitudeState,
    mapping: MappingConfig | Mapping[str, Any],
    *,
    region: str = "us",
    unchecked: Iterable[str] = (),
    allow_extra: Iterable[GroupKey] = (),
) -> ConvergenceReport:
    """Compare the Amplitude sandbox with the mapping applied to the Salesforce sandbox."""
    config = (
        mapping if isinstance(mapping, MappingConfig) else MappingConfig.model_validate(mapping)
    )
    skipped = frozenset(unchecked)
    return compare(
        expected_groups(salesforce, config, unchecked=skipped),
        amplitude_groups(amplitude, region),
        group_types=[m.group_type for m in config.mappings],
        allow_extra=allow_extra,
        unchecked_props=_unchecked_properties(config, skipped),
    )


def _unchecked_properties(config: MappingConfig, unchecked: frozenset[str]) -> frozenset[str]:
    names = set()
    for m in config.mappings:
        for prop in m.group_properties:
            if f"{m.sfdc_object}.{prop.sfdc_field}" in unchecked:
                names.add(prop.amplitude_property)
    return frozenset(names)


def assert_converged(
    salesforce: SalesforceSandbox | Org,
    amplitude: amplitude_server.AmplitudeSandbox | AmplitudeState,
    mapping: MappingConfig | Mapping[str, Any],
    **options: Any,
) -> ConvergenceReport:
    """:func:`check_convergence`, raising ``AssertionError`` with the report unless it is ok."""
    report = check_convergence(salesforce, amplitude, mapping, **options)
    if not report.ok:
        raise AssertionError(report.describe())
    return report


async def wait_converged(
    salesforce: SalesforceSandbox | Org,
    amplitude: amplitude_server.AmplitudeSandbox | AmplitudeState,
    mapping: MappingConfig | Mapping[str, Any],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    **options: Any,
) -> ConvergenceReport:
    """Wait until the sandboxes converge; after ``timeout`` seconds raise ``AssertionError``
    with the last report."""
    deadline = time.monotonic() + timeout
    while True:
        report = check_convergence(salesforce, amplitude, mapping, **options)
        if report.ok:
            return report
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {report.describe()}")
        await asyncio.sleep(interval)


# -- the report's text ----------------------------------------------------------------------


def _section(title: str, lines: list[str]) -> list[str]:
    if not lines:
        return []
    shown = [f"  {line}" for line in lines[:SHOWN_PER_KIND]]
    if len(lines) > SHOWN_PER_KIND:
        shown.append(f"  ... and {len(lines) - SHOWN_PER_KIND} more")
    return [f"{title}:", *shown]


def _expected_text(candidates: tuple[Any, ...] | list[Any]) -> str:
    texts = [repr(c) for c in candidates]
    return texts[0] if len(texts) == 1 else "one of " + ", ".join(texts)


def _missing_line(group: ExpectedGroup) -> str:
    props = ", ".join(
        f"{name}={_expected_text(values)}"
        for name, values in sorted(group.properties.items())
        if values != [ABSENT]
    )
    return f"{group.group_type}/{group.group_value} from {', '.join(group.sources)}: {props}"


def _mismatch_line(m: Mismatch) -> str:
    return (
        f"{m.group_type}/{m.group_value} {m.prop}: expected {_expected_text(m.expected)},"
        f" got {m.actual!r} (from {', '.join(m.sources)})"
    )
