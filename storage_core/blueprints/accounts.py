"""Per-account download limits (storage profile only, admins)."""

from __future__ import annotations

from flask_smorest import Blueprint

from profiles import profile
from storage_core.blueprints.common import authorize, services
from storage_core.schemas import AccountLimitsSchema

blp = profile("storage")(Blueprint("accounts", __name__, url_prefix="/api/v1", description="Account limits"))


@blp.route("/accounts/<account>/limits", methods=["GET"])
@authorize("admin")
@blp.response(200, AccountLimitsSchema)
def get_limits(account: str) -> dict:
    """The account's limits and what it uses now."""
    return services().download_limits().get_limits(account)


@blp.route("/accounts/<account>/limits", methods=["PUT"])
@authorize("admin")
@blp.arguments(AccountLimitsSchema)
@blp.response(200, AccountLimitsSchema)
def set_limits(body: dict, account: str) -> dict:
    """Set (or, with both null, remove) the account's download limits."""
    return services().download_limits().set_limits(
        account, body.get("max_concurrent_downloads"), body.get("max_monthly_downloads"))
