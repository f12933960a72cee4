"""Prometheus metrics for a destination (needs the ``prometheus`` extra).

:class:`PrometheusCollector` reads :meth:`S3Destination.stats` at scrape time, so
the hot path pays nothing for metrics::

    from prometheus_client import REGISTRY, start_http_server
    REGISTRY.register(PrometheusCollector(destination))
    start_http_server(9108)
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rigatoni_s3.destination import S3Destination

PREFIX = "rigatoni_s3"


class PrometheusCollector(Collector):
    """Exposes one destination's counters, labelled with its bucket and writer id."""

    def __init__(self, destination: S3Destination) -> None:
        self._destination = destination

    def collect(self) -> Iterator[Metric]:
        stats = self._destination.stats()
        labels = ["bucket", "writer_id"]
        values = [self._destination.config.bucket, self._destination.writer_id]

        def counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(f"{PREFIX}_{name}", help_text, labels=labels)
            family.add_metric(values, value)
            return family

        def gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"{PREFIX}_{name}", help_text, labels=labels)
            family.add_metric(values, value)
            return family

        yield counter("events_accepted", "Events accepted by write_batch.", stats.events_accepted)
        yield counter("events_rejected", "Events rejected as invalid.", stats.events_rejected)
        yield counter(
            "type_mismatches",
            "Typed-column values written as null for not taking the column's type.",
            stats.type_mismatches,
        )
        yield counter("events_uploaded", "Events written to S3.", stats.events_uploaded)
        yield counter(
            "events_dead_lettered", "Events saved to dead_letter_dir.", stats.events_dead_lettered
        )
        yield counter("uploaded_bytes", "Bytes stored in S3.", stats.bytes_uploaded)
        yield counter(
            "uploaded_raw_bytes",
            "Encoded bytes written, before compression.",
            stats.bytes_uploaded_raw,
        )
        yield counter("objects_written", "Objects written to S3.", stats.objects_written)
        yield counter("retries", "Requests sent again after a transient failure.", stats.retries)
        yield counter("failures", "Objects whose upload failed after retries.", stats.failures)
        if self._destination.config.iceberg is not None:
            yield counter("commits", "Iceberg snapshots made.", stats.commits)
            yield counter(
                "objects_committed",
                "Objects made part of the Iceberg table.",
                stats.objects_committed,
            )
            yield counter(
                "commit_retries", "Iceberg commit attempts made again.", stats.commit_retries
            )
        yield gauge("events_buffered", "Accepted events not yet written.", stats.events_buffered)
        yield gauge(
            "buffered_bytes", "Bytes counted against max_buffer_bytes.", stats.bytes_buffered
        )
        latency = stats.upload_latency
        if latency is not None:
            yield gauge(
                "upload_latency_p50_seconds", "Median upload time of recent objects.", latency.p50
            )
            yield gauge(
                "upload_latency_p99_seconds",
                "99th percentile upload time of recent objects.",
                latency.p99,
            )
