"""Download blueprint (both profiles): by bucket and key (Greenfield GetObject), by checksum (REGARDS)."""

from __future__ import annotations

from flask import Response, request
from flask_smorest import Blueprint

from storage_core.blueprints.common import authorize, principal, services
from storage_core.delivery import watch_socket
from storage_core.http_semantics import Conditions, content_disposition, may_be_inline
from storage_core.names import validate_checksum
from storage_core.schemas import (
    AvailabilityRequestSchema,
    AvailabilitySchema,
    ChecksumDownloadArgs,
    ProblemSchema,
    RestoreRequestSchema,
    RestoreStateSchema,
)
from storage_core.services.downloads import Download
from storage_core.services.resolve import ByChecksum, ByKey

blp = Blueprint("downloads", __name__, url_prefix="/api/v1", description="Downloads and availability")

DOWNLOAD_DOC = {
    "responses": {
        "200": {"description": "the whole content", "content": {"application/octet-stream": {}}},
        "206": {"description": "one range, or several as multipart/byteranges"},
        "304": {"description": "not modified"},
        "404": {"description": "no such object", "content": {"application/problem+json": {"schema": ProblemSchema}}},
        "409": {"description": "NotAvailable: only nearline copies, and no restore under way (restores on read "
                               "are off)"},
        "416": {"description": "no range satisfiable"},
        "429": {"description": "read quota exceeded"},
        "503": {"description": "RestoreInProgress (only nearline copies: retry after Retry-After), no copy can "
                               "serve, or the database is unavailable"},
    },
    "parameters": [
        {"in": "header", "name": "Range", "schema": {"type": "string"}, "required": False},
        {"in": "header", "name": "If-Range", "schema": {"type": "string"}, "required": False},
        {"in": "header", "name": "If-None-Match", "schema": {"type": "string"}, "required": False},
        {"in": "header", "name": "If-Modified-Since", "schema": {"type": "string"}, "required": False},
    ],
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
        download.body.attach(watch_socket(request.environ, services().settings().send_timeout))
    # HEAD keeps the Content-Length of the representation: no body is given, so none is recomputed.
    # No direct_passthrough: werkzeug would hand the bare iterable to the server and skip the
    # response's own close(), and with it the access log and metrics of every streamed download.
    return Response(download.body, status=download.status, headers=headers)


@blp.route("/buckets/<bucket>/objects/<path:key>", methods=["GET"])
@authorize("public")
@blp.doc(**DOWNLOAD_DOC)
def get_object(bucket: str, key: str) -> Response:
    """Download an object (ranges, conditional requests; a charged read)."""
    return stream(services().download_service().open(ByKey(bucket, key), conditions(), principal()))


@blp.route("/files/<checksum>/download", methods=["GET"])
@authorize("public")
@blp.arguments(ChecksumDownloadArgs, location="query", as_kwargs=True)
@blp.doc(**DOWNLOAD_DOC)
def download_by_checksum(checksum: str, bucket: str | None, inline: bool) -> Response:
    """Download a file by its sha256; ``bucket`` picks the paying bucket when several hold it."""
    validate_checksum(checksum)
    return stream(services().download_service().open(ByChecksum(checksum, bucket), conditions(), principal()),
                  inline)


@blp.route("/files/availability", methods=["POST"])
@authorize("authenticated")
@blp.arguments(AvailabilityRequestSchema)
@blp.response(200, AvailabilitySchema(many=True))
def availability(body: dict) -> list[dict]:
    """Whether each file can be downloaded now, and from which tier."""
    return services().availability_service().check(body["checksums"], principal())


@blp.route("/files/restore", methods=["POST"])
@authorize("authenticated")
@blp.arguments(RestoreRequestSchema)
@blp.response(202, RestoreStateSchema(many=True))
def restore(body: dict) -> list[dict]:
    """Restore nearline files into the cache for ``hours`` (a cached copy's expiry is extended); each file is
    restored once however many ask. Files the caller cannot read are ``unknown``."""
    return [state.view() for state in
            services().restore_service().request(body["checksums"], body["hours"], principal())]
