"""Bucket management (storage profile only)."""

from __future__ import annotations

from flask_smorest import Blueprint

from profiles import profile
from storage_core.blueprints.common import authorize, principal, problems, services
from storage_core.schemas import BucketListSchema, BucketPatchSchema, BucketSchema

blp = profile("storage")(Blueprint("buckets", __name__, url_prefix="/api/v1", description="Buckets"))


@blp.route("/buckets", methods=["GET"])
@problems()
@authorize("authenticated")
@blp.response(200, BucketListSchema)
def list_buckets() -> dict:
    """Every bucket for admins; one's own buckets otherwise."""
    return {"buckets": services().bucket_service().list(principal())}


@blp.route("/buckets", methods=["POST"])
@problems(409)
@authorize("authenticated")
@blp.arguments(BucketSchema)
@blp.response(201, BucketSchema)
def create_bucket(body: dict) -> dict:
    """Create a bucket; quotas default to the service's settings."""
    return services().bucket_service().create(body, principal())


@blp.route("/buckets/<bucket>", methods=["GET"])
@problems(404)
@authorize("manage-bucket")
@blp.response(200, BucketSchema)
def get_bucket(bucket: str) -> dict:
    return services().bucket_service().get(bucket)


@blp.route("/buckets/<bucket>", methods=["PATCH"])
@problems(404)
@authorize("manage-bucket")
@blp.arguments(BucketPatchSchema)
@blp.response(200, BucketSchema)
def update_bucket(body: dict, bucket: str) -> dict:
    """Change visibility, quotas, owner or target locations."""
    return services().bucket_service().update(bucket, body, principal())


@blp.route("/buckets/<bucket>", methods=["DELETE"])
@problems(404, 409)
@authorize("manage-bucket")
@blp.response(204)
def delete_bucket(bucket: str) -> None:
    """Delete an empty bucket (409 while it holds objects)."""
    services().bucket_service().delete(bucket)
