"""The S3 API through boto3 with its default settings, against a running storage-service with STORAGE_S3_BIND.

Every operation, metadata, ranges and conditionals, listings, multipart uploads (client calls and
s3transfer), presigned URLs, cross-protocol reads, and errors by S3 code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import time

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from sqlalchemy import func, select

from storage_core.models import File, Object
from tests.support.s3env import KiB, MiB, S3Env, s3_env

pytestmark = [pytest.mark.profile("storage"), pytest.mark.slow]


@pytest.fixture(scope="module")
def env(database_url, tmp_path_factory):
    with s3_env(database_url, tmp_path_factory.mktemp("s3api"), env={"STORAGE_PROFILES": "storage",
                                                                     "STORAGE_S3_DOMAIN": "s3.test"}) as made:
        yield made


@pytest.fixture(scope="module")
def s3(env: S3Env):
    return env.client()


def code_of(caught: pytest.ExceptionInfo) -> str:
    return caught.value.response["Error"]["Code"]


def status_of(caught: pytest.ExceptionInfo) -> int:
    return caught.value.response["ResponseMetadata"]["HTTPStatusCode"]


def count(env: S3Env, model) -> int:
    with env.storage.session_factory()() as session:
        return session.scalar(select(func.count()).select_from(model))


# ---- buckets -----------------------------------------------------------------------------------------

def test_bucket_lifecycle(s3, env):
    s3.create_bucket(Bucket="life")
    with pytest.raises(ClientError) as again:
        s3.create_bucket(Bucket="life")
    assert code_of(again) == "BucketAlreadyOwnedByYou" and status_of(again) == 409
    with pytest.raises(ClientError) as taken:
        env.client(env.user).create_bucket(Bucket="life")
    assert code_of(taken) == "BucketAlreadyExists"
    assert s3.head_bucket(Bucket="life")["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_bucket_location(Bucket="life")["LocationConstraint"] is None
    assert "life" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.put_object(Bucket="life", Key="k", Body=b"x")
    with pytest.raises(ClientError) as not_empty:
        s3.delete_bucket(Bucket="life")
    assert code_of(not_empty) == "BucketNotEmpty" and status_of(not_empty) == 409
    s3.delete_object(Bucket="life", Key="k")
    s3.delete_bucket(Bucket="life")
    with pytest.raises(ClientError) as gone:
        s3.head_bucket(Bucket="life")
    assert status_of(gone) == 404
    with pytest.raises(ClientError) as missing:
        s3.list_objects_v2(Bucket="life")
    assert code_of(missing) == "NoSuchBucket"
    with pytest.raises(ClientError) as bad_name:
        s3.create_bucket(Bucket="xn--reserved")
    assert code_of(bad_name) == "InvalidBucketName"


def test_an_account_sees_and_manages_only_its_own_buckets(s3, env):
    user = env.client(env.user)
    user.create_bucket(Bucket="olivias")
    s3.create_bucket(Bucket="admins")
    names = [b["Name"] for b in user.list_buckets()["Buckets"]]
    assert "olivias" in names and "admins" not in names
    with pytest.raises(ClientError) as denied:
        user.put_object(Bucket="admins", Key="k", Body=b"x")
    assert code_of(denied) == "AccessDenied" and status_of(denied) == 403
    user.put_object(Bucket="olivias", Key="k", Body=b"mine")
    assert s3.get_object(Bucket="olivias", Key="k")["Body"].read() == b"mine"  # admins may do everything


# ---- objects -----------------------------------------------------------------------------------------

def test_put_and_get_keep_metadata_and_checksums(s3, env):
    s3.create_bucket(Bucket="meta")
    data = os.urandom(300 * KiB + 5)
    put = s3.put_object(Bucket="meta", Key="dir/file.bin", Body=data, ContentType="application/x-test",
                        ContentEncoding="identity", ContentDisposition='attachment; filename="f.bin"',
                        CacheControl="max-age=60", Metadata={"colour": "blue", "Mixed-Case": "Value"})
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    # current boto3 sent an aws-chunked body with a CRC32 trailer: verified and echoed
    assert put.get("ChecksumCRC32")
    head = s3.head_object(Bucket="meta", Key="dir/file.bin", ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(data) and head["ContentType"] == "application/x-test"
    assert head["ContentEncoding"] == "identity" and head["CacheControl"] == "max-age=60"
    assert head["ContentDisposition"] == 'attachment; filename="f.bin"'
    assert head["Metadata"] == {"colour": "blue", "mixed-case": "Value"}
    assert head["ETag"] == put["ETag"] and head["ChecksumCRC32"] == put["ChecksumCRC32"]
    got = s3.get_object(Bucket="meta", Key="dir/file.bin")
    assert got["Body"].read() == data and got["Metadata"]["colour"] == "blue"
    assert got["AcceptRanges"] == "bytes" and got["LastModified"].tzinfo is not None


def test_empty_object(s3):
    s3.create_bucket(Bucket="empty")
    put = s3.put_object(Bucket="empty", Key="zero", Body=b"")
    assert put["ETag"] == f'"{hashlib.md5(b"").hexdigest()}"'
    got = s3.get_object(Bucket="empty", Key="zero")
    assert got["ContentLength"] == 0 and got["Body"].read() == b""


def test_ranges(s3):
    s3.create_bucket(Bucket="ranges")
    data = os.urandom(200 * KiB)
    s3.put_object(Bucket="ranges", Key="r", Body=data)
    part = s3.get_object(Bucket="ranges", Key="r", Range="bytes=100-199")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206 and part["Body"].read() == data[100:200]
    assert part["ContentRange"] == f"bytes 100-199/{len(data)}"
    assert s3.get_object(Bucket="ranges", Key="r", Range="bytes=-10")["Body"].read() == data[-10:]
    with pytest.raises(ClientError) as unsatisfiable:
        s3.get_object(Bucket="ranges", Key="r", Range=f"bytes={len(data)}-")
    assert code_of(unsatisfiable) == "InvalidRange" and status_of(unsatisfiable) == 416
    # S3 serves one range per request: with several it sends the whole object
    several = s3.get_object(Bucket="ranges", Key="r", Range="bytes=0-0,5-9")
    assert several["ResponseMetadata"]["HTTPStatusCode"] == 200 and several["Body"].read() == data


def test_conditionals(s3):
    s3.create_bucket(Bucket="conditions")
    etag = s3.put_object(Bucket="conditions", Key="c", Body=b"conditional")["ETag"]
    assert s3.get_object(Bucket="conditions", Key="c", IfMatch=etag)["Body"].read() == b"conditional"
    with pytest.raises(ClientError) as failed:
        s3.get_object(Bucket="conditions", Key="c", IfMatch='"0123"')
    assert code_of(failed) == "PreconditionFailed" and status_of(failed) == 412
    with pytest.raises(ClientError) as not_modified:
        s3.get_object(Bucket="conditions", Key="c", IfNoneMatch=etag)
    assert status_of(not_modified) == 304
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with pytest.raises(ClientError) as not_modified_since:
        s3.get_object(Bucket="conditions", Key="c", IfModifiedSince=later)
    assert status_of(not_modified_since) == 304
    with pytest.raises(ClientError) as modified:
        s3.get_object(Bucket="conditions", Key="c", IfUnmodifiedSince=earlier)
    assert code_of(modified) == "PreconditionFailed"
    assert s3.head_object(Bucket="conditions", Key="c", IfNoneMatch='"other"')["ETag"] == etag


def test_response_header_overrides(s3):
    s3.create_bucket(Bucket="overrides")
    s3.put_object(Bucket="overrides", Key="o", Body=b"x", ContentType="text/plain")
    got = s3.get_object(Bucket="overrides", Key="o", ResponseContentType="application/json",
                        ResponseContentDisposition='inline; filename="o.json"', ResponseCacheControl="no-cache",
                        ResponseContentLanguage="fr")
    assert got["ContentType"] == "application/json" and got["ContentDisposition"] == 'inline; filename="o.json"'
    assert got["CacheControl"] == "no-cache" and got["ContentLanguage"] == "fr"


def test_missing_objects_and_deletes(s3):
    s3.create_bucket(Bucket="deletes")
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket="deletes", Key="nope")
    assert code_of(missing) == "NoSuchKey" and status_of(missing) == 404
    with pytest.raises(ClientError) as missing_head:
        s3.head_object(Bucket="deletes", Key="nope")
    assert status_of(missing_head) == 404
    s3.delete_object(Bucket="deletes", Key="nope")  # 204 all the same, as S3
    for key in ("a", "b", "c"):
        s3.put_object(Bucket="deletes", Key=key, Body=key.encode())
    result = s3.delete_objects(Bucket="deletes", Delete={"Objects": [{"Key": "a"}, {"Key": "b"}, {"Key": "zz"}]})
    assert sorted(d["Key"] for d in result["Deleted"]) == ["a", "b", "zz"] and not result.get("Errors")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="deletes")["Contents"]] == ["c"]


def test_copy_object_is_a_metadata_operation(s3, env):
    s3.create_bucket(Bucket="copies")
    data = os.urandom(100 * KiB)
    put = s3.put_object(Bucket="copies", Key="source", Body=data, ContentType="text/x-source",
                        Metadata={"origin": "here"})
    files = count(env, File)
    copied = s3.copy_object(Bucket="copies", Key="copy", CopySource={"Bucket": "copies", "Key": "source"})
    assert copied["CopyObjectResult"]["ETag"] == put["ETag"]
    assert count(env, File) == files  # the content is stored once: nothing was read or written
    head = s3.head_object(Bucket="copies", Key="copy")
    assert head["ContentType"] == "text/x-source" and head["Metadata"] == {"origin": "here"}
    replaced = s3.copy_object(Bucket="copies", Key="copy2", CopySource="copies/source", MetadataDirective="REPLACE",
                              ContentType="text/x-new", Metadata={"new": "yes"})
    assert replaced["CopyObjectResult"]["ETag"] == put["ETag"]
    head = s3.head_object(Bucket="copies", Key="copy2")
    assert head["ContentType"] == "text/x-new" and head["Metadata"] == {"new": "yes"}
    assert s3.get_object(Bucket="copies", Key="copy2")["Body"].read() == data
    with pytest.raises(ClientError) as onto_itself:
        s3.copy_object(Bucket="copies", Key="source", CopySource="copies/source")
    assert code_of(onto_itself) == "InvalidRequest"
    with pytest.raises(ClientError) as no_source:
        s3.copy_object(Bucket="copies", Key="x", CopySource="copies/none")
    assert code_of(no_source) == "NoSuchKey"


# ---- listing -----------------------------------------------------------------------------------------

def test_list_objects_v2_with_delimiter_and_continuation(s3):
    s3.create_bucket(Bucket="listing")
    keys = ["a/1", "a/2", "a/b/3", "b", "c/1", "c/2", "d", "e/", "e/x", "f"]
    for key in keys:
        s3.put_object(Bucket="listing", Key=key, Body=b"")
    top = s3.list_objects_v2(Bucket="listing", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "c/", "e/"]
    assert [o["Key"] for o in top["Contents"]] == ["b", "d", "f"]
    assert top["KeyCount"] == 6 and not top["IsTruncated"]
    under_a = s3.list_objects_v2(Bucket="listing", Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in under_a["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in under_a["CommonPrefixes"]] == ["a/b/"]
    # page by page, with one or two entries a page: never a key (or prefix) twice, never one missing
    for size in (1, 2, 3):
        seen_keys, seen_prefixes = [], []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="listing", Delimiter="/",
                                                                  PaginationConfig={"PageSize": size}):
            assert page["KeyCount"] <= size
            seen_keys += [o["Key"] for o in page.get("Contents", [])]
            seen_prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        assert seen_keys == ["b", "d", "f"] and seen_prefixes == ["a/", "c/", "e/"]
        flat = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket="listing", PaginationConfig={"PageSize": size}) for o in page.get("Contents", [])]
        assert flat == sorted(keys)
    after = s3.list_objects_v2(Bucket="listing", StartAfter="c/1")
    assert [o["Key"] for o in after["Contents"]] == ["c/2", "d", "e/", "e/x", "f"]
    zero = s3.list_objects_v2(Bucket="listing", MaxKeys=0)
    assert zero["KeyCount"] == 0 and "Contents" not in zero and zero["IsTruncated"] is False
    many = s3.list_objects_v2(Bucket="listing", MaxKeys=100000)
    assert many["MaxKeys"] == 1000 and len(many["Contents"]) == len(keys)
    with pytest.raises(ClientError) as bad_token:
        s3.list_objects_v2(Bucket="listing", ContinuationToken="not-a-token")
    assert code_of(bad_token) == "InvalidArgument"


def test_list_objects_v1_with_marker(s3):
    s3.create_bucket(Bucket="listing-v1")
    keys = ["x/1", "x/2", "y", "z/1"]
    for key in keys:
        s3.put_object(Bucket="listing-v1", Key=key, Body=b"")
    first = s3.list_objects(Bucket="listing-v1", MaxKeys=2, Delimiter="/")
    assert [p["Prefix"] for p in first.get("CommonPrefixes", [])] == ["x/"] and first["IsTruncated"]
    assert [o["Key"] for o in first["Contents"]] == ["y"]
    rest = s3.list_objects(Bucket="listing-v1", Marker=first["NextMarker"], Delimiter="/")
    assert [p["Prefix"] for p in rest["CommonPrefixes"]] == ["z/"] and "Contents" not in rest
    flat = [o["Key"] for page in s3.get_paginator("list_objects").paginate(
        Bucket="listing-v1", PaginationConfig={"PageSize": 1}) for o in page["Contents"]]
    assert flat == keys


@pytest.mark.parametrize("key", ["dir/sub dir/file name.txt", "a+b=c&d;e,f", "100%/not-an-%escape%2F",
                                 "ünïcødé/ключ/鍵.bin", "double//slash/", "quotes'\"and(parens)!*",
                                 "  leading and trailing spaces  "])
def test_awkward_keys_round_trip(s3, key):
    if "awkward" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket="awkward")
    s3.put_object(Bucket="awkward", Key=key, Body=key.encode())
    assert s3.get_object(Bucket="awkward", Key=key)["Body"].read() == key.encode()
    listed = s3.list_objects_v2(Bucket="awkward", Prefix=key)
    assert listed["Contents"][0]["Key"] == key


# ---- multipart ---------------------------------------------------------------------------------------

def test_multipart_upload_operations(s3, env):
    s3.create_bucket(Bucket="multi")
    parts = [os.urandom(6 * MiB), os.urandom(6 * MiB), os.urandom(123)]
    upload = s3.create_multipart_upload(Bucket="multi", Key="big", ContentType="application/x-big",
                                        Metadata={"kind": "parts"})
    upload_id = upload["UploadId"]
    listed = s3.list_multipart_uploads(Bucket="multi")
    assert [(u["Key"], u["UploadId"]) for u in listed["Uploads"]] == [("big", upload_id)]
    etags = []
    for number, data in enumerate(parts, start=1):
        answer = s3.upload_part(Bucket="multi", Key="big", UploadId=upload_id, PartNumber=number, Body=data)
        assert answer["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        etags.append(answer["ETag"])
    shown = s3.list_parts(Bucket="multi", Key="big", UploadId=upload_id)
    assert [(p["PartNumber"], p["Size"]) for p in shown["Parts"]] == [(1, 6 * MiB), (2, 6 * MiB), (3, 123)]
    paged = s3.list_parts(Bucket="multi", Key="big", UploadId=upload_id, MaxParts=2)
    assert paged["IsTruncated"] and [p["PartNumber"] for p in paged["Parts"]] == [1, 2]
    listing = [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]
    with pytest.raises(ClientError) as order:
        s3.complete_multipart_upload(Bucket="multi", Key="big", UploadId=upload_id,
                                     MultipartUpload={"Parts": [listing[1], listing[0], listing[2]]})
    assert code_of(order) == "InvalidPartOrder"
    with pytest.raises(ClientError) as wrong:
        s3.complete_multipart_upload(Bucket="multi", Key="big", UploadId=upload_id, MultipartUpload={
            "Parts": [listing[0], {"PartNumber": 2, "ETag": '"' + "0" * 32 + '"'}, listing[2]]})
    assert code_of(wrong) == "InvalidPart"
    with pytest.raises(ClientError) as small:
        s3.complete_multipart_upload(Bucket="multi", Key="big", UploadId=upload_id,
                                     MultipartUpload={"Parts": [listing[2], {"PartNumber": 4, "ETag": etags[2]}]})
    assert code_of(small) in ("InvalidPart", "EntityTooSmall")
    done = s3.complete_multipart_upload(Bucket="multi", Key="big", UploadId=upload_id,
                                        MultipartUpload={"Parts": listing})
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-3"
    assert done["ETag"] == f'"{expected}"'
    got = s3.get_object(Bucket="multi", Key="big")
    assert got["ETag"] == done["ETag"] and got["ContentType"] == "application/x-big"
    assert got["Metadata"] == {"kind": "parts"} and got["Body"].read() == b"".join(parts)
    with pytest.raises(ClientError) as finished:
        s3.list_parts(Bucket="multi", Key="big", UploadId=upload_id)
    assert code_of(finished) == "NoSuchUpload"
    aborted = s3.create_multipart_upload(Bucket="multi", Key="aborted")["UploadId"]
    s3.upload_part(Bucket="multi", Key="aborted", UploadId=aborted, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket="multi", Key="aborted", UploadId=aborted)
    with pytest.raises(ClientError) as no_upload:
        s3.upload_part(Bucket="multi", Key="aborted", UploadId=aborted, PartNumber=2, Body=b"x")
    assert code_of(no_upload) == "NoSuchUpload"
    assert s3.list_multipart_uploads(Bucket="multi").get("Uploads", []) == []


def test_s3transfer_multipart_upload_and_download(s3):
    s3.create_bucket(Bucket="transfer")
    data = os.urandom(20 * MiB + 17)  # above the 8 MiB default threshold: 8 MiB parts, 10 threads
    s3.upload_fileobj(io.BytesIO(data), "transfer", "file")
    head = s3.head_object(Bucket="transfer", Key="file")
    assert head["ETag"].endswith('-3"') and head["ContentLength"] == len(data)
    out = io.BytesIO()
    s3.download_fileobj("transfer", "file", out)
    assert out.getvalue() == data


# ---- presigned URLs, anonymous access ------------------------------------------------------------------

def test_presigned_get_and_put(s3, env):
    s3.create_bucket(Bucket="presign")
    v2 = s3.generate_presigned_url("get_object", Params={"Bucket": "presign", "Key": "up"}, ExpiresIn=300)
    refused = requests.get(v2, timeout=10)  # boto3 presigns with SigV2 unless told s3v4
    assert refused.status_code == 400 and b"AWS4-HMAC-SHA256" in refused.content
    s3 = env.client(signature_version="s3v4")
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "presign", "Key": "up"}, ExpiresIn=300)
    assert requests.put(url, data=b"presigned bytes", timeout=10).status_code == 200
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "presign", "Key": "up"}, ExpiresIn=300)
    got = requests.get(url, timeout=10)
    assert got.status_code == 200 and got.content == b"presigned bytes"
    short = s3.generate_presigned_url("get_object", Params={"Bucket": "presign", "Key": "up"}, ExpiresIn=1)
    time.sleep(2.1)
    expired = requests.get(short, timeout=10)
    assert expired.status_code == 403 and b"<Code>AccessDenied</Code>" in expired.content
    assert b"Request has expired" in expired.content
    anonymous = requests.get(f"{env.server.s3_url}/presign/up", timeout=10)
    assert anonymous.status_code == 403 and b"<Code>AccessDenied</Code>" in anonymous.content


def test_anonymous_reads_of_a_public_read_bucket(s3, env):
    s3.create_bucket(Bucket="public", ACL="public-read")
    s3.put_object(Bucket="public", Key="open", Body=b"for everyone")
    got = requests.get(f"{env.server.s3_url}/public/open", timeout=10)
    assert got.status_code == 200 and got.content == b"for everyone"
    assert requests.head(f"{env.server.s3_url}/public/open", timeout=10).headers["Content-Length"] == "12"
    unsigned = boto3.client("s3", endpoint_url=env.server.s3_url, region_name="us-east-1",
                            config=Config(signature_version=botocore_unsigned()))
    assert unsigned.get_object(Bucket="public", Key="open")["Body"].read() == b"for everyone"
    with pytest.raises(ClientError) as denied:
        unsigned.put_object(Bucket="public", Key="x", Body=b"x")
    assert code_of(denied) == "AccessDenied"
    listing = requests.get(f"{env.server.s3_url}/", timeout=10)
    assert listing.status_code == 403


def botocore_unsigned():
    from botocore import UNSIGNED

    return UNSIGNED


def test_virtual_host_style_addressing(env):
    # the client addresses http://<bucket>.s3.test:<port>/<key>; the request reaches the S3 listener as a proxy
    # request (absolute URI), so no name resolution is needed
    client = boto3.client("s3", endpoint_url=f"http://s3.test:{env.server.s3_port}", region_name="us-east-1",
                          aws_access_key_id=env.admin.access_key_id, aws_secret_access_key=env.admin.secret,
                          config=Config(s3={"addressing_style": "virtual"},
                                        proxies={"http": env.server.s3_url}))
    client.create_bucket(Bucket="vhost")
    client.put_object(Bucket="vhost", Key="dir/k", Body=b"virtual")
    assert client.get_object(Bucket="vhost", Key="dir/k")["Body"].read() == b"virtual"
    assert [o["Key"] for o in client.list_objects_v2(Bucket="vhost")["Contents"]] == ["dir/k"]


# ---- cross-protocol ------------------------------------------------------------------------------------

def test_put_with_s3_read_natively_and_the_reverse(s3, env):
    s3.create_bucket(Bucket="both")
    data = os.urandom(70 * KiB)
    s3.put_object(Bucket="both", Key="from-s3", Body=data, ContentType="image/png")
    native = requests.get(f"{env.server.url}/api/v1/buckets/both/objects/from-s3", headers=env.server.admin,
                          timeout=10)
    assert native.status_code == 200 and native.content == data
    assert native.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert native.headers["Content-Type"] == "image/png"
    other = os.urandom(33 * KiB)
    put = requests.put(f"{env.server.url}/api/v1/buckets/both/objects/from-native", data=other,
                       headers={**env.server.admin, "Content-Type": "text/x-native"}, timeout=10)
    assert put.status_code == 201
    got = s3.get_object(Bucket="both", Key="from-native")
    assert got["Body"].read() == other and got["ETag"] == f'"{hashlib.md5(other).hexdigest()}"'
    assert got["ContentType"] == "text/x-native"


def test_native_multipart_is_listed_by_s3(s3, env):
    s3.create_bucket(Bucket="native-mp")
    base = f"{env.server.url}/api/v1/buckets/native-mp/uploads"
    upload_id = requests.post(base, json={"key": "n"}, headers=env.server.admin, timeout=10).json()["upload_id"]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="native-mp")["Uploads"]] == [upload_id]
    etag = requests.put(f"{base}/{upload_id}/parts/1", data=b"native part", headers=env.server.admin,
                        timeout=10).json()["etag"]
    done = s3.complete_multipart_upload(Bucket="native-mp", Key="n", UploadId=upload_id,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert done["ETag"].endswith('-1"')
    assert s3.get_object(Bucket="native-mp", Key="n")["Body"].read() == b"native part"


# ---- quota ---------------------------------------------------------------------------------------------

def test_quota_exceeded_is_403_and_charged_like_a_native_download(s3, env):
    s3.create_bucket(Bucket="quota")
    requests.patch(f"{env.server.url}/api/v1/buckets/quota", json={"free_read_quota": 0,
                                                                   "monthly_free_read_quota": 0,
                                                                   "charged_read_quota": 15},
                   headers=env.server.admin, timeout=10).raise_for_status()
    s3.put_object(Bucket="quota", Key="ten", Body=b"0123456789")
    assert s3.get_object(Bucket="quota", Key="ten")["Body"].read() == b"0123456789"
    assert s3.head_object(Bucket="quota", Key="ten")["ContentLength"] == 10  # HEAD is free
    with pytest.raises(ClientError) as exceeded:
        s3.get_object(Bucket="quota", Key="ten")
    assert code_of(exceeded) == "QuotaExceeded" and status_of(exceeded) == 403
    assert s3.get_object(Bucket="quota", Key="ten", Range="bytes=0-4")["Body"].read() == b"01234"
    quota = requests.get(f"{env.server.url}/api/v1/buckets/quota/read-quota", headers=env.server.admin,
                         timeout=10).json()
    assert quota["charged_consumed_size"] == 15 and quota["remain_quota_size"] == 0
    records = requests.get(f"{env.server.url}/api/v1/buckets/quota/read-records", headers=env.server.admin,
                           timeout=10).json()["read_records"]
    assert [(r["read_size"], r["account"]) for r in records] == [(10, "admin"), (5, "admin")]


# ---- what is not there -------------------------------------------------------------------------------

def test_unsupported_operations_answer_not_implemented(s3):
    s3.create_bucket(Bucket="unsupported")
    for call in (lambda: s3.get_bucket_acl(Bucket="unsupported"),
                 lambda: s3.get_bucket_versioning(Bucket="unsupported"),
                 lambda: s3.put_object_tagging(Bucket="unsupported", Key="k",
                                               Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})):
        with pytest.raises(ClientError) as caught:
            call()
        assert code_of(caught) == "NotImplemented" and status_of(caught) == 501


def test_objects_are_recorded_with_their_s3_etag(s3, env):
    s3.create_bucket(Bucket="etags")
    s3.put_object(Bucket="etags", Key="etag-only-here", Body=b"abc")
    with env.storage.session_factory()() as session:
        stored = session.scalar(select(Object.s3_etag).where(Object.key == "etag-only-here"))
    assert stored == hashlib.md5(b"abc").hexdigest()


def test_list_multipart_uploads_pages_never_repeat(s3):
    s3.create_bucket(Bucket="uploads-paging")
    made = [(key, s3.create_multipart_upload(Bucket="uploads-paging", Key=key)["UploadId"])
            for key in ("k1", "k1", "k2", "k0")]
    seen = [(u["Key"], u["UploadId"]) for page in s3.get_paginator("list_multipart_uploads").paginate(
        Bucket="uploads-paging", PaginationConfig={"PageSize": 1}) for u in page.get("Uploads", [])]
    assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))
    assert [k for k, _ in seen] == ["k0", "k1", "k1", "k2"]
    assert [u["Key"] for u in s3.list_multipart_uploads(Bucket="uploads-paging", Prefix="k1")["Uploads"]] == \
        ["k1", "k1"]
    for key, upload_id in made:
        s3.abort_multipart_upload(Bucket="uploads-paging", Key=key, UploadId=upload_id)


def test_glacier_objects_restore_object_and_x_amz_restore(s3, env, tmp_path):
    # a nearline location (a tape library of the nearline tests) and a restore cache; the storage service's
    # own restore workers do the restores
    from tests.support.nearline import add_cache, add_tape, wait_for

    add_tape(env.storage, tmp_path / "tape", 0.5, name="s3tape")
    add_cache(env.storage, tmp_path / "cache", capacity=1 << 20, name="s3cache")
    requests.post(f"{env.server.url}/api/v1/buckets", json={"name": "glacier", "locations": ["s3tape"]},
                  headers=env.server.admin, timeout=10).raise_for_status()
    data = os.urandom(30 * KiB)
    s3.put_object(Bucket="glacier", Key="cold", Body=data)
    with pytest.raises(ClientError) as not_restored:
        s3.get_object(Bucket="glacier", Key="cold")
    assert code_of(not_restored) == "InvalidObjectState" and status_of(not_restored) == 403
    head = s3.head_object(Bucket="glacier", Key="cold")
    assert head["StorageClass"] != "STANDARD" and "Restore" not in head and head["ContentLength"] == len(data)
    listed = s3.list_objects_v2(Bucket="glacier")["Contents"]
    assert [o["StorageClass"] for o in listed] == [head["StorageClass"]]
    started = s3.restore_object(Bucket="glacier", Key="cold", RestoreRequest={"Days": 1})
    assert started["ResponseMetadata"]["HTTPStatusCode"] == 202
    restored = wait_for(lambda: 'ongoing-request="false"' in s3.head_object(Bucket="glacier", Key="cold").get(
        "Restore", ""), timeout=60, what="the restore")
    assert restored
    assert "expiry-date=" in s3.head_object(Bucket="glacier", Key="cold")["Restore"]
    assert s3.get_object(Bucket="glacier", Key="cold")["Body"].read() == data
    again = s3.restore_object(Bucket="glacier", Key="cold", RestoreRequest={"Days": 2})
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 200
    s3.create_bucket(Bucket="online-only")
    s3.put_object(Bucket="online-only", Key="k", Body=b"x")
    with pytest.raises(ClientError) as online:
        s3.restore_object(Bucket="online-only", Key="k", RestoreRequest={"Days": 1})
    assert code_of(online) == "InvalidObjectState"
