"""The embedded default (SQLite, `make run`) as it behaves on its own: ids never reused, and exact quota
across service processes sharing one file (every transaction begins with BEGIN IMMEDIATE: storage_core/db.py).

The rest of the suite also runs on SQLite in `make test-sqlite` (STORAGE_TEST_DATABASE=sqlite).
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, insert, select, text

import profiles
from storage_core.migrations import upgrade
from storage_core.models import BucketTraffic, ReadRecord
from storage_core.settings import Settings
from tests.conftest import make_bucket, make_container, put
from tests.support.auth import TEST_JWT_SECRET
from tests.support.servers import GunicornServer

KiB = 1024


@pytest.fixture
def embedded(tmp_path: Path):
    """The storage profile's services on a SQLite file of their own (whatever database the suite runs on)."""
    from storage_core.db import make_engine

    settings = Settings(data_dir=str(tmp_path / "var"), piece_size=64 * KiB, block_size=16 * KiB,
                        jwt_secret=TEST_JWT_SECRET, db_pool_size=4)
    engine = make_engine(settings)
    upgrade(engine)
    storage = make_container(settings, engine, frozenset({profiles.STORAGE}))
    storage.location_service().create({"name": "hot", "plugin": "local", "tier": "hot", "priority": 0,
                                       "enabled": True, "config": {"root": str(tmp_path / "hot")}})
    yield settings, storage
    engine.dispose()


def test_object_ids_are_never_reused(embedded):
    """SQLite gives a new row the largest rowid + 1: without AUTOINCREMENT an object replaced or deleted and
    made again got the id of the one before, so two objects shared an object_id in the read records."""
    _settings, storage = embedded
    make_bucket(storage)
    first = put(storage, "bucket", "k", b"first")["object_id"]
    replaced = put(storage, "bucket", "k", b"second")["object_id"]
    storage.object_service().delete("bucket", "k")
    again = put(storage, "bucket", "k", b"third")["object_id"]
    assert len({first, replaced, again}) == 3, (first, replaced, again)


def test_migration_0009_keeps_ids_and_stops_their_reuse(tmp_path: Path):
    from storage_core.db import make_engine

    # the service's engine: foreign keys on, as when storage-admin db upgrade runs
    engine = make_engine(Settings(data_dir=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'old.db'}"))
    upgrade(engine, "0006")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO buckets (id, name, owner, visibility, charged_read_quota, "
                                "free_read_quota, monthly_free_read_quota, created_at) VALUES "
                                "(1, 'bucket', 'o', 'private', 0, 0, 0, '2026-11-01 00:00:00')"))
        connection.execute(text("INSERT INTO files (checksum, size, piece_size, piece_count, block_size, "
                                "block_digests, md5, created_at) VALUES (:c, 1, 16, 1, 16, :d, :m, "
                                "'2026-11-01 00:00:00')"), {"c": "a" * 64, "d": b"\0" * 32, "m": "0" * 32})
        connection.execute(text("INSERT INTO storage_locations (id, name, plugin, tier, priority, enabled, config, "
                                "created_at, updated_at) VALUES (1, 'hot', 'local', 'hot', 0, 1, '{}', "
                                "'2026-11-01 00:00:00', '2026-11-01 00:00:00')"))
        connection.execute(text("INSERT INTO file_copies (id, checksum, location_id, state, created_at, updated_at) "
                                "VALUES (5, :c, 1, 'stored', '2026-11-01 00:00:00', '2026-11-01 00:00:00')"),
                           {"c": "a" * 64})
        connection.execute(text("INSERT INTO damaged_pieces (copy_id, piece_index, reason, detected_at) "
                                "VALUES (5, 0, 'corrupt', '2026-11-01 00:00:00')"))
        connection.execute(text("INSERT INTO restore_jobs (id, checksum, state, hours, requested_at, next_attempt_at, "
                                "attempts, cache_copy_id) VALUES (3, :c, 'done', 1, '2026-11-01 00:00:00', "
                                "'2026-11-01 00:00:00', 1, 5)"), {"c": "a" * 64})
        for object_id, key in ((7, "a"), (9, "b")):
            connection.execute(text("INSERT INTO objects (id, bucket_id, key, checksum, content_type, created_at) "
                                    "VALUES (:i, 1, :k, :c, 'x/y', '2026-11-01 00:00:00')"),
                               {"i": object_id, "k": key, "c": "a" * 64})
    upgrade(engine)
    from storage_core.models import Object

    with engine.begin() as connection:
        assert [tuple(r) for r in connection.execute(text("SELECT id, key FROM objects ORDER BY id"))] == [
            (7, "a"), (9, "b")]
        connection.execute(text("DELETE FROM objects WHERE id = 9"))
        connection.execute(insert(Object).values(bucket_id=1, key="c", checksum="a" * 64, content_type="x/y"))
        assert connection.execute(text("SELECT max(id) FROM objects")).scalar_one() == 10
        # what refers to a copy survives the rebuild of file_copies (ON DELETE CASCADE, SET NULL)
        assert [tuple(r) for r in connection.execute(text("SELECT copy_id, piece_index FROM damaged_pieces"))] == [
            (5, 0)]
        assert connection.execute(text("SELECT cache_copy_id FROM restore_jobs")).scalar_one() == 5
    engine.dispose()


@pytest.mark.slow
@pytest.mark.profile("storage")
def test_two_service_processes_on_one_sqlite_file_charge_exactly(embedded):
    """Two gunicorn instances (2 gevent workers each) on one SQLite file; 120 simultaneous downloads of 10 KiB
    against a quota for exactly 40: 40 served, 80 refused, and the month row and read records agree."""
    settings, storage = embedded
    size, admitted = 10 * KiB, 40
    make_bucket(storage, charged_read_quota=admitted * size, monthly_free_read_quota=0, free_read_quota=0)
    data = os.urandom(size)
    put(storage, "bucket", "k", data)
    servers = [GunicornServer(settings, workers=2) for _ in range(2)]
    try:
        barrier = threading.Barrier(120)

        def download(i: int) -> tuple[int, int, str | None]:
            url = f"{servers[i % 2].url}/api/v1/buckets/bucket/objects/k"
            barrier.wait()
            response = requests.get(url, timeout=120)
            if response.status_code == 200:
                return i % 2, 200, hashlib.sha256(response.content).hexdigest()
            return i % 2, response.status_code, response.json().get("code")

        with ThreadPoolExecutor(max_workers=120) as pool:
            results = list(pool.map(download, range(120)))
    finally:
        for server in servers:
            server.stop()

    served = [r for r in results if r[1] == 200]
    refused = [r for r in results if r[1] == 429]
    assert len(served) == admitted, sorted({(r[1], r[2]) for r in results if r[1] != 200})
    assert all(r[2] == hashlib.sha256(data).hexdigest() for r in served)
    assert len(refused) == 120 - admitted and all(r[2] == "QuotaExceeded" for r in refused)
    assert {r[0] for r in served} == {0, 1}, "both instances served"
    with storage.session_factory()() as session:
        traffic = session.scalar(select(BucketTraffic))
        assert traffic.charged_consumed_size == admitted * size
        assert session.scalar(select(func.count()).select_from(ReadRecord)) == admitted
        assert session.scalar(select(func.sum(ReadRecord.read_size))) == admitted * size
