"""Prometheus metrics; multiprocess-safe when PROMETHEUS_MULTIPROC_DIR is set (gunicorn workers)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger(__name__)

REQUESTS = Counter("storage_http_requests_total", "HTTP requests by route and status", ["route", "status"])
REQUEST_LATENCY = Histogram(
    "storage_http_request_duration_seconds", "Time from request to the last body byte, by route", ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
BYTES_SERVED = Counter("storage_bytes_served_total", "Content bytes sent to clients by location", ["location"])
SENDFILE_BYTES = Counter("storage_bytes_sendfile_total",
                         "Content bytes handed to client sockets straight from piece files (sendfile), verified")
QUOTA_REJECTIONS = Counter("storage_quota_rejections_total", "Reads refused for lack of read quota")
FAILOVERS = Counter("storage_failovers_total", "Reads that moved to another copy", ["location", "reason"])
RESTORES = Counter("storage_restores_total", "Restore jobs finished by this process, by outcome (done, failed)",
                   ["outcome"])
RESTORE_SECONDS = Histogram(
    "storage_restore_seconds", "Seconds from a file's restore request to its cached copy being available",
    buckets=(0.5, 1, 2, 3, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 48 * 3600))
RESTORE_TAKEOVERS = Counter("storage_restore_takeovers_total",
                            "Restore jobs taken over from a worker whose lease expired (it died or hung)")
CACHE_EVICTIONS = Counter("storage_cache_evictions_total", "Cached copies removed, by reason (expired, lru, purge)",
                          ["reason"])
EVENT_DELIVERIES = Counter("storage_event_deliveries_total", "Webhook delivery attempts by outcome (ok, failed)",
                           ["outcome"])
# a hot bucket's reads queue on its month row (services/quota.py): how long each combined charge holds it and
# how many reads it decides give the ceiling of charged reads per second for one bucket (docs/deployment.md)
CHARGE_LOCK_SECONDS = Histogram(
    "storage_charge_lock_seconds",
    "Seconds a combined charge (PostgreSQL) holds its bucket's month row locked, from the lock to the commit",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1))
CHARGE_BATCH_SIZE = Histogram(
    "storage_charge_batch_size", "Reads decided by one combined charge (one transaction on the month row)",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256))
# set by each readiness check; under gunicorn the most recent value of any worker is the one exported
LOCATION_UP = Gauge("storage_location_up", "1 when the enabled location answered its last readiness check, else 0",
                    ["location"], multiprocess_mode="mostrecent")


def registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        collected = CollectorRegistry()
        MultiProcessCollector(collected)
        return collected
    return REGISTRY


class RestoreFigures:
    """Gauges read from the database when scraped: restore jobs by state and webhook events not yet delivered.
    The same figures on every instance (the database is shared), exact whatever the process."""

    def __init__(self, job_counts: Callable[[], dict[str, int]], pending_events: Callable[[], int]):
        self.job_counts = job_counts
        self.pending_events = pending_events

    def collect(self) -> Iterator[Metric]:
        try:
            counts, pending = self.job_counts(), self.pending_events()
        except Exception:  # a scrape must not fail because the database does
            log.warning("restore figures unavailable for /metrics", exc_info=True)
            return
        jobs = GaugeMetricFamily("storage_restore_jobs", "Restore jobs in the database, by state", labels=["state"])
        for state, count in counts.items():
            jobs.add_metric([state], count)
        yield jobs
        yield GaugeMetricFamily("storage_events_pending", "Webhook events not yet acknowledged", value=pending)


def database_registry(figures: RestoreFigures) -> CollectorRegistry:
    collected = CollectorRegistry(auto_describe=False)
    collected.register(figures)
    return collected
