"""Fault tests on real processes: concurrency across instances, a database restarted, hung or out of
connections, a dying S3 server, a vanished hot location and an upload whose worker is killed.

Every test starts what it breaks (gunicorn instances, a private PostgreSQL, its own moto server) on
loopback, stops it at the end whatever happens, and is bounded in time. docs/reliability.md sums up
what each one shows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select, text

import profiles
from storage_core.db import make_engine
from storage_core.migrations import upgrade
from storage_core.models import CopyState, File, FileCopy, Object
from storage_core.settings import Settings
from tests.conftest import KiB, make_bucket, make_container, put
from tests.support.faults import (
    KillableMotoServer,
    PrivatePostgres,
    child_pids,
    consumption,
    files_under,
    kill,
    read_head,
    read_sizes,
    read_until_closed,
    running,
    wait_for,
)
from tests.support.servers import GunicornServer

MiB = 1024 * KiB
PIECE = 64 * KiB  # the test settings' piece size
DOWNLOADER = {"STORAGE_PROFILES": "downloader"}
# The shared PostgreSQL allows 100 connections and other suites use it too; each worker may open
# 2 x STORAGE_DB_POOL_SIZE connections (pool + overflow), so the instances here keep small pools.
SMALL_POOL = {"STORAGE_DB_POOL_SIZE": "3"}

pytestmark = pytest.mark.slow


def start_servers(settings: Settings, count: int, workers: int, env: dict[str, str]) -> list[GunicornServer]:
    """Start ``count`` instances side by side (each takes a couple of seconds to boot)."""
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(GunicornServer, settings, workers, env) for _ in range(count)]
    started = [f.result() for f in futures if f.exception() is None]
    failed = [f.exception() for f in futures if f.exception() is not None]
    if failed:
        for server in started:
            server.stop()
        raise failed[0]
    return started


def copy_states(storage) -> list[str]:
    with storage.session_factory()() as session:
        return sorted(session.scalars(select(FileCopy.state)))


def count(storage, model) -> int:
    with storage.session_factory()() as session:
        return session.scalar(select(func.count()).select_from(model))


def problem_code(response: requests.Response) -> str | None:
    try:
        return response.json().get("code")
    except ValueError:
        return f"not JSON: {response.text[:200]!r}"


# ---- 1. exact quota across two downloader instances --------------------------------------------------


def test_300_downloads_on_two_downloader_instances_against_a_quota_for_exactly_100(settings, storage,
                                                                                   local_location):
    size, allowed, total = 10_000, 100, 300
    make_bucket(storage, charged_read_quota=allowed * size, monthly_free_read_quota=0, free_read_quota=0)
    data = os.urandom(size)
    put(storage, "bucket", "small", data)
    servers = start_servers(settings, 2, workers=3, env={**DOWNLOADER, **SMALL_POOL})
    with running(servers):
        # warm every worker of both instances (HEAD is free), so that neither starts the race late
        with ThreadPoolExecutor(24) as pool:
            list(pool.map(lambda i: requests.head(f"{servers[i % 2].url}/api/v1/buckets/bucket/objects/small",
                                                  timeout=30), range(48)))
        barrier = threading.Barrier(total)

        def download(i: int) -> tuple[int, int, str | None]:
            url = f"{servers[i % 2].url}/api/v1/buckets/bucket/objects/small"
            barrier.wait(30)
            response = requests.get(url, timeout=60)
            if response.status_code == 200:
                return i % 2, 200, "ok" if response.content == data else "wrong bytes"
            return i % 2, response.status_code, problem_code(response)

        with ThreadPoolExecutor(max_workers=total) as pool:
            results = list(pool.map(download, range(total)))
        quota = requests.get(f"{servers[1].url}/api/v1/buckets/bucket/read-quota", headers=servers[1].admin,
                             timeout=10).json()
        listed = requests.get(f"{servers[0].url}/api/v1/buckets/bucket/read-records?max_records=1000",
                              headers=servers[0].admin, timeout=10).json()

    outcomes = sorted({(status, code) for _, status, code in results})
    assert outcomes == [(200, "ok"), (429, "QuotaExceeded")], outcomes
    successes = [r for r in results if r[1] == 200]
    assert len(successes) == allowed, outcomes
    assert len(results) - len(successes) == total - allowed
    # both instances charged the same quota at the same time
    by_instance = [sum(1 for r in successes if r[0] == n) for n in (0, 1)]
    assert all(by_instance), by_instance
    assert consumption(storage.session_factory()) == (allowed * size, 0, 0)
    assert read_sizes(storage.session_factory()) == [size] * allowed
    assert quota["charged_consumed_size"] == quota["consumed_size"] == allowed * size
    assert quota["remain_quota_size"] == 0
    assert len(listed["read_records"]) == allowed and listed["next_cursor"] is None


# ---- 2. PostgreSQL restarted during a download load -------------------------------------------------


@contextlib.contextmanager
def service_on_private_database(tmp_path: Path, data: bytes) -> Iterator[tuple[PrivatePostgres, Settings, Any]]:
    """A private PostgreSQL with the schema, a local location and ``bucket/k`` holding ``data``:
    (the server, settings pointing at it, a storage-profile container on it). Torn down at the end."""
    pg = PrivatePostgres()
    try:
        pg.start()
        settings = Settings(database_url=pg.url, data_dir=str(tmp_path / "var"), piece_size=PIECE,
                            block_size=16 * KiB, free_read_quota=0, monthly_free_read_quota=0,
                            auth_disabled=True)
        engine = make_engine(settings)
        try:
            upgrade(engine)
            storage = make_container(settings, engine, frozenset({profiles.STORAGE}))
            storage.location_service().create({"name": "hot", "plugin": "local", "tier": "hot", "priority": 0,
                                               "enabled": True, "config": {"root": str(tmp_path / "hot")}})
            make_bucket(storage, charged_read_quota=1 << 40)
            put(storage, "bucket", "k", data)
            yield pg, settings, storage
        finally:
            engine.dispose()
    finally:
        pg.destroy()


def test_database_restart_during_downloads_fails_closed_and_recovers_by_itself(tmp_path):
    data = os.urandom(3 * PIECE + 100)
    with service_on_private_database(tmp_path, data) as (pg, settings, storage):
        _restart_under_load(pg, settings, storage, data)


def _restart_under_load(pg: PrivatePostgres, settings: Settings, storage, data: bytes) -> None:
    server = GunicornServer(settings, workers=2, extra_env=DOWNLOADER)
    with running([server]):
        url = f"{server.url}/api/v1/buckets/bucket/objects/k"
        workers_before = child_pids(server.process.pid)
        results: list[tuple[float, float, object, str | None]] = []  # (start, end, status, code or body check)
        stop = threading.Event()

        def load() -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        response = session.get(url, timeout=20)
                        if response.status_code == 200:
                            outcome = "ok" if response.content == data else f"wrong body of {len(response.content)}"
                        else:
                            outcome = problem_code(response)
                        results.append((started, time.monotonic(), response.status_code, outcome))
                    except requests.RequestException as exc:
                        results.append((started, time.monotonic(), "error", repr(exc)))
                    time.sleep(0.02)

        threads = [threading.Thread(target=load, daemon=True) for _ in range(6)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(2)
            stopping = time.monotonic()
            pg.stop("fast")
            stopped = time.monotonic()
            time.sleep(1)
            ready_down = requests.get(f"{server.url}/health/ready", timeout=20)
            time.sleep(2)
            restarting = time.monotonic()
            pg.start()
            restarted = time.monotonic()
            time.sleep(4)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        after = [requests.get(url, timeout=20) for _ in range(5)]
        ready_up = requests.get(f"{server.url}/health/ready", timeout=20)
        workers_after = child_pids(server.process.pid)
        master_alive = server.process.poll() is None
    log = server.log.read_text(errors="replace")

    statuses = sorted({(str(status), str(outcome)) for _, _, status, outcome in results})
    assert set(statuses) <= {("200", "ok"), ("503", "DatabaseUnavailable")}, (statuses, log[-3000:])
    before = [r for r in results if r[1] < stopping]
    during = [r for r in results if r[0] > stopped and r[1] < restarting]
    recovered = [r for r in results if r[0] > restarted]
    assert before and all(r[2] == 200 for r in before), statuses
    assert during and all(r[2] == 503 for r in during), statuses
    assert ready_down.status_code == 503
    # recovery by itself: the same processes serve again once the database is back
    assert recovered and all(r[2] == 200 for r in recovered), statuses
    assert [r.status_code for r in after] == [200] * 5 and all(r.content == data for r in after)
    assert ready_up.status_code == 200, ready_up.text
    assert master_alive and workers_after == workers_before, (workers_before, workers_after)
    # every 200 has its read record, nothing else was charged
    ok = sum(1 for r in results if r[2] == 200) + len(after)
    sizes = read_sizes(storage.session_factory())
    assert sizes.count(len(data)) == ok and len(sizes) == ok, (ok, len(sizes), set(sizes))
    assert consumption(storage.session_factory()) == (sum(sizes), 0, 0)


def test_frozen_database_fails_closed_within_a_bounded_time(tmp_path):
    """PostgreSQL stops answering (SIGSTOP of every postgres process: a hung host, a VM pause) while its
    sockets stay open. A download must still get an answer, 503 DatabaseUnavailable, in bounded time:
    every database wait is bounded by STORAGE_DB_TIMEOUT (3 s here; a stale pooled connection and the
    reconnect after it can take two of them). Found by this test: under psycogreen, libpq's
    connect_timeout was not enforced and downloads hung until the database came back."""
    data = os.urandom(1000)
    with service_on_private_database(tmp_path, data) as (pg, settings, _storage):
        server = GunicornServer(settings, workers=1, extra_env={**DOWNLOADER, "STORAGE_DB_POOL_SIZE": "4",
                                                                 "STORAGE_DB_TIMEOUT": "3"})
        with running([server]):
            url = f"{server.url}/api/v1/buckets/bucket/objects/k"
            with requests.Session() as session:
                assert [session.get(url, timeout=10).status_code for _ in range(3)] == [200] * 3
            with pg.frozen(), ThreadPoolExecutor(3) as pool:
                answers = list(pool.map(lambda _: _get_or_error(url, timeout=15), range(3)))
            # thawed: the same service serves again
            assert requests.get(url, timeout=30).status_code == 200
    assert answers == [(503, "DatabaseUnavailable")] * 3, answers


def test_exhausted_connection_pool_fails_closed_not_500(settings, storage, local_location, engine):
    """Statements that wait on a lock hold their connections; requests beyond the pool (1 + 1 overflow
    here) wait for one at most STORAGE_DB_TIMEOUT (4 s here), as the lock waits do. They must fail
    closed (503), never 500. Found by this test: SQLAlchemy's pool TimeoutError is not a DBAPIError
    and was answered 500."""
    make_bucket(storage, charged_read_quota=1 << 40)
    put(storage, "bucket", "k", b"data")
    server = GunicornServer(settings, workers=1, extra_env={**DOWNLOADER, "STORAGE_DB_POOL_SIZE": "1",
                                                             "STORAGE_DB_TIMEOUT": "4"})
    with running([server]):
        url = f"{server.url}/api/v1/buckets/bucket/objects/k"
        assert requests.get(url, timeout=10).status_code == 200
        with engine.connect() as connection:
            transaction = connection.begin()
            # every download resolves its object first: that SELECT waits for this lock
            connection.execute(text("LOCK TABLE objects IN ACCESS EXCLUSIVE MODE"))
            with ThreadPoolExecutor(5) as pool:
                futures = [pool.submit(_get_or_error, url, 30) for _ in range(5)]
                time.sleep(6)  # beyond the pool and lock timeouts
                transaction.rollback()
            answers = [f.result() for f in futures]
        assert requests.get(url, timeout=10).status_code == 200  # and it recovers by itself
    assert set(answers) <= {(200, None), (503, "DatabaseUnavailable")}, answers
    assert (503, "DatabaseUnavailable") in answers, answers


def _get_or_error(url: str, timeout: float) -> tuple[object, str | None]:
    started = time.monotonic()
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        return "no answer", f"{type(exc).__name__} after {time.monotonic() - started:.1f} s"
    return response.status_code, problem_code(response) if response.status_code != 200 else None


# ---- 3. the S3 server dies in the middle of a download ---------------------------------------------


def test_s3_server_killed_mid_download_truncates_and_refunds(settings, storage):
    s3 = KillableMotoServer()
    revived: KillableMotoServer | None = None
    try:
        storage.location_service().create({"name": "solo", "plugin": "s3", "tier": "hot", "priority": 0,
                                           "enabled": True, "config": s3.config(f"solo-{uuid.uuid4().hex[:16]}")})
        make_bucket(storage, locations=["solo"], charged_read_quota=1 << 40, monthly_free_read_quota=0,
                    free_read_quota=0)
        size = 4 * MiB
        data = os.urandom(size)
        put(storage, "bucket", "big", data)
        server = GunicornServer(settings, workers=1, extra_env=DOWNLOADER)
        with running([server]):
            with socket.socket() as sock:
                # a small receive buffer, set before connecting, keeps the TCP window small
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KiB)
                sock.connect(("127.0.0.1", server.port))
                sock.sendall(b"GET /api/v1/buckets/bucket/objects/big HTTP/1.1\r\nHost: x\r\n"
                             b"Connection: close\r\n\r\n")
                status, headers, body = read_head(sock)
                assert status == 200 and int(headers["content-length"]) == size
                while len(body) < 256 * KiB:  # a slow client
                    body += sock.recv(16 * KiB)
                    time.sleep(0.002)
                time.sleep(0.5)  # the server fills the socket buffers and waits for the client
                s3.kill()
                body += read_until_closed(sock, size)
            log = server.log.read_text(errors="replace")
            # the bytes received are a prefix of the content, and fewer than announced
            assert len(body) < size, log[-3000:]
            assert body == data[:len(body)]
            # the server noticed, closed the body and refunded what it did not send
            sizes = wait_for(lambda: [s for s in read_sizes(storage.session_factory()) if s < size] or None,
                             timeout=30, what="the refund of the undelivered bytes")
            # every byte written to the socket reached the client (it read to the end): the record
            # is exactly what was received
            assert sizes == [len(body)], (len(body), sizes)
            assert consumption(storage.session_factory()) == (sizes[0], 0, 0)
            # a dead server is not a corrupt copy: once S3 is back, the same copy serves the whole file
            assert copy_states(storage) == [CopyState.STORED]
            revived = KillableMotoServer(port=s3.port)
            again = requests.get(f"{server.url}/api/v1/buckets/bucket/objects/big", timeout=60)
            assert again.status_code == 200 and hashlib.sha256(again.content).digest() == hashlib.sha256(data).digest()
    finally:
        s3.kill()
        if revived is not None:
            revived.kill()


# ---- 4. the hot location vanishes while downloads run -------------------------------------------------


def test_hot_location_removed_during_downloads_cold_serves(settings, storage, local_location, local_root,
                                                           tmp_path):
    storage.location_service().create({"name": "cold", "plugin": "local", "tier": "cold", "priority": 0,
                                       "enabled": True, "config": {"root": str(tmp_path / "cold")}})
    make_bucket(storage, locations=["hot", "cold"], charged_read_quota=1 << 40, monthly_free_read_quota=0,
                free_read_quota=0)
    objects = {f"obj-{i}": os.urandom(3 * PIECE + 1000 * i) for i in range(4)}
    for key, data in objects.items():
        put(storage, "bucket", key, data)
    server = GunicornServer(settings, workers=2, extra_env=DOWNLOADER)
    results: list[tuple[float, str, object, str | None]] = []
    with running([server]):
        stop = threading.Event()

        def load(n: int) -> None:
            keys = list(objects)
            with requests.Session() as session:
                i = n
                while not stop.is_set():
                    key = keys[i % len(keys)]
                    i += 1
                    started = time.monotonic()
                    try:
                        response = session.get(f"{server.url}/api/v1/buckets/bucket/objects/{key}", timeout=20)
                        outcome = ("ok" if response.content == objects[key] else "wrong bytes") \
                            if response.status_code == 200 else problem_code(response)
                        results.append((started, key, response.status_code, outcome))
                    except requests.RequestException as exc:
                        results.append((started, key, "error", repr(exc)))

        threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(6)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.5)
            shutil.rmtree(local_root)
            removed = time.monotonic()
            time.sleep(2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        log = server.log.read_text(errors="replace")

    outcomes = sorted({(str(status), str(outcome)) for _, _, status, outcome in results})
    assert outcomes == [("200", "ok")], (outcomes, log[-3000:])
    assert sum(1 for r in results if r[0] < removed) >= 10
    assert sum(1 for r in results if r[0] > removed) >= 10
    assert not local_root.exists()
    sizes = read_sizes(storage.session_factory())
    assert sorted(sizes) == sorted(len(objects[key]) for _, key, _, _ in results)
    assert consumption(storage.session_factory()) == (sum(sizes), 0, 0)


# ---- 5. an upload whose worker is killed -------------------------------------------------------------


def kill_upload_half_way(settings: Settings, storage, local_root: Path, phase: str) -> None:
    """SIGKILL the only worker of a storage instance in the middle of a 64 MiB PUT, then check what
    the client and the service see, and that the fault left something behind for gc to clean."""
    make_bucket(storage)
    spool = Path(settings.spool_dir)
    # receiving: big pieces, so one spool file grows past 4 MiB while the body comes; writing: many
    # small pieces, so their writes (a link, fsyncs and a rename each, four at once) take long enough
    # to be caught in the middle
    piece_size = 16 * MiB if phase == "receiving-body" else 256 * 1024
    server = GunicornServer(settings, workers=1, extra_env={"STORAGE_PROFILES": "storage",
                                                            "STORAGE_PIECE_SIZE": str(piece_size)})
    with running([server]):
        master = server.process.pid
        (worker,) = child_pids(master)
        size = 64 * MiB
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"PUT /api/v1/buckets/bucket/objects/k HTTP/1.1\r\nHost: x\r\n"
                         + f"Authorization: {server.admin['Authorization']}\r\n"
                           f"Content-Length: {size}\r\n\r\n".encode())
            if phase == "receiving-body":
                sock.sendall(os.urandom(8 * MiB))
                wait_for(lambda: any(p.stat().st_size >= 4 * MiB for p in files_under(spool)), timeout=20,
                         what="the body to reach the spool file")
            else:
                chunk = os.urandom(MiB)
                for _ in range(size // MiB):
                    sock.sendall(chunk)
                # the first piece file (temporary or renamed) on the location: the write phase has begun
                wait_for(lambda: files_under(local_root), timeout=30, interval=0.001, what="a piece being written")
            kill(worker)
            # the client gets no answer: the connection just ends
            sock.settimeout(20)
            try:
                answer = sock.recv(65536)
            except ConnectionResetError:
                answer = b""
            assert answer == b""
        # gunicorn replaces the worker and the service goes on
        wait_for(lambda: child_pids(master) - {worker}, timeout=30, what="a new worker")
        wait_for(lambda: requests.get(f"{server.url}/health/live", timeout=5).status_code == 200, timeout=30,
                 what="the new worker to serve")
        assert requests.get(f"{server.url}/api/v1/buckets/bucket/objects/k", timeout=10).status_code == 404
    # what the killed upload left behind: the precondition of the gc checks
    assert files_under(spool), "the killed upload left no spool file"
    if phase == "writing-pieces":
        assert files_under(local_root)  # pieces (or temporary piece files) of the pending copy
        assert count(storage, FileCopy) == 1  # the pending copy
    assert count(storage, Object) == 0
    storage.garbage_collector().collect(pending_grace_seconds=0)


@pytest.mark.profile("storage")
@pytest.mark.parametrize("phase", ["receiving-body", "writing-pieces"])
def test_upload_killed_half_way_leaves_nothing_after_gc(settings, storage, local_location, local_root, phase):
    kill_upload_half_way(settings, storage, local_root, phase)
    assert count(storage, Object) == count(storage, FileCopy) == count(storage, File) == 0
    # neither pieces nor the temporary file of the piece being written when the worker died
    left = files_under(local_root)
    assert left == [], f"gc left on the location: {[str(p) for p in left]}"
    spool = files_under(Path(settings.spool_dir))
    assert spool == [], f"gc left the spool files of the killed upload: {[str(p) for p in spool]}"
    assert read_sizes(storage.session_factory()) == []
