"""Native multipart uploads (storage profile only): the routes of DESIGN.md section 7 onto the one multipart service."""

from __future__ import annotations

from flask import request
from flask_smorest import Blueprint

from profiles import profile
from storage_core.blueprints.common import authorize, current_account, problems, services
from storage_core.http_semantics import parse_content_md5, parse_hex_sha256, validate_content_type
from storage_core.schemas import CompleteUploadSchema, ObjectSchema, UploadCreateSchema, UploadPartSchema, UploadSchema
from storage_core.services.multipart import PartInfo, RequestedPart, UploadInfo
from storage_core.services.uploads import ObjectMetadata
from storage_core.spool import Digests
from storage_core.wsgi_body import body_stream

blp = profile("storage")(Blueprint("uploads", __name__, url_prefix="/api/v1", description="Multipart uploads"))


def part_view(part: PartInfo) -> dict:
    return {"part_number": part.part_number, "size": part.size, "etag": f'"{part.etag}"',
            "last_modified": part.last_modified}


def upload_view(upload: UploadInfo, parts: list[PartInfo] | None = None) -> dict:
    view = {"upload_id": upload.upload_id, "bucket": upload.bucket, "key": upload.key,
            "initiator": upload.initiator, "created_at": upload.created_at}
    if parts is not None:
        view["parts"] = [part_view(p) for p in parts]
    return view


@blp.route("/buckets/<bucket>/uploads", methods=["POST"])
@problems(404)
@authorize("manage-bucket")
@blp.arguments(UploadCreateSchema)
@blp.response(201, UploadSchema)
def create_upload(body: dict, bucket: str) -> dict:
    """Begin a multipart upload of ``key``; parts are then PUT by number and the upload completed."""
    metadata = ObjectMetadata(content_type=validate_content_type(body.get("content_type")))
    return upload_view(services().multipart_service().create(bucket, body["key"], current_account(), metadata))


@blp.route("/buckets/<bucket>/uploads/<upload_id>/parts/<int:part_number>", methods=["PUT"])
@problems(404, 409, 411, 413, 507)
@authorize("manage-bucket")
@blp.doc(requestBody={"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
         parameters=[{"in": "header", "name": "Content-MD5", "schema": {"type": "string"}},
                     {"in": "header", "name": "X-Checksum-Sha256", "schema": {"type": "string"}}])
@blp.response(200, UploadPartSchema)
def upload_part(bucket: str, upload_id: str, part_number: int) -> dict:
    """Store part ``part_number`` (1..10000; again to replace it): raw body, verified like an upload."""
    headers = request.headers
    expected = Digests(md5=parse_content_md5(headers.get("Content-MD5")),
                       sha256=parse_hex_sha256(headers.get("X-Checksum-Sha256"), "X-Checksum-Sha256"))
    part = services().multipart_service().upload_part(bucket, upload_id, part_number,
                                                      body_stream(request.environ, request.stream),
                                                      length=request.content_length, expected=expected)
    return part_view(part)


@blp.route("/buckets/<bucket>/uploads/<upload_id>", methods=["GET"])
@problems(404)
@authorize("manage-bucket")
@blp.response(200, UploadSchema)
def get_upload(bucket: str, upload_id: str) -> dict:
    """The upload and the parts stored so far."""
    upload, parts, _more = services().multipart_service().list_parts(bucket, upload_id, 0, 10000)
    return upload_view(upload, parts)


@blp.route("/buckets/<bucket>/uploads/<upload_id>/complete", methods=["POST"])
@problems(404, 409, 413, 507)
@authorize("manage-bucket")
@blp.arguments(CompleteUploadSchema)
@blp.response(200, ObjectSchema, description="replaced an existing object")
@blp.alt_response(201, schema=ObjectSchema, description="created")
def complete_upload(body: dict, bucket: str, upload_id: str) -> tuple[dict, int]:
    """Assemble the object from the listed parts (ascending part numbers, their ETags); it appears at once."""
    requested = [RequestedPart(p["part_number"], p["etag"]) for p in body["parts"]]
    stored = services().multipart_service().complete(bucket, upload_id, requested)
    return stored.view, 201 if stored.created else 200


@blp.route("/buckets/<bucket>/uploads/<upload_id>", methods=["DELETE"])
@problems(404)
@authorize("manage-bucket")
@blp.response(204)
def abort_upload(bucket: str, upload_id: str) -> None:
    """Abort the upload: its parts are removed."""
    services().multipart_service().abort(bucket, upload_id)
