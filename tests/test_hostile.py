"""Clients that do not behave: quota lock-up with ranges and idle sockets, racing uploads, missing lengths.

Each test here was written against the behaviour it guards and failed before the change that made it
pass (issue 9); docs/reliability.md "Hostile clients" lists them.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import select

from storage_core.models import File, FileCopy, Object, ReadRecord
from tests.conftest import KiB, make_bucket, put
from tests.support.servers import GunicornServer

MiB = 1024 * KiB


def quota(client, bucket: str = "bucket") -> dict:
    response = client.get(f"/api/v1/buckets/{bucket}/read-quota")
    assert response.status_code == 200
    return response.json


# ---- ranges cannot multiply a charge -----------------------------------------------------------

def test_overlapping_ranges_are_served_and_charged_once(client, storage, local_location):
    make_bucket(storage)
    data = os.urandom(200 * KiB)
    put(storage, "bucket", "k", data)
    response = client.get("/api/v1/buckets/bucket/objects/k", headers={"Range": "bytes=" + ",".join(["0-"] * 50)})
    assert response.status_code == 206 and response.data == data  # one range: the whole object once
    assert response.headers["Content-Range"] == f"bytes 0-{len(data) - 1}/{len(data)}"
    assert quota(client)["consumed_size"] == len(data)
    overlapping = client.get("/api/v1/buckets/bucket/objects/k", headers={"Range": "bytes=10-19,0-9,15-29,100-109"})
    assert overlapping.status_code == 206 and overlapping.headers["Content-Type"].startswith("multipart/byteranges")
    assert quota(client)["consumed_size"] == len(data) + 30 + 10


def test_more_than_100_ranges_is_416_with_a_clear_detail(client, storage, local_location):
    make_bucket(storage)
    put(storage, "bucket", "k", b"x" * 1000)
    response = client.get("/api/v1/buckets/bucket/objects/k",
                          headers={"Range": "bytes=" + ",".join(f"{i}-{i}" for i in range(101))})
    assert response.status_code == 416 and response.json["code"] == "InvalidRange"
    assert "101 ranges" in response.json["detail"] and response.headers["Content-Range"] == "bytes */1000"
    assert quota(client)["consumed_size"] == 0


# ---- an idle client cannot hold quota ----------------------------------------------------------

@pytest.mark.slow
def test_a_client_that_never_reads_is_cut_and_refunded(settings, storage, local_location):
    make_bucket(storage, charged_read_quota=40 * MiB, monthly_free_read_quota=0, free_read_quota=0)
    size = 16 * MiB
    data = os.urandom(size)
    put(storage, "bucket", "big", data)
    server = GunicornServer(settings, workers=1, extra_env={"STORAGE_SEND_TIMEOUT": "2"})
    try:
        url = f"{server.url}/api/v1/buckets/bucket/objects/big"
        quota_url = f"{server.url}/api/v1/buckets/bucket/read-quota"
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KiB)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(b"GET /api/v1/buckets/bucket/objects/big HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(1)
            # charged in full up front, so only one more such read would fit
            assert requests.get(quota_url, headers=server.admin, timeout=10).json()["consumed_size"] == size
            deadline = time.time() + 20
            while time.time() < deadline:
                consumed = requests.get(quota_url, headers=server.admin, timeout=10).json()["consumed_size"]
                if consumed < size:
                    break
                time.sleep(0.5)
            # what the client's kernel took (its small receive buffer) stays charged; the rest came back
            assert 0 < consumed <= 1 * MiB, consumed
            with storage.session_factory()() as session:
                records = session.scalars(select(ReadRecord.read_size)).all()
            assert records == [consumed]
            # and others are served meanwhile, in full
            for _ in range(2):
                got = requests.get(url, timeout=30)
                assert got.status_code == 200 and hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
            sock.settimeout(5)
            with pytest.raises(OSError):  # the connection was reset
                while sock.recv(65536):
                    pass
    finally:
        server.stop()


# ---- retry hints -------------------------------------------------------------------------------

def test_quota_refusals_say_when_to_retry(client, storage, local_location):
    make_bucket(storage, charged_read_quota=0, monthly_free_read_quota=0, free_read_quota=0)
    put(storage, "bucket", "k", b"data")
    refused = client.get("/api/v1/buckets/bucket/objects/k")
    assert refused.status_code == 429 and refused.json["code"] == "QuotaExceeded"
    seconds = int(refused.headers["Retry-After"])
    assert 0 < seconds <= 31 * 24 * 3600  # to the start of the next UTC month


def test_concurrency_limit_refusals_say_retry_soon(client, storage, local_location):
    make_bucket(storage)
    put(storage, "bucket", "k", b"x" * (200 * KiB))
    storage.download_limits().set_limits("admin", concurrent=1, monthly=None)
    first = client.get("/api/v1/buckets/bucket/objects/k", buffered=False)
    refused = client.get("/api/v1/buckets/bucket/objects/k")
    assert refused.status_code == 429 and refused.json["code"] == "ConcurrentDownloadLimit"
    assert 0 < int(refused.headers["Retry-After"]) <= 5
    first.close()


# ---- grants take effect at once ----------------------------------------------------------------

@pytest.mark.profile("storage")
def test_changing_the_free_quotas_takes_effect_this_month(client, storage, local_location):
    make_bucket(storage, charged_read_quota=0, monthly_free_read_quota=10, free_read_quota=5)
    put(storage, "bucket", "k", b"x" * 10)
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 200  # monthly 10
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 429  # 5 left
    assert client.patch("/api/v1/buckets/bucket", json={"free_read_quota": 25}).status_code == 200
    q = quota(client)
    assert q["sp_free_quota_size"] == 25 and q["remain_quota_size"] == 25  # 5 + 20 more granted
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 200
    assert client.patch("/api/v1/buckets/bucket", json={"monthly_free_read_quota": 30}).status_code == 200
    q = quota(client)
    assert q["monthly_free_quota_size"] == 30 and q["remain_quota_size"] == 20 + 15
    # lowering below what is left leaves nothing, and what was consumed stays consumed
    assert client.patch("/api/v1/buckets/bucket", json={"free_read_quota": 0}).status_code == 200
    q = quota(client)
    assert q["sp_free_quota_size"] == 0 and q["consumed_size"] == 20 and q["free_consumed_size"] == 10


# ---- caches ------------------------------------------------------------------------------------

def test_cache_control_keeps_private_objects_out_of_shared_caches(client, storage, local_location, auth):
    make_bucket(storage, "public", owner="olivia")
    make_bucket(storage, "private", visibility="private", owner="olivia")
    put(storage, "public", "k", b"data")
    put(storage, "private", "k", b"data")
    assert client.get("/api/v1/buckets/public/objects/k").headers["Cache-Control"] == "public, no-cache"
    assert client.get("/api/v1/buckets/private/objects/k").headers["Cache-Control"] == "private"
    assert client.head("/api/v1/buckets/private/objects/k").headers["Cache-Control"] == "private"
    from storage_core.auth import Principal

    path, _ = storage.permission_service().presign(Principal("olivia"), "public", "k", 60)
    assert client.get(path, headers={"Authorization": ""}).headers["Cache-Control"] == "private"


def test_public_max_age_is_configurable(settings, engine, storage, local_location):
    from storage_core.app import create_app
    from tests.conftest import make_container

    configured = settings.replace(public_max_age=300)
    app = create_app(settings=configured, container=make_container(configured, engine, frozenset({"downloader"})))
    make_bucket(storage)
    put(storage, "bucket", "k", b"data")
    assert app.test_client().get("/api/v1/buckets/bucket/objects/k").headers["Cache-Control"] == "public, max-age=300"


# ---- uploads that race -------------------------------------------------------------------------

def stored_state(storage) -> tuple[list[str], list[str], list[str]]:
    with storage.session_factory()() as session:
        return (sorted(session.scalars(select(Object.checksum))), sorted(session.scalars(select(File.checksum))),
                sorted(session.scalars(select(FileCopy.state))))


@pytest.mark.profile("storage")
def test_concurrent_uploads_to_one_key_all_succeed_and_the_last_wins(live_server, storage, local_location,
                                                                    local_root, auth):
    make_bucket(storage)
    bodies = [os.urandom(100 * KiB) for _ in range(8)]
    barrier = threading.Barrier(len(bodies))

    def upload(body: bytes) -> int:
        barrier.wait(10)
        return requests.put(f"{live_server.url}/api/v1/buckets/bucket/objects/k", data=body,
                            headers=auth.admin, timeout=60).status_code

    with ThreadPoolExecutor(len(bodies)) as pool:
        statuses = list(pool.map(upload, bodies))
    assert sorted(statuses) == [200] * 7 + [201], statuses
    objects, files, states = stored_state(storage)
    assert len(objects) == 1 and files == objects and states == ["stored"]  # nothing left of the others
    winner = hashlib.sha256(requests.get(f"{live_server.url}/api/v1/buckets/bucket/objects/k", timeout=10).content)
    assert winner.hexdigest() == objects[0]
    pieces = sorted(p.name for p in (local_root / "pieces").rglob("*") if p.is_file())
    assert all(name.startswith(objects[0]) for name in pieces) and pieces


@pytest.mark.profile("storage")
def test_identical_concurrent_uploads_all_succeed(live_server, storage, local_location, auth):
    make_bucket(storage)
    body = os.urandom(300 * KiB)
    barrier = threading.Barrier(8)

    def upload(i: int) -> int:
        barrier.wait(10)
        return requests.put(f"{live_server.url}/api/v1/buckets/bucket/objects/k{i}", data=body,
                            headers=auth.admin, timeout=60).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(upload, range(8)))
    assert statuses == [201] * 8
    objects, files, states = stored_state(storage)
    assert len(objects) == 8 and len(set(objects)) == 1 and len(files) == 1 and states == ["stored"]


@pytest.mark.profile("storage")
def test_an_upload_with_neither_length_nor_chunking_is_411(live_server, storage, local_location, auth):
    make_bucket(storage)
    with socket.create_connection(("127.0.0.1", live_server.port)) as sock:
        sock.sendall(b"PUT /api/v1/buckets/bucket/objects/k HTTP/1.1\r\nHost: x\r\n"
                     + f"Authorization: {auth.admin['Authorization']}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.split(b"\r\n")[0].split(b" ")[1] == b"411"
    assert b"MissingContentLength" in answer
    assert stored_state(storage)[0] == []
    # chunked uploads are fine
    response = requests.put(f"{live_server.url}/api/v1/buckets/bucket/objects/k", data=iter([b"ab", b"cd"]),
                            headers=auth.admin, timeout=10)
    assert response.status_code == 201 and response.json()["size"] == 4
