"""SigV4 verification against requests signed by botocore and the minio SDK, and every way to break one."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.utils import percent_encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage_core.s3.errors import S3Error
from storage_core.s3.sigv4 import (
    MAX_PRESIGN_EXPIRES,
    PayloadMode,
    RequestView,
    Sha256CheckedBody,
    SigV4Verifier,
    canonical_query,
    canonical_uri,
    query_pairs,
    signing_key,
    verify,
)
from tests.support.s3_signing import (
    ACCESS_KEY,
    AWKWARD_KEYS,
    REGION,
    SECRET,
    boto3_client,
    capture,
    minio_presigned,
    minio_query,
    minio_signed,
)

FIXED = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


def lookup(access_key_id: str) -> str | None:
    return SECRET if access_key_id == ACCESS_KEY else None


def check(view: RequestView, *, now: dt.datetime | None = None, region: str = REGION,
          secrets=lookup):
    return verify(view, lookup=secrets, region=region, now=now or dt.datetime.now(dt.UTC))


def refused(view: RequestView, **kwargs) -> S3Error:
    with pytest.raises(S3Error) as caught:
        check(view, **kwargs)
    return caught.value


@pytest.fixture(scope="module")
def client():
    return boto3_client()


@pytest.fixture(scope="module")
def tls_client():
    return boto3_client("https://s3.example.test:9443")


# ---- what real SDKs send is accepted -----------------------------------------------------------------

@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_boto3_header_signed_requests_with_awkward_keys_verify(client, key):
    body = b"some bytes \x00\xff"
    for operation, params in [("put_object", {"Body": body, "Metadata": {"colour": "  dark   blue "}}),
                              ("get_object", {"Range": "bytes=0-3"}),
                              ("head_object", {}),
                              ("delete_object", {})]:
        sent = capture(client, operation, Bucket="bkt", Key=key, **params)
        verified = check(sent.view())
        assert verified is not None and verified.access_key_id == ACCESS_KEY
        assert not verified.presigned
        assert "host" in verified.signed_headers
        if operation == "put_object":
            # over http botocore signs the body's sha256
            assert verified.payload is PayloadMode.SHA256
            assert verified.payload_sha256 == hashlib.sha256(body).hexdigest()


def test_boto3_list_with_query_parameters_verifies(client):
    sent = capture(client, "list_objects_v2", Bucket="bkt", Prefix="a+b c/ü~%", Delimiter="/",
                   StartAfter="x y", ContinuationToken="tok+/=", MaxKeys=7)
    assert check(sent.view()) is not None


def test_boto3_over_tls_sends_an_unsigned_trailer_payload_that_verifies(tls_client):
    sent = capture(tls_client, "put_object", Bucket="bkt", Key="dir/a b+c.txt", Body=b"hello world")
    verified = check(sent.view())
    assert verified.payload is PayloadMode.STREAMING_UNSIGNED_TRAILER
    assert verified.payload.streaming and verified.payload.trailer and not verified.payload.signed_chunks


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_boto3_presigned_urls_verify(client, key):
    url = client.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": key}, ExpiresIn=900)
    parts = urlsplit(url)
    verified = check(RequestView("GET", parts.path, parts.query, [("Host", parts.netloc)]))
    assert verified.presigned and verified.payload is PayloadMode.UNSIGNED
    assert verified.expires_at - verified.signed_at == dt.timedelta(seconds=900)


def test_boto3_presigned_put_with_response_overrides_verifies(client):
    url = client.generate_presigned_url(
        "get_object", ExpiresIn=60,
        Params={"Bucket": "bkt", "Key": "report.pdf", "ResponseContentDisposition": 'attachment; filename="r é.pdf"'})
    parts = urlsplit(url)
    assert check(RequestView("GET", parts.path, parts.query, {"Host": parts.netloc})) is not None
    url = client.generate_presigned_url("put_object", Params={"Bucket": "bkt", "Key": "up load"}, ExpiresIn=60)
    parts = urlsplit(url)
    assert check(RequestView("PUT", parts.path, parts.query, {"Host": parts.netloc})) is not None


def test_botocore_signers_used_directly_verify():
    credentials = Credentials(ACCESS_KEY, SECRET)
    request = AWSRequest("PUT", "http://s3.example.test:9000/bkt/" + percent_encode("a b/ü", safe="/~"),
                         data=b"xyz", headers={"x-amz-meta-note": "hi", "Content-Type": "text/plain"})
    S3SigV4Auth(credentials, "s3", REGION).add_auth(request)
    parts = urlsplit(request.url)
    headers = [("Host", parts.netloc), *request.headers.items()]
    assert check(RequestView("PUT", parts.path, parts.query, headers)).payload is PayloadMode.SHA256

    query = AWSRequest("GET", "http://s3.example.test:9000/bkt/k?versionId=3&acl")
    S3SigV4QueryAuth(credentials, "s3", REGION, expires=3600).add_auth(query)
    parts = urlsplit(query.url)
    assert check(RequestView("GET", parts.path, parts.query, {"Host": parts.netloc})).presigned


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_minio_signer_header_and_presign_verify(key):
    body = b"minio body"
    view = minio_signed("PUT", "bkt", key, date=FIXED, body=body, headers={"Content-Type": "application/x"},
                        query=minio_query([("uploadId", "u+1/="), ("partNumber", "3")]))
    verified = check(view, now=FIXED)
    assert verified.payload_sha256 == hashlib.sha256(body).hexdigest()
    assert verified.signing.timestamp == "20250301T120000Z"
    assert verified.signing.scope == "20250301/us-east-1/s3/aws4_request"

    presigned = minio_presigned("GET", "bkt", key, date=FIXED, expires=3600)
    assert check(presigned, now=FIXED + dt.timedelta(seconds=3599)).presigned


def test_anonymous_requests_have_no_signature():
    assert check(RequestView("GET", "/bkt/key", "prefix=a", {"Host": "h"})) is None


def test_the_verifier_binds_clock_region_and_lookup():
    view = minio_signed("GET", "bkt", "k", date=FIXED)
    verifier = SigV4Verifier(lookup, REGION, clock=lambda: FIXED)
    assert verifier.verify(view).access_key_id == ACCESS_KEY
    late = SigV4Verifier(lookup, REGION, clock=lambda: FIXED + dt.timedelta(minutes=16))
    with pytest.raises(S3Error, match="RequestTimeTooSkewed"):
        late.verify(view)


def test_signing_keys_are_derived_once_per_day_region_and_secret():
    signing_key.cache_clear()
    view = minio_signed("GET", "bkt", "k", date=FIXED)
    for _ in range(3):
        check(view, now=FIXED)
    info = signing_key.cache_info()
    assert info.misses == 1 and info.hits == 2


# ---- each tampering gets S3's answer ---------------------------------------------------------------------

def _with_signature(view: RequestView, signature: str) -> RequestView:
    header = view.headers.get("authorization")
    head, _, _ = header.rpartition("Signature=")
    return replace_header(view, "Authorization", head + "Signature=" + signature)


def replace_header(view: RequestView, name: str, value: str | None) -> RequestView:
    pairs = [(n, v) for n in view.headers.names() for v in view.headers.get_all(n) if n != name.lower()]
    if value is not None:
        pairs.append((name, value))
    return RequestView(view.method, view.path, view.query, pairs)


def test_a_flipped_signature_digit_does_not_match(client):
    sent = capture(client, "get_object", Bucket="bkt", Key="k")
    view = sent.view()
    signature = view.headers.get("authorization").rpartition("Signature=")[2]
    flipped = signature[:10] + ("0" if signature[10] != "0" else "1") + signature[11:]
    error = refused(_with_signature(view, flipped))
    assert (error.code, error.status) == ("SignatureDoesNotMatch", 403)
    assert error.extra["SignatureProvided"] == flipped
    assert error.extra["CanonicalRequest"].startswith("GET\n/bkt/k\n")
    assert error.extra["StringToSign"].startswith("AWS4-HMAC-SHA256\n")
    # upper-case hex is the same signature
    assert check(_with_signature(view, signature.upper())) is not None


def test_a_wrong_secret_does_not_match():
    view = minio_signed("GET", "bkt", "k", date=FIXED)
    error = refused(view, now=FIXED, secrets=lambda _id: SECRET + "x")
    assert (error.code, error.status) == ("SignatureDoesNotMatch", 403)


def test_an_unknown_access_key_is_invalid():
    view = minio_signed("GET", "bkt", "k", date=FIXED, access_key="SSAKUNKNOWNKEY234567")
    error = refused(view, now=FIXED)
    assert (error.code, error.status) == ("InvalidAccessKeyId", 403)
    assert error.extra["AWSAccessKeyId"] == "SSAKUNKNOWNKEY234567"


@pytest.mark.parametrize("minutes, ok", [(-16, False), (-14, True), (14, True), (16, False)])
def test_clock_skew_is_fifteen_minutes(minutes, ok):
    view = minio_signed("GET", "bkt", "k", date=FIXED)
    now = FIXED + dt.timedelta(minutes=minutes)
    if ok:
        assert check(view, now=now) is not None
    else:
        error = refused(view, now=now)
        assert (error.code, error.status) == ("RequestTimeTooSkewed", 403)
        assert error.extra["RequestTime"] == "20250301T120000Z"
        assert error.extra["MaxAllowedSkewMilliseconds"] == "900000"


def test_a_changed_date_header_is_skewed_or_does_not_match():
    view = minio_signed("GET", "bkt", "k", date=FIXED)
    later = replace_header(view, "x-amz-date", "20250301T121600Z")
    assert refused(later, now=FIXED).code == "RequestTimeTooSkewed"  # judged before the signature
    assert refused(later, now=FIXED + dt.timedelta(minutes=16)).code == "SignatureDoesNotMatch"
    assert refused(replace_header(view, "x-amz-date", "20250301T120100Z"), now=FIXED).code == "SignatureDoesNotMatch"
    next_day = replace_header(view, "x-amz-date", "20250302T000000Z")
    assert refused(next_day, now=FIXED).code == "AuthorizationHeaderMalformed"  # not the credential's day


def test_another_region_is_a_malformed_header_naming_ours():
    view = minio_signed("GET", "bkt", "k", date=FIXED, region="eu-west-3")
    error = refused(view, now=FIXED)
    assert (error.code, error.status) == ("AuthorizationHeaderMalformed", 400)
    assert error.extra["Region"] == REGION
    presigned = minio_presigned("GET", "bkt", "k", date=FIXED, expires=60, region="eu-west-3")
    assert refused(presigned, now=FIXED).code == "AuthorizationQueryParametersError"


def test_a_changed_signed_header_value_does_not_match(client):
    sent = capture(client, "put_object", Bucket="bkt", Key="k", Body=b"x", Metadata={"owner": "alice"})
    assert check(sent.view()) is not None
    assert refused(sent.view(x_amz_meta_owner="mallory")).code == "SignatureDoesNotMatch"
    # whitespace is canonicalised: a proxy that re-spaces a value changes nothing
    assert check(sent.view(x_amz_meta_owner="   alice  ")) is not None


def test_an_added_unsigned_amz_header_is_refused(client):
    sent = capture(client, "put_object", Bucket="bkt", Key="k", Body=b"x")
    error = refused(sent.view(x_amz_copy_source="/other/secret"))
    assert (error.code, error.status) == ("AccessDenied", 403)
    assert error.extra["HeadersNotSigned"] == "x-amz-copy-source"
    # a header outside x-amz-* that nobody signed is allowed (user agents, proxies add them)
    assert check(sent.view(X_Forwarded_For="10.0.0.1")) is not None


def test_a_changed_path_or_query_does_not_match(client):
    sent = capture(client, "list_objects_v2", Bucket="bkt", Prefix="a/")
    view = sent.view()
    for path, query in [("/other", view.query), (view.path, view.query.replace("prefix=a%2F", "prefix=b%2F")),
                        (view.path, view.query + "&fetch-owner=true"),
                        (view.path, view.query.replace("prefix=a%2F&", ""))]:
        changed = RequestView(view.method, path, query, sent.view().headers)
        assert refused(changed).code == "SignatureDoesNotMatch", (path, query)


def test_a_changed_key_or_method_does_not_match(client):
    sent = capture(client, "get_object", Bucket="bkt", Key="dir/file.txt")
    view = sent.view()
    assert refused(RequestView("GET", "/bkt/dir/file.txT", "", view.headers)).code == "SignatureDoesNotMatch"
    assert refused(RequestView("DELETE", view.path, "", view.headers)).code == "SignatureDoesNotMatch"
    # the same path differently escaped is the same resource, and the same signature
    assert check(RequestView("GET", "/bkt/dir%2ffile%2Etxt", "", view.headers)) is not None


def test_an_expired_presigned_url_is_access_denied():
    view = minio_presigned("GET", "bkt", "k", date=FIXED, expires=600)
    assert check(view, now=FIXED + dt.timedelta(seconds=600)) is not None
    error = refused(view, now=FIXED + dt.timedelta(seconds=601))
    assert (error.code, error.status, error.message) == ("AccessDenied", 403, "Request has expired")
    assert error.extra["X-Amz-Expires"] == "600"
    assert error.extra["Expires"] == "2025-03-01T12:10:00Z"


def test_a_presigned_url_from_the_future_is_not_valid_yet():
    view = minio_presigned("GET", "bkt", "k", date=FIXED, expires=600)
    error = refused(view, now=FIXED - dt.timedelta(minutes=16))
    assert (error.code, error.message) == ("AccessDenied", "Request is not valid yet")
    assert check(view, now=FIXED - dt.timedelta(minutes=14)) is not None


@pytest.mark.parametrize("expires", [MAX_PRESIGN_EXPIRES + 1, 0, -5, "12a", ""])
def test_presign_expiry_must_be_one_second_to_a_week(expires):
    view = minio_presigned("GET", "bkt", "k", date=FIXED, expires=3600)
    bad = RequestView("GET", view.path, view.query.replace("X-Amz-Expires=3600", f"X-Amz-Expires={expires}"),
                      view.headers)
    error = refused(bad, now=FIXED)
    assert (error.code, error.status) == ("AuthorizationQueryParametersError", 400)


def test_a_week_long_presign_is_accepted(client):
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"},
                                        ExpiresIn=MAX_PRESIGN_EXPIRES)
    parts = urlsplit(url)
    assert check(RequestView("GET", parts.path, parts.query, {"Host": parts.netloc})) is not None
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"},
                                        ExpiresIn=MAX_PRESIGN_EXPIRES + 1)
    parts = urlsplit(url)
    assert refused(RequestView("GET", parts.path, parts.query, {"Host": parts.netloc})).code == \
        "AuthorizationQueryParametersError"


def test_a_tampered_presigned_url_does_not_match():
    view = minio_presigned("GET", "bkt", "k", date=FIXED, expires=600)
    for path, query in [(view.path + "x", view.query), (view.path, view.query.replace("Expires=600", "Expires=6000")),
                        (view.path, view.query + "&response-content-type=text%2Fhtml")]:
        assert refused(RequestView("GET", path, query, view.headers), now=FIXED).code == "SignatureDoesNotMatch"
    assert refused(RequestView("PUT", view.path, view.query, view.headers), now=FIXED).code == "SignatureDoesNotMatch"
    assert refused(RequestView("GET", view.path, view.query, {"Host": "evil.example"}),
                   now=FIXED).code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("drop", ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                                  "X-Amz-SignedHeaders", "X-Amz-Signature"])
def test_a_presigned_url_missing_a_parameter_is_a_query_parameters_error(drop):
    view = minio_presigned("GET", "bkt", "k", date=FIXED, expires=600)
    query = "&".join(p for p in view.query.split("&") if not p.startswith(drop + "="))
    error = refused(RequestView("GET", view.path, query, view.headers), now=FIXED)
    assert (error.code, error.status) == ("AuthorizationQueryParametersError", 400)


def test_a_presigned_url_with_an_unsigned_amz_header_is_refused():
    view = minio_presigned("PUT", "bkt", "k", date=FIXED, expires=600)
    with_copy = RequestView("PUT", view.path, view.query, {"Host": view.headers.get("host"),
                                                           "x-amz-copy-source": "/bkt/private"})
    assert refused(with_copy, now=FIXED).extra["HeadersNotSigned"] == "x-amz-copy-source"
    # x-amz-content-sha256 cannot change a presigned request (its payload mode comes from the query)
    with_hash = RequestView("PUT", view.path, view.query, {"Host": view.headers.get("host"),
                                                           "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    assert check(with_hash, now=FIXED).payload is PayloadMode.UNSIGNED


def test_session_tokens_are_refused(client):
    sent = capture(boto3_client(), "get_object", Bucket="b", Key="k")
    error = refused(sent.view(x_amz_security_token="FQoGZXIvYXdzE"))
    assert (error.code, error.status) == ("InvalidToken", 400)
    view = minio_presigned("GET", "bkt", "k", date=FIXED, expires=600)
    error = refused(RequestView("GET", view.path, view.query + "&X-Amz-Security-Token=abc", view.headers), now=FIXED)
    assert error.code == "InvalidToken"


def test_header_and_query_authentication_together_are_refused():
    view = minio_signed("GET", "bkt", "k", date=FIXED)
    both = RequestView("GET", view.path, "X-Amz-Algorithm=AWS4-HMAC-SHA256", view.headers)
    assert refused(both, now=FIXED).code == "InvalidArgument"


GOOD = ("AWS4-HMAC-SHA256 Credential=SSAKEXAMPLEKEYID2345/20250301/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + "ab" * 32)


@pytest.mark.parametrize("authorization, code", [
    (GOOD.replace(", Signature=" + "ab" * 32, ""), "AuthorizationHeaderMalformed"),
    (GOOD.replace("Credential=SSAKEXAMPLEKEYID2345/20250301/us-east-1/s3/aws4_request, ", ""),
     "AuthorizationHeaderMalformed"),
    (GOOD.replace("SignedHeaders=host;x-amz-content-sha256;x-amz-date, ", ""), "AuthorizationHeaderMalformed"),
    (GOOD.replace("/aws4_request", ""), "AuthorizationHeaderMalformed"),
    (GOOD.replace("/s3/", "/ec2/"), "AuthorizationHeaderMalformed"),
    (GOOD.replace("aws4_request", "aws5_request"), "AuthorizationHeaderMalformed"),
    (GOOD.replace("/20250301/", "/2025031/"), "AuthorizationHeaderMalformed"),
    (GOOD.replace("/20250301/", "/20250302/"), "AuthorizationHeaderMalformed"),
    (GOOD.replace("SSAKEXAMPLEKEYID2345/", "/"), "AuthorizationHeaderMalformed"),
    (GOOD.replace("host;", ""), "AuthorizationHeaderMalformed"),
    (GOOD.replace("host;", "Host;"), "AuthorizationHeaderMalformed"),
    (GOOD.replace("ab" * 32, "zz" * 32), "AuthorizationHeaderMalformed"),
    (GOOD.replace("ab" * 32, "ab" * 31), "AuthorizationHeaderMalformed"),
    (GOOD + ", Signature=" + "cd" * 32, "AuthorizationHeaderMalformed"),
    (GOOD + ", Extra=1", "AuthorizationHeaderMalformed"),
    (GOOD.replace("Credential=", "Credential "), "AuthorizationHeaderMalformed"),
    ("AWS SSAKEXAMPLEKEYID2345:c2lnbmF0dXJl", "InvalidRequest"),
    ("Bearer eyJhbGciOi", "InvalidArgument"),
    ("AWS4-ECDSA-P256-SHA256 Credential=x", "InvalidArgument"),
    ("", "InvalidArgument"),
])
def test_garbled_authorization_headers(authorization, code):
    headers = {"Host": "s3.example.test", "x-amz-date": "20250301T120000Z",
               "x-amz-content-sha256": hashlib.sha256(b"").hexdigest(), "Authorization": authorization}
    error = refused(RequestView("GET", "/bkt/k", "", headers), now=FIXED)
    assert error.code == code
    assert error.status == 400


def test_a_request_without_a_date_or_payload_hash_is_refused():
    view = minio_signed("GET", "bkt", "k", date=FIXED)
    assert refused(replace_header(view, "x-amz-date", None), now=FIXED).code == "AccessDenied"
    error = refused(replace_header(view, "x-amz-content-sha256", None), now=FIXED)
    assert (error.code, error.status) == ("InvalidRequest", 400)
    error = refused(replace_header(view, "x-amz-content-sha256", "not-a-hash"), now=FIXED)
    assert (error.code, error.status) == ("InvalidArgument", 400)
    error = refused(replace_header(view, "x-amz-content-sha256", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"),
                    now=FIXED)
    assert (error.code, error.status) == ("NotImplemented", 501)


def test_the_date_header_stands_in_for_x_amz_date():
    view = minio_signed("GET", "bkt", "k", date=FIXED, headers={"Date": "Sat, 01 Mar 2025 12:00:00 GMT"},
                        amz_date=False)
    assert "x-amz-date" not in view.headers
    assert check(view, now=FIXED).signing.timestamp == "20250301T120000Z"
    assert refused(view, now=FIXED + dt.timedelta(hours=1)).code == "RequestTimeTooSkewed"
    garbled = replace_header(view, "Date", "yesterday")
    assert refused(garbled, now=FIXED).code == "AccessDenied"


def test_from_target_splits_origin_and_absolute_forms():
    view = RequestView.from_target("GET", "/bkt/a%20b?list-type=2&prefix=x", {"Host": "h"})
    assert (view.path, view.query) == ("/bkt/a%20b", "list-type=2&prefix=x")
    view = RequestView.from_target("GET", "http://h:9000/bkt/k?acl", [("Host", "h:9000")])
    assert (view.path, view.query, view.headers.get("HOST")) == ("/bkt/k", "acl", "h:9000")


# ---- canonical forms -------------------------------------------------------------------------------------

def test_canonical_uri_encodes_once_and_never_normalises():
    assert canonical_uri("") == "/"
    assert canonical_uri("/bkt/a/../b/./c//d") == "/bkt/a/../b/./c//d"
    assert canonical_uri("/bkt/a%20b+c%2Bd~e%7Ef!") == "/bkt/a%20b%2Bc%2Bd~e~f%21"
    assert canonical_uri("/bkt/%C3%BC%2F") == "/bkt/%C3%BC/"
    # a '%' that starts no escape is itself encoded, once
    assert canonical_uri("/bkt/100%") == "/bkt/100%25"


def test_canonical_query_sorts_by_encoded_name_then_value():
    pairs = query_pairs("b=2&a=2&a=1&acl&A=x&a%20b=c+d&uploads=")
    assert canonical_query(pairs) == "A=x&a=1&a=2&a%20b=c%20d&acl=&b=2&uploads="
    assert canonical_query(query_pairs("X-Amz-Signature=s&k=v"), without="X-Amz-Signature") == "k=v"


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_text, _text), max_size=6))
def test_canonical_query_is_independent_of_how_the_client_escaped(params):
    # the same parameters escaped as botocore does, as urllib's form encoding does (+ for space), and
    # with every byte escaped: one canonical string, equal to S3's definition
    strict = "&".join(f"{quote(n, safe='-_.~')}={quote(v, safe='-_.~')}" for n, v in params)
    form = "&".join(f"{quote(n, safe='').replace('%20', '+')}={quote(v, safe='').replace('%20', '+')}"
                    for n, v in params)
    every = "&".join("=".join("".join(f"%{b:02x}" for b in s.encode()) for s in pair) for pair in params)
    expected = "&".join(f"{n}={v}" for n, v in sorted(
        (quote(n, safe="-_.~"), quote(v, safe="-_.~")) for n, v in params))
    for raw in (strict, form, every):
        assert canonical_query(query_pairs(raw)) == expected, raw


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(key=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40),
       prefix=_text)
def test_any_key_and_query_botocore_signs_verifies(client, key, prefix):
    sent = capture(client, "get_object", Bucket="bkt", Key=key, ResponseContentType=prefix or "a/b")
    assert check(sent.view()) is not None
    listed = capture(client, "list_objects", Bucket="bkt", Prefix=prefix, Marker=key)
    assert check(listed.view()) is not None


# ---- the body against x-amz-content-sha256 ----------------------------------------------------------------

def _drain(stream, size: int) -> bytes:
    out = bytearray()
    while piece := stream.read(size):
        out += piece
    return bytes(out)


@pytest.mark.parametrize("length", [None, 10_000])
@pytest.mark.parametrize("size", [1, 333, 1 << 20])
def test_a_body_matching_its_declared_sha256_streams_through(length, size):
    body = bytes(range(256)) * 39 + b"0123456789abcdef"  # 10000 bytes
    stream = Sha256CheckedBody(io.BytesIO(body), hashlib.sha256(body).hexdigest(), length)
    assert _drain(stream, size) == body


@pytest.mark.parametrize("length", [None, 10_000])
def test_a_body_not_matching_its_sha256_raises_instead_of_ending(length):
    body = b"x" * 10_000
    stream = Sha256CheckedBody(io.BytesIO(body), hashlib.sha256(b"y" * 10_000).hexdigest(), length)
    received = bytearray()
    with pytest.raises(S3Error) as caught:
        while piece := stream.read(4096):
            received += piece
    assert (caught.value.code, caught.value.status) == ("XAmzContentSHA256Mismatch", 400)
    assert caught.value.extra["S3ComputedContentSHA256"] == hashlib.sha256(body).hexdigest()
    # with a known length the read that would hand out the last byte raises; without one, only the
    # end of the stream tells, so the read that would report the end raises
    assert len(received) == (len(body) if length is None else 8192)
    with pytest.raises(S3Error):  # and it stays broken
        stream.read(1)


def test_a_reader_that_stops_at_the_length_still_gets_the_mismatch():
    # Spool.receive reads exactly Content-Length bytes and never asks for the end
    body = b"z" * 100
    stream = Sha256CheckedBody(io.BytesIO(body + b"trailing"), "0" * 64, 100)
    with pytest.raises(S3Error, match="XAmzContentSHA256Mismatch"):
        stream.read(100)


def test_a_short_body_is_incomplete():
    stream = Sha256CheckedBody(io.BytesIO(b"short"), hashlib.sha256(b"short").hexdigest(), 10)
    with pytest.raises(S3Error) as caught:
        _drain(stream, 100)
    assert caught.value.code == "IncompleteBody"
