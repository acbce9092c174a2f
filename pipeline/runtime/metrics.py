"""Prometheus metrics of one sfamp process (names are documented in the README)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pipeline.amplitude.delivery import Answer, is_invalid_api_key
from pipeline.kafka.records import ReplayMark
from pipeline.kafka.replay_age import mark_age_seconds


class Metrics:
    """Every metric sfamp exports, on a registry of its own (one per service instance)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Amplitude requests answered (or failed) so far: a flush's own share, even when
        # it fails, is the difference across it.
        self.amplitude_answers = 0
        self.events_ingested = Counter(
            "sfamp_events_ingested", "CDC change records written to Kafka", ["object"], registry=r
        )
        self.replay_id_age = Gauge(
            "sfamp_replay_id_age_seconds",
            "Age of the stored replay id per subscribed channel: since its event's commit "
            "(since it was stored, before the channel's first event)",
            ["channel"],
            registry=r,
        )
        self._replay_marks: dict[str, ReplayMark] = {}
        self.consumer_lag = Gauge(
            "sfamp_consumer_lag_messages", "Messages not yet consumed by deliver", registry=r
        )
        self.pending_groups = Gauge(
            "sfamp_pending_groups", "Groups waiting for the next flush", registry=r
        )
        self.flush_duration = Histogram(
            "sfamp_flush_duration_seconds",
            "Time to deliver one flush",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.flush_groups = Gauge(
            "sfamp_flush_groups", "Identifications sent by the last flush", registry=r
        )
        self.amplitude_requests = Counter(
            "sfamp_amplitude_requests",
            "Amplitude requests by HTTP status (timeout or connection_error: no answer)",
            ["status"],
            registry=r,
        )
        self.amplitude_key_refused = Gauge(
            "sfamp_amplitude_key_refused",
            "1 while Amplitude refuses the API key (400 invalid_api_key), 0 once it accepts",
            registry=r,
        )
        self.dlq_messages = Counter(
            "sfamp_dlq_messages", "Entries written to the DLQ", ["reason"], registry=r
        )
        self.last_successful_flush = Gauge(
            "sfamp_last_successful_flush_timestamp_seconds",
            "Unix time of the last flush that Amplitude accepted while Kafka answered",
            registry=r,
        )
        self.kafka_unreachable = Gauge(
            "sfamp_kafka_unreachable",
            "1 while Kafka does not answer the service's metadata requests, 0 once it does",
            registry=r,
        )
        self.flush_failures = Counter(
            "sfamp_flush_failures",
            "Flushes that failed and left their offsets uncommitted",
            registry=r,
        )
        self.resyncs = Counter(
            "sfamp_resyncs",
            "Object re-syncs after GAP_OVERFLOW or an expired replay id",
            ["object", "cause"],
            registry=r,
        )

        self.unreadable_fields = Gauge(
            "sfamp_unreadable_fields",
            "1 while a mapped field cannot be read (field-level security); its re-syncs fail",
            ["object", "field"],
            registry=r,
        )
        self.truncated_values = Counter(
            "sfamp_truncated_values",
            "String values cut to the 1,024 characters Amplitude keeps, before sending",
            ["group_type", "property"],
            registry=r,
        )
        self.reconcile_runs = Counter(
            "sfamp_reconcile_runs",
            "Reconciles run, by outcome (ok, failed)",
            ["outcome"],
            registry=r,
        )
        self.reconcile_records_read = Counter(
            "sfamp_reconcile_records_read",
            "Records the reconcile read from Salesforce",
            ["object"],
            registry=r,
        )
        self.reconcile_properties_sent = Counter(
            "sfamp_reconcile_properties_sent",
            "Properties the reconcile found different from what was sent, and sent",
            ["object"],
            registry=r,
        )
        self.reconcile_last_success = Gauge(
            "sfamp_reconcile_last_success_timestamp_seconds",
            "Unix time at which the last reconcile that completed ended",
            registry=r,
        )
        self.reconcile_duration = Gauge(
            "sfamp_reconcile_duration_seconds", "How long the last reconcile took", registry=r
        )
        self.amplitude_concurrency = Gauge(
            "sfamp_amplitude_concurrency",
            "Requests to Amplitude allowed in flight now (adaptive, up to the ceiling)",
            registry=r,
        )

    def amplitude_answered(self, answer: Answer) -> None:
        """Count one Amplitude request by its answer, as it comes (failed flushes too), and
        whether Amplitude refuses the API key (it answers 400 ``invalid_api_key``)."""
        self.amplitude_requests.labels(answer.label).inc()
        self.amplitude_answers += 1
        if is_invalid_api_key(answer):
            self.amplitude_key_refused.set(1)
        elif answer.status is not None and 200 <= answer.status < 300:
            self.amplitude_key_refused.set(0)

    def follow_replay_marks(self, marks: Mapping[str, ReplayMark]) -> None:
        """Report the replay id age of these channels, the ones subscribed, and no other."""
        for channel in set(self._replay_marks) - set(marks):
            self.replay_id_age.remove(channel)
            del self._replay_marks[channel]
        for mark in marks.values():
            self.replay_stored(mark)

    def replay_stored(self, mark: ReplayMark) -> None:
        """``sfamp_replay_id_age_seconds`` of the mark's channel follows ``mark`` from now on.

        The age is taken at every scrape, as ``sfamp replay status`` takes it, so it grows
        on a quiet channel: Salesforce keeps change events 72 h, and a restart past that
        re-syncs the object.
        """
        channel = mark.channel
        if channel not in self._replay_marks:
            self.replay_id_age.labels(channel).set_function(
                lambda: mark_age_seconds(self._replay_marks[channel], int(time.time() * 1000))
            )
        self._replay_marks[channel] = mark

    def render(self) -> bytes:
        return generate_latest(self.registry)
