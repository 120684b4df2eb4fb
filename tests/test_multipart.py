"""Native multipart uploads (storage profile): the /uploads routes onto the one multipart service, and gc."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import socket
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select, update

from storage_core.models import File, FileCopy, MultipartUpload, Object, UploadPart
from storage_core.services.multipart import multipart_etag
from tests.conftest import KiB, make_bucket
from tests.support.faults import child_pids, files_under, kill, running, wait_for
from tests.support.servers import GunicornServer

pytestmark = pytest.mark.profile("storage")

MiB = 1024 * KiB
PIECE = 64 * KiB  # the test settings' piece size
BASE = "/api/v1/buckets/bucket/uploads"


def count(storage, model) -> int:
    with storage.session_factory()() as session:
        return session.scalar(select(func.count()).select_from(model))


def begin(client, key: str = "big/object.bin", **body) -> str:
    response = client.post(BASE, json={"key": key, **body})
    assert response.status_code == 201, response.json
    assert response.json["key"] == key and response.json["bucket"] == "bucket"
    return response.json["upload_id"]


def send_part(client, upload_id: str, number: int, data: bytes, **headers) -> dict:
    response = client.put(f"{BASE}/{upload_id}/parts/{number}", data=data, headers=headers)
    assert response.status_code == 200, response.json
    return response.json


def finish(client, upload_id: str, parts: list[tuple[int, str]]):
    return client.post(f"{BASE}/{upload_id}/complete",
                       json={"parts": [{"part_number": n, "etag": e} for n, e in parts]})


def upload_in_parts(client, parts: list[bytes], key: str = "big/object.bin") -> tuple[str, list[tuple[int, str]]]:
    upload_id = begin(client, key, content_type="application/x-parts")
    listed = []
    for number, data in enumerate(parts, start=1):
        part = send_part(client, upload_id, number, data)
        assert part == {"part_number": number, "size": len(data),
                        "etag": f'"{hashlib.md5(data).hexdigest()}"', "last_modified": part["last_modified"]}
        listed.append((number, part["etag"]))
    return upload_id, listed


def test_parts_become_the_object_without_copying(client, storage, local_location, local_root):
    make_bucket(storage)
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(100 * KiB + 3)]
    whole = b"".join(parts)
    upload_id, listed = upload_in_parts(client, parts)
    shown = client.get(f"{BASE}/{upload_id}").json
    assert [(p["part_number"], p["size"]) for p in shown["parts"]] == [(1, 5 * MiB), (2, 5 * MiB), (3, len(parts[2]))]
    inodes = {p.stat().st_ino for p in files_under(local_root)}

    response = finish(client, upload_id, listed)
    assert response.status_code == 201, response.json
    body = response.json
    assert body["checksum"] == hashlib.sha256(whole).hexdigest()
    assert body["size"] == len(whole) and body["content_type"] == "application/x-parts"
    assert body["piece_size"] == PIECE and body["piece_count"] == -(-len(whole) // PIECE)
    # the parts' piece files were renamed into place: the same inodes, nothing written again
    assert {p.stat().st_ino for p in files_under(local_root)} == inodes
    assert client.get("/api/v1/buckets/bucket/objects/big/object.bin").data == whole
    ranged = client.get("/api/v1/buckets/bucket/objects/big/object.bin", headers={"Range": "bytes=5242000-5243000"})
    assert ranged.status_code == 206 and ranged.data == whole[5242000:5243001]
    with storage.session_factory()() as session:
        obj = session.scalar(select(Object))
        assert obj.s3_etag == multipart_etag([hashlib.md5(p).hexdigest() for p in parts])
        # Complete computes only the sha256 that keys the file; the object carries S3's own ETag
        assert session.get(File, body["checksum"]).md5 == ""
    # the upload is gone with its parts
    assert count(storage, MultipartUpload) == count(storage, UploadPart) == 0
    assert client.get(f"{BASE}/{upload_id}").status_code == 404


def test_parts_smaller_than_a_piece_are_one_piece_each(client, app, storage, settings, local_location):
    # a piece size above the part size: each part is one piece of the file (piece size = part size)
    app.extensions["container"].settings.override(settings.replace(piece_size=16 * MiB))
    make_bucket(storage)
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), b"tail"]
    upload_id, listed = upload_in_parts(client, parts)
    body = finish(client, upload_id, listed).json
    assert body["piece_size"] == 5 * MiB and body["piece_count"] == 3
    assert client.get("/api/v1/buckets/bucket/objects/big/object.bin").data == b"".join(parts)


def test_parts_of_irregular_sizes_are_cut_again(client, storage, local_location):
    make_bucket(storage)
    parts = [os.urandom(5 * MiB + 1), os.urandom(6 * MiB + 7), os.urandom(10)]
    upload_id, listed = upload_in_parts(client, parts)
    body = finish(client, upload_id, listed).json
    whole = b"".join(parts)
    assert body["checksum"] == hashlib.sha256(whole).hexdigest() and body["piece_size"] == PIECE
    assert client.get("/api/v1/buckets/bucket/objects/big/object.bin").data == whole
    assert count(storage, UploadPart) == 0


def test_a_single_empty_part_makes_an_empty_object(client, storage, local_location):
    make_bucket(storage)
    upload_id, listed = upload_in_parts(client, [b""])
    body = finish(client, upload_id, listed).json
    assert body["size"] == 0 and body["checksum"] == hashlib.sha256(b"").hexdigest()
    assert client.get("/api/v1/buckets/bucket/objects/big/object.bin").data == b""


def test_a_part_sent_again_replaces_the_first(client, storage, local_location):
    make_bucket(storage)
    upload_id = begin(client)
    send_part(client, upload_id, 1, b"first")
    second = send_part(client, upload_id, 1, b"second")
    assert [p["size"] for p in client.get(f"{BASE}/{upload_id}").json["parts"]] == [6]
    assert finish(client, upload_id, [(1, second["etag"])]).status_code == 201
    assert client.get("/api/v1/buckets/bucket/objects/big/object.bin").data == b"second"


def test_same_content_as_a_stored_file_is_linked_to_it(client, storage, local_location, local_root):
    make_bucket(storage)
    data = os.urandom(5 * MiB + 5)
    assert client.put("/api/v1/buckets/bucket/objects/single", data=data).status_code == 201
    upload_id, listed = upload_in_parts(client, [data[:5 * MiB], data[5 * MiB:]])
    assert finish(client, upload_id, listed).json["checksum"] == hashlib.sha256(data).hexdigest()
    assert count(storage, File) == 1 and count(storage, FileCopy) == 1
    # the parts' pieces went: only the file's pieces are left
    assert len(files_under(local_root)) == -(-len(data) // PIECE)


@pytest.mark.parametrize("problem", ["order", "etag", "missing", "small"])
def test_a_wrong_part_list_is_refused_and_the_upload_stays_open(client, storage, local_location, problem):
    make_bucket(storage)
    parts = [os.urandom(5 * MiB), os.urandom(1 * MiB if problem == "small" else 5 * MiB), b"end"]
    upload_id, listed = upload_in_parts(client, parts)
    wrong, code = {
        "order": ([listed[1], listed[0], listed[2]], "InvalidPartOrder"),
        "etag": ([listed[0], (2, '"' + "0" * 32 + '"'), listed[2]], "InvalidPart"),
        "missing": ([*listed, (4, listed[0][1])], "InvalidPart"),
        "small": (listed, "EntityTooSmall"),  # part 2 is 1 MiB and not the last
    }[problem]
    response = finish(client, upload_id, wrong)
    assert response.status_code == 400 and response.json["code"] == code, response.json
    assert count(storage, Object) == 0
    # nothing changed: a right list still completes
    good = [listed[0], listed[2]] if problem == "small" else listed
    assert finish(client, upload_id, good).status_code == 201


def test_digests_of_a_part_are_verified(client, storage, local_location, local_root):
    make_bucket(storage)
    upload_id = begin(client)
    bad = client.put(f"{BASE}/{upload_id}/parts/1", data=b"abc",
                     headers={"Content-MD5": base64.b64encode(hashlib.md5(b"abd").digest()).decode()})
    assert bad.status_code == 400 and bad.json["code"] == "BadDigest"
    good = client.put(f"{BASE}/{upload_id}/parts/1", data=b"abc",
                      headers={"X-Checksum-Sha256": hashlib.sha256(b"abc").hexdigest()})
    assert good.status_code == 200
    assert count(storage, UploadPart) == 1 and len(files_under(local_root)) == 1


def test_abort_removes_the_parts(client, storage, local_location, local_root):
    make_bucket(storage)
    upload_id, _ = upload_in_parts(client, [os.urandom(300 * KiB), b"x"])
    assert files_under(local_root)
    assert client.delete(f"{BASE}/{upload_id}").status_code == 204
    assert files_under(local_root) == []
    assert count(storage, UploadPart) == count(storage, MultipartUpload) == 0
    for response in (client.get(f"{BASE}/{upload_id}"), client.put(f"{BASE}/{upload_id}/parts/1", data=b"x"),
                     finish(client, upload_id, [(1, '"x"')]), client.delete(f"{BASE}/{upload_id}")):
        assert response.status_code == 404 and response.json["code"] == "NotFound"


def test_bad_requests(client, anonymous, auth, app, storage, local_location):
    make_bucket(storage)
    assert client.post(BASE, json={}).status_code == 400
    assert client.post(BASE, json={"key": ""}).status_code == 400
    assert client.post("/api/v1/buckets/nope/uploads", json={"key": "k"}).status_code == 404
    upload_id = begin(client)
    assert client.put(f"{BASE}/{upload_id}/parts/0", data=b"x").json["code"] == "InvalidArgument"
    assert client.put(f"{BASE}/{upload_id}/parts/10001", data=b"x").json["code"] == "InvalidArgument"
    assert finish(client, upload_id, []).status_code == 400
    assert anonymous.post(BASE, json={"key": "k"}).status_code == 401
    other = app.test_client()
    assert other.post(BASE, json={"key": "k"}, headers=auth.headers("mallory")).status_code == 403
    assert other.get(f"{BASE}/{upload_id}", headers=auth.headers("mallory")).status_code == 403


def test_gc_removes_uploads_idle_past_their_expiry(client, storage, local_location, local_root):
    make_bucket(storage)
    fresh, _ = upload_in_parts(client, [b"fresh"], key="fresh")
    old, _ = upload_in_parts(client, [os.urandom(200 * KiB)], key="old")
    with storage.session_factory().begin() as session:
        session.execute(update(MultipartUpload).where(MultipartUpload.id == old)
                        .values(updated_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=25)))
    report = storage.garbage_collector().collect(pending_grace_seconds=3600)
    assert report["expired_uploads"] == 1 and report["orphan_pieces"] == 0
    assert client.get(f"{BASE}/{old}").status_code == 404
    assert client.get(f"{BASE}/{fresh}").status_code == 200
    # the fresh upload's part is left alone; the old one's pieces are gone
    assert len(files_under(local_root)) == 1


@pytest.mark.slow
def test_a_part_killed_half_way_leaves_nothing_after_gc(settings, storage, local_location, local_root, auth):
    make_bucket(storage)
    server = GunicornServer(settings, workers=1, extra_env={"STORAGE_PROFILES": "storage",
                                                            "STORAGE_PIECE_SIZE": str(16 * MiB)})
    with running([server]):
        upload_id = requests.post(f"{server.url}{BASE}", json={"key": "k"}, headers=server.admin,
                                  timeout=10).json()["upload_id"]
        master = server.process.pid
        (worker,) = child_pids(master)
        size = 64 * MiB
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(f"PUT {BASE}/{upload_id}/parts/1 HTTP/1.1\r\nHost: x\r\n".encode()
                         + f"Authorization: {server.admin['Authorization']}\r\n"
                           f"Content-Length: {size}\r\n\r\n".encode())
            chunk = os.urandom(MiB)
            for _ in range(size // MiB):
                sock.sendall(chunk)
            # the part's row is pending and its pieces are being written
            wait_for(lambda: any(p.name.startswith(".tmp-") for p in files_under(local_root)), timeout=30,
                     interval=0.001, what="a piece of the part being written")
            kill(worker)
        wait_for(lambda: child_pids(master) - {worker}, timeout=30, what="a new worker")
    assert count(storage, UploadPart) == 1  # the pending part the killed worker left
    storage.garbage_collector().collect(pending_grace_seconds=0)
    assert count(storage, UploadPart) == 0
    assert files_under(local_root) == []
    assert files_under(Path(settings.spool_dir)) == []
