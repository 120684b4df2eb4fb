"""Per-account download limits: exact across instances, monthly counts, leases of crashed instances expire."""

from __future__ import annotations

import os
import threading
import time

import pytest
import requests
from sqlalchemy import insert, select

from storage_core.models import DownloadLease
from tests.conftest import make_bucket, put
from tests.support.servers import GunicornServer
from tests.test_access import SECRET, token

MiB = 1024 * 1024


def max_overlap(intervals: list[tuple[int, int]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = peak = 0
    for _, step in events:  # at equal times the release (-1) sorts first: touching is not overlapping
        current += step
        peak = max(peak, current)
    return peak


@pytest.mark.slow
def test_20_simultaneous_downloads_with_a_limit_of_3_across_two_instances(settings, storage, local_location):
    make_bucket(storage, "bucket", owner="alice", visibility="private", charged_read_quota=1 << 40)
    data = os.urandom(4 * MiB)
    put(storage, "bucket", "obj", data)
    storage.download_limits().set_limits("alice", concurrent=3, monthly=None)
    env = {"STORAGE_AUTH_DISABLED": "0", "STORAGE_JWT_SECRET": SECRET}
    servers = [GunicornServer(settings, workers=2, extra_env=env) for _ in range(2)]
    try:
        headers = {"Authorization": f"Bearer {token('alice', ttl=3600)}"}
        barrier = threading.Barrier(20)
        results: list[tuple[int, str | None]] = []

        def download(i: int) -> None:
            url = f"{servers[i % 2].url}/api/v1/buckets/bucket/objects/obj"
            barrier.wait()
            with requests.get(url, headers=headers, stream=True, timeout=60) as response:
                if response.status_code != 200:
                    results.append((response.status_code, response.json()["code"]))
                    return
                received = b""
                for chunk in response.iter_content(256 * 1024):
                    received += chunk
                    time.sleep(0.1)  # a slow client keeps its download in flight (1.6 s), even on a busy machine
                results.append((200, None if received == data else "corrupt"))

        threads = [threading.Thread(target=download, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        for server in servers:
            server.stop()

    assert len(results) == 20, results
    successes = [r for r in results if r[0] == 200]
    assert all(r == (200, None) for r in successes), results
    assert all(r == (429, "ConcurrentDownloadLimit") for r in results if r[0] != 200), results
    assert len(successes) >= 3, results
    with storage.session_factory()() as session:
        leases = session.scalars(select(DownloadLease).where(DownloadLease.account == "alice")).all()
    intervals = [(lease.acquired_us, lease.released_us) for lease in leases]
    assert len(leases) == len(successes), (results, intervals)
    assert all(lease.released_us is not None for lease in leases), intervals
    # what the database saw: never more than 3 in flight, and the limit was reached
    if max_overlap(intervals) != 3:
        rows = "\n".join(f"lease {lease.id}: {lease.acquired_us} .. {lease.released_us} (expires {lease.expires_us})"
                         for lease in sorted(leases, key=lambda lease: lease.acquired_us))
        pytest.fail(f"{max_overlap(intervals)} leases in flight at once, limit 3:\n{rows}")


def test_monthly_limit(client, storage, local_location):
    make_bucket(storage)
    put(storage, "bucket", "k", b"data")
    storage.download_limits().set_limits("admin", concurrent=None, monthly=2)  # the client reads as admin
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 200
    assert client.head("/api/v1/buckets/bucket/objects/k").status_code == 200  # free reads do not count
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 200
    refused = client.get("/api/v1/buckets/bucket/objects/k")
    assert refused.status_code == 429 and refused.json["code"] == "MonthlyDownloadLimit"
    limits = storage.download_limits().get_limits("admin")
    assert limits["downloads_this_month"] == 2 and limits["active_downloads"] == 0
    storage.download_limits().set_limits("admin", concurrent=None, monthly=None)
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 200


def test_leases_of_a_crashed_instance_stop_counting(client, storage, local_location):
    make_bucket(storage)
    put(storage, "bucket", "k", b"data")
    storage.download_limits().set_limits("admin", concurrent=1, monthly=None)
    now = int(time.time() * 1_000_000)
    with storage.session_factory()() as session, session.begin():
        # left by an instance that died mid-download: never released, still within its lease
        lease = session.execute(insert(DownloadLease).values(account="admin", acquired_us=now,
                                                             expires_us=now + 60_000_000)
                                .returning(DownloadLease.id)).scalar_one()
    refused = client.get("/api/v1/buckets/bucket/objects/k")
    assert refused.status_code == 429 and refused.json["code"] == "ConcurrentDownloadLimit"
    with storage.session_factory()() as session, session.begin():
        session.get(DownloadLease, lease).expires_us = now - 1  # its lease ran out
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 200


@pytest.mark.profile("storage")
def test_limits_api_is_for_admins(client, storage):
    response = client.put("/api/v1/accounts/bob/limits", json={"max_concurrent_downloads": 2})
    assert response.status_code == 200
    assert response.json == {"account": "bob", "max_concurrent_downloads": 2, "max_monthly_downloads": None,
                             "active_downloads": 0, "downloads_this_month": 0}
    assert client.get("/api/v1/accounts/bob/limits").json["max_concurrent_downloads"] == 2
    assert client.put("/api/v1/accounts/bob/limits", json={"max_concurrent_downloads": -1}).status_code == 400


def test_a_refused_or_failed_charge_gives_the_limits_back(client, storage, local_location, local_root):
    """Admission and charge are separate transactions: each way the charge or the first read can fail
    releases the lease and takes the download off the month's count."""
    make_bucket(storage, charged_read_quota=0, monthly_free_read_quota=0, free_read_quota=4)
    stored = put(storage, "bucket", "k", b"data")
    put(storage, "bucket", "big", b"more than four bytes")
    storage.download_limits().set_limits("admin", concurrent=1, monthly=5)

    def in_use() -> tuple[int, int]:
        limits = storage.download_limits().get_limits("admin")
        return limits["active_downloads"], limits["downloads_this_month"]

    # the quota refuses the charge
    assert client.get("/api/v1/buckets/bucket/objects/big").status_code == 429
    assert in_use() == (0, 0)
    # the charge succeeds but no copy can serve the first block: refunded and released
    for piece in (local_root / "pieces").rglob(f"{stored['checksum']}.*"):
        piece.unlink()
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 503
    assert in_use() == (0, 0)
    assert storage.quota_service().read_quota("bucket", None)["free_consumed_size"] == 0
    # a body closed before its end releases the lease but still counts as a download
    put(storage, "bucket", "k", b"data")
    response = client.get("/api/v1/buckets/bucket/objects/k", buffered=False)
    assert in_use() == (1, 1)
    response.close()
    assert in_use() == (0, 1)
