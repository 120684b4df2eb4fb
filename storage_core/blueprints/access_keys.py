"""S3 access keys (storage profile only): create (the secret is shown once), list, delete."""

from __future__ import annotations

from flask_smorest import Blueprint

from profiles import profile
from storage_core.blueprints.common import authorize, principal, problems, services
from storage_core.schemas import AccessKeyCreateSchema, AccessKeyListSchema, AccessKeySchema

blp = profile("storage")(Blueprint("access_keys", __name__, url_prefix="/api/v1", description="S3 access keys"))


@blp.route("/access-keys", methods=["POST"])
@problems(501)
@authorize("authenticated")
@blp.arguments(AccessKeyCreateSchema)
@blp.response(201, AccessKeySchema)
def create_access_key(body: dict) -> dict:
    """A key for the S3 API: for the caller (admins: any account), with at most the caller's roles."""
    return services().access_key_service().create(principal(), body.get("account"), body.get("roles"),
                                                  body.get("description"))


@blp.route("/access-keys", methods=["GET"])
@problems()
@authorize("authenticated")
@blp.response(200, AccessKeyListSchema)
def list_access_keys() -> dict:
    """One's own keys (admins: every key), without their secrets."""
    return {"access_keys": services().access_key_service().list(principal())}


@blp.route("/access-keys/<access_key_id>", methods=["DELETE"])
@problems(404)
@authorize("authenticated")
@blp.response(204)
def delete_access_key(access_key_id: str) -> None:
    """Delete a key: every instance refuses it from the next request on."""
    services().access_key_service().delete(principal(), access_key_id)
