"""aws-chunked bodies: AWS's published vectors, what boto3 really sends, and every way to break a body."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import itertools
import zlib

import crc32c
import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha1Checksum, Sha256Checksum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage_core.s3.chunked import (
    MAX_CHUNK_SIZE,
    MAX_LINE,
    AwsChunkedBody,
    content_encoding_to_store,
    request_body,
    trailer_names,
)
from storage_core.s3.errors import S3Error
from storage_core.s3.sigv4 import (
    EMPTY_SHA256,
    Headers,
    PayloadMode,
    RequestView,
    Sha256CheckedBody,
    VerifiedRequest,
    verify,
)
from tests.support.s3_signing import (
    ACCESS_KEY,
    SECRET,
    boto3_client,
    capture,
    minio_presigned,
    signed_chunks,
    signing_context,
    unsigned_chunks,
)

# ---- AWS's example: "Signature Calculations for the Authorization Header: Transferring Payload in Multiple
# Chunks", a PUT of 66560 bytes of "a" in chunks of 64 KiB, 1 KiB and the final empty one -----------------
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_TIME = dt.datetime(2013, 5, 24, tzinfo=dt.UTC)
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
CHUNK_1 = "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
CHUNK_2 = "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
CHUNK_FINAL = "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
# the AWS common runtime's test of trailer signing over the same example (trailers first/second/third)
TRAILER_SIGNATURE = "df5735bd9f3295cd9386572292562fefc93ba94e80a0a1ddcbd652c4e0a75e6c"


def aws_example_request() -> RequestView:
    authorization = (f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/20130524/us-east-1/s3/aws4_request,"
                     "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
                     f"x-amz-decoded-content-length;x-amz-storage-class,Signature={SEED}")
    return RequestView("PUT", "/examplebucket/chunkObject.txt", "", [
        ("Host", "s3.amazonaws.com"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("Authorization", authorization),
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        ("Content-Encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("Content-Length", "66824"),
    ])


def aws_example_body(corrupt_at: int | None = None) -> bytes:
    body = bytearray(f"10000;chunk-signature={CHUNK_1}\r\n".encode() + b"a" * 65536 + b"\r\n"
                     + f"400;chunk-signature={CHUNK_2}\r\n".encode() + b"a" * 1024 + b"\r\n"
                     + f"0;chunk-signature={CHUNK_FINAL}\r\n\r\n".encode())
    if corrupt_at is not None:
        body[corrupt_at] = ord("b")
    return bytes(body)


def aws_verified() -> VerifiedRequest:
    return verify(aws_example_request(), lookup={AWS_KEY_ID: AWS_SECRET}.get, region="us-east-1", now=AWS_TIME)


def drain(stream, size: int) -> bytes:
    out = bytearray()
    while piece := stream.read(size):
        out += piece
    return bytes(out)


def test_the_aws_example_seed_signature_verifies():
    verified = aws_verified()
    assert verified.payload is PayloadMode.STREAMING_SIGNED
    assert verified.signing.seed_signature == SEED
    assert verified.signing.scope == "20130524/us-east-1/s3/aws4_request"


def test_the_aws_example_chunk_signatures_chain_from_the_seed():
    signing = aws_verified().signing
    first = signing.chunk_signature(SEED, hashlib.sha256(b"a" * 65536).hexdigest())
    second = signing.chunk_signature(first, hashlib.sha256(b"a" * 1024).hexdigest())
    final = signing.chunk_signature(second, EMPTY_SHA256)
    assert (first, second, final) == (CHUNK_1, CHUNK_2, CHUNK_FINAL)
    trailer = hashlib.sha256(b"first:1st\nsecond:2nd\nthird:3rd\n").hexdigest()
    assert signing.trailer_signature(final, trailer) == TRAILER_SIGNATURE


@pytest.mark.parametrize("size", [1, 7, 8192, 65536, 100_000, -1])
def test_the_aws_example_body_decodes_whatever_the_read_size(size):
    view = aws_example_request()
    body = aws_example_body()
    assert len(body) == 66824  # the example's Content-Length
    decoder = AwsChunkedBody.for_request(io.BytesIO(body), aws_verified(), view.headers)
    data = decoder.read(-1) if size == -1 else drain(decoder, size)
    assert data == b"a" * 66560
    assert decoder.finished and decoder.decoded_length == 66560 and decoder.checksums == {}


def test_a_changed_byte_in_the_second_chunk_raises_before_any_of_it_is_returned():
    view = aws_example_request()
    first_header = len(f"10000;chunk-signature={CHUNK_1}\r\n")
    second_data = first_header + 65536 + 2 + len(f"400;chunk-signature={CHUNK_2}\r\n")
    decoder = AwsChunkedBody.for_request(io.BytesIO(aws_example_body(corrupt_at=second_data + 10)),
                                         aws_verified(), view.headers)
    received = bytearray()
    with pytest.raises(S3Error) as caught:
        while piece := decoder.read(1000):
            received += piece
    assert (caught.value.code, caught.value.status) == ("SignatureDoesNotMatch", 403)
    # only bytes of the first, verified chunk (the next chunk is read and checked as soon as the first
    # is used up, so its last bytes go with the failure)
    assert bytes(received) == b"a" * len(received) and 60_000 < len(received) <= 65536
    with pytest.raises(S3Error):
        decoder.read(1)  # broken stays broken


def test_a_changed_byte_in_the_first_chunk_returns_nothing():
    decoder = AwsChunkedBody.for_request(io.BytesIO(aws_example_body(corrupt_at=200)), aws_verified(),
                                         aws_example_request().headers)
    with pytest.raises(S3Error, match="SignatureDoesNotMatch"):
        decoder.read(1)


def test_a_wrong_final_chunk_signature_fails_the_read_that_returns_the_last_bytes():
    body = aws_example_body().replace(CHUNK_FINAL.encode(), b"0" * 64)
    decoder = AwsChunkedBody.for_request(io.BytesIO(body), aws_verified(), aws_example_request().headers)
    assert decoder.read(65536) == b"a" * 65536
    with pytest.raises(S3Error, match="SignatureDoesNotMatch"):
        decoder.read(1024)  # exactly the rest: a reader stopping at the declared length still hears of it


def test_swapped_chunks_break_the_chain():
    context = signing_context(SECRET, AWS_TIME, "ab" * 32)
    one = signed_chunks(context, [b"1" * 100, b"2" * 100])
    header = len(f"64;chunk-signature={'0' * 64}\r\n")
    first, second = one[:header + 102], one[header + 102:2 * (header + 102)]
    decoder = AwsChunkedBody(io.BytesIO(second + first + one[2 * (header + 102):]), PayloadMode.STREAMING_SIGNED,
                             signing=context, decoded_length=200)
    with pytest.raises(S3Error, match="SignatureDoesNotMatch"):
        decoder.read(1)


@pytest.mark.parametrize("declared", [66559, 66561, 0])
def test_a_wrong_decoded_length_is_an_incomplete_body(declared):
    decoder = AwsChunkedBody(io.BytesIO(aws_example_body()), PayloadMode.STREAMING_SIGNED,
                             signing=aws_verified().signing, decoded_length=declared)
    with pytest.raises(S3Error) as caught:
        drain(decoder, 4096)
    assert (caught.value.code, caught.value.status) == ("IncompleteBody", 400)


def test_signed_chunks_need_the_decoded_length():
    with pytest.raises(S3Error) as caught:
        AwsChunkedBody(io.BytesIO(b""), PayloadMode.STREAMING_SIGNED, signing=aws_verified().signing)
    assert (caught.value.code, caught.value.status) == ("MissingContentLength", 411)


def test_a_truncated_body_is_incomplete_wherever_it_is_cut():
    context = signing_context(SECRET, AWS_TIME, "cd" * 32)
    data = [b"x" * 10, b"y" * 5]
    checksum = [("x-amz-checksum-crc32", base64.b64encode(zlib.crc32(b"x" * 10 + b"y" * 5).to_bytes(4, "big"))
                 .decode())]
    forms = [
        (PayloadMode.STREAMING_SIGNED, signed_chunks(context, data), []),
        (PayloadMode.STREAMING_SIGNED_TRAILER, signed_chunks(context, data, trailer=checksum),
         ["x-amz-checksum-crc32"]),
        (PayloadMode.STREAMING_UNSIGNED_TRAILER, unsigned_chunks(data, checksum), ["x-amz-checksum-crc32"]),
    ]
    for mode, body, trailers in forms:
        assert drain(AwsChunkedBody(io.BytesIO(body), mode, signing=context, decoded_length=15,
                                    trailers=trailers), 3) == b"x" * 10 + b"y" * 5
        for cut in range(len(body)):
            decoder = AwsChunkedBody(io.BytesIO(body[:cut]), mode, signing=context, decoded_length=15,
                                     trailers=trailers)
            if mode.trailer and cut == len(body) - 2:
                # all but the last empty line: everything was received and checked
                assert drain(decoder, 3) == b"x" * 10 + b"y" * 5
                continue
            with pytest.raises(S3Error) as caught:
                drain(decoder, 3)
            assert caught.value.code == "IncompleteBody", (mode, cut, caught.value)


def test_data_after_the_end_is_refused():
    body = unsigned_chunks([b"abc"]) + b"more"
    decoder = AwsChunkedBody(io.BytesIO(body), PayloadMode.STREAMING_UNSIGNED_TRAILER)
    with pytest.raises(S3Error, match="data after the end"):
        drain(decoder, 100)


@pytest.mark.parametrize("header", [
    f"{MAX_CHUNK_SIZE + 1:x};chunk-signature={'a' * 64}\r\n".encode(),  # beyond the buffer limit
    f"{'f' * 17};chunk-signature={'a' * 64}\r\n".encode(),  # more hex digits than any size needs
    f"-10;chunk-signature={'a' * 64}\r\n".encode(),
    f"10;chunk-signature={'a' * 63}\r\n".encode(),
    f"10;chunk-signature={'A' * 64}\r\n".encode(),
    f"10;chunk-signature={'a' * 64};x=y\r\n".encode(),
    b"10\r\n",  # unsigned header in a signed body
    b"1" * (MAX_LINE + 10) + b"\r\n",  # an endless header
    b"1" * (10 * MAX_LINE),  # no line end at all
])
def test_bad_or_oversized_chunk_headers_are_refused_before_any_data_is_buffered(header):
    class Counting(io.BytesIO):
        asked = 0

        def read(self, size=-1):
            Counting.asked += size if size and size > 0 else 0
            return super().read(size)

    raw = Counting(header + b"z" * (MAX_CHUNK_SIZE + 10))
    decoder = AwsChunkedBody(raw, PayloadMode.STREAMING_SIGNED, signing=aws_verified().signing,
                             decoded_length=1 << 40)
    with pytest.raises(S3Error) as caught:
        decoder.read(100)
    assert (caught.value.code, caught.value.status) == ("InvalidRequest", 400)
    assert Counting.asked < 3 * MAX_LINE  # the chunk's data was never read, let alone held


def test_unsigned_chunk_headers_are_strict():
    for header in (b"zz\r\n", b"10;chunk-signature=" + b"a" * 64 + b"\r\n", b" 10\r\n", b"\r\n"):
        decoder = AwsChunkedBody(io.BytesIO(header + b"x" * 16 + b"\r\n0\r\n\r\n"),
                                 PayloadMode.STREAMING_UNSIGNED_TRAILER)
        with pytest.raises(S3Error, match="InvalidRequest"):
            decoder.read(10)
    decoder = AwsChunkedBody(io.BytesIO(b"3\r\nabcXX0\r\n\r\n"), PayloadMode.STREAMING_UNSIGNED_TRAILER)
    with pytest.raises(S3Error, match="expected CRLF"):
        drain(decoder, 10)


# ---- unsigned chunks with a trailing checksum: what boto3 sends ---------------------------------------------

@pytest.mark.parametrize("checksum_cls, name", [(Crc32Checksum, "crc32"), (Sha1Checksum, "sha1"),
                                                (Sha256Checksum, "sha256")])
@pytest.mark.parametrize("size", [0, 1, 1000, 3 * 1024 * 1024 + 17])
def test_botocore_aws_chunked_wrapper_bodies_decode_and_verify(checksum_cls, name, size):
    data = bytes(i % 251 for i in range(size))
    wire = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=checksum_cls,
                             checksum_name=f"x-amz-checksum-{name}").read()
    decoder = AwsChunkedBody(io.BytesIO(wire), PayloadMode.STREAMING_UNSIGNED_TRAILER, decoded_length=size,
                             trailers=[f"x-amz-checksum-{name}"])
    assert drain(decoder, 65536) == data
    assert decoder.trailers == {f"x-amz-checksum-{name}": checksum_cls().handle(io.BytesIO(data))}
    assert decoder.checksums == {name: checksum_cls().handle(io.BytesIO(data))}


@pytest.mark.parametrize("name, label", [("crc32", "CRC32"), ("sha256", "SHA256")])
def test_a_wrong_trailing_checksum_is_a_bad_digest_even_for_a_reader_stopping_at_the_length(name, label):
    data = b"payload " * 1000
    wire = AwsChunkedWrapper(io.BytesIO(data), checksum_cls={"crc32": Crc32Checksum, "sha256": Sha256Checksum}[name],
                             checksum_name=f"x-amz-checksum-{name}", chunk_size=3000).read()
    good = wire.rsplit(b":", 1)[1].split(b"\r\n")[0]
    other = AwsChunkedWrapper(io.BytesIO(data + b"!"), checksum_cls=Crc32Checksum if name == "crc32"
                              else Sha256Checksum, checksum_name="x").read().rsplit(b":", 1)[1].split(b"\r\n")[0]
    bad = wire.replace(b":" + good, b":" + other)
    decoder = AwsChunkedBody(io.BytesIO(bad), PayloadMode.STREAMING_UNSIGNED_TRAILER, decoded_length=len(data),
                             trailers=[f"x-amz-checksum-{name}"])
    assert decoder.read(6000) == data[:3000]  # streamed through, one chunk at a time
    received = 3000
    with pytest.raises(S3Error) as caught:
        while received < len(data):  # as Spool.receive: read the declared length, never ask for the end
            received += len(decoder.read(len(data) - received))
    assert received == 6000  # the read that would have returned the last chunk raised instead
    assert (caught.value.code, caught.value.status) == ("BadDigest", 400)
    assert caught.value.message == f"The {label} you specified did not match the calculated checksum."


def test_a_malformed_trailing_checksum_is_an_invalid_request():
    wire = unsigned_chunks([b"abc"], [("x-amz-checksum-crc32", "not base64!")])
    decoder = AwsChunkedBody(io.BytesIO(wire), PayloadMode.STREAMING_UNSIGNED_TRAILER,
                             trailers=["x-amz-checksum-crc32"])
    with pytest.raises(S3Error, match="trailing header is invalid"):
        drain(decoder, 10)


def test_crc32c_trailers_are_verified():
    data = b"crc32c data" * 99
    value = base64.b64encode(crc32c.crc32c(data).to_bytes(4, "big")).decode()
    wire = unsigned_chunks([data[:500], data[500:]], [("x-amz-checksum-crc32c", value)])
    decoder = AwsChunkedBody(io.BytesIO(wire), PayloadMode.STREAMING_UNSIGNED_TRAILER,
                             trailers=["x-amz-checksum-crc32c"])
    assert drain(decoder, 777) == data and decoder.checksums == {"crc32c": value}


def test_trailers_must_be_announced_present_and_supported():
    crc = base64.b64encode(zlib.crc32(b"abc").to_bytes(4, "big")).decode()
    unannounced = unsigned_chunks([b"abc"], [("x-amz-checksum-crc32", crc)])
    with pytest.raises(S3Error, match="MalformedTrailerError"):
        drain(AwsChunkedBody(io.BytesIO(unannounced), PayloadMode.STREAMING_UNSIGNED_TRAILER), 10)
    missing = unsigned_chunks([b"abc"])
    with pytest.raises(S3Error, match="MalformedTrailerError"):
        drain(AwsChunkedBody(io.BytesIO(missing), PayloadMode.STREAMING_UNSIGNED_TRAILER,
                             trailers=["x-amz-checksum-crc32"]), 10)
    twice = unsigned_chunks([b"abc"], [("x-amz-checksum-crc32", crc)] * 2)
    with pytest.raises(S3Error, match="MalformedTrailerError"):
        drain(AwsChunkedBody(io.BytesIO(twice), PayloadMode.STREAMING_UNSIGNED_TRAILER,
                             trailers=["x-amz-checksum-crc32"]), 10)
    for name in ("x-amz-checksum-crc64nvme", "x-amz-meta-colour", "x-amz-checksum-md5"):
        with pytest.raises(S3Error) as caught:
            AwsChunkedBody(io.BytesIO(b""), PayloadMode.STREAMING_UNSIGNED_TRAILER, trailers=[name])
        assert caught.value.code == "InvalidRequest"
    with pytest.raises(S3Error):
        AwsChunkedBody(io.BytesIO(b""), PayloadMode.STREAMING_SIGNED, signing=aws_verified().signing,
                       decoded_length=0, trailers=["x-amz-checksum-crc32"])


def test_boto3_put_object_over_tls_verifies_and_decodes_end_to_end():
    client = boto3_client("https://s3.example.test:9443")
    data = bytes(range(256)) * 4099
    for operation, params in [("put_object", {"Key": "dir/ä b+c.bin"}),
                              ("upload_part", {"Key": "big", "UploadId": "u-1", "PartNumber": 2}),
                              ("put_object", {"Key": "sha", "ChecksumAlgorithm": "SHA256"}),
                              ("put_object", {"Key": "sha1", "ChecksumAlgorithm": "SHA1"})]:
        sent = capture(client, operation, Bucket="bkt", Body=data, **params)
        view = sent.view()
        verified = verify(view, lookup={ACCESS_KEY: SECRET}.get, region="us-east-1", now=dt.datetime.now(dt.UTC))
        body = request_body(io.BytesIO(sent.body), verified, view.headers, None)
        assert isinstance(body, AwsChunkedBody)
        assert drain(body, 100_000) == data
        assert content_encoding_to_store(view.headers.get("content-encoding")) is None
        expected = {"SHA256": "sha256", "SHA1": "sha1"}.get(params.get("ChecksumAlgorithm", ""), "crc32")
        assert set(body.checksums) == {expected}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(0, 5000), max_size=8),
       reads=st.lists(st.integers(1, 3000), min_size=1, max_size=5),
       mode=st.sampled_from([PayloadMode.STREAMING_SIGNED, PayloadMode.STREAMING_SIGNED_TRAILER,
                             PayloadMode.STREAMING_UNSIGNED_TRAILER]),
       minio_style=st.booleans())
def test_any_chunking_and_any_read_sizes_give_back_the_bytes(data, cuts, reads, mode, minio_style):
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    context = signing_context(SECRET, AWS_TIME, hashlib.sha256(data).hexdigest())
    crc = [("x-amz-checksum-crc32", base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode())]
    if mode is PayloadMode.STREAMING_SIGNED:
        wire, trailers = signed_chunks(context, chunks), []
    elif mode is PayloadMode.STREAMING_SIGNED_TRAILER:
        # minio-go ends a trailer field with "\n" before the CRLF
        wire = signed_chunks(context, chunks, trailer=crc, trailer_line_end="\n\r\n" if minio_style else "\r\n")
        trailers = ["x-amz-checksum-crc32"]
    else:
        wire, trailers = unsigned_chunks(chunks, crc), ["x-amz-checksum-crc32"]
    decoder = AwsChunkedBody(io.BytesIO(wire), mode, signing=context, decoded_length=len(data), trailers=trailers)
    out = bytearray()
    step = 0
    while piece := decoder.read(reads[step % len(reads)]):
        assert len(piece) <= reads[step % len(reads)]
        out += piece
        step += 1
    assert bytes(out) == data and decoder.finished


def test_a_signed_trailer_with_a_wrong_or_missing_signature_is_refused():
    context = signing_context(SECRET, AWS_TIME, "ef" * 32)
    crc = [("x-amz-checksum-crc32", base64.b64encode(zlib.crc32(b"hello").to_bytes(4, "big")).decode())]
    wire = signed_chunks(context, [b"hello"], trailer=crc)
    good = AwsChunkedBody(io.BytesIO(wire), PayloadMode.STREAMING_SIGNED_TRAILER, signing=context, decoded_length=5,
                          trailers=["x-amz-checksum-crc32"])
    assert drain(good, 2) == b"hello" and good.trailers["x-amz-checksum-crc32"] == crc[0][1]
    signature = wire.rsplit(b"x-amz-trailer-signature:", 1)[1][:64]
    for broken in (wire.replace(signature, b"0" * 64), wire.replace(b"x-amz-trailer-signature:" + signature + b"\r\n",
                                                                    b"")):
        decoder = AwsChunkedBody(io.BytesIO(broken), PayloadMode.STREAMING_SIGNED_TRAILER, signing=context,
                                 decoded_length=5, trailers=["x-amz-checksum-crc32"])
        with pytest.raises(S3Error) as caught:
            drain(decoder, 2)
        assert caught.value.code in ("SignatureDoesNotMatch", "MalformedTrailerError")
    # the checksum is signed too: changing it breaks the trailer signature before the checksum is compared
    other = base64.b64encode(zlib.crc32(b"hellO").to_bytes(4, "big"))
    decoder = AwsChunkedBody(io.BytesIO(wire.replace(crc[0][1].encode(), other)), PayloadMode.STREAMING_SIGNED_TRAILER,
                             signing=context, decoded_length=5, trailers=["x-amz-checksum-crc32"])
    with pytest.raises(S3Error, match="SignatureDoesNotMatch"):
        drain(decoder, 2)


def test_a_trailer_signature_in_an_unsigned_body_is_refused():
    crc = base64.b64encode(zlib.crc32(b"abc").to_bytes(4, "big")).decode()
    wire = unsigned_chunks([b"abc"], [("x-amz-checksum-crc32", crc), ("x-amz-trailer-signature", "a" * 64)])
    decoder = AwsChunkedBody(io.BytesIO(wire), PayloadMode.STREAMING_UNSIGNED_TRAILER,
                             trailers=["x-amz-checksum-crc32"])
    with pytest.raises(S3Error, match="MalformedTrailerError"):
        drain(decoder, 10)


# ---- helpers for the door ------------------------------------------------------------------------------

def test_content_encoding_to_store_drops_aws_chunked():
    assert content_encoding_to_store(None) is None
    assert content_encoding_to_store("aws-chunked") is None
    assert content_encoding_to_store("gzip,aws-chunked") == "gzip"
    assert content_encoding_to_store("AWS-Chunked , br") == "br"


def test_trailer_names_are_lower_case_and_comma_separated():
    assert trailer_names(None) == []
    assert trailer_names("X-Amz-Checksum-CRC32") == ["x-amz-checksum-crc32"]
    assert trailer_names("a, b,,") == ["a", "b"]


def test_request_body_picks_the_check_the_signature_asks_for():
    client = boto3_client()
    sent = capture(client, "put_object", Bucket="bkt", Key="k", Body=b"plain")
    view = sent.view()
    verified = verify(view, lookup={ACCESS_KEY: SECRET}.get, region="us-east-1", now=dt.datetime.now(dt.UTC))
    body = request_body(io.BytesIO(b"plain"), verified, view.headers, 5)
    assert isinstance(body, Sha256CheckedBody) and body.read(5) == b"plain"
    raw = io.BytesIO(b"anything")
    assert request_body(raw, None, Headers(), 8) is raw
    # a presigned PUT's body is unsigned: taken as it is
    presigned = minio_presigned("PUT", "bkt", "k", date=AWS_TIME, expires=60)
    verified = verify(presigned, lookup={ACCESS_KEY: SECRET}.get, region="us-east-1", now=AWS_TIME)
    assert verified.payload is PayloadMode.UNSIGNED
    assert request_body(raw, verified, presigned.headers, 8) is raw
