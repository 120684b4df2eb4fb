"""S3 XML: what boto3 and the minio SDK make of the built documents over real HTTP, and safe request parsing."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from urllib.parse import unquote_plus

import pytest
from botocore.exceptions import ClientError
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error as MinioS3Error

from storage_core import errors as domain
from storage_core.s3 import xml
from storage_core.s3.errors import CODES, S3Error, from_storage_error
from tests.support.s3_canned import CannedS3, serve
from tests.support.s3_signing import AWKWARD_KEYS, boto3_client, capture

WHEN = dt.datetime(2025, 3, 1, 12, 30, 45, 123456, tzinfo=dt.UTC)
OWNER = xml.Owner("acct-42", "alice")
KEYS = [k for k in AWKWARD_KEYS if k.strip() == k] + ["<&>'\" xml specials", "percent%25+plus"]


@pytest.fixture(scope="module")
def canned_s3() -> Iterator[CannedS3]:
    with serve() as canned:
        yield canned


@pytest.fixture
def client(canned_s3):
    canned_s3.responses.clear()
    canned_s3.received.clear()
    return boto3_client(canned_s3.url)


@pytest.fixture
def minio_client(canned_s3):
    canned_s3.responses.clear()
    canned_s3.received.clear()
    return Minio(canned_s3.url.removeprefix("http://"), "SSAKEXAMPLEKEYID2345", "secret", secure=False,
                 region="us-east-1")


def entries(keys=KEYS) -> list[xml.ObjectEntry]:
    return [xml.ObjectEntry(key, WHEN, f"{i:032x}", 100 + i, owner=OWNER) for i, key in enumerate(keys)]


# ---- values ----------------------------------------------------------------------------------------------

def test_timestamps_are_iso_8601_utc_with_milliseconds():
    assert xml.timestamp(WHEN) == "2025-03-01T12:30:45.123Z"
    assert xml.timestamp(dt.datetime(2025, 1, 2, 3, 4, 5)) == "2025-01-02T03:04:05.000Z"  # naive: UTC (SQLite)
    paris = dt.timezone(dt.timedelta(hours=1))
    assert xml.timestamp(dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=paris)) == "2025-01-02T02:04:05.000Z"


def test_etags_are_quoted_once():
    assert xml.quote_etag("abc") == '"abc"'
    assert xml.quote_etag('"abc-2"') == '"abc-2"'


def test_responses_carry_the_s3_namespace_and_errors_none():
    body = xml.initiate_multipart_upload_result("b", "k", "u")
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult '
                           b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/">')
    assert xml.error(S3Error("NoSuchKey"), resource="/b/k", request_id="r").split(b"\n", 1)[1].startswith(
        b"<Error><Code>NoSuchKey</Code>")


def test_text_xml_cannot_carry_is_refused_with_the_remedy():
    page = xml.ObjectListing("b", entries(["bell\x07"]))
    with pytest.raises(S3Error, match="encoding-type=url"):
        xml.list_objects_v2(page)
    encoded = xml.list_objects_v2(xml.ObjectListing("b", entries(["bell\x07"]), encoding_type="url"))
    assert b"<Key>bell%07</Key>" in encoded


# ---- what boto3 makes of the responses -------------------------------------------------------------------

def test_list_objects_v2_as_boto3_reads_it(client, canned_s3):
    page = xml.ObjectListing("bkt", entries(), common_prefixes=["dir/", "a b+c/"], prefix="", delimiter="/",
                             max_keys=50, is_truncated=True, encoding_type="url")
    canned_s3.answer(xml.list_objects_v2(page, continuation_token="tok-1", next_continuation_token="tok+2/=",
                                         start_after="after me+"))
    result = client.list_objects_v2(Bucket="bkt", Delimiter="/", MaxKeys=50, ContinuationToken="tok-1",
                                    StartAfter="after me+")
    assert "encoding-type=url" in canned_s3.received[-1].path  # boto3 asked for it, and decodes
    assert [item["Key"] for item in result["Contents"]] == KEYS
    first = result["Contents"][0]
    assert first["ETag"] == f'"{0:032x}"' and first["Size"] == 100 and first["StorageClass"] == "STANDARD"
    assert first["LastModified"] == WHEN.replace(microsecond=123000)
    assert "Owner" not in first  # V2 lists owners only with fetch-owner
    assert [p["Prefix"] for p in result["CommonPrefixes"]] == ["dir/", "a b+c/"]
    assert result["KeyCount"] == len(KEYS) + 2
    assert (result["IsTruncated"], result["NextContinuationToken"], result["MaxKeys"]) == (True, "tok+2/=", 50)
    assert (result["StartAfter"], result["Delimiter"], result["Name"]) == ("after me+", "/", "bkt")


def test_list_objects_v2_without_encoding_escapes_xml_specials(client, canned_s3):
    page = xml.ObjectListing("bkt", entries(), prefix="<&>")
    canned_s3.answer(xml.list_objects_v2(page, fetch_owner=True))
    result = client.list_objects_v2(Bucket="bkt", Prefix="<&>", FetchOwner=True)
    assert [item["Key"] for item in result["Contents"]] == KEYS
    assert result["Contents"][0]["Owner"] == {"ID": "acct-42", "DisplayName": "alice"}
    assert result["Prefix"] == "<&>" and result["IsTruncated"] is False and "NextContinuationToken" not in result


def test_list_objects_v1_as_boto3_reads_it(client, canned_s3):
    page = xml.ObjectListing("bkt", entries(KEYS[:3]), max_keys=3, is_truncated=True, encoding_type="url")
    canned_s3.answer(xml.list_objects_v1(page, marker="m a+rk"))
    result = client.list_objects(Bucket="bkt", Marker="m a+rk", MaxKeys=3)
    assert [item["Key"] for item in result["Contents"]] == KEYS[:3]
    assert result["Contents"][0]["Owner"]["ID"] == "acct-42"
    assert result["Marker"] == "m a+rk" and result["IsTruncated"] is True
    assert result["NextMarker"] == max(KEYS[:3])


def test_list_buckets_as_boto3_reads_it(client, canned_s3):
    buckets = [xml.BucketEntry("alpha", WHEN), xml.BucketEntry("beta", WHEN + dt.timedelta(days=1), "eu-west-1")]
    canned_s3.answer(xml.list_all_my_buckets(buckets, OWNER))
    result = client.list_buckets()
    assert [(b["Name"], b["CreationDate"]) for b in result["Buckets"]] == [
        ("alpha", WHEN.replace(microsecond=123000)), ("beta", WHEN.replace(microsecond=123000) + dt.timedelta(days=1))]
    assert result["Buckets"][1]["BucketRegion"] == "eu-west-1"
    assert result["Owner"] == {"ID": "acct-42", "DisplayName": "alice"}


@pytest.mark.parametrize("region, expected", [("us-east-1", None), (None, None), ("eu-west-1", "eu-west-1")])
def test_bucket_location_as_boto3_reads_it(client, canned_s3, region, expected):
    canned_s3.answer(xml.location_constraint(region))
    assert client.get_bucket_location(Bucket="bkt")["LocationConstraint"] == expected


def test_copy_and_multipart_results_as_boto3_reads_them(client, canned_s3):
    canned_s3.answer(xml.copy_object_result("e" * 32, WHEN, {"crc32": "AAAAAA=="}))
    copied = client.copy_object(Bucket="bkt", Key="to", CopySource="bkt/from")["CopyObjectResult"]
    assert copied["ETag"] == '"' + "e" * 32 + '"' and copied["ChecksumCRC32"] == "AAAAAA=="
    assert copied["LastModified"] == WHEN.replace(microsecond=123000)

    canned_s3.answer(xml.initiate_multipart_upload_result("bkt", "big file", "upload-1"))
    started = client.create_multipart_upload(Bucket="bkt", Key="big file")
    assert (started["Bucket"], started["Key"], started["UploadId"]) == ("bkt", "big file", "upload-1")

    canned_s3.answer(xml.complete_multipart_upload_result("http://h/bkt/big%20file", "bkt", "big file",
                                                          "f" * 32 + "-3", {"crc32c": "sOO8/Q=="}))
    done = client.complete_multipart_upload(Bucket="bkt", Key="big file", UploadId="upload-1",
                                            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"x"'}]})
    assert done["ETag"] == '"' + "f" * 32 + '-3"' and done["ChecksumCRC32C"] == "sOO8/Q=="
    assert done["Location"] == "http://h/bkt/big%20file"


def test_list_parts_and_uploads_as_boto3_reads_them(client, canned_s3):
    parts = [xml.PartEntry(n, WHEN, f"{n:032x}", 5 * 1024 * 1024, {"sha256": "abc="}) for n in (1, 2, 3)]
    canned_s3.answer(xml.list_parts_result("bkt", "k", "u-1", parts, owner=OWNER, max_parts=3, is_truncated=True))
    listed = client.list_parts(Bucket="bkt", Key="k", UploadId="u-1", MaxParts=3)
    assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2, 3]
    assert listed["Parts"][0]["ChecksumSHA256"] == "abc=" and listed["Parts"][0]["Size"] == 5 * 1024 * 1024
    assert (listed["NextPartNumberMarker"], listed["IsTruncated"], listed["MaxParts"]) == (3, True, 3)
    assert listed["Initiator"]["ID"] == listed["Owner"]["ID"] == "acct-42"

    uploads = [xml.UploadEntry(key, f"u-{i}", WHEN, OWNER) for i, key in enumerate(KEYS[:4])]
    canned_s3.answer(xml.list_multipart_uploads_result("bkt", uploads, is_truncated=True, next_key_marker=KEYS[3],
                                                       next_upload_id_marker="u-3", common_prefixes=["p/"],
                                                       delimiter="/"))
    result = client.list_multipart_uploads(Bucket="bkt", Delimiter="/")
    assert "encoding-type" not in canned_s3.received[-1].path  # boto3 does not ask here: keys come as they are
    assert [u["Key"] for u in result["Uploads"]] == KEYS[:4]
    assert [p["Prefix"] for p in result["CommonPrefixes"]] == ["p/"] and result["NextKeyMarker"] == KEYS[3]
    assert result["Uploads"][0]["Initiated"] == WHEN.replace(microsecond=123000)
    assert (result["NextUploadIdMarker"], result["IsTruncated"]) == ("u-3", True)
    encoded = xml.list_multipart_uploads_result("bkt", uploads, encoding_type="url")
    assert all(f"<Key>{xml.url_encode(k)}</Key>".encode() in encoded for k in ["a+b=c&d;e,f"] if k in KEYS[:4]) and \
        b"<EncodingType>url</EncodingType>" in encoded
    assert [unquote_plus(xml.url_encode(k)) for k in KEYS] == KEYS  # what clients undo, undone


def test_delete_result_as_boto3_reads_it(client, canned_s3):
    deleted = [xml.DeletedEntry(k) for k in KEYS[:3]]
    failures = [xml.DeleteFailure("locked", "AccessDenied", "Access Denied")]
    canned_s3.answer(xml.delete_result(deleted, failures, quiet=False))
    result = client.delete_objects(Bucket="bkt", Delete={"Objects": [{"Key": k} for k in [*KEYS[:3], "locked"]]})
    assert [d["Key"] for d in result["Deleted"]] == KEYS[:3]
    assert result["Errors"] == [{"Key": "locked", "Code": "AccessDenied", "Message": "Access Denied"}]
    canned_s3.answer(xml.delete_result(deleted, failures, quiet=True))
    quiet = client.delete_objects(Bucket="bkt", Delete={"Objects": [{"Key": "x"}], "Quiet": True})
    assert "Deleted" not in quiet and len(quiet["Errors"]) == 1


@pytest.mark.parametrize("code", ["NoSuchKey", "NoSuchBucket", "SignatureDoesNotMatch", "QuotaExceeded",
                                  "InvalidRange", "SlowDown"])
def test_errors_as_boto3_reads_them(client, canned_s3, code):
    error = S3Error(code, extra={"StringToSign": "AWS4-HMAC-SHA256\n<&>"} if code == "SignatureDoesNotMatch" else {})
    for _ in range(2):  # boto3 retries once (max_attempts=1), on the codes it deems transient only
        canned_s3.answer(xml.error(error, resource="/bkt/k", request_id="req-1"), status=error.status)
    with pytest.raises(ClientError) as caught:
        client.get_object(Bucket="bkt", Key="k")
    parsed = caught.value.response
    assert parsed["Error"]["Code"] == code and parsed["Error"]["Message"] == error.message
    assert parsed["ResponseMetadata"]["HTTPStatusCode"] == error.status
    # the quota is not retried (DESIGN 7: a retry cannot help); the concurrent-download limit is
    assert len(canned_s3.received) == (2 if code == "SlowDown" else 1)
    if code == "SignatureDoesNotMatch":
        assert parsed["Error"]["StringToSign"] == "AWS4-HMAC-SHA256\n<&>"
    if code == "NoSuchKey":
        assert isinstance(caught.value, client.exceptions.NoSuchKey)


# ---- what the minio SDK makes of them -------------------------------------------------------------------

def test_minio_lists_objects_and_buckets(minio_client, canned_s3):
    page = xml.ObjectListing("bkt", entries(), common_prefixes=["dir/"], delimiter="/", encoding_type="url")
    canned_s3.answer(xml.list_objects_v2(page))
    listed = list(minio_client.list_objects("bkt"))
    assert [o.object_name for o in listed] == [*KEYS, "dir/"]
    assert listed[0].etag == f"{0:032x}" and listed[0].size == 100 and listed[-1].is_dir
    assert listed[0].last_modified == WHEN.replace(microsecond=123000)

    canned_s3.answer(xml.list_all_my_buckets([xml.BucketEntry("alpha", WHEN)], OWNER))
    assert [(b.name, b.creation_date) for b in minio_client.list_buckets()] == [
        ("alpha", WHEN.replace(microsecond=123000))]


def test_minio_reads_errors(minio_client, canned_s3):
    canned_s3.answer(xml.error(S3Error("NoSuchBucket"), resource="/nope/k", request_id="req-9"), status=404)
    with pytest.raises(MinioS3Error) as caught:
        minio_client.get_object("nope", "k")
    assert (caught.value.code, caught.value.request_id, caught.value.resource) == ("NoSuchBucket", "req-9",
                                                                                  "/nope/k")


def test_minio_delete_request_parses_and_its_result_reads(minio_client, canned_s3):
    failures = [xml.DeleteFailure(KEYS[1], "AccessDenied", "no")]
    canned_s3.answer(xml.delete_result([xml.DeletedEntry(KEYS[0])], failures, quiet=True))
    errors = list(minio_client.remove_objects("bkt", [DeleteObject(k) for k in KEYS[:2]]))
    assert [(e.name, e.code) for e in errors] == [(KEYS[1], "AccessDenied")]
    request = xml.parse_delete(canned_s3.received[-1].body)
    assert [o.key for o in request.objects] == KEYS[:2] and request.quiet


# ---- request bodies as boto3 sends them ------------------------------------------------------------------

def test_boto3_complete_multipart_upload_body_parses():
    sent = capture(boto3_client(), "complete_multipart_upload", Bucket="b", Key="k", UploadId="u",
                   MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"aaa"', "ChecksumCRC32": "AAAAAA=="},
                                              {"PartNumber": 2, "ETag": "bbb"},
                                              {"PartNumber": 10000, "ETag": '"ccc-1"'}]})
    assert b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"' in sent.body
    parts = xml.parse_complete_multipart_upload(sent.body)
    assert parts == [xml.CompletedPart(1, "aaa", {"crc32": "AAAAAA=="}), xml.CompletedPart(2, "bbb"),
                     xml.CompletedPart(10000, "ccc-1")]


def test_boto3_delete_objects_body_parses():
    keys = [*KEYS, "  spaced  ", "line\nbreak"]
    sent = capture(boto3_client(), "delete_objects", Bucket="b",
                   Delete={"Objects": [{"Key": k} for k in keys] + [{"Key": "v", "VersionId": "3"}], "Quiet": True})
    request = xml.parse_delete(sent.body)
    assert [o.key for o in request.objects] == [*keys, "v"]
    assert request.objects[-1].version_id == "3" and request.quiet is True


def test_boto3_create_bucket_body_parses():
    sent = capture(boto3_client(), "create_bucket", Bucket="b",
                   CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert xml.parse_create_bucket_configuration(sent.body) == "eu-west-1"
    sent = capture(boto3_client(), "create_bucket", Bucket="b")
    assert xml.parse_create_bucket_configuration(sent.body) is None


def test_bodies_without_the_namespace_parse():
    assert xml.parse_delete(b"<Delete><Object><Key>a</Key></Object></Delete>").objects[0].key == "a"
    body = b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>e</ETag></Part></CompleteMultipartUpload>"
    assert xml.parse_complete_multipart_upload(body)[0].etag == "e"
    assert xml.parse_create_bucket_configuration(b"<CreateBucketConfiguration/>") is None


# ---- hostile and malformed bodies ------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<Delete><Object><Key>&lol4;</Key></Object></Delete>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<Delete><Object><Key>&secret;</Key></Object></Delete>"""
DTD_ONLY = b"""<?xml version="1.0"?><!DOCTYPE Delete SYSTEM "http://example.invalid/x.dtd">
<Delete><Object><Key>a</Key></Object></Delete>"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL, DTD_ONLY, b"<Delete><Object>", b"not xml",
                                  b"\xff\xfe<\x00", b"", b"  ", b"<Other><Object><Key>a</Key></Object></Other>",
                                  b'<Delete xmlns="urn:evil"><Object><Key>a</Key></Object></Delete>',
                                  b"<Delete></Delete>", b"<Delete><Object></Object></Delete>",
                                  b"<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>",
                                  b"<Delete><Object><Key>a</Key></Object><Quiet>yes</Quiet></Delete>"])
def test_hostile_or_malformed_delete_bodies_are_malformed_xml(body):
    with pytest.raises(S3Error) as caught:
        xml.parse_delete(body)
    assert (caught.value.code, caught.value.status) == ("MalformedXML", 400)


def test_a_delete_of_more_than_1000_keys_is_malformed():
    objects = b"".join(b"<Object><Key>k%d</Key></Object>" % i for i in range(1001))
    with pytest.raises(S3Error, match="MalformedXML"):
        xml.parse_delete(b"<Delete>" + objects + b"</Delete>")
    assert len(xml.parse_delete(b"<Delete>" + objects[:objects.rindex(b"<Object>")] + b"</Delete>").objects) == 1000


def test_a_body_over_the_limit_is_refused_before_parsing():
    body = b"<Delete>" + b"<Object><Key>k</Key></Object>" * 100 + b"</Delete>"
    with pytest.raises(S3Error, match="MaxMessageLengthExceeded"):
        xml.parse_delete(body, limit=len(body) - 1)


def test_read_body_stops_past_the_limit():
    assert xml.read_body(io.BytesIO(b"x" * 100), limit=100) == b"x" * 100
    with pytest.raises(S3Error) as caught:
        xml.read_body(io.BytesIO(b"x" * 101), limit=100)
    assert (caught.value.code, caught.value.status) == ("MaxMessageLengthExceeded", 400)


def _complete(*parts: tuple[str, str]) -> bytes:
    return b"<CompleteMultipartUpload>" + b"".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>".encode() for n, e in parts) + \
        b"</CompleteMultipartUpload>"


@pytest.mark.parametrize("body, code", [
    (_complete(("0", "e")), "InvalidArgument"),
    (_complete(("10001", "e")), "InvalidArgument"),
    (_complete(("x", "e")), "InvalidArgument"),
    (_complete(("-1", "e")), "InvalidArgument"),
    (_complete(("2", "e"), ("1", "f")), "InvalidPartOrder"),
    (_complete(("1", "e"), ("1", "f")), "InvalidPartOrder"),
    (_complete(("1", "")), "MalformedXML"),
    (b"<CompleteMultipartUpload><Part><ETag>e</ETag></Part></CompleteMultipartUpload>", "MalformedXML"),
    (b"<CompleteMultipartUpload></CompleteMultipartUpload>", "MalformedXML"),
    (BILLION_LAUGHS.replace(b"Delete", b"CompleteMultipartUpload"), "MalformedXML"),
])
def test_bad_complete_multipart_upload_bodies(body, code):
    with pytest.raises(S3Error) as caught:
        xml.parse_complete_multipart_upload(body)
    assert caught.value.code == code


def test_a_malformed_create_bucket_configuration_is_malformed_xml():
    for body in (b"<CreateBucketConfiguration>", EXTERNAL.replace(b"Delete", b"CreateBucketConfiguration"),
                 b"<LocationConstraint>x</LocationConstraint>"):
        with pytest.raises(S3Error, match="MalformedXML"):
            xml.parse_create_bucket_configuration(body)


# ---- domain errors as S3 errors --------------------------------------------------------------------------

@pytest.mark.parametrize("exc, code, status", [
    (domain.BucketNotFound("bucket 'b' does not exist"), "NoSuchBucket", 404),
    (domain.ObjectNotFound("object 'k' does not exist"), "NoSuchKey", 404),
    (domain.UploadNotFound("upload 'u'"), "NoSuchUpload", 404),
    (domain.NotFound("file x"), "NotFound", 404),
    (domain.BucketExists("bucket 'b' already exists"), "BucketAlreadyExists", 409),
    (domain.BucketNotEmpty("bucket 'b' is not empty"), "BucketNotEmpty", 409),
    (domain.Conflict("content is being changed concurrently; retry"), "OperationAborted", 409),
    (domain.Unauthorized("authentication required"), "AccessDenied", 403),
    (domain.Forbidden("only admins"), "AccessDenied", 403),
    (domain.QuotaExceeded("not enough quota"), "QuotaExceeded", 403),
    (domain.MonthlyDownloadLimit("limit"), "MonthlyDownloadLimit", 403),
    (domain.ConcurrentDownloadLimit("too many"), "SlowDown", 503),
    (domain.RangeNotSatisfiable("no", headers={"Content-Range": "bytes */10"}), "InvalidRange", 416),
    (domain.PreconditionFailed("If-Match"), "PreconditionFailed", 412),
    (domain.BadDigest("md5"), "BadDigest", 400),
    (domain.PayloadTooLarge("too big"), "EntityTooLarge", 400),
    (domain.InsufficientStorage("full"), "InsufficientStorage", 507),
    (domain.StorageUnavailable("none", headers={"Retry-After": "5"}), "ServiceUnavailable", 503),
    (domain.PieceMissing("gone"), "ServiceUnavailable", 503),
    (domain.DatabaseUnavailable("db down"), "ServiceUnavailable", 503),
    (domain.PresignUnavailable(), "NotImplemented", 501),
    (domain.InvalidArgument("bad key"), "InvalidArgument", 400),
    (domain.StorageError("boom: secret detail"), "InternalError", 500),
])
def test_domain_errors_map_to_s3_codes(exc, code, status):
    mapped = from_storage_error(exc)
    assert (mapped.code, mapped.status) == (code, status)
    assert mapped.headers == exc.headers
    if code in ("NoSuchBucket", "NoSuchKey", "InternalError"):
        assert mapped.message == CODES[code][1]  # S3's wording; no internal detail leaks
    elif code in ("AccessDenied", "InvalidArgument", "OperationAborted"):
        assert mapped.message == exc.detail


def test_a_domain_error_with_an_s3_code_keeps_it():
    class InvalidPart(domain.InvalidArgument):
        code = "InvalidPart"

    class EntityTooSmall(domain.StorageError):
        status, code = 400, "EntityTooSmall"

    assert (from_storage_error(InvalidPart("part 3")).code, from_storage_error(InvalidPart("x")).status) == \
        ("InvalidPart", 400)
    assert (from_storage_error(EntityTooSmall("part 1 is 5 bytes")).code, from_storage_error(
        EntityTooSmall("x")).status) == ("EntityTooSmall", 400)


def test_unknown_codes_need_a_status():
    with pytest.raises(ValueError):
        S3Error("NoSuchThing")
    assert S3Error("NoSuchThing", "x", status=404).status == 404
