"""The S3 API of the downloader profile: GetObject and HeadObject only, charged exactly under concurrency.

Two downloader-service instances with STORAGE_S3_BIND share one quota: 200 concurrent S3 GetObjects
against a quota for 50 give exactly 50 bodies, 150 QuotaExceeded, and 50 read records.
"""

from __future__ import annotations

import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from botocore.exceptions import ClientError

from storage_core.auth import DEVELOPMENT_ADMIN
from tests.support.faults import consumption, read_sizes
from tests.support.s3env import S3Env, s3_env

pytestmark = [pytest.mark.profile("downloader"), pytest.mark.slow]

SIZE, ALLOWED, TOTAL = 10_000, 50, 200


@pytest.fixture(scope="module")
def env(database_url, tmp_path_factory):
    with s3_env(database_url, tmp_path_factory.mktemp("s3downloader"), instances=2, workers=2,
                env={"STORAGE_PROFILES": "downloader", "STORAGE_DB_POOL_SIZE": "4"}) as made:
        yield made


def seed(env: S3Env, bucket: str, key: str, data: bytes, **fields) -> None:
    env.storage.bucket_service().create({"name": bucket, "visibility": "public-read", "charged_read_quota": 0,
                                         "owner": "admin", **fields}, DEVELOPMENT_ADMIN)
    env.storage.upload_service().put(bucket, key, io.BytesIO(data), length=len(data))


def test_200_concurrent_s3_gets_on_two_instances_against_a_quota_for_50(env: S3Env):
    data = os.urandom(SIZE)
    seed(env, "quota", "small", data, charged_read_quota=ALLOWED * SIZE, free_read_quota=0,
         monthly_free_read_quota=0)
    for server in env.servers:  # warm both instances (HEAD is free)
        assert requests.head(f"{server.s3_url}/quota/small", timeout=10).status_code == 200
    barrier = threading.Barrier(TOTAL)

    def get(i: int) -> tuple[int, int, str]:
        url = f"{env.servers[i % 2].s3_url}/quota/small"
        barrier.wait(30)
        response = requests.get(url, timeout=60)
        if response.status_code == 200:
            return i % 2, 200, "ok" if response.content == data else "wrong bytes"
        return i % 2, response.status_code, response.text.split("<Code>")[1].split("</Code>")[0]

    with ThreadPoolExecutor(max_workers=TOTAL) as pool:
        results = list(pool.map(get, range(TOTAL)))
    outcomes = sorted({(status, what) for _, status, what in results})
    assert outcomes == [(200, "ok"), (403, "QuotaExceeded")], outcomes
    successes = [r for r in results if r[1] == 200]
    assert len(successes) == ALLOWED
    # both instances answered from the one quota: what one consumed, the other could not spend
    assert {r[0] for r in results} == {0, 1}
    assert consumption(env.storage.session_factory()) == (ALLOWED * SIZE, 0, 0)
    assert read_sizes(env.storage.session_factory()) == [SIZE] * ALLOWED


def test_downloader_serves_get_and_head_only(env: S3Env):
    seed(env, "private", "k", b"private bytes", visibility="private")
    s3 = env.client()
    assert s3.get_object(Bucket="private", Key="k")["Body"].read() == b"private bytes"
    assert s3.get_object(Bucket="private", Key="k", Range="bytes=0-6")["Body"].read() == b"private"
    assert s3.head_object(Bucket="private", Key="k")["ContentLength"] == 13
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket="private", Key="none")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(ClientError) as denied:
        env.client(env.user).get_object(Bucket="private", Key="k")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    for call in (lambda: s3.put_object(Bucket="private", Key="new", Body=b"x"),
                 lambda: s3.list_buckets(),
                 lambda: s3.list_objects_v2(Bucket="private"),
                 lambda: s3.create_bucket(Bucket="another"),
                 lambda: s3.delete_object(Bucket="private", Key="k"),
                 lambda: s3.create_multipart_upload(Bucket="private", Key="m")):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "NotImplemented"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    # the native API of the same processes is the downloader's too
    native = requests.get(f"{env.server.url}/api/v1/buckets/private/objects/k", headers=env.server.admin, timeout=10)
    assert native.status_code == 200 and native.content == b"private bytes"
