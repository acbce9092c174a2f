"""Mapped fields Salesforce will not let sfamp read (field-level security), as the
service shows them: in ``/status`` (``unreadable_fields``), the
``sfamp_unreadable_fields`` metric and a log line when they can be read again.

Both a re-sync that waits for them (:mod:`pipeline.runtime.resync`) and a describe
that omits them (:class:`pipeline.runtime.salesforce_reads.SchemaCache`, read by
ingest and deliver) report here.
"""

from __future__ import annotations

import structlog

from pipeline.errors import UnreadableFieldsError
from pipeline.runtime.cadence import now_ms
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.salesforce_reads import HiddenFields, RestReads, SchemaCache
from pipeline.runtime.state import ServiceState

log = structlog.get_logger(__name__)


def reporting_schemas(rest: RestReads, state: ServiceState, metrics: Metrics) -> SchemaCache:
    """A :class:`SchemaCache` whose describes report the mapped fields they omit here."""
    return SchemaCache(rest, on_hidden=hidden_fields_reporter(state, metrics))


def hidden_fields_reporter(state: ServiceState, metrics: Metrics) -> HiddenFields:
    """What a :class:`SchemaCache` tells of the mapped fields its describes omit, shown in
    ``/status`` and ``sfamp_unreadable_fields`` as a waiting re-sync shows them: a read
    leaves such a field out (its property is left alone), and says so there."""

    def report(sfdc_object: str, hidden: frozenset[str]) -> None:
        if hidden:
            fields_hidden(state, metrics, UnreadableFieldsError(sfdc_object, sorted(hidden)))
        fields_shown(state, metrics, sfdc_object, hidden)

    return report


def fields_hidden(state: ServiceState, metrics: Metrics, exc: UnreadableFieldsError) -> None:
    state.fields_unreadable(exc.sfdc_object, exc.fields, str(exc), now_ms())
    for name in exc.fields:
        metrics.unreadable_fields.labels(exc.sfdc_object, name).set(1)


def fields_shown(
    state: ServiceState, metrics: Metrics, sfdc_object: str, hidden: frozenset[str] = frozenset()
) -> None:
    """The object's fields but ``hidden`` can be read (again): their problem is over."""
    for name in state.fields_readable(sfdc_object, hidden):
        metrics.unreadable_fields.labels(sfdc_object, name).set(0)
        log.warning("salesforce_field_readable", object=sfdc_object, field=name)
