"""Exact quota under concurrency: many parallel downloads against real gunicorn gevent workers on PostgreSQL."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from storage_core.models import BucketTraffic, ReadRecord
from tests.conftest import make_bucket, put

MiB = 1024 * 1024

pytestmark = pytest.mark.slow


def test_200_parallel_downloads_against_a_quota_for_exactly_50(storage, local_location, gunicorn_server):
    make_bucket(storage, charged_read_quota=50 * MiB, monthly_free_read_quota=0, free_read_quota=0)
    data = os.urandom(MiB)
    digest = hashlib.sha256(data).hexdigest()
    put(storage, "bucket", "one-mib", data)
    url = f"{gunicorn_server.url}/api/v1/buckets/bucket/objects/one-mib"

    def download(_: int) -> tuple[int, str | None]:
        with requests.Session() as session:
            response = session.get(url, timeout=60)
            if response.status_code == 200:
                return 200, hashlib.sha256(response.content).hexdigest()
            return response.status_code, response.json().get("code")

    with ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(download, range(200)))

    successes = [r for r in results if r[0] == 200]
    refusals = [r for r in results if r[0] == 429]
    assert len(successes) == 50, sorted({r[0] for r in results})
    assert all(r[1] == digest for r in successes)
    assert len(refusals) == 150 and all(r[1] == "QuotaExceeded" for r in refusals)
    with storage.session_factory()() as session:
        traffic = session.scalar(select(BucketTraffic))
        assert traffic.charged_consumed_size == 50 * MiB
        assert traffic.monthly_free_consumed_size == traffic.free_consumed_size == 0
        assert session.scalar(select(func.count()).select_from(ReadRecord)) == 50
        assert session.scalar(select(func.sum(ReadRecord.read_size))) == 50 * MiB


def test_connections_go_back_to_the_pool_before_bodies_stream(settings, storage, local_location):
    """40 slow downloads at once through a worker whose pool has 1 connection (+1 overflow): each holds a
    connection only to resolve and charge, so none waits for one (a wait would end in 503 after 3 s)."""
    import threading
    import time

    from tests.support.servers import GunicornServer

    make_bucket(storage, charged_read_quota=1 << 40)
    data = os.urandom(2 * MiB)
    put(storage, "bucket", "obj", data)
    server = GunicornServer(settings, workers=1, extra_env={"STORAGE_DB_POOL_SIZE": "1", "STORAGE_DB_TIMEOUT": "3"})
    results: list[tuple[int, bool]] = []
    try:
        url = f"{server.url}/api/v1/buckets/bucket/objects/obj"
        barrier = threading.Barrier(40)

        def slow_download() -> None:
            barrier.wait()
            with requests.get(url, stream=True, timeout=60) as response:
                body = b""
                for chunk in response.iter_content(128 * 1024):
                    body += chunk
                    time.sleep(0.05)  # about 0.8 s per download, all 40 in flight together
                results.append((response.status_code, body == data))

        threads = [threading.Thread(target=slow_download) for _ in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        server.stop()
    assert results == [(200, True)] * 40
