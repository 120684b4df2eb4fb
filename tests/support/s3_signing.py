"""Requests as real S3 SDKs sign them (boto3/botocore, minio), and an aws-chunked encoder, for the S3 door's tests.

``capture`` runs a real boto3 client call through botocore's whole pipeline (serialisation, checksums,
signing) and takes the request at ``before-send``, the moment it would go on the wire; nothing is sent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from minio.credentials import Credentials as MinioCredentials
from minio.helpers import queryencode
from minio.helpers import quote as minio_quote
from minio.signer import presign_v4, sign_v4_s3
from minio.time import to_amz_date

from storage_core.s3.sigv4 import EMPTY_SHA256, RequestView, SigningContext, signing_key

ACCESS_KEY = "SSAKEXAMPLEKEYID2345"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
REGION = "us-east-1"

# keys that tell encodings apart: reserved and unreserved characters, a literal '+', a '%' that is not
# an escape, spaces, unicode, doubled slashes
AWKWARD_KEYS = [
    "plain.txt",
    "dir/sub dir/file name.txt",
    "a+b=c&d;e,f",
    "100%/not-an-%escape%2F",
    "tilde~under_score-dot.",
    "ünïcødé/ключ/鍵.bin",
    "quotes'\"and(parens)!*",
    "hash#and?question",
    "double//slash/",
    "  leading and trailing spaces  ",
    "emoji-\U0001f600",
]


class _EmptyBody:
    def stream(self, **_kwargs: Any) -> Iterable[bytes]:
        yield b""


@dataclass(frozen=True)
class Captured:
    """A request as boto3 would have sent it."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes

    def view(self, **header_changes: str | None) -> RequestView:
        """The request as the server sees it: the Host the HTTP client adds, and optional header changes."""
        parts = urlsplit(self.url)
        headers = [("Host", parts.netloc), *self.headers]
        for name, value in header_changes.items():
            wire = name.replace("_", "-")
            headers = [(n, v) for n, v in headers if n.lower() != wire.lower()]
            if value is not None:
                headers.append((wire, value))
        return RequestView(self.method, parts.path, parts.query, headers)


def boto3_client(endpoint: str = "http://s3.example.test:9000", *, region: str = REGION,
                 access_key: str = ACCESS_KEY, secret: str = SECRET, **s3_config: Any) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        config=Config(signature_version="s3v4", retries={"max_attempts": 1},
                      s3={"addressing_style": "path", **s3_config}))


def capture(client: Any, operation: str, **params: Any) -> Captured:
    """Run ``client.<operation>(**params)`` up to the wire and return the request it would send."""
    seen: dict[str, Captured] = {}

    def before_send(request: Any, **_kwargs: Any) -> AWSResponse:
        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        headers = [(name, value.decode("latin-1") if isinstance(value, bytes) else value)
                   for name, value in request.headers.items()]
        seen["request"] = Captured(request.method, request.url, headers, body or b"")
        return AWSResponse(request.url, 200, {}, _EmptyBody())

    client.meta.events.register("before-send.s3", before_send)
    try:
        getattr(client, operation)(**params)
    except Exception:
        pass  # the empty canned response may not parse: the request is what counts
    finally:
        client.meta.events.unregister("before-send.s3", before_send)
    return seen["request"]


def minio_signed(method: str, bucket: str, key: str, *, date: dt.datetime, query: str = "",
                 headers: dict[str, str] | None = None, body: bytes = b"", region: str = REGION,
                 access_key: str = ACCESS_KEY, secret: str = SECRET,
                 host: str = "s3.example.test:9000", amz_date: bool = True) -> RequestView:
    """A request signed in the header by the minio SDK's signer, with its own path encoding.

    ``amz_date=False`` leaves x-amz-date out, so that only a Date header (in ``headers``) carries the time.
    """
    path = "/" + bucket + ("/" + minio_quote(key) if key else "")
    sha = hashlib.sha256(body).hexdigest()
    all_headers = {"Host": host, "x-amz-content-sha256": sha, **(headers or {})}
    if amz_date:
        all_headers["x-amz-date"] = to_amz_date(date)
    url = urlsplit(f"http://{host}{path}" + (f"?{query}" if query else ""))
    signed = sign_v4_s3(method=method, url=url, region=region, headers=all_headers,
                        credentials=MinioCredentials(access_key, secret), content_sha256=sha, date=date)
    return RequestView(method, path, query, list(signed.items()))


def minio_presigned(method: str, bucket: str, key: str, *, date: dt.datetime, expires: int,
                    region: str = REGION, host: str = "s3.example.test:9000", query: str = "") -> RequestView:
    path = "/" + bucket + "/" + minio_quote(key)
    url = urlsplit(f"http://{host}{path}" + (f"?{query}" if query else ""))
    signed = presign_v4(method=method, url=url, region=region, credentials=MinioCredentials(ACCESS_KEY, SECRET),
                        date=date, expires=expires)
    return RequestView(method, signed.path, signed.query, [("Host", host)])


def minio_query(params: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{queryencode(name)}={queryencode(value)}" for name, value in params)


# ---- aws-chunked bodies as the SDKs write them -----------------------------------------------------------

def signing_context(secret: str, date: dt.datetime, seed: str, region: str = REGION) -> SigningContext:
    scope = f"{date:%Y%m%d}/{region}/s3/aws4_request"
    return SigningContext(signing_key(secret, f"{date:%Y%m%d}", region), f"{date:%Y%m%dT%H%M%SZ}", scope, seed)


def _sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def signed_chunks(context: SigningContext, chunks: Sequence[bytes], *,
                  trailer: Sequence[tuple[str, str]] | None = None, trailer_line_end: str = "\r\n") -> bytes:
    """An independent writer of STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER) bodies (the final chunk added)."""
    out = bytearray()
    previous = context.seed_signature
    for chunk in [*chunks, b""]:
        previous = _sign(context.key, "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", context.timestamp, context.scope,
                                                 previous, EMPTY_SHA256, hashlib.sha256(chunk).hexdigest()]))
        out += f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + chunk
        if chunk or trailer is None:
            out += b"\r\n"
    if trailer is not None:
        canonical = "".join(f"{name}:{value}\n" for name, value in trailer)
        signature = _sign(context.key, "\n".join(["AWS4-HMAC-SHA256-TRAILER", context.timestamp, context.scope,
                                                  previous, hashlib.sha256(canonical.encode()).hexdigest()]))
        for name, value in trailer:
            out += f"{name}:{value}{trailer_line_end}".encode()
        out += f"x-amz-trailer-signature:{signature}\r\n\r\n".encode()
    return bytes(out)


def unsigned_chunks(chunks: Sequence[bytes], trailer: Sequence[tuple[str, str]] = ()) -> bytes:
    out = bytearray()
    for chunk in chunks:
        out += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    out += b"0\r\n"
    for name, value in trailer:
        out += f"{name}:{value}\r\n".encode()
    return bytes(out + b"\r\n")
