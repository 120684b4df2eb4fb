"""Bad input at the S3 door of a running storage-service: S3's codes, never a 5xx, nothing stored.

Wrong signature, unknown and deleted keys (refused at once by both instances), a skewed clock, an
expired or too long presigned URL, a body that does not match its signed hash, chunk signatures broken
mid-stream, malformed XML and parameters.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import zlib
from urllib.parse import urlsplit

import pytest
import requests
from botocore.exceptions import ClientError
from minio.credentials import Credentials
from minio.signer import sign_v4_s3

from tests.support.s3_signing import signed_chunks, signing_context, unsigned_chunks
from tests.support.s3env import S3Env, s3_env

pytestmark = [pytest.mark.profile("storage"), pytest.mark.slow]


@pytest.fixture(scope="module")
def env(database_url, tmp_path_factory):
    with s3_env(database_url, tmp_path_factory.mktemp("s3auth"), instances=2,
                env={"STORAGE_PROFILES": "storage"}) as made:
        made.client().create_bucket(Bucket="auth")
        yield made


def code(response: requests.Response) -> str:
    text = response.text
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else f"(status {response.status_code})"


def signed(env: S3Env, method: str, path: str, *, body: bytes = b"", content_sha256: str | None = None,
           date: dt.datetime | None = None, headers: dict[str, str] | None = None, secret: str | None = None,
           query: str = "") -> requests.Response:
    """A request signed by the minio SDK's signer, with a chosen date and payload hash, sent with requests."""
    server = env.server
    url = urlsplit(f"{server.s3_url}{path}" + (f"?{query}" if query else ""))
    sha = content_sha256 or hashlib.sha256(body).hexdigest()
    when = date or dt.datetime.now(dt.UTC)
    all_headers = {"Host": url.netloc, "x-amz-content-sha256": sha, "x-amz-date": when.strftime("%Y%m%dT%H%M%SZ"),
                   **(headers or {})}
    done = sign_v4_s3(method=method, url=url, region="us-east-1", headers=all_headers,
                      credentials=Credentials(env.admin.access_key_id, secret or env.admin.secret),
                      content_sha256=sha, date=when)
    return requests.request(method, url.geturl(), data=body, headers=done, timeout=10)


def exists(env: S3Env, key: str) -> bool:
    try:
        env.client().head_object(Bucket="auth", Key=key)
        return True
    except ClientError:
        return False


def test_a_signed_request_through_the_minio_signer_works(env):
    response = signed(env, "PUT", "/auth/minio-signed", body=b"signed by minio")
    assert response.status_code == 200, response.text
    assert env.client().get_object(Bucket="auth", Key="minio-signed")["Body"].read() == b"signed by minio"


def test_wrong_secret_and_unknown_key(env):
    wrong = env.client(type(env.admin)(env.admin.access_key_id, "x" * 40, "admin"))
    with pytest.raises(ClientError) as bad:
        wrong.list_buckets()
    assert bad.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    unknown = env.client(type(env.admin)("SSAKAAAAAAAAAAAAAAAA", "x" * 40, "nobody"))
    with pytest.raises(ClientError) as missing:
        unknown.list_buckets()
    assert missing.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_a_deleted_key_fails_at_once_on_every_instance(env):
    key = env.key("carol", ["admin"])
    clients = [env.client(key, server=server) for server in env.servers]
    for client in clients:
        assert client.head_bucket(Bucket="auth")["ResponseMetadata"]["HTTPStatusCode"] == 200
    gone = requests.delete(f"{env.server.url}/api/v1/access-keys/{key.access_key_id}", headers=env.server.admin,
                           timeout=10)
    assert gone.status_code == 204
    for client in clients:
        with pytest.raises(ClientError) as refused:
            client.head_bucket(Bucket="auth")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_a_deleted_key_fails_at_once_for_downloads_too(env):
    # downloads remember key identities per process and check the key in their resolving statement
    env.client().put_object(Bucket="auth", Key="remembered", Body=b"bytes")
    key = env.key("dave", ["admin"])
    clients = [env.client(key, server=server) for server in env.servers]
    for client in clients:
        for _ in range(3):  # reach every worker of the instance
            assert client.get_object(Bucket="auth", Key="remembered")["Body"].read() == b"bytes"
    assert requests.delete(f"{env.server.url}/api/v1/access-keys/{key.access_key_id}", headers=env.server.admin,
                           timeout=10).status_code == 204
    for client in clients:
        for call in (lambda c=client: c.get_object(Bucket="auth", Key="remembered"),
                     lambda c=client: c.get_object(Bucket="auth", Key="not-there")):
            with pytest.raises(ClientError) as refused:
                call()
            assert refused.value.response["Error"]["Code"] == "InvalidAccessKeyId"
        with pytest.raises(ClientError) as head:
            client.head_object(Bucket="auth", Key="remembered")
        assert head.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_skewed_clock(env):
    late = signed(env, "GET", "/auth", date=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=16))
    assert late.status_code == 403 and code(late) == "RequestTimeTooSkewed"
    early = signed(env, "GET", "/auth", date=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=16))
    assert early.status_code == 403 and code(early) == "RequestTimeTooSkewed"
    within = signed(env, "GET", "/auth", date=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=14))
    assert within.status_code == 200


def test_presigned_url_longer_than_a_week_is_refused(env):
    client = env.client(signature_version="s3v4")
    url = client.generate_presigned_url("get_object", Params={"Bucket": "auth", "Key": "k"}, ExpiresIn=8 * 86400)
    response = requests.get(url, timeout=10)
    assert response.status_code == 400 and code(response) == "AuthorizationQueryParametersError"


def test_payload_not_matching_its_signed_hash_stores_nothing(env):
    response = signed(env, "PUT", "/auth/mismatch", body=b"the actual body",
                      content_sha256=hashlib.sha256(b"another body").hexdigest())
    assert response.status_code == 400 and code(response) == "XAmzContentSHA256Mismatch"
    assert not exists(env, "mismatch")


def _streaming_put(env: S3Env, key: str, chunks: list[bytes], *, corrupt: int | None = None,
                   trailer: bool = False) -> requests.Response:
    when = dt.datetime.now(dt.UTC)
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")
    decoded = sum(len(c) for c in chunks)
    server = env.server
    url = urlsplit(f"{server.s3_url}/auth/{key}")
    headers = {"Host": url.netloc, "x-amz-content-sha256": mode, "x-amz-date": when.strftime("%Y%m%dT%H%M%SZ"),
               "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(decoded)}
    if trailer:
        headers["x-amz-trailer"] = "x-amz-checksum-crc32"
    done = sign_v4_s3(method="PUT", url=url, region="us-east-1", headers=headers,
                      credentials=Credentials(env.admin.access_key_id, env.admin.secret), content_sha256=mode,
                      date=when)
    seed = done["Authorization"].rsplit("Signature=", 1)[1]
    crc = base64.b64encode(zlib.crc32(b"".join(chunks)).to_bytes(4, "big")).decode()
    body = bytearray(signed_chunks(signing_context(env.admin.secret, when, seed), chunks,
                                   trailer=[("x-amz-checksum-crc32", crc)] if trailer else None))
    if corrupt is not None:
        body[corrupt] ^= 0x01
    return requests.put(url.geturl(), data=bytes(body), headers=done, timeout=30)


def test_signed_chunks_are_verified(env):
    chunks = [b"a" * 65536, b"b" * 65536, b"tail"]
    good = _streaming_put(env, "chunked", chunks)
    assert good.status_code == 200, good.text
    assert env.client().get_object(Bucket="auth", Key="chunked")["Body"].read() == b"".join(chunks)
    with_trailer = _streaming_put(env, "chunked-trailer", chunks, trailer=True)
    assert with_trailer.status_code == 200, with_trailer.text


def test_a_chunk_signature_broken_mid_stream_stores_nothing(env):
    chunks = [b"a" * 65536, b"b" * 65536, b"tail"]
    # a byte of the second chunk's data flipped: its signature no longer holds
    second_chunk_data = len(b"10000;chunk-signature=") + 64 + 2 + 65536 + 2 + len(b"10000;chunk-signature=") + 64 + 2
    broken = _streaming_put(env, "broken", chunks, corrupt=second_chunk_data + 100)
    assert broken.status_code == 403 and code(broken) == "SignatureDoesNotMatch"
    assert not exists(env, "broken")


def test_unsigned_chunks_with_a_wrong_trailing_checksum_store_nothing(env):
    body = unsigned_chunks([b"x" * 1000], trailer=[("x-amz-checksum-crc32", "AAAAAA==")])
    response = signed(env, "PUT", "/auth/bad-trailer", body=body, content_sha256="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                      headers={"Content-Encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-crc32",
                               "x-amz-decoded-content-length": "1000"})
    assert response.status_code == 400 and code(response) == "BadDigest"
    assert not exists(env, "bad-trailer")


def test_bad_digest_headers(env):
    s3 = env.client()
    with pytest.raises(ClientError) as bad_md5:
        wrong = base64.b64encode(hashlib.md5(b"abd").digest()).decode()
        s3.put_object(Bucket="auth", Key="md5", Body=b"abc", ContentMD5=wrong)
    assert bad_md5.value.response["Error"]["Code"] == "BadDigest"
    assert not exists(env, "md5")


@pytest.mark.parametrize("method,path,query,body,expected", [
    ("GET", "/auth", "list-type=2&max-keys=-1", b"", "InvalidArgument"),
    ("GET", "/auth", "list-type=2&max-keys=abc", b"", "InvalidArgument"),
    ("GET", "/auth", "list-type=2&encoding-type=xml", b"", "InvalidArgument"),
    ("POST", "/auth", "delete=", b"<Delete><Object></Delete>", "MalformedXML"),
    ("POST", "/auth", "delete=", b"<Delete></Delete>", "MalformedXML"),
    ("POST", "/auth/k", "uploadId=nope", b"<CompleteMultipartUpload/>", "MalformedXML"),
    ("POST", "/auth/k", "uploadId=nope",
     b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part></CompleteMultipartUpload>",
     "NoSuchUpload"),
    ("PUT", "/auth/k", "partNumber=0&uploadId=nope", b"x", "InvalidArgument"),
    ("PUT", "/auth/k", "partNumber=1&uploadId=nope", b"x", "NoSuchUpload"),
    ("GET", "/auth/k", "uploadId=nope", b"", "NoSuchUpload"),
    ("PUT", "/nosuchbucket/k", "", b"x", "NoSuchBucket"),
    ("PUT", "/UPPER", "", b"", "InvalidBucketName"),
    ("GET", "/auth", "acl=", b"", "NotImplemented"),
])
def test_bad_requests_get_s3_codes_never_a_5xx(env, method, path, query, body, expected):
    response = signed(env, method, path, body=body, query=query)
    assert response.status_code < 500 or expected == "NotImplemented", response.text
    assert code(response) == expected, response.text


def test_malformed_authorization_is_a_4xx(env):
    url = f"{env.server.s3_url}/auth/k"
    for header in ("AWS4-HMAC-SHA256 garbage", "AWS AKIA:sig", "Bearer token", "AWS4-HMAC-SHA256 Credential=a/b"):
        response = requests.get(url, headers={"Authorization": header}, timeout=10)
        assert 400 <= response.status_code < 500, (header, response.text)
        assert "<Code>" in response.text
