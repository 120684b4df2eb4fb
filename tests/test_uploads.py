"""Uploads over HTTP (storage profile): round trips on both plugins, digests, dedup, replacement, failures."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from storage_core.models import File, FileCopy, Object
from tests.conftest import KiB, make_bucket, put
from tests.support.servers import GunicornServer

pytestmark = pytest.mark.profile("storage")

PIECE = 64 * KiB
MiB = 1024 * KiB


def pieces_on_disk(root: Path) -> list[Path]:
    return sorted(p for p in (root / "pieces").rglob("*") if p.is_file()) if root.exists() else []


def count(storage, model) -> int:
    with storage.session_factory()() as session:
        return session.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize("size", [0, 1, PIECE, 3 * PIECE + 17], ids=["empty", "one-byte", "one-piece", "multi-piece"])
def test_round_trip(client, storage, any_location, size):
    make_bucket(storage)
    data = os.urandom(size)
    # the test client leaves Content-Length out of an empty body; real clients send "0"
    response = client.put("/api/v1/buckets/bucket/objects/dir/file.bin", data=data,
                          headers={"Content-Type": "application/x-test"}, content_length=size)
    assert response.status_code == 201, response.json
    body = response.json
    assert body["checksum"] == hashlib.sha256(data).hexdigest()
    assert body["size"] == size
    assert body["piece_size"] == PIECE
    assert body["piece_count"] == -(-size // PIECE)
    assert body["etag"] == f'"{body["checksum"]}"'
    assert body["content_type"] == "application/x-test"
    assert body["key"] == "dir/file.bin" and body["bucket"] == "bucket"

    download = client.get("/api/v1/buckets/bucket/objects/dir/file.bin")
    assert download.status_code == 200
    assert download.data == data
    assert download.headers["Content-Length"] == str(size)
    assert download.headers["ETag"] == body["etag"]

    by_checksum = client.get(f"/api/v1/files/{body['checksum']}/download")
    assert by_checksum.status_code == 200 and by_checksum.data == data


def test_block_digests_are_blake3_of_every_block_of_every_piece(client, storage, settings, local_location):
    import blake3

    make_bucket(storage)
    data = os.urandom(2 * settings.piece_size + settings.block_size + 5)  # a short last block and piece
    checksum = put(storage, "bucket", "k", data)["checksum"]
    expected = []
    for start in range(0, len(data), settings.piece_size):
        piece = data[start:start + settings.piece_size]
        expected += [blake3.blake3(piece[i:i + settings.block_size]).digest()
                     for i in range(0, len(piece), settings.block_size)]
    with storage.session_factory()() as session:
        file = session.get(File, checksum)
        assert (file.block_hash, file.block_size) == ("blake3", settings.block_size)
        assert file.block_digests == b"".join(expected)


def test_replacing_an_object_answers_200_and_frees_the_old_content(client, storage, local_location, local_root):
    make_bucket(storage)
    first = client.put("/api/v1/buckets/bucket/objects/k", data=b"a" * (PIECE + 1))
    assert first.status_code == 201
    second = client.put("/api/v1/buckets/bucket/objects/k", data=b"b" * 10)
    assert second.status_code == 200
    assert second.json["object_id"] != first.json["object_id"]
    assert client.get("/api/v1/buckets/bucket/objects/k").data == b"b" * 10
    # the old content had two pieces; only the new one-piece content is left
    assert [p.name for p in pieces_on_disk(local_root)] == [f"{second.json['checksum']}.0"]
    assert count(storage, File) == 1


@pytest.mark.parametrize("header,value", [
    ("Content-MD5", base64.b64encode(hashlib.md5(b"other").digest()).decode()),
    ("X-Checksum-Sha256", hashlib.sha256(b"other").hexdigest()),
])
def test_digest_mismatch_stores_nothing(client, storage, local_location, local_root, header, value):
    make_bucket(storage)
    response = client.put("/api/v1/buckets/bucket/objects/k", data=b"x" * (2 * PIECE), headers={header: value})
    assert response.status_code == 400
    assert response.json["code"] == "BadDigest"
    assert response.headers["Content-Type"] == "application/problem+json"
    assert pieces_on_disk(local_root) == []
    assert count(storage, File) == count(storage, Object) == count(storage, FileCopy) == 0
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 404


def test_matching_digests_are_accepted(client, storage, local_location):
    make_bucket(storage)
    data = b"hello"
    response = client.put("/api/v1/buckets/bucket/objects/k", data=data, headers={
        "Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode(),
        "X-Checksum-Sha256": hashlib.sha256(data).hexdigest().upper(),
    })
    assert response.status_code == 201


def test_identical_content_is_written_once_per_location(client, storage, local_location, local_root):
    make_bucket(storage)
    make_bucket(storage, "other")
    data = os.urandom(2 * PIECE + 5)
    client.put("/api/v1/buckets/bucket/objects/one", data=data)
    before = {p: p.stat().st_mtime_ns for p in pieces_on_disk(local_root)}
    ino = {p: p.stat().st_ino for p in before}
    assert len(before) == 3
    assert client.put("/api/v1/buckets/other/objects/two", data=data).status_code == 201
    assert client.put("/api/v1/buckets/bucket/objects/three", data=data).status_code == 201
    after = pieces_on_disk(local_root)
    assert {p: p.stat().st_mtime_ns for p in after} == before
    assert {p: p.stat().st_ino for p in after} == ino
    assert count(storage, File) == 1 and count(storage, FileCopy) == 1 and count(storage, Object) == 3
    # deleting one reference keeps the content for the others
    assert client.delete("/api/v1/buckets/bucket/objects/one").status_code == 204
    assert len(pieces_on_disk(local_root)) == 3
    assert client.get("/api/v1/buckets/other/objects/two").data == data
    client.delete("/api/v1/buckets/other/objects/two")
    client.delete("/api/v1/buckets/bucket/objects/three")
    assert pieces_on_disk(local_root) == []
    assert count(storage, File) == 0


def test_upload_is_written_to_every_location_of_the_bucket(client, storage, local_location, s3_location):
    make_bucket(storage, locations=["hot", "s3"])
    data = os.urandom(PIECE * 2)
    checksum = client.put("/api/v1/buckets/bucket/objects/k", data=data).json["checksum"]
    copies = client.get(f"/api/v1/files/{checksum}").json["copies"]
    assert sorted((c["location"], c["state"]) for c in copies) == [("hot", "stored"), ("s3", "stored")]


def test_interrupted_upload_leaves_nothing(live_server, storage, local_location, local_root, auth):
    make_bucket(storage)
    # the client announces more than it sends, then goes away, as a dropped connection does
    with socket.create_connection(("127.0.0.1", live_server.port)) as sock:
        sock.sendall(b"PUT /api/v1/buckets/bucket/objects/k HTTP/1.1\r\nHost: x\r\n"
                     + f"Authorization: {auth.admin['Authorization']}\r\n".encode()
                     + b"Content-Length: 500000\r\n\r\n" + b"x" * (3 * PIECE))
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(65536)
    assert b" 400 " in answer.split(b"\r\n")[0]
    spool = Path(storage.settings().spool_dir)
    assert pieces_on_disk(local_root) == []
    assert count(storage, File) == count(storage, Object) == 0
    assert list(spool.iterdir()) == []


def test_failed_location_write_leaves_no_object_and_no_pieces(client, storage, local_location, local_root,
                                                              s3_server):
    storage.location_service().create({"name": "dead", "plugin": "s3", "tier": "cold", "priority": 0,
                                       "enabled": True,
                                       "config": s3_server.config("bucket-x", endpoint="127.0.0.1:9")},
                                      check=False)  # it breaks later; added while it is down
    make_bucket(storage, locations=["hot", "dead"])
    response = client.put("/api/v1/buckets/bucket/objects/k", data=os.urandom(3 * PIECE))
    assert response.status_code == 503
    assert response.json["code"] == "StorageUnavailable"
    assert pieces_on_disk(local_root) == []
    assert count(storage, File) == count(storage, FileCopy) == count(storage, Object) == 0


def test_list_objects_with_prefix_and_cursor(client, storage, local_location):
    make_bucket(storage)
    keys = ["a/1", "a/2", "a/3", "b/1", "a%", "a_"]
    for key in keys:
        client.put(f"/api/v1/buckets/bucket/objects/{key}", data=key.encode())
    page = client.get("/api/v1/buckets/bucket/objects?prefix=a/&limit=2").json
    assert [o["key"] for o in page["objects"]] == ["a/1", "a/2"]
    page2 = client.get(f"/api/v1/buckets/bucket/objects?prefix=a/&limit=2&cursor={page['next_cursor']}").json
    assert [o["key"] for o in page2["objects"]] == ["a/3"] and page2["next_cursor"] is None
    everything = client.get("/api/v1/buckets/bucket/objects").json["objects"]
    assert [o["key"] for o in everything] == sorted(keys)
    assert client.get("/api/v1/buckets/bucket/objects?prefix=a%25").json["objects"][0]["key"] == "a%"


def test_delete_object(client, storage, local_location, local_root):
    make_bucket(storage)
    client.put("/api/v1/buckets/bucket/objects/k", data=b"data")
    assert client.delete("/api/v1/buckets/bucket/objects/k").status_code == 204
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 404
    assert client.delete("/api/v1/buckets/bucket/objects/k").status_code == 404
    assert pieces_on_disk(local_root) == []


def test_copy_then_remove_copy_and_last_copy_conflict(client, storage, local_location, s3_location):
    make_bucket(storage, locations=["hot"])
    data = os.urandom(3 * PIECE + 3)
    checksum = client.put("/api/v1/buckets/bucket/objects/k", data=data).json["checksum"]

    copied = client.post(f"/api/v1/files/{checksum}/copies", json={"location": "s3"})
    assert copied.status_code == 201, copied.json
    assert sorted(c["location"] for c in copied.json["copies"]) == ["hot", "s3"]
    assert client.post(f"/api/v1/files/{checksum}/copies", json={"location": "s3"}).status_code == 409

    assert client.delete(f"/api/v1/files/{checksum}/copies/hot").status_code == 204
    meta = client.get(f"/api/v1/files/{checksum}").json
    assert [c["location"] for c in meta["copies"]] == ["s3"]
    assert meta["references"] == [{"bucket": "bucket", "key": "k"}]
    # the copy on S3 now serves alone
    assert client.get("/api/v1/buckets/bucket/objects/k").data == data

    last = client.delete(f"/api/v1/files/{checksum}/copies/s3")
    assert last.status_code == 409 and last.json["code"] == "Conflict"
    assert client.delete(f"/api/v1/files/{checksum}/copies/hot").status_code == 404


def test_non_empty_location_and_bucket_cannot_be_deleted(client, storage, local_location):
    make_bucket(storage)
    client.put("/api/v1/buckets/bucket/objects/k", data=b"data")
    assert client.delete("/api/v1/storage-locations/hot").status_code == 409
    assert client.delete("/api/v1/buckets/bucket").status_code == 409
    client.delete("/api/v1/buckets/bucket/objects/k")
    assert client.delete("/api/v1/buckets/bucket").status_code == 204
    assert client.delete("/api/v1/storage-locations/hot").status_code == 204


def test_upload_without_any_location_is_503_before_reading(client, storage):
    make_bucket(storage)
    response = client.put("/api/v1/buckets/bucket/objects/k", data=b"data")
    assert response.status_code == 503 and response.json["code"] == "StorageUnavailable"


def test_capacity_is_enforced(client, storage, local_root):
    storage.location_service().create({"name": "small", "plugin": "local", "tier": "hot", "priority": 0,
                                       "enabled": True, "config": {"root": str(local_root)}, "capacity": 100})
    make_bucket(storage)
    assert client.put("/api/v1/buckets/bucket/objects/a", data=b"x" * 60).status_code == 201
    full = client.put("/api/v1/buckets/bucket/objects/b", data=b"y" * 60)
    assert full.status_code == 507 and full.json["code"] == "InsufficientStorage"
    assert client.get("/api/v1/storage-locations/small").json["used_size"] == 60


# ---- the threaded upload path (issue 14): rounds of 8 MiB hashed and written on threads ----------------

BIG = 2 * 8 * MiB + 3 * PIECE + 5  # several rounds of spool.CHUNK, a short last one, a short last piece


@pytest.fixture(scope="module")
def big_body() -> bytes:
    return os.urandom(BIG)


def one_worker(settings) -> GunicornServer:
    """The real service, one gevent worker, with the test settings' small pieces and blocks."""
    return GunicornServer(settings, workers=1, extra_env={"STORAGE_PIECE_SIZE": str(settings.piece_size),
                                                          "STORAGE_BLOCK_SIZE": str(settings.block_size)})


def test_big_upload_through_gunicorn_round_trips(storage, settings, local_location, local_root, big_body):
    """Under the gevent worker the hashes run on the hub's threads: every digest still right."""
    import blake3

    make_bucket(storage)
    server = one_worker(settings)
    try:
        url = f"{server.url}/api/v1/buckets/bucket/objects/big"
        response = requests.put(url, data=big_body, headers={
            **server.admin, "Content-MD5": base64.b64encode(hashlib.md5(big_body).digest()).decode(),
            "X-Checksum-Sha256": hashlib.sha256(big_body).hexdigest()}, timeout=60)
        assert response.status_code == 201, response.text
        assert response.json()["checksum"] == hashlib.sha256(big_body).hexdigest()
        download = requests.get(url, headers=server.admin, timeout=60)
        assert download.status_code == 200 and download.content == big_body
    finally:
        server.stop()
    with storage.session_factory()() as session:
        file = session.get(File, hashlib.sha256(big_body).hexdigest())
        assert file.md5 == hashlib.md5(big_body).hexdigest()
        expected = b"".join(blake3.blake3(big_body[start + i:min(start + i + settings.block_size,
                                                                 start + PIECE, BIG)]).digest()
                            for start in range(0, BIG, PIECE) for i in range(0, min(PIECE, BIG - start),
                                                                               settings.block_size))
        assert file.block_digests == expected
    assert len(pieces_on_disk(local_root)) == -(-BIG // PIECE)
    assert list(Path(settings.spool_dir).iterdir()) == []


@pytest.mark.parametrize("header", ["Content-MD5", "X-Checksum-Sha256"])
def test_big_upload_with_a_wrong_digest_through_gunicorn_stores_nothing(storage, settings, local_location,
                                                                       local_root, big_body, header):
    make_bucket(storage)
    wrong = big_body[:-1] + bytes([big_body[-1] ^ 1])  # differs in the last byte: the last round decides
    value = (base64.b64encode(hashlib.md5(wrong).digest()).decode() if header == "Content-MD5"
             else hashlib.sha256(wrong).hexdigest())
    server = one_worker(settings)
    try:
        response = requests.put(f"{server.url}/api/v1/buckets/bucket/objects/big", data=big_body,
                                headers={**server.admin, header: value}, timeout=60)
    finally:
        server.stop()
    assert response.status_code == 400 and response.json()["code"] == "BadDigest"
    assert pieces_on_disk(local_root) == []
    assert count(storage, File) == count(storage, Object) == count(storage, FileCopy) == 0
    assert list(Path(settings.spool_dir).iterdir()) == []


def test_client_gone_mid_upload_through_gunicorn_leaves_nothing(storage, settings, local_location, local_root,
                                                                big_body):
    """The client sends several rounds of a declared body, then resets the connection: the rounds on the
    threads finish, the spool files go, nothing is stored."""
    make_bucket(storage)
    server = one_worker(settings)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"PUT /api/v1/buckets/bucket/objects/k HTTP/1.1\r\nHost: x\r\n"
                         + f"Authorization: {server.admin['Authorization']}\r\n".encode()
                         + f"Content-Length: {2 * BIG}\r\n\r\n".encode() + big_body)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
        spool = Path(settings.spool_dir)
        deadline = time.monotonic() + 20
        while any(spool.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(spool.iterdir()) == []
        # the worker is still serving
        assert requests.get(f"{server.url}/health/live", timeout=10).status_code == 200
    finally:
        server.stop()
    assert pieces_on_disk(local_root) == []
    assert count(storage, File) == count(storage, Object) == count(storage, FileCopy) == 0


def test_first_local_location_takes_the_spooled_pieces_by_link_the_second_gets_copies(
        client, storage, local_location, local_root, tmp_path, big_body):
    storage.location_service().create({"name": "second", "plugin": "local", "tier": "hot", "priority": 0,
                                       "enabled": True, "config": {"root": str(tmp_path / "second")}})
    make_bucket(storage, locations=["hot", "second"])
    response = client.put("/api/v1/buckets/bucket/objects/k", data=big_body)
    assert response.status_code == 201
    first, second = pieces_on_disk(local_root), pieces_on_disk(tmp_path / "second")
    assert [p.name for p in first] == [p.name for p in second] and len(first) == -(-BIG // PIECE)
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
        # two copies, not two names of one: each piece file has one link (the spool's name is gone)
        assert os.stat(a).st_ino != os.stat(b).st_ino
        assert os.stat(a).st_nlink == os.stat(b).st_nlink == 1
        assert os.stat(a).st_mode & 0o777 == os.stat(b).st_mode & 0o777 == 0o640
    assert b"".join(p.read_bytes() for p in sorted(first, key=lambda p: int(p.suffix[1:]))) == big_body


@pytest.mark.parametrize("size", [100, 3 * MiB + 11], ids=["in-gunicorns-read-ahead", "from-the-socket"])
def test_request_pipelined_after_an_upload_body_is_served(storage, settings, local_location, size):
    """The body is read from the socket past gunicorn's buffers (storage_core/wsgi_body.py): what gunicorn
    read ahead beyond a small body is the next request, served on the same connection, and a large
    body is read to its end, never into the next request."""
    make_bucket(storage)
    body = os.urandom(size)
    server = one_worker(settings)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"PUT /api/v1/buckets/bucket/objects/k HTTP/1.1\r\nHost: x\r\n"
                         + f"Authorization: {server.admin['Authorization']}\r\n".encode()
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
                         + b"GET /api/v1/buckets/bucket/objects/k HTTP/1.1\r\nHost: x\r\n"
                         + f"Authorization: {server.admin['Authorization']}\r\n".encode()
                         + b"Connection: close\r\n\r\n")
            sock.settimeout(30)
            answer = b""
            while chunk := sock.recv(1 << 20):
                answer += chunk
    finally:
        server.stop()
    first, _, rest = answer.partition(b"\r\n")
    assert b" 201 " in first, answer[:500]
    assert b"\r\nHTTP/1.1 200 " in rest or rest.count(b"HTTP/1.1 200 ") == 1, rest[:1000]
    assert answer.endswith(body)


def test_pieces_written_in_parallel_are_all_removed_when_one_fails(client, storage, local_location, local_root):
    """A local location writes an upload's pieces on several threads at once: when one of them fails
    (here a directory stands where piece 5 goes), the pieces the others wrote are removed too."""
    make_bucket(storage)
    data = os.urandom(12 * PIECE + 3)
    checksum = hashlib.sha256(data).hexdigest()
    blocker = local_root / "pieces" / checksum[0:2] / checksum[2:4] / f"{checksum}.5"
    blocker.mkdir(parents=True)
    response = client.put("/api/v1/buckets/bucket/objects/k", data=data)
    assert response.status_code == 503, response.json
    assert pieces_on_disk(local_root) == []  # the 12 other pieces were written, then removed
    assert [p for p in blocker.parent.iterdir() if p != blocker] == []
    assert count(storage, File) == count(storage, Object) == count(storage, FileCopy) == 0
