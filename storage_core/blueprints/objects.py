"""Object upload, listing and deletion (storage profile only); downloads are in the downloads blueprint."""

from __future__ import annotations

from flask import request
from flask_smorest import Blueprint

from profiles import profile
from storage_core.blueprints.common import authorize, principal, problems, services
from storage_core.errors import LengthRequired
from storage_core.http_semantics import parse_content_md5, parse_hex_sha256, validate_content_type
from storage_core.schemas import ObjectListArgs, ObjectListSchema, ObjectSchema, PresignRequestSchema, PresignSchema
from storage_core.services.uploads import ObjectMetadata
from storage_core.spool import Digests
from storage_core.wsgi_body import body_stream

blp = profile("storage")(Blueprint("objects", __name__, url_prefix="/api/v1", description="Objects"))


@blp.route("/buckets/<bucket>/objects/<path:key>", methods=["PUT"])
@problems(404, 411, 413, 507)
@authorize("manage-bucket")
@blp.doc(requestBody={"content": {"application/octet-stream": {"schema": {"type": "string",
                                                                          "format": "binary"}}}},
         parameters=[{"in": "header", "name": "Content-MD5", "schema": {"type": "string"}},
                     {"in": "header", "name": "X-Checksum-Sha256", "schema": {"type": "string"}}])
@blp.response(200, ObjectSchema, description="replaced an existing object")
@blp.alt_response(201, schema=ObjectSchema, description="created")
def put_object(bucket: str, key: str) -> tuple[dict, int]:
    """Upload: the raw body is streamed to disk, verified, cut into pieces and stored."""
    headers = request.headers
    if request.content_length is None and "chunked" not in headers.get("Transfer-Encoding", "").lower():
        # without either, the end of the body cannot be told from a dropped connection
        raise LengthRequired("an upload needs Content-Length or chunked Transfer-Encoding")
    expected = Digests(md5=parse_content_md5(headers.get("Content-MD5")),
                       sha256=parse_hex_sha256(headers.get("X-Checksum-Sha256"), "X-Checksum-Sha256"))
    stored = services().upload_service().put(
        bucket, key, body_stream(request.environ, request.stream), length=request.content_length, expected=expected,
        metadata=ObjectMetadata(content_type=validate_content_type(headers.get("Content-Type"))))
    return stored.view, 201 if stored.created else 200


@blp.route("/buckets/<bucket>/objects", methods=["GET"])
@problems(404)
@authorize("manage-bucket")
@blp.arguments(ObjectListArgs, location="query", as_kwargs=True)
@blp.response(200, ObjectListSchema)
def list_objects(bucket: str, prefix: str, limit: int, cursor: str | None) -> dict:
    """Objects by key; follow ``next_cursor`` for the next page."""
    return services().object_service().list(bucket, prefix, limit, cursor)


@blp.route("/buckets/<bucket>/objects/<path:key>", methods=["DELETE"])
@problems(404)
@authorize("manage-bucket")
@blp.response(204)
def delete_object(bucket: str, key: str) -> None:
    """Delete the object; its pieces go once no object refers to the content."""
    services().object_service().delete(bucket, key)


@blp.route("/buckets/<bucket>/objects/<path:key>/presign", methods=["POST"])
@problems(404, 501)
@authorize("manage-bucket")
@blp.arguments(PresignRequestSchema)
@blp.response(200, PresignSchema)
def presign(body: dict, bucket: str, key: str) -> dict:
    """A signed GET URL for the object, charged to the caller's account, valid for ``expires_in`` seconds."""
    path, expires = services().permission_service().presign(principal(), bucket, key, body["expires_in"])
    return {"url": request.host_url.rstrip("/") + path, "expires_at": expires}
