"""The S3 door: a WSGI app served at the root of the second listener (``STORAGE_S3_BIND``).

It owns only S3's wire format. A request is read as received (the raw path, for SigV4 and for keys
holding ``%2F`` or ``//``), addressed path-style or virtual-host-style (``<bucket>.STORAGE_S3_DOMAIN``),
authenticated (SigV4 in the header or the query, or anonymous), routed to one operation by method,
bucket, key and subresource, and answered in S3's XML with S3's codes. Operations call the same
services as the native API (``storage_core.s3.operations``); they are tagged by profile like the
native blueprints, so the downloader serves GetObject and HeadObject and answers 501 NotImplemented
to anything else.

An anonymous GET costs no query beyond the download's own; a signed one adds the access key's lookup
by primary key (``AccessKeyService.lookup``), done on every request so a deleted key fails at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.wrappers import Request, Response

import profiles
from storage_core.auth import ANONYMOUS_PRINCIPAL, DEVELOPMENT_ADMIN, Principal
from storage_core.db import is_disconnect
from storage_core.errors import AccessKeyNotFound, StorageError
from storage_core.logs import REQUEST_ID, account_when_sent, request_id_from
from storage_core.s3 import xml
from storage_core.s3.errors import S3Error, from_storage_error
from storage_core.s3.sigv4 import Headers, RequestView, VerifiedRequest, query_pairs, verify
from storage_core.services.access_keys import KeyIdentity

log = logging.getLogger(__name__)

XML = "application/xml"

# subresources S3 has and this service does not: 501 NotImplemented rather than a misleading answer
UNSUPPORTED_SUBRESOURCES = frozenset({
    "accelerate", "acl", "analytics", "attributes", "cors", "encryption", "intelligent-tiering", "inventory",
    "legal-hold", "lifecycle", "logging", "metrics", "notification", "object-lock", "ownershipControls", "policy",
    "policyStatus", "publicAccessBlock", "replication", "requestPayment", "retention", "select",
    "tagging", "torrent", "versioning", "versions", "website", "versionId",
})


@dataclass
class S3Call:
    """One request as the operations see it."""

    request: Request
    view: RequestView
    bucket: str
    key: str
    query: dict[str, str]
    principal: Principal
    verified: VerifiedRequest | None
    request_id: str
    operation: str = "unknown"
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.view.method

    @property
    def headers(self) -> Headers:
        return self.view.headers

    @property
    def resource(self) -> str:
        return "/" + self.bucket + ("/" + self.key if self.key else "") if self.bucket else "/"


Operation = Callable[[Any, S3Call], Response]


def raw_target(environ: dict[str, Any]) -> str:
    """The request target as sent (gunicorn's and werkzeug's ``RAW_URI``), else rebuilt from the decoded path."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return raw
    path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
    query = environ.get("QUERY_STRING", "")
    return quote(path, safe="/") + (f"?{query}" if query else "")


def _decode(raw: str, what: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI", f"The {what} is not valid UTF-8 once decoded.", status=400) from None


class S3Door:
    """The WSGI app of the S3 listener, over one container's services."""

    def __init__(self, container: Any, active: frozenset[str], operations: dict[str, Operation]):
        settings = container.settings()
        self.container = container
        self.active = active
        self.region = settings.s3_region
        self.send_timeout = settings.send_timeout
        self.domain = settings.s3_domain.lower().strip(".")
        self.operations = {name: op for name, op in operations.items() if profiles.is_active(op, active)}
        self.keys = container.access_key_service()
        # STORAGE_AUTH_DISABLED (development): unsigned requests act as admin, as on the native API
        self.anonymous = DEVELOPMENT_ADMIN if container.authenticator().disabled else ANONYMOUS_PRINCIPAL

    # ---- WSGI ------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        request = Request(environ)
        request_id = request_id_from(request.headers.get("X-Request-ID") or request.headers.get("x-amz-request-id"))
        REQUEST_ID.set(request_id)
        call: S3Call | None = None
        try:
            call = self.parse(request, request_id)
            response = self.dispatch(call)
        except S3Error as exc:
            response = self.error_response(exc, request, call, request_id)
        except StorageError as exc:
            if isinstance(exc, AccessKeyNotFound) and call is not None and call.principal.access_key:
                self.keys.forget(call.principal.access_key)  # deleted since this process remembered it
            response = self.error_response(from_storage_error(exc), request, call, request_id)
        except (DBAPIError, PoolTimeout) as exc:
            if not is_disconnect(exc):
                log.exception("database error on S3 %s %s", request.method, request.path)
            response = self.error_response(S3Error("ServiceUnavailable", headers={"Retry-After": "1"}), request,
                                           call, request_id)
        except Exception:
            log.exception("unhandled error on S3 %s %s", request.method, request.path)
            response = self.error_response(S3Error("InternalError"), request, call, request_id)
        response.headers["x-amz-request-id"] = request_id
        if call is not None:
            for name, value in call.extra_headers.items():
                response.headers.setdefault(name, value)
        self._on_close(response, request, call, started, request_id)
        return response(environ, start_response)

    @staticmethod
    def _on_close(response: Response, request: Request, call: S3Call | None, started: float,
                  request_id: str) -> None:
        account_when_sent(response, route=f"s3:{call.operation}" if call is not None else "s3:unparsed",
                          method=request.method, path=request.path, started=started,
                          account=call.principal.account if call is not None else None, request_id=request_id)

    # ---- reading the request ---------------------------------------------------------------------

    def parse(self, request: Request, request_id: str) -> S3Call:
        view = RequestView.from_target(request.method, raw_target(request.environ), Headers(request.headers.items()))
        query: dict[str, str] = {}
        for name, value in query_pairs(view.query):
            query.setdefault(name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
        bucket, key = self.address(view)
        if "AWSAccessKeyId" in query and "Signature" in query:
            # a Signature Version 2 presigned URL (boto3's default for presigning without signature_version)
            raise S3Error("InvalidRequest", "The authorization mechanism you have provided is not supported. "
                                            "Please use AWS4-HMAC-SHA256 (boto3: Config(signature_version='s3v4')).")
        call = S3Call(request, view, bucket, key, query, self.anonymous, None, request_id)
        call.operation = self.route(call)
        # downloads check the key's existence in their resolving statement (no round trip of their own);
        # every other operation looks the key up afresh
        downloads = call.operation in ("GetObject", "HeadObject")
        identity: list[KeyIdentity] = []

        def lookup(access_key_id: str) -> str | None:
            found = self.keys.remembered(access_key_id) if downloads else self.keys.lookup(access_key_id)
            if found is None:
                return None
            identity.append(found)
            return found.secret

        call.verified = verify(view, lookup=lookup, region=self.region, now=_utcnow())
        if call.verified is not None and identity:
            call.principal = identity[0].checked_principal() if downloads else identity[0].principal
        return call

    def address(self, view: RequestView) -> tuple[str, str]:
        """(bucket, key) from the Host (virtual-host style under STORAGE_S3_DOMAIN) or the path."""
        path = view.path or "/"
        if not path.startswith("/"):
            raise S3Error("InvalidURI", "Couldn't parse the specified URI.", status=400)
        host = (view.headers.get("host") or "").lower()
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self.domain and hostname.endswith("." + self.domain):
            return hostname[: -len(self.domain) - 1], _decode(path[1:], "key")
        bucket, _, key = path[1:].partition("/")
        return _decode(bucket, "bucket name"), _decode(key, "key")

    # ---- routing ---------------------------------------------------------------------------------

    @staticmethod
    def route(call: S3Call) -> str:
        """The S3 operation a request asks for (by method, bucket, key and subresource)."""
        method, query = call.method, call.query
        unsupported = sorted(name for name in query if name in UNSUPPORTED_SUBRESOURCES)
        if not call.bucket:
            return "ListBuckets" if method in ("GET", "HEAD") else "NotImplemented"
        if not call.key:
            if unsupported:
                return "NotImplemented"
            if method == "GET":
                if "location" in query:
                    return "GetBucketLocation"
                if "uploads" in query:
                    return "ListMultipartUploads"
                return "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
            if method == "POST" and "delete" in query:
                return "DeleteObjects"
            return {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(method,
                                                                                             "NotImplemented")
        if unsupported:
            return "NotImplemented"
        copy = "x-amz-copy-source" in call.headers
        if "uploadId" in query:
            if method == "PUT" and "partNumber" in query:
                return "UploadPartCopy" if copy else "UploadPart"
            return {"GET": "ListParts", "POST": "CompleteMultipartUpload",
                    "DELETE": "AbortMultipartUpload"}.get(method, "NotImplemented")
        if method == "POST":
            if "restore" in query:
                return "RestoreObject"
            return "CreateMultipartUpload" if "uploads" in query else "NotImplemented"
        if method == "PUT":
            return "CopyObject" if copy else "PutObject"
        if method in ("GET", "HEAD") and "partNumber" in query:
            return "NotImplemented"  # GetObject by part number
        return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, "NotImplemented")

    def dispatch(self, call: S3Call) -> Response:
        operation = self.operations.get(call.operation)
        if operation is None:
            if call.operation != "NotImplemented" and self.active == frozenset({profiles.DOWNLOADER}):
                raise S3Error("NotImplemented", f"{call.operation} is not served by the downloader; it serves "
                                                "GetObject and HeadObject.")
            what = "This operation" if call.operation == "NotImplemented" else call.operation
            raise S3Error("NotImplemented", f"{what} is not implemented by this service.")
        return operation(self, call)

    # ---- answers ---------------------------------------------------------------------------------

    @staticmethod
    def xml_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(body, status=status, headers=headers or {}, content_type=XML)

    def error_response(self, exc: S3Error, request: Request, call: S3Call | None, request_id: str) -> Response:
        if exc.status >= 500:
            log.warning("S3 %s %s: %s %s", request.method, request.path, exc.code, exc.message)
        resource = call.resource if call is not None else request.path
        headers = {k: v for k, v in exc.headers.items()
                   if k.lower() not in ("content-type", "content-length", "etag", "last-modified", "accept-ranges")}
        if request.method == "HEAD":
            # a HEAD answer has no body: SDKs read the status (and S3 adds the code as a header)
            return Response(b"", status=exc.status, headers={**headers, "x-amz-error-code": exc.code})
        body = xml.error(exc, resource=resource, request_id=request_id)
        return Response(body, status=exc.status, headers=headers, content_type=XML)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_s3_app(container: Any, active: frozenset[str]) -> S3Door:
    """The S3 door over ``container``'s services, with the operations of the ``active`` profiles."""
    from storage_core.s3.operations import OPERATIONS

    return S3Door(container, active, OPERATIONS)
