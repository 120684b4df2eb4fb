"""Many slow clients at once (issue 14, target 6, at the scale of a test): bench/slow.py runs the full 1,500.

A download holds no database connection while its body streams, so 200 slow downloads complete on a
pool of 2 with a short STORAGE_DB_TIMEOUT; refunds of downloads that end early at once share a
transaction instead of queueing for the pool; and a long read starts with one block, then goes by
windows of blocks (under gunicorn, verified in place and handed to the socket with sendfile), with the
same bytes and the same failover.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import resource
import subprocess
import sys
import threading

import pytest
from sqlalchemy import event, func, select

from bench.slow import LOG_PROBLEMS, run_clients
from storage_core.auth import DEVELOPMENT_ADMIN
from storage_core.http_semantics import Conditions
from storage_core.models import BucketTraffic, ReadRecord
from storage_core.services.resolve import ByKey
from tests.conftest import KiB, make_bucket, put
from tests.support.servers import GunicornServer

MiB = 1024 * KiB
SIZE = 2 * MiB


@pytest.fixture
def settings(settings):
    """Blocks bigger than a send chunk (the suite's 16 KiB blocks are always sent whole)."""
    return dataclasses.replace(settings, piece_size=1 * MiB, block_size=256 * KiB)


def consumed(storage) -> int:
    with storage.session_factory()() as session:
        return session.scalar(select(func.sum(BucketTraffic.charged_consumed_size
                                              + BucketTraffic.monthly_free_consumed_size
                                              + BucketTraffic.free_consumed_size))) or 0


def records(storage) -> list[int]:
    with storage.session_factory()() as session:
        return list(session.scalars(select(ReadRecord.read_size)))


def slow_downloads(server: GunicornServer, count: int, rate: int, stop_after: int = 0) -> list[dict]:
    return asyncio.run(run_clients("127.0.0.1", server.port, "/api/v1/buckets/bucket/objects/big", count, rate,
                                   64 * KiB, stop_after))


def log_problems(server: GunicornServer) -> list[str]:
    text = server.log.read_text(errors="replace")
    return [pattern for pattern in LOG_PROBLEMS if pattern in text]


@pytest.mark.slow
@pytest.mark.postgresql(reason="the pool size and timeout are PostgreSQL's (SQLite's engine has its own pool)")
def test_200_slow_downloads_complete_on_a_pool_of_two(settings, storage, local_location):
    make_bucket(storage)
    data = os.urandom(SIZE)
    put(storage, "bucket", "big", data)
    # each download takes about 4 s, twice the pool timeout: one that kept its connection while streaming
    # would make the third request wait past STORAGE_DB_TIMEOUT and fail with 503
    server = GunicornServer(settings, workers=1, extra_env={"STORAGE_DB_POOL_SIZE": "2", "STORAGE_DB_TIMEOUT": "2",
                                                            "STORAGE_LOG_LEVEL": "INFO"})
    try:
        results = slow_downloads(server, 200, rate=512 * KiB)
        problems = log_problems(server)
    finally:
        server.stop()
    assert [r["error"] for r in results if r["error"]] == []
    assert {r["status"] for r in results} == {200}
    assert {(r["received"], r["sha256"]) for r in results} == {(SIZE, hashlib.sha256(data).hexdigest())}
    assert min(r["seconds"] for r in results) > 2  # slower than the pool timeout, as intended
    assert problems == []
    assert records(storage) == [SIZE] * 200
    assert consumed(storage) == 200 * SIZE


@pytest.mark.slow
@pytest.mark.postgresql(reason="refunds are combined on PostgreSQL (refund_together); SQLite refunds one by one")
def test_200_clients_hanging_up_at_once_are_all_refunded(settings, storage, local_location):
    make_bucket(storage, charged_read_quota=1 << 40)  # 200 full charges up front, refunded at the hang-up
    size = 16 * MiB  # more than the server's socket can take at once: the downloads cannot end before the hang-up
    put(storage, "bucket", "big", os.urandom(size))
    server = GunicornServer(settings, workers=1, extra_env={"STORAGE_DB_POOL_SIZE": "2", "STORAGE_DB_TIMEOUT": "2",
                                                            "STORAGE_LOG_LEVEL": "INFO"})
    try:
        results = slow_downloads(server, 200, rate=4 * MiB, stop_after=256 * KiB)
        # the refunds follow the hang-ups: wait for the last one
        for _ in range(100):
            if sum(records(storage)) < 200 * size // 2:
                break
            threading.Event().wait(0.1)
        threading.Event().wait(1)
        problems = log_problems(server)
    finally:
        server.stop()
    assert {r["error"] for r in results} == {"hung up as planned"}
    assert problems == []
    sizes = records(storage)
    # one record per read, each refunded down to what the client's TCP stack acknowledged
    assert len(sizes) == 200 and all(256 * KiB <= read < size for read in sizes), sorted(sizes)[::20]
    assert consumed(storage) == sum(sizes)


@pytest.mark.postgresql(reason="refunds are combined on PostgreSQL (refund_together)")
def test_concurrent_refunds_of_a_bucket_share_transactions_and_stay_exact(storage, local_location, engine):
    make_bucket(storage)
    put(storage, "bucket", "k", os.urandom(100 * KiB))
    quota, downloads = storage.quota_service(), storage.download_service()

    bodies = [downloads.open(ByKey("bucket", "k"), Conditions(method="GET"), DEVELOPMENT_ADMIN).body
              for _ in range(40)]
    charges = [body._charge for body in bodies]
    assert consumed(storage) == 40 * 100 * KiB
    commits = []

    def committed(_conn) -> None:
        commits.append(1)

    event.listen(engine, "commit", committed)
    start = threading.Barrier(40)

    def refund(i: int) -> None:
        start.wait()
        quota.refund(charges[i], 100 * KiB if i % 2 else i * KiB)  # half refunded whole, half in part

    threads = [threading.Thread(target=refund, args=(i,)) for i in range(40)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        event.remove(engine, "commit", committed)
    for body in bodies:
        body._charge = None  # refunded above: closing must not refund again
        body.close()
    left = sorted(records(storage))
    assert left == sorted((100 - i) * KiB for i in range(0, 40, 2))  # whole refunds deleted their record
    assert consumed(storage) == sum(left)
    assert 0 < len(commits) < 39  # 39 refunds (one of nothing), batched: not a transaction each


def test_long_reads_by_windows_of_blocks_keep_the_bytes(client, storage, local_location):
    make_bucket(storage)
    data = os.urandom(SIZE + 12345)
    put(storage, "bucket", "k", data)
    # a long read starts with one block, then windows of blocks: every boundary lands where it should
    assert client.get("/api/v1/buckets/bucket/objects/k").data == data
    ranged = client.get("/api/v1/buckets/bucket/objects/k", headers={"Range": "bytes=1000-600000"})
    assert ranged.status_code == 206 and ranged.data == data[1000:600001]
    tail = client.get("/api/v1/buckets/bucket/objects/k", headers={"Range": f"bytes={SIZE - 5}-"})
    assert tail.status_code == 206 and tail.data == data[SIZE - 5:]


def test_a_corrupt_block_in_a_window_is_served_from_the_other_copy(client, storage, local_location, local_root,
                                                                  tmp_path):
    storage.location_service().create({"name": "cold", "plugin": "local", "tier": "cold", "priority": 0,
                                       "enabled": True, "config": {"root": str(tmp_path / "cold")}})
    make_bucket(storage, locations=["hot", "cold"])
    data = os.urandom(SIZE)
    checksum = put(storage, "bucket", "k", data)["checksum"]
    path = local_root / "pieces" / checksum[:2] / checksum[2:4] / f"{checksum}.1"
    corrupted = bytearray(path.read_bytes())
    corrupted[300 * KiB] ^= 0xFF  # the second block of the second piece
    path.write_bytes(bytes(corrupted))
    response = client.get("/api/v1/buckets/bucket/objects/k")
    assert response.status_code == 200 and response.data == data
    assert records(storage) == [SIZE]


def test_the_service_raises_its_open_files_limit_to_what_its_connections_need():
    """Each connection may hold its socket and a piece file: 1,000 connections need more than the usual 1,024."""
    program = ("import resource; from storage_core.settings import Settings; "
               "from storage_core.serving import open_files_needed, raise_open_files_limit; "
               "s = Settings(worker_connections=500); raise_open_files_limit(s); "
               "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], open_files_needed(s))")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1100:
        pytest.skip(f"the hard open files limit ({hard}) is below what the test asks for")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    raised, needed = map(int, done.stdout.split())
    assert raised == needed >= 2 * 500
