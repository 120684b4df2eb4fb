"""Prometheus metrics; multiprocess-safe when PROMETHEUS_MULTIPROC_DIR is set (gunicorn workers)."""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

REQUESTS = Counter("storage_http_requests_total", "HTTP requests by route and status", ["route", "status"])
REQUEST_LATENCY = Histogram(
    "storage_http_request_duration_seconds", "Time from request to the last body byte, by route", ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
BYTES_SERVED = Counter("storage_bytes_served_total", "Content bytes sent to clients by location", ["location"])
QUOTA_REJECTIONS = Counter("storage_quota_rejections_total", "Reads refused for lack of read quota")
FAILOVERS = Counter("storage_failovers_total", "Reads that moved to another copy", ["location", "reason"])


def registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        collected = CollectorRegistry()
        MultiProcessCollector(collected)
        return collected
    return REGISTRY
