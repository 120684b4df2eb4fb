"""The restore capability of the plugins: a local location acting as a tape library (``restore_seconds``), and
S3 archive classes through moto's S3 server (GLACIER writes, RestoreObject, ``x-amz-restore``), then a whole
restore of a GLACIER file into the cache and its download (both profiles)."""

from __future__ import annotations

import hashlib
import io
import os
import time

import pytest
from minio import Minio
from moto.moto_api import state_manager

from plugins.local import LocalLocation
from plugins.s3 import S3Location
from storage_core.errors import NotRestored, PieceMissing
from storage_core.plugin import RestoreStatus
from tests.conftest import KiB, make_bucket, put
from tests.support.nearline import Workers, add_cache, restore_log, wait_for

CHECKSUM = hashlib.sha256(b"piece").hexdigest()
DATA = b"0123456789" * 100


def test_an_online_location_reports_no_restore_capability(tmp_path, s3_server, s3_bucket_name):
    assert LocalLocation({"root": str(tmp_path)}).restore_capability is None
    assert S3Location(s3_server.config(s3_bucket_name)).restore_capability is None
    assert S3Location(s3_server.config(s3_bucket_name, storage_class="GLACIER_IR")).restore_capability is None


def test_a_local_tape_library_serves_a_piece_only_during_a_restore(tmp_path):
    tape = LocalLocation({"root": str(tmp_path), "restore_seconds": 0.3})
    capability = tape.restore_capability
    assert capability is not None and capability.storage_class == "GLACIER"
    with pytest.raises(PieceMissing):
        capability.status(CHECKSUM, 0)
    tape.write_piece(CHECKSUM, 0, io.BytesIO(DATA), len(DATA))
    with pytest.raises(NotRestored):
        b"".join(tape.read_piece(CHECKSUM, 0, 0, 10))
    assert capability.status(CHECKSUM, 0).state == RestoreStatus.ARCHIVED
    capability.start(CHECKSUM, 0, days=1)
    capability.start(CHECKSUM, 0, days=1)  # under way: kept, not started again
    status = capability.status(CHECKSUM, 0)
    assert status.state == RestoreStatus.RESTORING and 0 < status.ready_in <= 0.3
    with pytest.raises(NotRestored):
        b"".join(tape.read_piece(CHECKSUM, 0, 0, 10))
    time.sleep(0.35)
    status = capability.status(CHECKSUM, 0)
    assert status.state == RestoreStatus.RESTORED and status.expires_at is not None
    assert b"".join(tape.read_piece(CHECKSUM, 0, 5, 10)) == DATA[5:15]
    assert restore_log(tmp_path) == [(CHECKSUM, 0)]
    tape.delete_piece(CHECKSUM, 0)
    assert not (tmp_path / "restores" / CHECKSUM[:2] / f"{CHECKSUM}.0").exists()


def test_an_s3_glacier_location_writes_glacier_objects_and_restores_them(s3_server, s3_bucket_name):
    glacier = S3Location(s3_server.config(s3_bucket_name, storage_class="GLACIER", restore_check_seconds=1))
    capability = glacier.restore_capability
    assert capability is not None and capability.storage_class == "GLACIER"
    assert capability.estimate_seconds == 5 * 3600 and capability.check_every_seconds == 1
    glacier.write_piece(CHECKSUM, 0, io.BytesIO(DATA), len(DATA))
    assert glacier.restore_header(CHECKSUM, 0) == ("GLACIER", None)
    # moto answers a GET of an unrestored GLACIER object with 403 InvalidObjectState, as S3 does
    with pytest.raises(NotRestored):
        b"".join(glacier.read_piece(CHECKSUM, 0, 0, 10))
    assert capability.status(CHECKSUM, 0).state == RestoreStatus.ARCHIVED
    capability.start(CHECKSUM, 0, days=1)  # 202 Accepted
    status = capability.status(CHECKSUM, 0)  # moto restores at once by default
    assert status.state == RestoreStatus.RESTORED and status.expires_at is not None
    assert 'ongoing-request="false"' in glacier.restore_header(CHECKSUM, 0)[1]
    assert b"".join(glacier.read_piece(CHECKSUM, 0, 3, 7)) == DATA[3:10]
    capability.start(CHECKSUM, 0, days=2)  # 200: already restored, its expiry extended
    assert capability.status(CHECKSUM, 0).expires_at > status.expires_at


def test_an_s3_restore_in_progress_is_reported_from_x_amz_restore(s3_server, s3_bucket_name):
    glacier = S3Location(s3_server.config(s3_bucket_name, storage_class="DEEP_ARCHIVE", restore_tier="Bulk"))
    glacier.write_piece(CHECKSUM, 0, io.BytesIO(DATA), len(DATA))
    # moto's restore moves one step per request of the object: the next HEAD shows ongoing-request="true",
    # the one after it the restored copy
    state_manager.set_transition("s3::keyrestore", {"progression": "manual", "times": 1})
    try:
        glacier.restore_capability.start(CHECKSUM, 0, days=1)
        assert glacier.restore_capability.status(CHECKSUM, 0).state == RestoreStatus.RESTORING
        assert glacier.restore_capability.status(CHECKSUM, 0).state == RestoreStatus.RESTORED
    finally:
        state_manager.unset_transition("s3::keyrestore")
    assert glacier.restore_capability.estimate_seconds == 48 * 3600


@pytest.mark.parametrize("config,field", [
    ({"storage_class": "ICE"}, "storage_class"),
    ({"storage_class": "DEEP_ARCHIVE", "restore_tier": "Expedited"}, "restore_tier"),
    ({"restore_check_seconds": 0}, "restore_check_seconds"),
])
def test_bad_s3_archive_configs_are_refused(s3_server, s3_bucket_name, config, field):
    from storage_core.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match=field):
        S3Location.validate_config(s3_server.config(s3_bucket_name, **config))


# ---- a whole restore through the S3 protocol server ------------------------------------------------------

@pytest.fixture
def settings(settings):
    return settings.replace(restore_poll_seconds=0.05, restore_retry_seconds=0.1)


def test_glacier_copies_are_written_restored_and_read(client, storage, s3_server, s3_bucket_name, tmp_path):
    storage.location_service().create({
        "name": "glacier", "plugin": "s3", "tier": "cold", "priority": 0, "enabled": True, "access": "nearline",
        "config": s3_server.config(s3_bucket_name, storage_class="GLACIER", restore_check_seconds=0.1)})
    add_cache(storage, tmp_path / "cache", capacity=1024 * KiB)
    make_bucket(storage, "archive", locations=["glacier"])
    data = os.urandom(150 * KiB)  # three pieces of 64 KiB, three GLACIER objects
    checksum = put(storage, "archive", "big", data)["checksum"]
    minio = Minio(s3_server.endpoint, access_key="testing", secret_key="testing", secure=False)
    objects = list(minio.list_objects(s3_bucket_name, prefix="pieces/", recursive=True))
    assert len(objects) == 3
    assert {minio.stat_object(s3_bucket_name, o.object_name).metadata["x-amz-storage-class"]
            for o in objects} == {"GLACIER"}
    response = client.get("/api/v1/buckets/archive/objects/big")
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    state_manager.set_transition("s3::keyrestore", {"progression": "manual", "times": 1})
    running = Workers(storage)
    try:
        def availability():
            item = client.post("/api/v1/files/availability", json={"checksums": [checksum]}).json[0]
            return item if item["available"] else None

        ready = wait_for(availability, timeout=20, what="available")
    finally:
        running.stop()
        state_manager.unset_transition("s3::keyrestore")
    assert ready["state"] == "available" and ready["expires_at"] is not None
    with client.get("/api/v1/buckets/archive/objects/big", headers={"Range": "bytes=60000-140000"}) as ranged:
        assert ranged.status_code == 206 and ranged.data == data[60000:140001]
    with client.get("/api/v1/buckets/archive/objects/big") as whole:
        assert whole.status_code == 200 and whole.data == data
    # every piece was restored from GLACIER: moto shows the temporary copies
    assert all('ongoing-request="false"' in minio.stat_object(s3_bucket_name, o.object_name).metadata
               ["x-amz-restore"] for o in objects)
