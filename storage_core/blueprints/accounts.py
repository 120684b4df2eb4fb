"""Accounts (storage profile only): download limits (admins) and the revocation of presigned URLs."""

from __future__ import annotations

from flask_smorest import Blueprint

from profiles import profile
from storage_core.blueprints.common import authorize, principal, problems, services
from storage_core.schemas import AccountLimitsSchema, PresignRevocationSchema

blp = profile("storage")(Blueprint("accounts", __name__, url_prefix="/api/v1", description="Account limits"))


@blp.route("/accounts/<account>/limits", methods=["GET"])
@problems()
@authorize("admin")
@blp.response(200, AccountLimitsSchema)
def get_limits(account: str) -> dict:
    """The account's limits and what it uses now."""
    return services().download_limits().get_limits(account)


@blp.route("/accounts/<account>/limits", methods=["PUT"])
@problems()
@authorize("admin")
@blp.arguments(AccountLimitsSchema)
@blp.response(200, AccountLimitsSchema)
def set_limits(body: dict, account: str) -> dict:
    """Set (or, with both null, remove) the account's download limits."""
    return services().download_limits().set_limits(
        account, body.get("max_concurrent_downloads"), body.get("max_monthly_downloads"))


@blp.route("/accounts/<account>/presign-revocations", methods=["POST"])
@problems()
@authorize("authenticated")
@blp.response(201, PresignRevocationSchema)
def revoke_presigned(account: str) -> dict:
    """Every presigned URL the account signed until now stops working (by that account or an admin)."""
    return services().permission_service().revoke_presigned(principal(), account)
