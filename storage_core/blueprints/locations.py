"""Storage location management (storage profile only)."""

from __future__ import annotations

from flask_smorest import Blueprint

from profiles import profile
from storage_core.blueprints.common import authorize, problems, services
from storage_core.schemas import LocationListSchema, LocationPatchSchema, LocationSchema

blp = profile("storage")(
    Blueprint("storage_locations", __name__, url_prefix="/api/v1", description="Storage locations"))


@blp.route("/storage-locations", methods=["GET"])
@problems()
@authorize("admin")
@blp.response(200, LocationListSchema)
def list_locations() -> dict:
    """Every location, hot first, by priority."""
    return {"storage_locations": services().location_service().list()}


@blp.route("/storage-locations", methods=["POST"])
@problems(409)
@authorize("admin")
@blp.arguments(LocationSchema)
@blp.response(201, LocationSchema)
def create_location(body: dict) -> dict:
    """Create a location; its config is validated by the plugin's own schema."""
    check = body.pop("check")
    return services().location_service().create(body, check=check)


@blp.route("/storage-locations/<name>", methods=["GET"])
@problems(404)
@authorize("admin")
@blp.response(200, LocationSchema)
def get_location(name: str) -> dict:
    return services().location_service().get(name)


@blp.route("/storage-locations/<name>", methods=["PATCH"])
@problems(404)
@authorize("admin")
@blp.arguments(LocationPatchSchema)
@blp.response(200, LocationSchema)
def update_location(body: dict, name: str) -> dict:
    """Change tier, priority, enabled, capacity or (merged) config."""
    check = body.pop("check")
    return services().location_service().update(name, body, check=check)


@blp.route("/storage-locations/<name>", methods=["DELETE"])
@problems(404, 409)
@authorize("admin")
@blp.response(204)
def delete_location(name: str) -> None:
    """Delete an empty location (409 while it holds files)."""
    services().location_service().delete(name)
