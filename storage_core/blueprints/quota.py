"""Quota queryer blueprint (both profiles): a bucket's read quota of a month and its read records."""

from __future__ import annotations

from flask_smorest import Blueprint

from storage_core.blueprints.common import authorize, services
from storage_core.schemas import ReadQuotaArgs, ReadQuotaSchema, ReadRecordArgs, ReadRecordListSchema

blp = Blueprint("quota", __name__, url_prefix="/api/v1", description="Read quota and bill detail")


@blp.route("/buckets/<bucket>/read-quota", methods=["GET"])
@authorize("manage-bucket")
@blp.arguments(ReadQuotaArgs, location="query", as_kwargs=True)
@blp.response(200, ReadQuotaSchema)
def read_quota(bucket: str, year_month: str | None) -> dict:
    """Quota figures of a month (default: the current UTC month)."""
    return services().quota_service().read_quota(bucket, year_month)


@blp.route("/buckets/<bucket>/read-records", methods=["GET"])
@authorize("manage-bucket")
@blp.arguments(ReadRecordArgs, location="query", as_kwargs=True)
@blp.response(200, ReadRecordListSchema)
def read_records(bucket: str, start_timestamp_us: int, end_timestamp_us: int, max_records: int,
                 cursor: str | None) -> dict:
    """Read records in [start, end), oldest first; follow ``next_cursor`` for the next page."""
    return services().quota_service().read_records(bucket, start_timestamp_us, end_timestamp_us, max_records,
                                                   cursor)
