"""Integrity blocks: small blocks of new uploads, digests kept per process, old 1 MiB-block files, corruption."""

from __future__ import annotations

import hashlib
import os
import re

import pytest
import requests
from sqlalchemy import select

from storage_core.integrity import INLINE_DIGESTS, DigestCache
from storage_core.models import File, ReadRecord
from storage_core.settings import Settings
from tests.conftest import KiB, make_bucket, make_container, put
from tests.support.servers import GunicornServer
from tests.test_failover import damage, piece_path

MiB = 1024 * KiB
PIECE = 64 * KiB
BLOCK = 4 * KiB  # 16 blocks per piece: 10 pieces carry 160 digests, more than a resolve ships inline


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(piece_size=PIECE, block_size=BLOCK)


def flip(path, offset: int) -> None:
    corrupted = bytearray(path.read_bytes())
    corrupted[offset] ^= 0x01
    path.write_bytes(bytes(corrupted))


def stored_file(storage, checksum: str) -> File:
    with storage.session_factory()() as session:
        return session.scalars(select(File).where(File.checksum == checksum)).one()


def test_new_uploads_record_the_configured_block_size(storage, local_location):
    make_bucket(storage)
    data = os.urandom(10 * PIECE + 5)
    file = stored_file(storage, put(storage, "bucket", "k", data)["checksum"])
    assert (file.piece_size, file.block_size) == (PIECE, BLOCK)
    assert len(file.block_digests) == 32 * (10 * PIECE // BLOCK + 1) > INLINE_DIGESTS


def test_default_block_size_is_64_kib():
    assert Settings().block_size == 64 * KiB


def test_long_digests_are_fetched_once_and_every_block_is_still_verified(client, container, storage, local_location,
                                                                         local_root, cold_location):
    make_bucket(storage, locations=["hot", "cold"])
    data = os.urandom(10 * PIECE + 5)
    checksum = put(storage, "bucket", "k", data)["checksum"]
    url = "/api/v1/buckets/bucket/objects/k"
    assert client.get(url).data == data
    digests = container.resolver().digests
    key = (checksum, PIECE, BLOCK, "blake3")
    assert digests.get(key) == bytes(stored_file(storage, checksum).block_digests)
    # one flipped bit in block 5 of piece 3 on the hot copy: a range inside that block alone is served
    # from the cold copy, and the damage is recorded for that piece only
    at = 3 * PIECE + 5 * BLOCK + 100
    flip(piece_path(local_root, checksum, 3), 5 * BLOCK + 100)
    response = client.get(url, headers={"Range": f"bytes={at}-{at + 9}"})
    assert response.status_code == 206 and response.data == data[at:at + 10]
    assert damage(storage) == {"hot": [3]}
    assert client.get(url).data == data


def test_a_corrupt_small_block_with_no_good_copy_is_never_served(client, storage, local_location, local_root):
    make_bucket(storage)
    data = os.urandom(10 * PIECE)
    checksum = put(storage, "bucket", "k", data)["checksum"]
    flip(piece_path(local_root, checksum, 2), 7 * BLOCK)
    url = "/api/v1/buckets/bucket/objects/k"
    at = 2 * PIECE + 7 * BLOCK
    response = client.get(url, headers={"Range": f"bytes={at}-{at + BLOCK - 1}"})
    assert response.status_code == 503 and response.json["code"] == "StorageUnavailable"
    # damage is tracked per piece: the piece is known damaged on its only copy now, other pieces serve
    before = client.get(url, headers={"Range": f"bytes={at - BLOCK}-{at - 1}"})
    assert before.status_code == 503
    other = client.get(url, headers={"Range": f"bytes=0-{PIECE - 1}"})
    assert other.status_code == 206 and other.data == data[:PIECE]


def test_files_stored_with_1_mib_blocks_keep_working_and_stay_verified(client, settings, engine, storage,
                                                                       local_location, local_root, cold_location):
    """A file stored before the block size went down to 64 KiB keeps its 1 MiB blocks."""
    make_bucket(storage, locations=["hot", "cold"])
    old = make_container(settings.replace(piece_size=2 * MiB, block_size=1 * MiB), engine,
                         frozenset({"storage"}))
    data = os.urandom(2 * MiB + MiB // 2 + 3)  # piece 0: two full blocks; piece 1: one short block
    checksum = put(old, "bucket", "old", data)["checksum"]
    file = stored_file(storage, checksum)
    assert (file.piece_size, file.block_size, len(file.block_digests)) == (2 * MiB, MiB, 3 * 32)
    url = "/api/v1/buckets/bucket/objects/old"
    assert client.get(url).data == data
    ranged = client.get(url, headers={"Range": f"bytes={MiB - 10}-{MiB + 9}"})
    assert ranged.status_code == 206 and ranged.data == data[MiB - 10:MiB + 10]
    flip(piece_path(local_root, checksum, 0), MiB + 12345)  # block 1 of piece 0 on the hot copy
    ranged = client.get(url, headers={"Range": f"bytes={MiB + 12340}-{MiB + 12349}"})
    assert ranged.status_code == 206 and ranged.data == data[MiB + 12340:MiB + 12350]
    assert damage(storage) == {"hot": [0]}
    assert client.get(url).data == data


def test_digest_cache_keeps_the_most_recently_used_within_its_bound():
    cache = DigestCache(max_bytes=100)
    a, b, c = (("a", 1, 1, "blake3"), ("b", 1, 1, "blake3"), ("c", 1, 1, "blake3"))
    cache.put(a, b"x" * 40)
    cache.put(b, b"y" * 40)
    assert cache.get(a) == b"x" * 40  # a is now the most recently used
    cache.put(c, b"z" * 40)  # over the bound: b goes
    assert cache.get(b) is None
    assert cache.get(a) == b"x" * 40 and cache.get(c) == b"z" * 40
    cache.put(("d", 1, 1, "blake3"), b"w" * 101)  # larger than the whole cache: not kept, nothing dropped
    assert cache.get(("d", 1, 1, "blake3")) is None and cache.get(a) is not None
    # the key holds what the digests depend on: another block size is another entry
    assert cache.get(("a", 1, 2, "blake3")) is None


def sendfile_bytes(server: GunicornServer) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    return sum(float(m) for m in re.findall(r"^storage_bytes_sendfile_total (\S+)$", text, re.MULTILINE))


def test_under_gunicorn_reads_go_by_sendfile_verified_and_charged(settings, storage, local_location, local_root,
                                                                 cold_location):
    """The gevent worker hands verified spans of piece files to the socket; a corrupt block there is still
    caught (its piece served from the other copy), and the read is charged exactly."""
    make_bucket(storage, locations=["hot", "cold"])
    data = os.urandom(32 * PIECE + 777)
    checksum = put(storage, "bucket", "k", data)["checksum"]
    flip(piece_path(local_root, checksum, 20), 9 * BLOCK + 1)
    server = GunicornServer(settings, workers=1)
    try:
        url = f"{server.url}/api/v1/buckets/bucket/objects/k"
        got = requests.get(url, headers=server.admin, timeout=30)
        assert got.status_code == 200 and hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
        assert damage(storage) == {"hot": [20]}
        # all but the first window (read before answering) and the damaged piece went by sendfile
        assert len(data) - 2 * PIECE <= sendfile_bytes(server) <= len(data)
        start, end = PIECE - 100, 25 * PIECE + 100
        ranged = requests.get(url, headers={**server.admin, "Range": f"bytes={start}-{end - 1}"}, timeout=30)
        assert ranged.status_code == 206 and ranged.content == data[start:end]
        with storage.session_factory()() as session:
            sizes = sorted(session.scalars(select(ReadRecord.read_size)).all())
        assert sizes == sorted([len(data), end - start])
    finally:
        server.stop()


def test_gunicorn_answers_keep_their_framing_with_headers_sent_with_the_body(settings, storage, local_location):
    """Status line and headers leave with the first body bytes (serving.CoalescedResponse): answers without
    body bytes (HEAD, 304, 416, an empty object) still get their headers, on one kept-alive connection."""
    make_bucket(storage)
    data = os.urandom(3 * PIECE)
    put(storage, "bucket", "k", data)
    put(storage, "bucket", "empty", b"")
    server = GunicornServer(settings, workers=1)
    try:
        url = f"{server.url}/api/v1/buckets/bucket/objects"
        with requests.Session() as session:
            session.headers.update(server.admin)
            for _ in range(2):
                head = session.head(f"{url}/k", timeout=10)
                assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
                got = session.get(f"{url}/k", timeout=10)
                assert got.status_code == 200 and got.content == data
                assert session.get(f"{url}/k", headers={"If-None-Match": got.headers["ETag"]},
                                   timeout=10).status_code == 304
                empty = session.get(f"{url}/empty", timeout=10)
                assert empty.status_code == 200 and empty.content == b""
                refused = session.get(f"{url}/k", headers={"Range": f"bytes={len(data)}-"}, timeout=10)
                assert refused.status_code == 416 and refused.headers["Content-Range"] == f"bytes */{len(data)}"
                small = session.get(f"{url}/k", headers={"Range": "bytes=5-9"}, timeout=10)
                assert small.status_code == 206 and small.content == data[5:10]
    finally:
        server.stop()
