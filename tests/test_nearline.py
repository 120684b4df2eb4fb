"""Nearline storage and the restore cache (both profiles): a tape library that takes RESTORE seconds per restore
(a local location with ``restore_seconds``), a cache with room for two files, and the restore workers of a
storage-service process running in threads (real database, real files, the app through WSGI).

Reads of uncached files answer 503 + Retry-After (and start the restore), then 200 with the right bytes;
nothing is charged for a 503, and only the 200 leaves a read record. The third restored file evicts the least
recently read one; a cached copy being read is never evicted, and the capacity is never exceeded: a restore
that finds no room waits ``queued``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time

import pytest
from dependency_injector import providers
from sqlalchemy import func, select

from storage_core.auth import DEVELOPMENT_ADMIN
from storage_core.http_semantics import Conditions
from storage_core.models import CacheLease, CopyState, FileCopy, ReadRecord, RestoreJob, StorageLocation
from storage_core.services.resolve import ByKey
from tests.conftest import KiB, make_bucket, put
from tests.support.nearline import Workers, add_cache, add_tape, restore_log, wait_for

RESTORE = 2.0  # seconds a restore takes in the tape library (restore_seconds)
SIZE = 40 * KiB  # one piece (64 KiB pieces), three blocks of 16 KiB


@pytest.fixture
def settings(settings):
    return settings.replace(restore_poll_seconds=0.05, restore_lease_seconds=3, restore_retry_seconds=0.1)


@pytest.fixture
def tape_root(tmp_path):
    return tmp_path / "tape"


@pytest.fixture
def library(storage, tape_root, tmp_path):
    """A tape library, a cache for two files, and a public bucket written to the tape only."""
    add_tape(storage, tape_root, RESTORE)
    add_cache(storage, tmp_path / "cache", capacity=2 * SIZE)
    make_bucket(storage, "archive", locations=["tape"])
    return storage


@pytest.fixture
def workers(storage):
    """The restore loops of one storage-service process (two: two restores at a time)."""
    running = Workers(storage, 2)
    yield running
    running.stop()


def files(storage, *names: str) -> dict[str, bytes]:
    contents = {name: os.urandom(SIZE) for name in names}
    for name, data in contents.items():
        put(storage, "archive", name, data)
    return contents


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def url(name: str) -> str:
    return f"/api/v1/buckets/archive/objects/{name}"


def download(client, name: str) -> bytes:
    """GET the whole object and close the response, as a server does when the body is sent."""
    with client.get(url(name)) as response:
        assert response.status_code == 200, response.data
        return response.data


def states(client, *contents: bytes) -> list[str]:
    response = client.post("/api/v1/files/availability", json={"checksums": [checksum(d) for d in contents]})
    assert response.status_code == 200
    return [item["state"] for item in response.json]


def cached_on(storage, data: bytes) -> list[str]:
    with storage.session_factory()() as session:
        return list(session.scalars(select(FileCopy.state).where(FileCopy.checksum == checksum(data),
                                                                 FileCopy.state == CopyState.CACHED)))


def records(storage) -> list[ReadRecord]:
    with storage.session_factory()() as session:
        return list(session.scalars(select(ReadRecord).order_by(ReadRecord.id)))


def consumed(client) -> int:
    return client.get("/api/v1/buckets/archive/read-quota").json["consumed_size"]


def cache_used(storage) -> int:
    return storage.restore_cache().status()["locations"][0]["used_size"]


# ---- reading a nearline file ----------------------------------------------------------------------------

def test_get_answers_503_with_retry_after_then_200_with_the_right_bytes(client, library, workers, tape_root):
    data = files(library, "a")["a"]
    started = time.monotonic()
    first = client.get(url("a"))
    assert first.status_code == 503
    assert first.json["code"] == "RestoreInProgress" and first.json["state"] == "restoring"
    assert 1 <= int(first.headers["Retry-After"]) <= RESTORE + 1
    # asking again while it is restored joins the same restore
    again = client.get(f"/api/v1/files/{checksum(data)}/download")
    assert again.status_code == 503 and again.json["code"] == "RestoreInProgress"
    assert consumed(client) == 0 and records(library) == []

    def served():
        with client.get(url("a")) as response:
            return response.data if response.status_code == 200 else None

    body = wait_for(served, timeout=10 * RESTORE, what="the restored file")
    latency = time.monotonic() - started
    assert body == data
    assert RESTORE <= latency < RESTORE + 2
    # one restore of its one piece, one charge, one record
    assert restore_log(tape_root) == [(checksum(data), 0)]
    assert [(r.read_size, r.object_name) for r in records(library)] == [(SIZE, "a")]
    assert consumed(client) == SIZE
    print(f"\nrestore latency (GET to 200, restore_seconds={RESTORE}): {latency:.2f} s")


def test_head_answers_what_get_would_and_an_s3_door_gets_the_residency(client, library, workers, tape_root):
    data = files(library, "a")["a"]
    # the S3 door's HeadObject: 200 from the metadata, x-amz-storage-class and no restore yet; nothing started
    download = library.download_service().open(ByKey("archive", "a"), Conditions(method="HEAD"),
                                               DEVELOPMENT_ADMIN, residency_head=True)
    assert download.status == 200 and download.headers["Content-Length"] == str(SIZE)
    assert (download.residency.storage_class, download.residency.state) == ("GLACIER", "nearline")
    assert restore_log(tape_root) == [] and states(client, data) == ["nearline"]
    # the native HEAD: what a GET would answer, a restore started included; uncharged
    head = client.head(url("a"))
    assert head.status_code == 503 and int(head.headers["Retry-After"]) >= 1
    assert states(client, data) == ["restoring"]
    during = library.download_service().open(ByKey("archive", "a"), Conditions(method="HEAD"),
                                             DEVELOPMENT_ADMIN, residency_head=True)
    assert during.residency.state == "restoring"
    wait_for(lambda: states(client, data) == ["available"], timeout=10 * RESTORE, what="available")
    after = library.download_service().open(ByKey("archive", "a"), Conditions(method="HEAD"), DEVELOPMENT_ADMIN,
                                            residency_head=True)
    assert after.residency.state == "available" and after.residency.expires_at is not None
    assert client.head(url("a")).status_code == 200
    assert consumed(client) == 0 and records(library) == []


def test_with_restore_on_read_off_get_answers_409_until_a_restore_is_asked_for(app, client, library, workers):
    app.extensions["container"].download_service().restore_on_read = False
    data = files(library, "a")["a"]
    refused = client.get(url("a"))
    assert refused.status_code == 409 and refused.json["code"] == "NotAvailable"
    assert states(client, data) == ["nearline"]
    asked = client.post("/api/v1/files/restore", json={"checksums": [checksum(data)], "hours": 2})
    assert asked.status_code == 202 and asked.json == [
        {"checksum": checksum(data), "state": "restoring", "expires_at": None}]
    under_way = client.get(url("a"))
    assert under_way.status_code == 503 and "Retry-After" in under_way.headers
    wait_for(lambda: states(client, data) == ["available"], timeout=10 * RESTORE, what="available")
    assert download(client, "a") == data
    assert consumed(client) == SIZE


# ---- the cache: eviction and leases ---------------------------------------------------------------------

def restore(client, *contents: bytes, hours: int | None = None) -> list[dict]:
    body = {"checksums": [checksum(d) for d in contents], **({"hours": hours} if hours else {})}
    response = client.post("/api/v1/files/restore", json=body)
    assert response.status_code == 202
    return response.json


def test_the_third_restored_file_evicts_the_least_recently_read(client, library, workers, tape_root):
    a, b, c = files(library, "a", "b", "c").values()
    started = time.monotonic()
    restore(client, a, b)
    wait_for(lambda: states(client, a, b) == ["available", "available"], timeout=10 * RESTORE, what="a and b")
    both = time.monotonic() - started
    for name, data in (("b", b), ("a", a)):  # b read before a: b is the least recently read
        assert download(client, name) == data
    assert cache_used(library) == 2 * SIZE
    restore(client, c)
    wait_for(lambda: states(client, c) == ["available"], timeout=10 * RESTORE, what="c")
    assert states(client, a, b, c) == ["available", "nearline", "available"]
    assert cached_on(library, b) == [] and cache_used(library) == 2 * SIZE
    assert download(client, "c") == c and download(client, "a") == a
    # b is restored again on demand, evicting the least recently read of a and c (c, read before a)
    assert client.get(url("b")).status_code == 503
    wait_for(lambda: states(client, b) == ["available"], timeout=10 * RESTORE, what="b again")
    assert states(client, a, b, c) == ["available", "available", "nearline"]
    # the library's restore of b (one day) still holds: b is copied into the cache again, not restored again
    assert sorted(entry[0] for entry in restore_log(tape_root)) == sorted(checksum(x) for x in (a, b, c))
    print(f"\ntwo files restored together in {both:.2f} s; eviction order b then c (least recently read)")


class MovingClock:
    """The system clock plus an offset the test moves (the tape library keeps the real time)."""

    def __init__(self):
        self.offset_us = 0

    def __call__(self) -> int:
        return time.time_ns() // 1000 + self.offset_us


def test_expired_copies_are_evicted_before_the_least_recently_read(library):
    clock = MovingClock()
    library.clock.override(providers.Object(clock))  # before the restore services are built
    running = Workers(library, 2)
    try:
        a, b, c = files(library, "a", "b", "c").values()
        service, cache = library.restore_service(), library.restore_cache()
        service.request([checksum(a)], 1, DEVELOPMENT_ADMIN)
        wait_for(lambda: service.states([checksum(a)], DEVELOPMENT_ADMIN)[0].available, timeout=10 * RESTORE,
                 what="a")
        service.request([checksum(b)], 5, DEVELOPMENT_ADMIN)
        wait_for(lambda: service.states([checksum(b)], DEVELOPMENT_ADMIN)[0].available, timeout=10 * RESTORE,
                 what="b")
        cache.release(list(cache.lease([copy_id(library, a)]).values()))  # a read: b is the least recently read
        clock.offset_us = 2 * 3600 * 1_000_000  # past a's hour, within b's five
        assert [s.state for s in service.states([checksum(a), checksum(b)], DEVELOPMENT_ADMIN)] == [
            "nearline", "available"]
        service.request([checksum(c)], None, DEVELOPMENT_ADMIN)
        wait_for(lambda: service.states([checksum(c)], DEVELOPMENT_ADMIN)[0].available, timeout=10 * RESTORE,
                 what="c")
        assert cached_on(library, a) == [] and cached_on(library, b) == [CopyState.CACHED]
    finally:
        running.stop()


def copy_id(storage, data: bytes) -> int:
    with storage.session_factory()() as session:
        return session.scalar(select(FileCopy.id).where(FileCopy.checksum == checksum(data),
                                                        FileCopy.state == CopyState.CACHED))


def test_a_cached_copy_being_read_is_never_evicted_and_the_capacity_never_exceeded(client, library, workers):
    a, b, c = files(library, "a", "b", "c").values()
    restore(client, a, b)
    wait_for(lambda: states(client, a, b) == ["available", "available"], timeout=10 * RESTORE, what="a and b")
    # two slow downloads in progress: the first block of each is read, the rest waits
    slow = {name: client.get(url(name), buffered=False) for name in ("a", "b")}
    received = {name: next(iter(response.response)) for name, response in slow.items()}
    assert all(response.status_code == 200 for response in slow.values())
    assert restore(client, c)[0]["state"] == "restoring"
    wait_for(lambda: states(client, c) == ["queued"], timeout=5, what="c waiting for room")
    time.sleep(3 * RESTORE)  # long enough for the restore, were there room
    assert states(client, a, b, c) == ["available", "available", "queued"]
    assert cache_used(library) == 2 * SIZE
    waiting = client.get(url("c"))
    assert waiting.status_code == 503 and waiting.json["state"] == "queued"
    assert library.restore_cache().status()["restores_waiting_for_room"] == 1
    # b's download completes with the right bytes, then closes: its copy may go now, a's may not
    rest = b"".join(slow["b"].response)
    slow["b"].close()
    assert received["b"] + rest == b
    wait_for(lambda: states(client, c) == ["available"], timeout=10 * RESTORE + 5, what="c after b's download")
    assert states(client, a, b, c) == ["available", "nearline", "available"]
    rest = b"".join(slow["a"].response)
    slow["a"].close()
    assert received["a"] + rest == a
    assert cache_used(library) == 2 * SIZE
    with library.session_factory()() as session:
        assert session.scalar(select(func.count()).select_from(CacheLease)) == 0
    # each download was charged once, in full
    assert sorted(r.read_size for r in records(library)) == [SIZE, SIZE]


def test_a_crashed_downloads_lease_expires(library, workers):
    a, b, c = files(library, "a", "b", "c").values()
    admin = DEVELOPMENT_ADMIN
    service = library.restore_service()
    service.request([checksum(a), checksum(b)], None, admin)
    wait_for(lambda: [s.state for s in service.states([checksum(a), checksum(b)], admin)] == ["available"] * 2,
             timeout=10 * RESTORE, what="a and b")
    cache = library.restore_cache()
    # leases that no one releases, as an instance that died leaves them, expiring in a second
    cache.lease_us = 1_000_000
    cache.lease([copy_id(library, a), copy_id(library, b)])
    service.request([checksum(c)], None, admin)
    assert wait_for(lambda: service.states([checksum(c)], admin)[0].state == "available", timeout=15,
                    what="c once the leases expired")


# ---- requests ------------------------------------------------------------------------------------------

def test_a_request_extends_a_cached_copy_and_restores_once(client, library, workers, tape_root):
    data = files(library, "a")["a"]
    first = restore(client, data, hours=2)
    again = restore(client, data, data, hours=5)
    assert first[0]["state"] == "restoring" and [s["state"] for s in again] == ["restoring", "restoring"]
    wait_for(lambda: states(client, data) == ["available"], timeout=10 * RESTORE, what="available")
    with library.session_factory()() as session:
        job = session.scalar(select(RestoreJob))
        expires = session.scalar(select(FileCopy.expires_at).where(FileCopy.state == CopyState.CACHED))
    assert job.hours == 5 and job.state == "done"
    now = dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=4.9) < expires - now < dt.timedelta(hours=5.1)
    longer = restore(client, data, hours=100)[0]
    assert longer["state"] == "available"
    assert dt.timedelta(hours=99.9) < dt.datetime.fromisoformat(longer["expires_at"]) - now < dt.timedelta(hours=101)
    shorter = restore(client, data, hours=1)[0]
    assert shorter["expires_at"] == longer["expires_at"]  # never shortened
    assert restore_log(tape_root) == [(checksum(data), 0)]


@pytest.mark.parametrize("body,detail", [
    ({"checksums": ["a" * 64], "hours": 0}, "hours"),
    ({"checksums": ["a" * 64], "hours": 721}, "hours"),
    ({"checksums": ["a" * 64], "hours": "24"}, "hours"),
    ({"checksums": ["a" * 64] * 1001}, "checksums"),
    ({"checksums": []}, "checksums"),
    ({"checksums": ["A" * 64]}, "checksums"),
    ({"checksums": ["a" * 63]}, "checksums"),
    ({"checksums": ["../" + "a" * 61]}, "checksums"),
    ({"checksums": "a" * 64}, "checksums"),
    ({}, "checksums"),
])
def test_bad_restore_requests_are_400(client, body, detail):
    response = client.post("/api/v1/files/restore", json=body)
    assert response.status_code == 400 and response.json["code"] == "InvalidArgument"
    assert detail in response.json["detail"]


def test_a_restore_of_what_the_caller_cannot_read_is_unknown_and_starts_nothing(app, storage, library, auth,
                                                                                tape_root, anonymous):
    make_bucket(storage, "secret", owner="owen", visibility="private", locations=["tape"])
    hidden = os.urandom(SIZE)
    put(storage, "secret", "h", hidden)
    mine = files(library, "mine")["mine"]
    olivia = app.test_client()
    body = {"checksums": [checksum(hidden), checksum(mine), "0" * 64]}
    response = olivia.post("/api/v1/files/restore", json=body, headers=auth.headers("olivia"))
    assert response.status_code == 202
    assert response.json == [{"checksum": checksum(hidden), "state": "unknown", "expires_at": None},
                             {"checksum": checksum(mine), "state": "restoring", "expires_at": None},
                             {"checksum": "0" * 64, "state": "unknown", "expires_at": None}]
    with storage.session_factory()() as session:
        assert list(session.scalars(select(RestoreJob.checksum))) == [checksum(mine)]
    availability = olivia.post("/api/v1/files/availability", json={"checksums": [checksum(hidden)]},
                               headers=auth.headers("olivia")).json
    assert availability == [{"checksum": checksum(hidden), "available": False, "tier": None, "state": "unknown",
                             "expires_at": None}]
    owner = app.test_client().post("/api/v1/files/restore", json={"checksums": [checksum(hidden)]},
                                   headers=auth.headers("owen"))
    assert owner.json[0]["state"] == "restoring"
    assert anonymous.post("/api/v1/files/restore", json=body).status_code == 401


# ---- locations -----------------------------------------------------------------------------------------

@pytest.mark.profile("storage")
@pytest.mark.parametrize("fields,detail", [
    ({"access": "nearline"}, "nearline location needs a plugin configured to restore"),
    ({"config": {"restore_seconds": 1}}, "create it with access nearline"),
    ({"access": "nearline", "purpose": "cache", "config": {"restore_seconds": 1}}, "a cache location is online"),
    ({"access": "offline"}, "access"),
    ({"purpose": "archive"}, "purpose"),
])
def test_a_locations_access_must_match_what_its_plugin_can_do(client, tmp_path, fields, detail):
    body = {"name": "x", "plugin": "local", **fields}
    body["config"] = {"root": str(tmp_path / "x"), **fields.get("config", {})}
    response = client.post("/api/v1/storage-locations", json=body)
    assert response.status_code == 400 and detail in response.json["detail"]


@pytest.mark.profile("storage")
def test_a_cache_location_is_never_an_upload_or_copy_target(client, storage, library, local_location):
    view = client.get("/api/v1/storage-locations/cache").json
    assert (view["access"], view["purpose"], view["capacity"]) == ("online", "cache", 2 * SIZE)
    assert client.get("/api/v1/storage-locations/tape").json["access"] == "nearline"
    refused = client.post("/api/v1/buckets", json={"name": "cached", "locations": ["cache"]})
    assert refused.status_code == 400 and "cache location" in refused.json["detail"]
    make_bucket(storage, "everywhere")  # no locations named: every enabled one but the cache
    stored = put(storage, "everywhere", "k", b"x" * 100)
    copies = client.get(f"/api/v1/files/{stored['checksum']}").json["copies"]
    assert sorted(c["location"] for c in copies) == ["hot", "tape"]
    copy = client.post(f"/api/v1/files/{stored['checksum']}/copies", json={"location": "cache"})
    assert copy.status_code == 400
    patched = client.patch("/api/v1/storage-locations/tape", json={"config": {"restore_seconds": None}})
    assert patched.status_code == 400 and "nearline" in patched.json["detail"]


@pytest.mark.profile("storage")
def test_file_metadata_shows_cached_copies_with_their_expiry(client, library, workers):
    data = files(library, "a")["a"]
    restore(client, data, hours=3)
    wait_for(lambda: states(client, data) == ["available"], timeout=10 * RESTORE, what="available")
    copies = client.get(f"/api/v1/files/{checksum(data)}").json["copies"]
    assert [(c["location"], c["state"], c["access"], c["purpose"]) for c in copies] == [
        ("cache", "cached", "online", "cache"), ("tape", "stored", "nearline", "storage")]
    assert copies[0]["expires_at"] is not None and copies[1]["expires_at"] is None
    # the nearline copy cannot be removed while the cached one is all that would be left
    assert client.delete(f"/api/v1/files/{checksum(data)}/copies/tape").status_code == 409
    with client.get(url("a"), buffered=False) as reading:
        next(iter(reading.response))
        busy = client.delete(f"/api/v1/files/{checksum(data)}/copies/cache")
        assert busy.status_code == 409 and "being read" in busy.json["detail"]
    assert client.delete(f"/api/v1/files/{checksum(data)}/copies/cache").status_code == 204
    assert states(client, data) == ["nearline"]


def test_gc_keeps_the_room_of_a_long_restore_and_removes_expired_copies(storage, library, tape_root):
    with storage.session_factory()() as session:
        session.execute(StorageLocation.__table__.update().values(config={"root": str(tape_root),
                                                                          "restore_seconds": 3600}))
        session.commit()
    data = files(library, "a")["a"]
    storage.restore_service().request([checksum(data)], None, DEVELOPMENT_ADMIN)
    worker = storage.restore_worker()
    assert worker.run_once("test:1")  # room reserved, restore started, released until it is time to ask
    report = storage.garbage_collector().collect(pending_grace_seconds=0)
    assert report["abandoned_copies"] == 0
    with storage.session_factory()() as session:
        job = session.scalar(select(RestoreJob))
        assert job.state == "running" and job.cache_copy_id is not None
        assert session.get(FileCopy, job.cache_copy_id).state == CopyState.PENDING


def test_a_damaged_cached_copy_is_restored_again_not_served(client, library, workers, tmp_path):
    data = files(library, "a")["a"]
    restore(client, data)
    wait_for(lambda: states(client, data) == ["available"], timeout=10 * RESTORE, what="available")
    sha = checksum(data)
    piece = tmp_path / "cache" / "pieces" / sha[:2] / sha[2:4] / f"{sha}.0"
    piece.write_bytes(b"\0" * SIZE)  # the cache disk corrupted it
    broken = client.get(url("a"))
    assert broken.status_code == 503 and broken.json["code"] == "StorageUnavailable"  # the damage is recorded
    again = client.get(url("a"))
    assert again.status_code == 503 and again.json["code"] == "RestoreInProgress"
    wait_for(lambda: states(client, data) == ["available"], timeout=10 * RESTORE, what="available again")
    assert download(client, "a") == data
    assert cache_used(library) == SIZE  # the same room, written again
    assert [r.read_size for r in records(library)] == [SIZE]
