"""Restore jobs and events (both profiles for what goes through the shared services): retries and failures,
the webhook (signed, retried until acknowledged, kept across a restart), two storage-service instances under
gunicorn with a worker killed while it holds a job, the embedded default on SQLite with `storage-admin`, and the
figures of /metrics."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

import profiles
from storage_core import cli
from storage_core.auth import DEVELOPMENT_ADMIN
from storage_core.models import CopyState, Event, FileCopy, RestoreJob
from tests.conftest import KiB, make_bucket, make_container, put
from tests.support.nearline import WebhookReceiver, Workers, add_cache, add_tape, restore_log, wait_for
from tests.support.servers import GunicornServer

SIZE = 20 * KiB


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def settings(settings):
    return settings.replace(restore_poll_seconds=0.05, restore_lease_seconds=3, restore_retry_seconds=0.1,
                            restore_max_attempts=3)


@pytest.fixture
def tape_root(tmp_path):
    return tmp_path / "tape"


@pytest.fixture
def library(storage, tape_root, tmp_path):
    add_tape(storage, tape_root, 0.5)
    add_cache(storage, tmp_path / "cache", capacity=10 * SIZE)
    make_bucket(storage, "archive", locations=["tape"])
    return storage


def job_of(storage, data: bytes) -> RestoreJob:
    with storage.session_factory()() as session:
        return session.scalar(select(RestoreJob).where(RestoreJob.checksum == checksum(data)))


# ---- retries and failures --------------------------------------------------------------------------------

@pytest.fixture
def receiver():
    running = WebhookReceiver([])
    yield running
    running.stop()


def test_a_location_error_is_retried_with_backoff_then_the_restore_fails(settings, engine, tmp_path, tape_root,
                                                                         receiver):
    storage = make_container(settings.replace(event_webhook_url=receiver.url, event_webhook_secret="k"), engine,
                             frozenset({profiles.STORAGE}))
    add_tape(storage, tape_root, 0.5)
    add_cache(storage, tmp_path / "cache", capacity=10 * SIZE)
    make_bucket(storage, "archive", locations=["tape"])
    data = os.urandom(SIZE)
    put(storage, "archive", "lost", data)
    sha = checksum(data)
    (tape_root / "pieces" / sha[:2] / sha[2:4] / f"{sha}.0").unlink()  # the tape lost the piece
    assert storage.restore_service().request([sha], None, DEVELOPMENT_ADMIN)[0].state == "restoring"
    running = Workers(storage)
    try:
        wait_for(lambda: job_of(storage, data).state == "failed", timeout=10, what="the job failing")
        wait_for(lambda: receiver.deliveries, timeout=5, what="the failure event")
    finally:
        running.stop()
    job = job_of(storage, data)
    assert job.attempts == 3 and "PieceMissing" in job.error and job.cache_copy_id is None
    assert job.finished_at > job.requested_at
    with storage.session_factory()() as session:  # the room it reserved is given back
        assert session.scalars(select(FileCopy.state).where(FileCopy.checksum == sha)).all() == [CopyState.STORED]
    event = receiver.events()[0]
    assert (event["type"], event["checksum"], event["expires_at"]) == ("file.restore_failed", sha, None)
    assert storage.restore_service().states([sha], DEVELOPMENT_ADMIN)[0].state == "nearline"
    # asking again starts over
    assert storage.restore_service().request([sha], None, DEVELOPMENT_ADMIN)[0].state == "restoring"
    assert job_of(storage, data).state == "queued" and job_of(storage, data).attempts == 0


def test_a_file_larger_than_the_cache_fails_at_once(library):
    add_tape  # noqa: B018 - the library fixture made the tape and a cache of 10 * SIZE
    data = os.urandom(11 * SIZE)
    put(library, "archive", "huge", data)
    library.restore_service().request([checksum(data)], None, DEVELOPMENT_ADMIN)
    assert library.restore_worker().run_once("test:0")
    job = job_of(library, data)
    assert job.state == "failed" and "do not fit in any cache location" in job.error


def test_without_a_cache_location_a_restore_waits_queued(storage, tape_root):
    add_tape(storage, tape_root, 0.1)
    make_bucket(storage, "archive", locations=["tape"])
    data = os.urandom(SIZE)
    put(storage, "archive", "a", data)
    storage.restore_service().request([checksum(data)], None, DEVELOPMENT_ADMIN)
    assert storage.restore_worker().run_once("test:0")
    assert storage.restore_service().states([checksum(data)], DEVELOPMENT_ADMIN)[0].state == "queued"
    assert restore_log(tape_root) == []  # nothing is restored before there is room for it


# ---- the webhook -----------------------------------------------------------------------------------------

def test_the_webhook_is_signed_retried_until_acknowledged_and_survives_a_restart(settings, engine, tmp_path,
                                                                                 tape_root):
    receiver = WebhookReceiver([500, 503])  # fails twice, then accepts
    secret = "webhook-secret"
    hooked = settings.replace(event_webhook_url=receiver.url, event_webhook_secret=secret)
    first = make_container(hooked, engine, frozenset({profiles.STORAGE}))
    add_tape(first, tape_root, 0.3)
    add_cache(first, tmp_path / "cache", capacity=10 * SIZE)
    make_bucket(first, "archive", locations=["tape"])
    data = os.urandom(SIZE)
    put(first, "archive", "a", data)
    first.restore_service().request([checksum(data)], 2, DEVELOPMENT_ADMIN)
    try:
        running = Workers(first)
        try:
            wait_for(lambda: receiver.deliveries, timeout=10, what="the first delivery")
        finally:
            running.stop()
        # a restart: another process (container) with the same settings delivers what is left
        second = make_container(hooked, engine, frozenset({profiles.STORAGE}))
        running = Workers(second)
        try:
            wait_for(lambda: len(receiver.deliveries) == 3, timeout=10, what="three deliveries")
            time.sleep(0.5)  # acknowledged: no fourth
        finally:
            running.stop()
    finally:
        receiver.stop()
    deliveries = receiver.deliveries
    assert [d["status"] for d in deliveries] == [500, 503, 200]
    assert len({d["body"] for d in deliveries}) == 1 and len({d["headers"]["X-Storage-Event-Id"]
                                                             for d in deliveries}) == 1
    for delivery in deliveries:
        expected = hmac.new(secret.encode(), delivery["body"], hashlib.sha256).hexdigest()
        assert hmac.compare_digest(delivery["headers"]["X-Storage-Signature"], expected)
        assert delivery["headers"]["Content-Type"] == "application/json"
    assert [d["headers"]["X-Storage-Delivery-Attempt"] for d in deliveries] == ["1", "2", "3"]
    # backoff: 0.1 s, then 0.2 s
    assert deliveries[2]["time"] - deliveries[1]["time"] >= 0.2
    event = json.loads(deliveries[0]["body"])
    assert set(event) == {"type", "checksum", "expires_at", "time"}
    assert (event["type"], event["checksum"]) == ("file.available", checksum(data))
    with first.session_factory()() as session:
        row = session.scalar(select(Event))
        expires = session.scalar(select(FileCopy.expires_at).where(FileCopy.state == CopyState.CACHED))
    assert row.delivered_at is not None and row.attempts == 3 and row.last_error is None
    assert event["expires_at"] == expires.isoformat()


# ---- two storage-service instances and a killed worker -----------------------------------------------------

def gunicorn_children(server: GunicornServer) -> set[int]:
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == server.process.pid:
                children.add(int(entry.name))
    return children


def metric(server: GunicornServer, name: str) -> float:
    text = requests.get(server.url + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


@pytest.mark.profile("storage")
@pytest.mark.slow
def test_two_instances_restore_each_file_exactly_once_and_lose_no_job_when_a_worker_dies(settings, storage,
                                                                                         tape_root, tmp_path):
    add_tape(storage, tape_root, 2.0)
    add_cache(storage, tmp_path / "cache", capacity=100 * SIZE)
    make_bucket(storage, "archive", locations=["tape"])
    contents = {f"f{n}": os.urandom(SIZE) for n in range(6)}
    for key, data in contents.items():
        put(storage, "archive", key, data)
    env = {"STORAGE_RESTORE_WORKERS": "2", "STORAGE_RESTORE_POLL_SECONDS": "0.1", "STORAGE_RESTORE_LEASE_SECONDS": "3",
           "STORAGE_DB_POOL_SIZE": "2"}
    servers = [GunicornServer(settings, workers=2, extra_env=env) for _ in range(2)]
    try:
        body = {"checksums": [checksum(d) for d in contents.values()]}
        started = time.monotonic()
        for server in servers:  # everyone asks for everything: each file must still be restored once
            answer = requests.post(server.url + "/api/v1/files/restore", json=body, headers=server.admin, timeout=10)
            assert answer.status_code == 202 and {s["state"] for s in answer.json()} == {"restoring"}

        def held_job():
            with storage.session_factory()() as session:
                return session.scalar(select(RestoreJob).where(RestoreJob.state == "running",
                                                               RestoreJob.lease_owner.is_not(None)).limit(1))

        job = wait_for(held_job, timeout=10, what="a job held by a worker")
        pid = int(job.lease_owner.split(":")[1])
        assert any(pid in gunicorn_children(server) for server in servers)
        os.kill(pid, signal.SIGKILL)  # the worker dies holding the job

        def all_available():
            states = requests.post(servers[1].url + "/api/v1/files/availability", json=body, headers=servers[1].admin,
                                   timeout=10).json()
            return all(s["state"] == "available" for s in states)

        wait_for(all_available, timeout=40, every=0.2, what="every file available")
        elapsed = time.monotonic() - started
        with storage.session_factory()() as session:
            jobs = session.scalars(select(RestoreJob)).all()
            cached = session.scalars(select(FileCopy.checksum).where(FileCopy.state == CopyState.CACHED)).all()
        assert sorted(j.state for j in jobs) == ["done"] * 6
        assert sorted(cached) == sorted(body["checksums"])
        # each file (one piece) restored exactly once by the library, the killed worker's job included
        assert sorted(entry[0] for entry in restore_log(tape_root)) == sorted(body["checksums"])
        assert sum(metric(server, "storage_restore_takeovers_total") for server in servers) >= 1
        assert sum(metric(server, "storage_restores_total") for server in servers) == 6
        for key, data in contents.items():
            got = requests.get(f"{servers[0].url}/api/v1/buckets/archive/objects/{key}", timeout=10)
            assert got.status_code == 200 and got.content == data
        print(f"\n6 files, 2 instances, a worker killed holding a job: all available after {elapsed:.1f} s")
    finally:
        for server in servers:
            server.stop()


# ---- the embedded default: SQLite and storage-admin --------------------------------------------------------

def test_restores_on_sqlite_through_storage_admin(tmp_path, monkeypatch, capsys):
    data_dir = tmp_path / "var"
    monkeypatch.setenv("STORAGE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("STORAGE_JWT_SECRET", "x" * 32)
    monkeypatch.setenv("STORAGE_RESTORE_POLL_SECONDS", "0.05")
    monkeypatch.delenv("STORAGE_DATABASE_URL", raising=False)

    def admin(*argv: str):
        capsys.readouterr()
        assert cli.main(list(argv)) == 0
        out = capsys.readouterr().out
        return json.loads(out) if out.lstrip().startswith(("[", "{")) else out

    admin("db", "upgrade")
    tape = admin("location", "add", "tape", "--access", "nearline", "--tier", "cold",
                 "--config", json.dumps({"root": str(tmp_path / "tape"), "restore_seconds": 0.2}))
    assert tape["access"] == "nearline"
    cache = admin("location", "add", "cache", "--purpose", "cache", "--capacity", str(10 * SIZE),
                  "--config", json.dumps({"root": str(tmp_path / "cache")}))
    assert cache["purpose"] == "cache"
    admin("bucket", "add", "archive", "--location", "tape", "--visibility", "public-read")
    from storage_core.container import build_container
    from storage_core.settings import Settings

    container = build_container(Settings.from_env(), frozenset({profiles.STORAGE}))
    data = os.urandom(SIZE)
    put(container, "archive", "a", data)
    asked = admin("restore", "request", checksum(data), checksum(data), "--hours", "3")
    assert [s["state"] for s in asked] == ["restoring", "restoring"]
    assert [j["state"] for j in admin("restore", "list")] == ["queued"]
    assert "step(s)" in admin("restore", "work", "--once")
    jobs = admin("restore", "list")
    assert [(j["state"], j["hours"]) for j in jobs] == [("done", 3)]
    status = admin("cache", "status")
    assert status["locations"][0]["cached_files"] == 1 and status["locations"][0]["used_size"] == SIZE
    app = __import__("storage_core.app", fromlist=["create_app"]).create_app(["storage"])
    with app.test_client().get("/api/v1/buckets/archive/objects/a") as response:
        assert response.status_code == 200 and response.data == data
    assert admin("cache", "purge")["removed"] == 0  # nothing expired
    assert admin("cache", "purge", "--all") == {"removed": 1, "removed_bytes": SIZE, "kept_being_read": 0}
    assert admin("cache", "status")["locations"][0]["used_size"] == 0
    assert cli.main(["restore", "request", "not-a-checksum"]) == 2  # bad input is bad usage, as for argparse


# ---- metrics -----------------------------------------------------------------------------------------------

def test_metrics_show_jobs_by_state_and_restore_seconds(client, library):
    data = os.urandom(SIZE)
    put(library, "archive", "a", data)
    library.restore_service().request([checksum(data)], None, DEVELOPMENT_ADMIN)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'storage_restore_jobs{state="queued"} 1.0' in text
    assert library.restore_worker().run_once("test:0")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'storage_restore_jobs{state="done"} 1.0' in text and 'storage_restore_jobs{state="queued"} 0.0' in text
    assert "storage_restore_seconds_bucket" in text and 'storage_restores_total{outcome="done"}' in text
