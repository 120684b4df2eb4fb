"""Failover between copies: a lost location, a lost or corrupt piece, and no copy at all (both profiles)."""

from __future__ import annotations

import os
import shutil

from minio import Minio
from sqlalchemy import select

from storage_core.models import CopyState, DamagedPiece, FileCopy, ReadRecord, StorageLocation
from tests.conftest import KiB, make_bucket, put

PIECE = 64 * KiB


def copy_states(storage) -> dict[int, str]:
    with storage.session_factory()() as session:
        return {c.location_id: c.state for c in session.scalars(select(FileCopy))}


def damage(storage) -> dict[str, list[int]]:
    """Damaged pieces by location name."""
    with storage.session_factory()() as session:
        rows = session.execute(select(StorageLocation.name, DamagedPiece.piece_index)
                               .join(FileCopy, FileCopy.id == DamagedPiece.copy_id)
                               .join(StorageLocation, StorageLocation.id == FileCopy.location_id)
                               .order_by(DamagedPiece.piece_index)).all()
    found: dict[str, list[int]] = {}
    for name, piece in rows:
        found.setdefault(name, []).append(piece)
    return found


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
    # the damage is the one piece's: the hot copy keeps serving its other pieces
    assert set(copy_states(storage).values()) == {CopyState.STORED}
    assert damage(storage) == {"hot": [1]}
    again = client.get("/api/v1/buckets/bucket/objects/k", headers={"Range": "bytes=0-9"})
    assert again.data == data[:10]
    assert client.get("/api/v1/buckets/bucket/objects/k").data == data


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
    # the cold copy was never tried: hot2 (hot, priority 1) comes before cold (priority 0)
    assert damage(storage) == {"hot": [0]}


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
    assert damage(storage) == {"hot": [1]}


def test_one_bad_piece_on_each_of_two_copies_never_takes_the_file_out_of_service(client, storage, local_location,
                                                                               local_root, cold_location, cold_root):
    make_bucket(storage, locations=["hot", "cold"])
    data = os.urandom(3 * PIECE)
    checksum = put(storage, "bucket", "k", data)["checksum"]
    piece_path(local_root, checksum, 0).write_bytes(b"z" * PIECE)  # hot: piece 0 corrupt
    piece_path(cold_root, checksum, 2).unlink()  # cold: piece 2 lost
    for _ in range(3):  # the first read finds the damage, the next ones go straight to the good twins
        response = client.get("/api/v1/buckets/bucket/objects/k")
        assert response.status_code == 200 and response.data == data
        assert client.head("/api/v1/buckets/bucket/objects/k").status_code == 200
    # hot serves first: its piece 0 is found bad (cold's piece 2 is never asked for while hot's is good)
    assert damage(storage) == {"hot": [0]}
    assert set(copy_states(storage).values()) == {CopyState.STORED}
    ranged = client.get("/api/v1/buckets/bucket/objects/k", headers={"Range": f"bytes={2 * PIECE}-{2 * PIECE + 9}"})
    assert ranged.status_code == 206 and ranged.data == data[2 * PIECE:2 * PIECE + 10]


def test_head_says_503_when_get_could_only_say_503(client, storage, local_location, local_root, cold_location,
                                                   cold_root):
    make_bucket(storage, locations=["hot", "cold"])
    data = os.urandom(2 * PIECE)
    checksum = put(storage, "bucket", "k", data)["checksum"]
    for root in (local_root, cold_root):
        piece_path(root, checksum, 1).write_bytes(b"z" * PIECE)
    second_piece = {"Range": f"bytes={PIECE}-"}
    assert client.get("/api/v1/buckets/bucket/objects/k", headers=second_piece).status_code == 503  # finds it bad
    assert damage(storage) == {"cold": [1], "hot": [1]}
    head = client.head("/api/v1/buckets/bucket/objects/k")
    assert head.status_code == 503
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 503
    # the good piece still serves, and nothing was charged for the 503s
    first = client.get("/api/v1/buckets/bucket/objects/k", headers={"Range": "bytes=0-9"})
    assert first.status_code == 206 and first.data == data[:10]
    assert record_sizes(storage) == [10]
