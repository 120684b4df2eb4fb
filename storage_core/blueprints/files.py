"""File metadata and copies between locations (storage profile only)."""

from __future__ import annotations

from flask_smorest import Blueprint

from profiles import profile
from storage_core.blueprints.common import authorize, problems, services
from storage_core.schemas import CopyRequestSchema, FileSchema

blp = profile("storage")(Blueprint("files", __name__, url_prefix="/api/v1", description="Files and copies"))


@blp.route("/files/<checksum>", methods=["GET"])
@problems(404)
@authorize("admin")
@blp.response(200, FileSchema)
def get_file(checksum: str) -> dict:
    """Size, pieces, copies and the objects that refer to the content."""
    return services().file_service().get(checksum)


@blp.route("/files/<checksum>/copies", methods=["POST"])
@problems(404, 409, 507)
@authorize("admin")
@blp.arguments(CopyRequestSchema)
@blp.response(201, FileSchema)
def add_copy(body: dict, checksum: str) -> dict:
    """Copy the file to another location, verifying every block read."""
    return services().file_service().add_copy(checksum, body["location"])


@blp.route("/files/<checksum>/copies/<location>", methods=["DELETE"])
@problems(404, 409)
@authorize("admin")
@blp.response(204)
def remove_copy(checksum: str, location: str) -> None:
    """Remove one copy; the last stored copy cannot be removed (409)."""
    services().file_service().remove_copy(checksum, location)
