"""Download blueprint (both profiles): by bucket and key (Greenfield GetObject), by checksum (REGARDS)."""

from __future__ import annotations

from flask import Response, request
from flask_smorest import Blueprint

from storage_core.auth import ACCOUNT, EXPIRES, SIGNATURE
from storage_core.blueprints.common import authorize, principal, problems, services
from storage_core.delivery import socket_sender, watch_socket
from storage_core.http_semantics import Conditions, content_disposition, may_be_inline
from storage_core.names import validate_checksum
from storage_core.schemas import (
    AvailabilityRequestSchema,
    AvailabilitySchema,
    ChecksumDownloadArgs,
    RestoreRequestSchema,
    RestoreStateSchema,
)
from storage_core.services.downloads import Download
from storage_core.services.resolve import ByChecksum, ByKey

blp = Blueprint("downloads", __name__, url_prefix="/api/v1", description="Downloads and availability")

def _header(description: str, required: bool = True, **schema: object) -> dict:
    return {"description": description, "required": required, "schema": {"type": "string", **schema}}


REPRESENTATION_HEADERS = {
    "ETag": _header("the quoted sha256 of the content (strong)"),
    "Last-Modified": _header("when the object was stored (an HTTP date)"),
    "Accept-Ranges": _header("ranges are served", enum=["bytes"]),
    "Content-Disposition": _header("attachment (inline with ?inline=true for safe types), RFC 6266 / 5987 filename"),
    "X-Content-Type-Options": _header("never sniffed", enum=["nosniff"]),
    "Cache-Control": _header("`private` for private buckets and presigned URLs; for public-read `public, no-cache`, "
                             "or `public, max-age=STORAGE_PUBLIC_MAX_AGE`"),
}
BYTES = {"schema": {"type": "string", "format": "binary"}}
CONDITION_HEADERS = [
    {"in": "header", "name": name, "required": False, "schema": {"type": "string"}, "description": description}
    for name, description in [
        ("Range", "RFC 9110 byte ranges (`bytes=0-99`, `bytes=-500`, several comma-separated, at most 100); a "
                  "malformed one is ignored"),
        ("If-Range", "an entity tag or a date (honoured only when Last-Modified is strong)"),
        ("If-Match", "412 unless it matches the ETag"),
        ("If-None-Match", "304 when it matches the ETag"),
        ("If-Modified-Since", "304 when not modified since"),
        ("If-Unmodified-Since", "412 when modified since"),
    ]
]
# a presigned URL (POST .../presign) carries these three; anyone holding it reads the object until it expires
PRESIGN_PARAMETERS = [
    {"in": "query", "name": EXPIRES, "required": False, "schema": {"type": "integer"},
     "description": "presigned URL: expiry, seconds since the epoch"},
    {"in": "query", "name": ACCOUNT, "required": False, "schema": {"type": "string"},
     "description": "presigned URL: the signing account, charged for the read"},
    {"in": "query", "name": SIGNATURE, "required": False, "schema": {"type": "string"},
     "description": "presigned URL: HMAC-SHA256 of method, path, expiry and account (hex)"},
]


def download_doc(parameters: list[dict]) -> dict:
    return {
        "responses": {
            "200": {"description": "the whole content (a charged read; HEAD is free)",
                    "headers": {"Content-Length": _header("bytes of the content", type="integer"),
                                **REPRESENTATION_HEADERS},
                    "content": {"*/*": BYTES}},
            "206": {"description": "one range (Content-Range), or several as multipart/byteranges",
                    "headers": {"Content-Range": _header("`bytes FIRST-LAST/SIZE`, for one range", False),
                                **REPRESENTATION_HEADERS},
                    "content": {"*/*": BYTES, "multipart/byteranges": BYTES}},
            "304": {"description": "not modified (If-None-Match, If-Modified-Since)",
                    "headers": {"ETag": _header("as for 200")}},
        },
        "parameters": CONDITION_HEADERS + parameters,
    }


def conditions() -> Conditions:
    headers = request.headers
    return Conditions(
        method=request.method,
        range=headers.get("Range"),
        if_range=headers.get("If-Range"),
        if_match=headers.get("If-Match"),
        if_none_match=headers.get("If-None-Match"),
        if_modified_since=headers.get("If-Modified-Since"),
        if_unmodified_since=headers.get("If-Unmodified-Since"),
    )


def stream(download: Download, inline: bool = False) -> Response:
    """The native API's response: the service's headers, plus a safe Content-Disposition and nosniff."""
    headers = download.headers
    if download.status != 304:
        target = download.target
        filename = target.key.rsplit("/", 1)[-1] or target.key
        headers["Content-Disposition"] = content_disposition(filename, inline and may_be_inline(target.content_type))
        headers["X-Content-Type-Options"] = "nosniff"
    if download.body is not None:
        download.body.attach(watch_socket(request.environ, services().settings().send_timeout),
                             socket_sender(request.environ))
    # HEAD keeps the Content-Length of the representation: no body is given, so none is recomputed.
    # No direct_passthrough: werkzeug would hand the bare iterable to the server and skip the
    # response's own close(), and with it the access log and metrics of every streamed download.
    return Response(download.body, status=download.status, headers=headers)


@blp.route("/buckets/<bucket>/objects/<path:key>", methods=["GET", "HEAD"])
@problems(404, 409, 412, 416, 429)
@authorize("public")
@blp.doc(**download_doc(PRESIGN_PARAMETERS))
def get_object(bucket: str, key: str) -> Response:
    """Download an object (ranges, conditional requests; a charged read)."""
    return stream(services().download_service().open(ByKey(bucket, key), conditions(), principal()))


@blp.route("/files/<checksum>/download", methods=["GET", "HEAD"])
@problems(404, 409, 412, 416, 429)
@authorize("public")
@blp.arguments(ChecksumDownloadArgs, location="query", as_kwargs=True)
@blp.doc(**download_doc([]))
def download_by_checksum(checksum: str, bucket: str | None, inline: bool) -> Response:
    """Download a file by its sha256; ``bucket`` picks the paying bucket when several hold it."""
    validate_checksum(checksum)
    return stream(services().download_service().open(ByChecksum(checksum, bucket), conditions(), principal()),
                  inline)


@blp.route("/files/availability", methods=["POST"])
@problems()
@authorize("authenticated")
@blp.arguments(AvailabilityRequestSchema)
@blp.response(200, AvailabilitySchema(many=True))
def availability(body: dict) -> list[dict]:
    """Whether each file can be downloaded now, and from which tier."""
    return services().availability_service().check(body["checksums"], principal())


@blp.route("/files/restore", methods=["POST"])
@problems()
@authorize("authenticated")
@blp.arguments(RestoreRequestSchema)
@blp.response(202, RestoreStateSchema(many=True))
def restore(body: dict) -> list[dict]:
    """Restore nearline files into the cache for ``hours`` (a cached copy's expiry is extended); each file is
    restored once however many ask. Files the caller cannot read are ``unknown``."""
    return [state.view() for state in
            services().restore_service().request(body["checksums"], body["hours"], principal())]
