"""AWS Signature Version 4 verification for S3: the Authorization header, presigned URLs, payload hashes.

The door builds a ``RequestView`` from what arrived on the wire (the path *as received*, still
percent-encoded, and the raw query string), then calls ``SigV4Verifier.verify``. The result names the
access key and says how the body is to be read (``VerifiedRequest.payload``): checked against a
declared sha256 (``Sha256CheckedBody``), taken as is (``UNSIGNED-PAYLOAD``), or decoded as
``aws-chunked`` with the chunk signatures chained from ``VerifiedRequest.signing``
(``storage_core.s3.chunked``). Every refusal is an ``S3Error`` with S3's code and status.

Canonicalisation follows S3, which differs from the other AWS services in two ways: the path is
not normalised (no ``.``/``..`` removal, no merged slashes) and it is URI-encoded once, not twice.
The path is decoded and re-encoded with S3's rules (unreserved characters kept, everything else
``%XX`` upper case, ``/`` kept), so a client that wrote ``%7e`` or left ``!`` bare is still checked
against what its signer computed. In the query string ``+`` means a space, as werkzeug reads it:
what is verified is what the door acts on.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import quote, unquote_to_bytes

from storage_core.http_semantics import parse_http_date
from storage_core.s3.errors import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
TERMINATOR = "aws4_request"
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600  # S3's limit: a presigned URL lives at most a week
MAX_SKEW = dt.timedelta(minutes=15)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_DATE8 = re.compile(r"[0-9]{8}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_PRESIGN_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                   "X-Amz-SignedHeaders", "X-Amz-Signature")


class PayloadMode(enum.StrEnum):
    """How the body of a verified request is bound to its signature (``x-amz-content-sha256``)."""

    SHA256 = "sha256"  # a hex sha256 of the whole body: check it while streaming
    UNSIGNED = "UNSIGNED-PAYLOAD"
    STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
    STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

    @property
    def streaming(self) -> bool:
        """The body is ``aws-chunked`` and must go through ``storage_core.s3.chunked``."""
        return self.value.startswith("STREAMING-")

    @property
    def signed_chunks(self) -> bool:
        return self in (PayloadMode.STREAMING_SIGNED, PayloadMode.STREAMING_SIGNED_TRAILER)

    @property
    def trailer(self) -> bool:
        return self.value.endswith("-TRAILER")


_STREAMING_ECDSA = ("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER")


class Headers:
    """Request headers as a case-insensitive multi-map (werkzeug's headers, a dict or a list of pairs)."""

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()):
        self._values: dict[str, list[str]] = {}
        pairs: Iterable[tuple[str, str]] = items.items() if isinstance(items, Mapping) else items
        for name, value in pairs:
            self._values.setdefault(name.lower(), []).append(value)

    def get(self, name: str) -> str | None:
        values = self._values.get(name.lower())
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return list(self._values.get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def names(self) -> frozenset[str]:
        """The lower-case names present."""
        return frozenset(self._values)


@dataclass(frozen=True)
class RequestView:
    """What SigV4 covers of a request, as received: method, raw path, raw query string, headers.

    ``path`` must be the path as sent (percent-encoded, e.g. gunicorn's ``RAW_URI`` without its query),
    not WSGI's decoded ``PATH_INFO``, which has lost the difference between ``/`` and ``%2F``.
    ``headers`` must carry the ``Host`` the client addressed (behind a proxy: the original one).
    """

    method: str
    path: str
    query: str = ""
    headers: Headers = field(default_factory=Headers)

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            object.__setattr__(self, "headers", Headers(self.headers))

    @classmethod
    def from_target(cls, method: str, target: str,
                    headers: Headers | Mapping[str, str] | Iterable[tuple[str, str]]) -> RequestView:
        """From the request target of the request line (``/b/k?x=1``, or absolute ``http://h/b/k``)."""
        if "://" in target.split("?", 1)[0]:
            after_scheme = target.split("://", 1)[1]
            slash = after_scheme.find("/")
            target = after_scheme[slash:] if slash >= 0 else "/"
        path, _, query = target.partition("?")
        return cls(method, path, query, headers if isinstance(headers, Headers) else Headers(headers))


@dataclass(frozen=True)
class SigningContext:
    """What the signatures of this request's chunks and trailer are chained from."""

    key: bytes = field(repr=False)
    timestamp: str  # the request's x-amz-date, e.g. 20130524T000000Z
    scope: str  # 20130524/us-east-1/s3/aws4_request
    seed_signature: str  # the request's own signature: the "previous signature" of the first chunk

    def chunk_signature(self, previous: str, chunk_sha256_hex: str) -> str:
        return _hmac_hex(self.key, "\n".join(
            ("AWS4-HMAC-SHA256-PAYLOAD", self.timestamp, self.scope, previous, EMPTY_SHA256, chunk_sha256_hex)))

    def trailer_signature(self, previous: str, trailer_sha256_hex: str) -> str:
        return _hmac_hex(self.key, "\n".join(
            ("AWS4-HMAC-SHA256-TRAILER", self.timestamp, self.scope, previous, trailer_sha256_hex)))


@dataclass(frozen=True)
class VerifiedRequest:
    """A request whose signature holds: who signed it and how its body is bound to the signature."""

    access_key_id: str
    payload: PayloadMode
    payload_sha256: str | None  # lower-case hex when ``payload`` is SHA256
    signing: SigningContext
    presigned: bool
    signed_at: dt.datetime
    expires_at: dt.datetime | None  # presigned URLs only
    signed_headers: frozenset[str]


Lookup = Callable[[str], "str | None"]


# ---- primitives ---------------------------------------------------------------------------------------

def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def _hmac_hex(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


@functools.lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """kSigning for a day, region and service: four HMACs, so cached (bounded; revoked keys age out)."""
    k_date = _hmac(("AWS4" + secret).encode("utf-8"), date)
    return _hmac(_hmac(_hmac(k_date, region), service), TERMINATOR)


def uri_encode(data: bytes | str, *, keep_slash: bool = False) -> str:
    """S3's URI encoding: unreserved characters (A-Z a-z 0-9 - . _ ~) kept, all else %XX upper case."""
    return quote(data, safe="/" if keep_slash else "")


def canonical_uri(raw_path: str) -> str:
    """The canonical URI of a path as received: decoded once, re-encoded once, never normalised."""
    if not raw_path:
        return "/"
    return uri_encode(unquote_to_bytes(raw_path), keep_slash=True)


def query_pairs(raw_query: str) -> list[tuple[bytes, bytes]]:
    """The decoded (name, value) pairs of a raw query string, in order; ``+`` is a space."""
    pairs = []
    for component in raw_query.split("&"):
        if not component:
            continue
        name, _, value = component.partition("=")
        pairs.append((unquote_to_bytes(name.replace("+", " ")), unquote_to_bytes(value.replace("+", " "))))
    return pairs


def canonical_query(pairs: Iterable[tuple[bytes, bytes]], *, without: str | None = None) -> str:
    """Encoded ``name=value`` pairs sorted by encoded name then encoded value, joined with ``&``."""
    skip = without.encode() if without else None
    encoded = sorted((uri_encode(name), uri_encode(value)) for name, value in pairs if name != skip)
    return "&".join(f"{name}={value}" for name, value in encoded)


def canonical_header_value(values: list[str]) -> str:
    """Each value trimmed with inner runs of whitespace made one space; repeated headers joined by ``,``."""
    return ",".join(" ".join(value.split()) for value in values)


def canonical_request(method: str, raw_path: str, query: str, headers: Headers, signed_headers: str,
                      payload_hash: str) -> str:
    """The canonical request of SigV4; ``query`` is already canonical."""
    lines = [method, canonical_uri(raw_path), query]
    lines += [f"{name}:{canonical_header_value(headers.get_all(name))}" for name in signed_headers.split(";")]
    lines += ["", signed_headers, payload_hash]
    return "\n".join(lines)


def string_to_sign(timestamp: str, scope: str, canonical: str) -> str:
    return "\n".join((ALGORITHM, timestamp, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()))


def format_amz_date(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_amz_date(value: str) -> dt.datetime | None:
    if not _AMZ_DATE.fullmatch(value):
        return None
    try:
        return dt.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def is_signed(request: RequestView) -> bool:
    """Whether the request claims any authentication at all (else it is anonymous)."""
    return request.headers.get("authorization") is not None or any(
        name in (b"X-Amz-Algorithm", b"X-Amz-Credential", b"X-Amz-Signature")
        for name, _ in query_pairs(request.query))


# ---- the parts of a signature ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Credential:
    access_key_id: str
    date: str
    region: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{SERVICE}/{TERMINATOR}"


def _parse_credential(value: str, region: str, code: str, what: str) -> _Credential:
    parts = value.split("/")
    if len(parts) != 5 or not parts[0] or not _DATE8.fullmatch(parts[1]) or not parts[2]:
        raise S3Error(code, f"{what}: the Credential is mal-formed; expecting "
                            f"\"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".")
    access_key_id, date, credential_region, service, terminator = parts
    if service != SERVICE:
        raise S3Error(code, f"{what}: incorrect service \"{service}\". This endpoint belongs to \"{SERVICE}\".")
    if terminator != TERMINATOR:
        raise S3Error(code, f"{what}: incorrect terminal \"{terminator}\". This endpoint uses \"{TERMINATOR}\".")
    if credential_region != region:
        raise S3Error(code, f"{what}: the region '{credential_region}' is wrong; expecting '{region}'",
                      extra={"Region": region})
    return _Credential(access_key_id, date, credential_region)


def _parse_signed_headers(value: str, code: str, what: str) -> str:
    names = value.split(";")
    if not value or any(not _HEADER_NAME.fullmatch(name) for name in names):
        raise S3Error(code, f"{what}: SignedHeaders must be lower-case header names separated by ';'.")
    if "host" not in names:
        # without the host, a signature made for one endpoint (or bucket, virtual-host style) is good
        # on any other: S3 refuses it
        raise S3Error(code, f"{what}: SignedHeaders must include 'host'.")
    return value


def _parse_signature(value: str, code: str, what: str) -> str:
    if not _HEX64.fullmatch(value):
        raise S3Error(code, f"{what}: the Signature must be 64 hexadecimal characters.")
    return value.lower()


@dataclass(frozen=True)
class _Claim:
    credential: _Credential
    signed_headers: str
    signature: str
    timestamp: str
    signed_at: dt.datetime
    canonical_query: str
    payload_hash: str
    presigned: bool
    expires_at: dt.datetime | None = None


def _parse_authorization(header: str, request: RequestView, region: str) -> _Claim:
    what = "The authorization header is malformed"
    scheme, _, rest = header.strip().partition(" ")
    if scheme != ALGORITHM:
        if scheme == "AWS":
            raise S3Error("InvalidRequest", "The authorization mechanism you have provided is not supported. "
                                            "Please use AWS4-HMAC-SHA256.")
        raise S3Error("InvalidArgument", "Unsupported Authorization Type",
                      extra={"ArgumentName": "Authorization", "ArgumentValue": scheme[:64]})
    components: dict[str, str] = {}
    for component in rest.split(","):
        name, sep, value = component.strip().partition("=")
        if not sep or name not in ("Credential", "SignedHeaders", "Signature") or name in components:
            raise S3Error("AuthorizationHeaderMalformed",
                          f"{what}; the authorization component \"{component.strip()[:100]}\" is malformed.")
        components[name] = value
    for name in ("Credential", "SignedHeaders", "Signature"):
        if name not in components:
            raise S3Error("AuthorizationHeaderMalformed", f"{what}; missing {name}.")
    code = "AuthorizationHeaderMalformed"
    credential = _parse_credential(components["Credential"], region, code, what)
    signed_headers = _parse_signed_headers(components["SignedHeaders"], code, what)
    signature = _parse_signature(components["Signature"], code, what)

    timestamp = request.headers.get("x-amz-date")
    signed_at = parse_amz_date(timestamp) if timestamp is not None else None
    if timestamp is None and (date_header := request.headers.get("date")) is not None:
        # SigV4 accepts the Date header when x-amz-date is absent; the string to sign then carries it
        # in ISO 8601 basic form
        signed_at = parse_http_date(date_header)
        if signed_at is not None:
            timestamp = format_amz_date(signed_at)
    if signed_at is None or timestamp is None:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    if timestamp[:8] != credential.date:
        raise S3Error("AuthorizationHeaderMalformed", f"Invalid credential date \"{credential.date}\". This date "
                                                      f"is not the same as X-Amz-Date: \"{timestamp[:8]}\".")
    payload_hash = request.headers.get("x-amz-content-sha256")
    if payload_hash is None:
        raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    return _Claim(credential, signed_headers, signature, timestamp, signed_at,
                  canonical_query(query_pairs(request.query)), payload_hash.strip(), presigned=False)


def _parse_presigned(pairs: list[tuple[bytes, bytes]], region: str) -> _Claim:
    code = "AuthorizationQueryParametersError"
    params: dict[str, str] = {}
    for name_bytes, value_bytes in pairs:
        name = name_bytes.decode("utf-8", "replace")
        if name in _PRESIGN_PARAMS or name == "X-Amz-Content-Sha256":
            if name in params:
                raise S3Error(code, f"{name} must be given once.")
            params[name] = value_bytes.decode("utf-8", "replace")
    if any(name not in params for name in _PRESIGN_PARAMS):
        raise S3Error(code, "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
                            "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise S3Error(code, f"X-Amz-Algorithm only supports \"{ALGORITHM}\"")
    what = "Error parsing the X-Amz-Credential parameter"
    credential = _parse_credential(params["X-Amz-Credential"], region, code, what)
    signed_headers = _parse_signed_headers(params["X-Amz-SignedHeaders"], code, "X-Amz-SignedHeaders is invalid")
    signature = _parse_signature(params["X-Amz-Signature"], code, "X-Amz-Signature is invalid")
    timestamp = params["X-Amz-Date"]
    signed_at = parse_amz_date(timestamp)
    if signed_at is None:
        raise S3Error(code, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if timestamp[:8] != credential.date:
        raise S3Error(code, f"Invalid credential date \"{credential.date}\". This date is not the same as "
                            f"X-Amz-Date: \"{timestamp[:8]}\".")
    expires = params["X-Amz-Expires"]
    if not expires.isascii() or not expires.isdigit() or int(expires) < 1:
        raise S3Error(code, "X-Amz-Expires must be a positive number of seconds")
    if int(expires) > MAX_PRESIGN_EXPIRES:
        raise S3Error(code, f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_PRESIGN_EXPIRES}")
    # a presigned URL's body is not signed, unless the signer put a hash in the query
    payload_hash = params.get("X-Amz-Content-Sha256", PayloadMode.UNSIGNED.value)
    return _Claim(credential, signed_headers, signature, timestamp, signed_at,
                  canonical_query(pairs, without="X-Amz-Signature"), payload_hash, presigned=True,
                  expires_at=signed_at + dt.timedelta(seconds=int(expires)))


def _payload_mode(payload_hash: str, presigned: bool) -> tuple[PayloadMode, str | None]:
    if _HEX64.fullmatch(payload_hash):
        return PayloadMode.SHA256, payload_hash.lower()
    if payload_hash in _STREAMING_ECDSA:
        raise S3Error("NotImplemented", "SigV4a (ECDSA) streaming signatures are not supported; use "
                                        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    try:
        mode = PayloadMode(payload_hash)
    except ValueError:
        mode = None
    if mode is None or mode is PayloadMode.SHA256:
        raise S3Error("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                                         "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
                                         "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, or a valid sha256 value.",
                      extra={"ArgumentName": "x-amz-content-sha256", "ArgumentValue": payload_hash[:100]})
    if presigned and mode.streaming:
        raise S3Error("InvalidRequest", "A presigned URL cannot carry an aws-chunked streaming payload.")
    return mode, None


def _check_unsigned_headers(request: RequestView, claim: _Claim) -> None:
    signed = set(claim.signed_headers.split(";"))
    unsigned = sorted(name for name in request.headers.names()
                      if name.startswith("x-amz-") and name not in signed
                      # on a presigned URL the header cannot change what is done: the payload mode
                      # comes from the query, so a stray x-amz-content-sha256 is ignored
                      and not (claim.presigned and name == "x-amz-content-sha256"))
    if unsigned:
        # every x-amz-* header changes what S3 does (x-amz-copy-source turns a presigned PUT into a
        # copy, x-amz-acl...), so none may ride along unsigned
        raise S3Error("AccessDenied", "There were headers present in the request which were not signed",
                      extra={"HeadersNotSigned": ", ".join(unsigned)})


# ---- verification ------------------------------------------------------------------------------------

def verify(request: RequestView, *, lookup: Lookup, region: str, now: dt.datetime,
           max_skew: dt.timedelta = MAX_SKEW) -> VerifiedRequest | None:
    """Verify the SigV4 signature of ``request``; ``None`` if it carries none (anonymous).

    ``lookup(access_key_id)`` gives the secret of an active key, or ``None``. Raises ``S3Error``:
    InvalidAccessKeyId, SignatureDoesNotMatch, RequestTimeTooSkewed, AccessDenied (expired or
    not yet valid presigned URL, unsigned x-amz-* headers, no date), AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError, InvalidRequest (SigV2, missing x-amz-content-sha256, two
    mechanisms), InvalidArgument (bad x-amz-content-sha256, unknown scheme), InvalidToken (a session
    token: this service issues none), NotImplemented (SigV4a streaming).
    """
    authorization = request.headers.get("authorization")
    pairs = query_pairs(request.query)
    presign = any(name in (b"X-Amz-Algorithm", b"X-Amz-Credential", b"X-Amz-Signature") for name, _ in pairs)
    if authorization is None and not presign:
        return None
    if authorization is not None and presign:
        raise S3Error("InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm query "
                                         "parameter, Signature query string parameter or the Authorization header "
                                         "should be specified",
                      extra={"ArgumentName": "Authorization"})
    if request.headers.get("x-amz-security-token") or any(name == b"X-Amz-Security-Token" for name, _ in pairs):
        # temporary credentials are STS's; this service issues only long-lived access keys
        raise S3Error("InvalidToken", "The provided token is malformed or otherwise invalid: this service does "
                                      "not issue session tokens.")
    claim = (_parse_authorization(authorization, request, region) if authorization is not None
             else _parse_presigned(pairs, region))
    mode, payload_sha256 = _payload_mode(claim.payload_hash, claim.presigned)

    if claim.presigned:
        if claim.signed_at - now > max_skew:
            raise S3Error("AccessDenied", "Request is not valid yet",
                          extra={"X-Amz-Date": claim.timestamp, "ServerTime": _iso(now)})
        if claim.expires_at is not None and now > claim.expires_at:
            raise S3Error("AccessDenied", "Request has expired",
                          extra={"X-Amz-Expires": str(int((claim.expires_at - claim.signed_at).total_seconds())),
                                 "Expires": _iso(claim.expires_at), "ServerTime": _iso(now)})
    elif abs(now - claim.signed_at) > max_skew:
        raise S3Error("RequestTimeTooSkewed",
                      extra={"RequestTime": claim.timestamp, "ServerTime": _iso(now),
                             "MaxAllowedSkewMilliseconds": str(int(max_skew.total_seconds() * 1000))})
    _check_unsigned_headers(request, claim)

    access_key_id = claim.credential.access_key_id
    secret = lookup(access_key_id)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", extra={"AWSAccessKeyId": access_key_id})
    key = signing_key(secret, claim.credential.date, claim.credential.region)
    canonical = canonical_request(request.method, request.path, claim.canonical_query, request.headers,
                                  claim.signed_headers, claim.payload_hash)
    to_sign = string_to_sign(claim.timestamp, claim.credential.scope, canonical)
    expected = _hmac_hex(key, to_sign)
    if not hmac.compare_digest(expected.encode("ascii"), claim.signature.encode("ascii")):
        # S3 answers with what it signed, so a client author can see where the two canonical forms differ;
        # none of it is secret (it is all in the request)
        raise S3Error("SignatureDoesNotMatch",
                      extra={"AWSAccessKeyId": access_key_id, "StringToSign": to_sign,
                             "SignatureProvided": claim.signature, "CanonicalRequest": canonical})
    return VerifiedRequest(
        access_key_id=access_key_id,
        payload=mode,
        payload_sha256=payload_sha256,
        signing=SigningContext(key, claim.timestamp, claim.credential.scope, claim.signature),
        presigned=claim.presigned,
        signed_at=claim.signed_at,
        expires_at=claim.expires_at,
        signed_headers=frozenset(claim.signed_headers.split(";")),
    )


class SigV4Verifier:
    """``verify`` with its collaborators bound: the key lookup, the region, the clock and the skew."""

    def __init__(self, lookup: Lookup, region: str, *, clock: Callable[[], dt.datetime] = _utcnow,
                 max_skew: dt.timedelta = MAX_SKEW):
        self.lookup = lookup
        self.region = region
        self.clock = clock
        self.max_skew = max_skew

    def verify(self, request: RequestView) -> VerifiedRequest | None:
        return verify(request, lookup=self.lookup, region=self.region, now=self.clock(), max_skew=self.max_skew)


# ---- the body against x-amz-content-sha256 -----------------------------------------------------------

class Sha256CheckedBody:
    """A body read through while its sha256 is computed; a mismatch with the declared hash raises.

    ``XAmzContentSHA256Mismatch`` is raised by the read that would return the last byte when
    ``length`` (the Content-Length) is known, else by the read that would report the end of the stream;
    a caller that stores only after a complete read stores nothing unverified. Memory: one read's worth.
    """

    def __init__(self, raw: BinaryIO, expected_sha256: str, length: int | None = None):
        if not _HEX64.fullmatch(expected_sha256):
            raise ValueError("expected_sha256 must be 64 hex characters")
        self._raw = raw
        self._expected = expected_sha256.lower()
        self._hash = hashlib.sha256()
        self._remaining = length
        self._length = length
        self._done = False
        self._failed: S3Error | None = None

    def _finish(self) -> None:
        self._done = True
        if not hmac.compare_digest(self._hash.hexdigest(), self._expected):
            raise S3Error("XAmzContentSHA256Mismatch",
                          extra={"ClientComputedContentSHA256": self._expected,
                                 "S3ComputedContentSHA256": self._hash.hexdigest()})

    def read(self, size: int = -1) -> bytes:
        if self._failed is not None:
            raise self._failed
        try:
            return self._read(size)
        except S3Error as exc:
            self._failed = exc  # a broken body stays broken: no later read may look like a clean end
            raise

    def _read(self, size: int) -> bytes:
        if self._done:
            return b""
        if self._remaining is not None:
            size = self._remaining if size is None or size < 0 else min(size, self._remaining)
            if self._remaining == 0:
                self._finish()
                return b""
        if size == 0:
            return b""
        data = self._raw.read(size)
        if not data:
            if self._remaining:
                self._done = True
                raise S3Error("IncompleteBody", f"The body ended after {self._length - self._remaining} of "
                                                f"{self._length} bytes.")
            self._finish()
            return b""
        self._hash.update(data)
        if self._remaining is not None:
            self._remaining -= len(data)
            if self._remaining == 0:
                self._finish()
        return data
