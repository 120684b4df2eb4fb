"""Failover between copies: a lost location, a lost or corrupt piece, and no copy at all (both profiles)."""

from __future__ import annotations

import os
import shutil

import pytest
from minio import Minio
from sqlalchemy import select

from storage_core.models import CopyState, FileCopy, ReadRecord
from tests.conftest import KiB, make_bucket, put

PIECE = 64 * KiB


@pytest.fixture
def cold_root(tmp_path):
    return tmp_path / "cold"


@pytest.fixture
def cold_location(storage, cold_root):
    storage.location_service().create({"name": "cold", "plugin": "local", "tier": "cold", "priority": 0,
                                       "enabled": True, "config": {"root": str(cold_root)}})
    return "cold"


def copy_states(storage) -> dict[int, str]:
    with storage.session_factory()() as session:
        return {c.location_id: c.state for c in session.scalars(select(FileCopy))}


def record_sizes(storage) -> list[int]:
    with storage.session_factory()() as session:
        return list(session.scalars(select(ReadRecord.read_size).order_by(ReadRecord.id)))


def piece_path(root, checksum: str, index: int):
    return root / "pieces" / checksum[:2] / checksum[2:4] / f"{checksum}.{index}"


def test_hot_location_directory_gone(client, storage, local_location, local_root, cold_location):
    make_bucket(storage, locations=["hot", "cold"])
    data = os.urandom(3 * PIECE)
    put(storage, "bucket", "k", data)
    shutil.rmtree(local_root)
    response = client.get("/api/v1/buckets/bucket/objects/k")
    assert response.status_code == 200 and response.data == data
    # an unreachable location is not a corrupt copy: it serves again once it is back
    assert set(copy_states(storage).values()) == {CopyState.STORED}


def test_s3_bucket_gone(client, storage, s3_location, s3_server, s3_bucket_name, cold_location):
    make_bucket(storage, locations=["s3", "cold"])
    data = os.urandom(2 * PIECE + 1)
    put(storage, "bucket", "k", data)
    s3 = Minio(s3_server.endpoint, access_key="testing", secret_key="testing", secure=False, region="us-east-1")
    for obj in s3.list_objects(s3_bucket_name, recursive=True):
        s3.remove_object(s3_bucket_name, obj.object_name)
    s3.remove_bucket(s3_bucket_name)
    response = client.get("/api/v1/buckets/bucket/objects/k", headers={"Range": f"bytes={PIECE - 5}-"})
    assert response.status_code == 206 and response.data == data[PIECE - 5:]


def test_one_corrupt_piece_is_served_from_the_other_copy(client, storage, local_location, local_root,
                                                         cold_location):
    make_bucket(storage, locations=["hot", "cold"])
    data = os.urandom(3 * PIECE)
    checksum = put(storage, "bucket", "k", data)["checksum"]
    path = piece_path(local_root, checksum, 1)
    corrupted = bytearray(path.read_bytes())
    corrupted[100] ^= 0xFF
    path.write_bytes(bytes(corrupted))
    response = client.get("/api/v1/buckets/bucket/objects/k")
    assert response.status_code == 200 and response.data == data
    states = copy_states(storage)
    assert sorted(states.values()) == [CopyState.CORRUPT, CopyState.STORED]
    # the corrupt copy is skipped from now on; the cold one serves alone
    again = client.get("/api/v1/buckets/bucket/objects/k", headers={"Range": "bytes=0-9"})
    assert again.data == data[:10]


def test_missing_piece_is_served_from_the_other_copy(client, storage, local_location, local_root, cold_location):
    make_bucket(storage, locations=["hot", "cold"])
    data = os.urandom(2 * PIECE)
    checksum = put(storage, "bucket", "k", data)["checksum"]
    piece_path(local_root, checksum, 0).unlink()
    assert client.get("/api/v1/buckets/bucket/objects/k").data == data


def test_hot_is_preferred_then_priority(client, storage, local_location, local_root, cold_location, cold_root,
                                        tmp_path):
    storage.location_service().create({"name": "hot2", "plugin": "local", "tier": "hot", "priority": 1,
                                       "enabled": True, "config": {"root": str(tmp_path / "hot2")}})
    make_bucket(storage, locations=["hot", "hot2", "cold"])
    checksum = put(storage, "bucket", "k", b"x" * 10)["checksum"]
    # make every copy distinguishable by breaking all but one, then check who serves
    for root in (local_root, cold_root):
        piece_path(root, checksum, 0).write_bytes(b"y" * 10)
    assert client.get("/api/v1/buckets/bucket/objects/k").data == b"x" * 10  # hot2 served
    states = copy_states(storage)
    assert sorted(states.values()) == [CopyState.CORRUPT, CopyState.STORED, CopyState.STORED]
    # the cold copy was never tried: hot2 (hot, priority 1) comes before cold (priority 0)
    with storage.session_factory()() as session:
        cold_id = session.scalar(select(FileCopy.location_id).join(FileCopy.location).where(
            FileCopy.location.has(name="cold")))
    assert states[cold_id] == CopyState.STORED


def test_disabled_location_is_skipped(client, storage, local_location, local_root, cold_location):
    make_bucket(storage, locations=["hot", "cold"])
    checksum = put(storage, "bucket", "k", b"z" * 10)["checksum"]
    piece_path(local_root, checksum, 0).write_bytes(b"w" * 10)  # would be detected, but must not be read
    storage.location_service().update("hot", {"enabled": False})
    assert client.get("/api/v1/buckets/bucket/objects/k").data == b"z" * 10
    assert set(copy_states(storage).values()) == {CopyState.STORED}


def test_no_copy_can_serve_is_503_and_nothing_charged(client, storage, local_location, local_root):
    make_bucket(storage)
    put(storage, "bucket", "k", os.urandom(PIECE))
    shutil.rmtree(local_root)
    response = client.get("/api/v1/buckets/bucket/objects/k")
    assert response.status_code == 503 and response.json["code"] == "StorageUnavailable"
    assert record_sizes(storage) == []
    quota = client.get("/api/v1/buckets/bucket/read-quota").json
    assert quota["consumed_size"] == 0


def test_all_locations_disabled_is_503(client, storage, local_location):
    make_bucket(storage)
    put(storage, "bucket", "k", b"data")
    storage.location_service().update("hot", {"enabled": False})
    response = client.get("/api/v1/buckets/bucket/objects/k")
    assert response.status_code == 503 and response.json["code"] == "StorageUnavailable"
    assert record_sizes(storage) == []


def sha256_block_digests(data: bytes, piece_size: int, block_size: int) -> bytes:
    import hashlib

    digests = []
    for piece_start in range(0, len(data), piece_size):
        piece = data[piece_start:piece_start + piece_size]
        digests += [hashlib.sha256(piece[i:i + block_size]).digest() for i in range(0, len(piece), block_size)]
    return b"".join(digests)


def test_files_with_sha256_block_digests_are_still_verified(client, storage, settings, local_location,
                                                            local_root, cold_location):
    # files stored before migration 0003 have SHA-256 block digests; new ones BLAKE3
    from sqlalchemy import update

    from storage_core.models import File

    make_bucket(storage, locations=["hot", "cold"])
    data = os.urandom(2 * PIECE + 7)
    checksum = put(storage, "bucket", "k", data)["checksum"]
    with storage.session_factory()() as session, session.begin():
        file = session.get(File, checksum)
        assert file.block_hash == "blake3"
        session.execute(update(File).where(File.checksum == checksum).values(
            block_hash="sha256", block_digests=sha256_block_digests(data, file.piece_size, file.block_size)))
    assert client.get("/api/v1/buckets/bucket/objects/k").data == data
    assert set(copy_states(storage).values()) == {CopyState.STORED}
    path = piece_path(local_root, checksum, 1)
    corrupted = bytearray(path.read_bytes())
    corrupted[5] ^= 0x01
    path.write_bytes(bytes(corrupted))
    assert client.get("/api/v1/buckets/bucket/objects/k").data == data
    assert sorted(copy_states(storage).values()) == [CopyState.CORRUPT, CopyState.STORED]
