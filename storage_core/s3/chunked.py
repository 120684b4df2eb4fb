"""Decoding of ``Content-Encoding: aws-chunked`` request bodies, with chunk signatures and trailing checksums.

Three forms reach an S3 server (``x-amz-content-sha256`` says which, see ``sigv4.PayloadMode``)::

    STREAMING-AWS4-HMAC-SHA256-PAYLOAD
        10000;chunk-signature=<sig>\\r\\n<data>\\r\\n ... 0;chunk-signature=<sig>\\r\\n\\r\\n
    STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER
        the same up to the last chunk, then x-amz-checksum-<alg>:<b64>\\r\\nx-amz-trailer-signature:<sig>\\r\\n\\r\\n
    STREAMING-UNSIGNED-PAYLOAD-TRAILER
        10000\\r\\n<data>\\r\\n ... 0\\r\\nx-amz-checksum-crc32:<b64>\\r\\n\\r\\n

The last is what current boto3 and aws-cli send for PutObject and UploadPart.

Nothing unverified is ever handed out, and the end is checked by the read that returns the last byte:

- A signed chunk is buffered whole and returned only once its signature holds: its signature is over the
  chunk's sha256, known only after its last byte. That bounds memory by one chunk, so the size a header
  may announce is bounded (``max_chunk_size``, 16 MiB like MinIO; clients use 64 KiB to 1 MiB) and
  refused before anything is buffered. Only a client holding a valid key gets this far.
- Unsigned chunks stream through. Their integrity is the trailing checksum, known only at the end.
- As soon as a chunk is used up, the next chunk header is read; when it is the last one, the final chunk
  signature, the trailer (its signature and checksums) and the decoded length are checked before the
  read returns. A caller that reads exactly ``x-amz-decoded-content-length`` bytes and stops (as
  ``Spool.receive`` does) therefore still gets the error, and stores nothing.

Trailer lines end with CRLF; minio-go ends each trailer with ``\\n`` before that CRLF
(``x-amz-checksum-crc32c:<b64>\\n\\r\\n``), so a line may hold several ``\\n``-separated fields. The
trailer signature covers ``name:value\\n`` of each trailer field as sent, in order.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import BinaryIO

from storage_core.checksums import HEADER_PREFIX, Checksum, algorithm_of
from storage_core.errors import InvalidArgument
from storage_core.s3.errors import S3Error
from storage_core.s3.sigv4 import (
    EMPTY_SHA256,
    Headers,
    PayloadMode,
    Sha256CheckedBody,
    SigningContext,
    VerifiedRequest,
)

MiB = 1024 * 1024
MAX_CHUNK_SIZE = 16 * MiB  # of a signed chunk, which is buffered whole
MAX_LINE = 4096  # a chunk header or trailer line; a signed chunk header is 86 bytes
MAX_TRAILER_FIELDS = 16
_READ = 64 * 1024  # bytes asked of the raw stream at once while looking for a line end
_SIGNED_HEADER = re.compile(rb"([0-9a-fA-F]{1,16});chunk-signature=([0-9a-f]{64})")
_UNSIGNED_HEADER = re.compile(rb"[0-9a-fA-F]{1,16}")
TRAILER_SIGNATURE = "x-amz-trailer-signature"


def _malformed(why: str) -> S3Error:
    return S3Error("InvalidRequest", f"Malformed aws-chunked body: {why}.")


def _incomplete(why: str) -> S3Error:
    return S3Error("IncompleteBody", f"{why}.")


def _signature_mismatch(what: str) -> S3Error:
    return S3Error("SignatureDoesNotMatch", f"The {what} signature we calculated does not match the signature "
                                            "you provided. Check your key and signing method.")


def content_encoding_to_store(header: str | None) -> str | None:
    """The Content-Encoding to record for the object: the request's, less ``aws-chunked`` (S3 drops it)."""
    if header is None:
        return None
    kept = [token.strip() for token in header.split(",") if token.strip() and token.strip().lower() != "aws-chunked"]
    return ", ".join(kept) or None


def trailer_names(header: str | None) -> list[str]:
    """The lower-case names ``x-amz-trailer`` announces (comma-separated)."""
    if not header:
        return []
    return [name.strip().lower() for name in header.split(",") if name.strip()]


def decoded_content_length(headers: Headers) -> int | None:
    """``x-amz-decoded-content-length``, or None when absent; InvalidArgument unless a decimal integer."""
    value = headers.get("x-amz-decoded-content-length")
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise S3Error("InvalidArgument", "x-amz-decoded-content-length must be a non-negative integer",
                      extra={"ArgumentName": "x-amz-decoded-content-length", "ArgumentValue": value[:40]})
    return int(value)


class AwsChunkedBody:
    """The decoded bytes of an ``aws-chunked`` body, as a file-like ``read(n)`` stream.

    ``raw`` must end where the request body ends (werkzeug's ``request.stream``): after the final
    CRLF the decoder checks that nothing follows. ``signing`` is ``VerifiedRequest.signing`` and is
    required for the signed forms. ``decoded_length`` (``x-amz-decoded-content-length``) is required
    for the signed forms and checked when given. ``trailers`` names the trailer fields expected
    (``x-amz-trailer``): each must be an ``x-amz-checksum-*`` of a supported algorithm, and is checked
    over the decoded bytes.

    Raises ``S3Error`` from ``read``: SignatureDoesNotMatch (a chunk or the trailer), BadDigest
    (a trailing checksum), IncompleteBody (early end, or not ``decoded_length`` bytes),
    InvalidRequest (malformed framing, oversized chunk, data after the end), MalformedTrailerError.
    """

    def __init__(self, raw: BinaryIO, mode: PayloadMode, *, signing: SigningContext | None = None,
                 decoded_length: int | None = None, trailers: Sequence[str] = (),
                 max_chunk_size: int = MAX_CHUNK_SIZE):
        if not mode.streaming:
            raise ValueError(f"{mode} is not an aws-chunked payload")
        if mode.signed_chunks and signing is None:
            raise ValueError("signed chunks need the request's SigningContext")
        if mode.signed_chunks and decoded_length is None:
            raise S3Error("MissingContentLength", "x-amz-decoded-content-length is required with "
                                                  f"x-amz-content-sha256: {mode.value}")
        if trailers and not mode.trailer:
            raise S3Error("InvalidRequest", f"x-amz-trailer is not allowed with x-amz-content-sha256: {mode.value}")
        self._raw = raw
        self._mode = mode
        self._signing = signing
        self._previous = signing.seed_signature if signing else ""
        self.decoded_length = decoded_length
        self._max_chunk = max_chunk_size
        self._expected_trailers = [name.lower() for name in trailers]
        self._checksums: dict[str, Checksum] = {}
        for name in self._expected_trailers:
            if not name.startswith(HEADER_PREFIX):
                raise S3Error("InvalidRequest", f"the trailer {name!r} is not supported; only {HEADER_PREFIX}* "
                                                "checksums may trail a body")
            try:
                self._checksums[name] = Checksum(algorithm_of(name))
            except InvalidArgument as exc:
                raise S3Error("InvalidRequest", exc.detail) from None
        self._buffer = bytearray()  # raw bytes read ahead of the parser: at most a line and one read
        self._chunk_left = 0  # unsigned: bytes of the current chunk not yet returned
        self._pending = memoryview(b"")  # signed: verified bytes of the current chunk not yet returned
        self._decoded = 0  # bytes announced by the chunk headers so far
        self._finished = False
        self._failed: S3Error | None = None
        self.trailers: dict[str, str] = {}  # name -> value, once the body is read to its end
        self._started = False

    @classmethod
    def for_request(cls, raw: BinaryIO, verified: VerifiedRequest, headers: Headers,
                    max_chunk_size: int = MAX_CHUNK_SIZE) -> AwsChunkedBody:
        """The decoder for a verified streaming request, from its headers."""
        return cls(raw, verified.payload, signing=verified.signing if verified.payload.signed_chunks else None,
                   decoded_length=decoded_content_length(headers),
                   trailers=trailer_names(headers.get("x-amz-trailer")), max_chunk_size=max_chunk_size)

    # ---- public --------------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """The whole body is read and every check held."""
        return self._finished

    @property
    def checksums(self) -> dict[str, str]:
        """Verified trailing checksums, algorithm -> base64 (for the response and the object record)."""
        if not self._finished:
            raise RuntimeError("the body is not read to its end")
        return {checksum.algorithm: checksum.b64digest() for checksum in self._checksums.values()}

    def read(self, size: int | None = -1) -> bytes:
        if self._failed is not None:
            raise self._failed
        try:
            if size is None or size < 0:
                out = bytearray()
                while piece := self._read_some(MiB):
                    out += piece
                return bytes(out)
            return self._read_some(size)
        except S3Error as exc:
            self._failed = exc  # a stream that broke stays broken: no later read may look like an end
            raise

    def readable(self) -> bool:
        return True

    # ---- decoding ------------------------------------------------------------------------------------

    def _read_some(self, size: int) -> bytes:
        if not self._started:
            self._started = True
            self._next_chunk()
        if self._finished or size == 0:
            return b""
        if self._mode.signed_chunks:
            out = bytes(self._pending[:size])
            self._pending = self._pending[len(out):]
            if not self._pending:
                self._next_chunk()
            return out
        want = min(size, self._chunk_left)
        if self._buffer:
            out = bytes(self._buffer[:want])
            del self._buffer[:len(out)]
        else:
            out = self._raw.read(want)
            if not out:
                raise _incomplete("The body ended inside a chunk")
        self._chunk_left -= len(out)
        for checksum in self._checksums.values():
            checksum.update(out)
        if self._chunk_left == 0:
            self._expect_crlf("after the chunk data")
            self._next_chunk()
        return out

    def _fill(self, want: int) -> bool:
        data = self._raw.read(want)
        if not data:
            return False
        self._buffer += data
        return True

    def _line(self, what: str) -> bytes | None:
        """The next CRLF-terminated line without its CRLF, or None at a clean end of the stream."""
        searched = 0
        while True:
            end = self._buffer.find(b"\r\n", max(0, searched - 1))
            if end >= 0:
                if end > MAX_LINE:
                    raise _malformed(f"{what} longer than {MAX_LINE} bytes")
                line = bytes(self._buffer[:end])
                del self._buffer[:end + 2]
                return line
            if len(self._buffer) > MAX_LINE:
                raise _malformed(f"{what} longer than {MAX_LINE} bytes")
            searched = len(self._buffer)
            if not self._fill(min(_READ, MAX_LINE + 2 - len(self._buffer))):
                if self._buffer:
                    raise _incomplete(f"The body ended inside a {what}")
                return None

    def _expect_crlf(self, where: str) -> None:
        while len(self._buffer) < 2:
            if not self._fill(2 - len(self._buffer)):
                raise _incomplete(f"The body ended before the CRLF {where}")
        if self._buffer[:2] != b"\r\n":
            raise _malformed(f"expected CRLF {where}")
        del self._buffer[:2]

    def _next_chunk(self) -> None:
        line = self._line("chunk header")
        if line is None:
            raise _incomplete("The body ended before its final zero-length chunk")
        if self._mode.signed_chunks:
            match = _SIGNED_HEADER.fullmatch(line)
            if match is None:
                raise _malformed("a chunk header must be '<hex size>;chunk-signature=<64 hex>'")
            size, signature = int(match.group(1), 16), match.group(2).decode("ascii")
        else:
            if _UNSIGNED_HEADER.fullmatch(line) is None:
                raise _malformed("a chunk header must be '<hex size>'")
            size, signature = int(line, 16), ""
        if self.decoded_length is not None and self._decoded + size > self.decoded_length:
            raise _incomplete(f"The chunks carry more than the {self.decoded_length} bytes of "
                              "x-amz-decoded-content-length")
        if self._mode.signed_chunks and size > self._max_chunk:
            raise _malformed(f"a chunk of {size} bytes exceeds the limit of {self._max_chunk} bytes")
        self._decoded += size
        if self._mode.signed_chunks:
            data = self._chunk_data(size)
            self._check_chunk_signature(signature, hashlib.sha256(data).hexdigest() if size else EMPTY_SHA256)
            for checksum in self._checksums.values():
                checksum.update(data)
            self._pending = memoryview(data)
        else:
            self._chunk_left = size
        if size == 0:
            self._finish()

    def _chunk_data(self, size: int) -> bytes:
        data = bytearray(self._buffer[:size])
        del self._buffer[:len(data)]
        while len(data) < size:
            piece = self._raw.read(min(size - len(data), MiB))
            if not piece:
                raise _incomplete("The body ended inside a chunk")
            data += piece
        if size:
            self._expect_crlf("after the chunk data")
        return bytes(data)

    def _check_chunk_signature(self, provided: str, chunk_sha256: str) -> None:
        if self._signing is None:  # pragma: no cover - the constructor requires it for signed modes
            raise RuntimeError("no signing context")
        expected = self._signing.chunk_signature(self._previous, chunk_sha256)
        if not hmac.compare_digest(expected.encode("ascii"), provided.encode("ascii")):
            raise _signature_mismatch("chunk")
        self._previous = expected

    def _finish(self) -> None:
        if self.decoded_length is not None and self._decoded != self.decoded_length:
            raise _incomplete(f"The chunks carry {self._decoded} of the {self.decoded_length} bytes of "
                              "x-amz-decoded-content-length")
        if self._mode.trailer:
            self._read_trailer()
        else:
            line = self._line("final CRLF")
            if line is None:
                raise _incomplete("The body ended before the CRLF after the final chunk")
            if line:
                raise _malformed("data after the final chunk")
        if self._buffer or self._raw.read(1):
            raise _malformed("data after the end of the body")
        for name, checksum in self._checksums.items():
            value = self.trailers[name]
            try:
                matches = checksum.matches(value)
            except InvalidArgument:
                raise S3Error("InvalidRequest", f"Value for {name} trailing header is invalid.") from None
            if not matches:
                raise S3Error("BadDigest", f"The {checksum.algorithm.upper()} you specified did not match the "
                                           "calculated checksum.")
        self._finished = True

    def _read_trailer(self) -> None:
        fields: list[str] = []
        signature: str | None = None
        cut_short = False
        for _ in range(MAX_TRAILER_FIELDS + 2):  # the fields, the signature, the empty line
            line = self._line("trailer line")
            if line is None:
                # an end of stream in place of the last empty line is tolerated, once all else was read
                cut_short = True
                break
            if not line:
                break
            for raw_field in line.split(b"\n"):
                if not raw_field:
                    continue
                try:
                    text = raw_field.decode("ascii")
                except UnicodeDecodeError:
                    raise S3Error("MalformedTrailerError") from None
                name, sep, value = text.partition(":")
                name, value = name.strip().lower(), value.strip()
                if not sep or not name:
                    raise S3Error("MalformedTrailerError")
                if name == TRAILER_SIGNATURE:
                    if not self._mode.signed_chunks or signature is not None:
                        raise S3Error("MalformedTrailerError", "unexpected x-amz-trailer-signature")
                    signature = value
                    continue
                if signature is not None or name in self.trailers or name not in self._expected_trailers:
                    raise S3Error("MalformedTrailerError", f"the trailer {name!r} was not announced by "
                                                           "x-amz-trailer, or comes twice or after the signature")
                if len(fields) >= MAX_TRAILER_FIELDS:
                    raise S3Error("MalformedTrailerError", "too many trailer fields")
                self.trailers[name] = value
                fields.append(text)
        else:
            raise S3Error("MalformedTrailerError", "too many trailer lines")
        missing = [name for name in self._expected_trailers if name not in self.trailers]
        if cut_short and (missing or (self._mode.signed_chunks and signature is None)):
            raise _incomplete("The body ended inside its trailer")
        if missing:
            raise S3Error("MalformedTrailerError", f"the trailer {', '.join(missing)} announced by x-amz-trailer "
                                                   "is missing")
        if self._mode.signed_chunks:
            if signature is None:
                raise S3Error("MalformedTrailerError", "the x-amz-trailer-signature is missing")
            canonical = "".join(f"{text}\n" for text in fields).encode("ascii")
            if self._signing is None:  # pragma: no cover - the constructor requires it for signed modes
                raise RuntimeError("no signing context")
            expected = self._signing.trailer_signature(self._previous, hashlib.sha256(canonical).hexdigest())
            if not hmac.compare_digest(expected.encode("ascii"), signature.lower().encode("ascii")):
                raise _signature_mismatch("trailer")


def request_body(raw: BinaryIO, verified: VerifiedRequest | None, headers: Headers,
                 content_length: int | None) -> BinaryIO | Sha256CheckedBody | AwsChunkedBody:
    """The stream of the bytes to store, whatever binds them to the signature.

    Anonymous and ``UNSIGNED-PAYLOAD`` bodies come back as they are; a declared sha256 is checked
    (``Sha256CheckedBody``); a streaming payload is decoded (``AwsChunkedBody``, whose
    ``decoded_length`` is the object's size when known). The mode is the verified one, never read
    again from the headers.
    """
    if verified is None or verified.payload is PayloadMode.UNSIGNED:
        return raw
    if verified.payload is PayloadMode.SHA256:
        if verified.payload_sha256 is None:  # pragma: no cover - verify() sets it for this mode
            raise RuntimeError("no payload hash")
        return Sha256CheckedBody(raw, verified.payload_sha256, content_length)
    return AwsChunkedBody.for_request(raw, verified, headers)
