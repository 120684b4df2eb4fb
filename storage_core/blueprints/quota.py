"""Quota queryer blueprint (both profiles): a bucket's read quota of a month, its history and its read records."""

from __future__ import annotations

import csv
import io
import urllib.parse
from collections.abc import Iterator
from typing import Any

from flask import Response, request
from flask_smorest import Blueprint

from storage_core.blueprints.common import authorize, problems, services
from storage_core.schemas import (
    MonthConsumptionSchema,
    ReadQuotaArgs,
    ReadQuotaHistoryArgs,
    ReadQuotaSchema,
    ReadRecordArgs,
    ReadRecordListSchema,
)
from storage_core.services.quota import READ_RECORD_FIELDS, RecordPage

blp = Blueprint("quota", __name__, url_prefix="/api/v1", description="Read quota and bill detail")

CSV_TYPE = "text/csv"
CSV_ROWS_PER_CHUNK = 200
NEXT_CURSOR_HEADER = "X-Next-Cursor"


@blp.route("/buckets/<bucket>/read-quota", methods=["GET"])
@problems(404)
@authorize("manage-bucket")
@blp.arguments(ReadQuotaArgs, location="query", as_kwargs=True)
@blp.response(200, ReadQuotaSchema)
def read_quota(bucket: str, year_month: str | None) -> dict:
    """Quota figures of a month (default: the current UTC month)."""
    return services().quota_service().read_quota(bucket, year_month)


@blp.route("/buckets/<bucket>/read-quota/history", methods=["GET"])
@problems(404)
@authorize("manage-bucket")
@blp.arguments(ReadQuotaHistoryArgs, location="query", as_kwargs=True)
@blp.response(200, MonthConsumptionSchema(many=True))
def read_quota_history(bucket: str, months: int) -> list[dict]:
    """What each of the last ``months`` UTC months (1..120) consumed, newest first, months without reads as zeros."""
    return services().quota_service().history(bucket, months)


@blp.route("/buckets/<bucket>/read-records", methods=["GET"])
@problems(404)
@authorize("manage-bucket")
@blp.arguments(ReadRecordArgs, location="query", as_kwargs=True)
@blp.response(200, ReadRecordListSchema)
@blp.doc(responses={"200": {
    "description": "a page of read records; with `format=csv` or `Accept: text/csv` the same page as CSV with a "
                   f"header line, the next page's cursor in `{NEXT_CURSOR_HEADER}` and `Link: <...>; rel=\"next\"` "
                   "(both absent on the last page)",
    # the doc replaces the response's content: both media types are named here
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReadRecordList"}},
                CSV_TYPE: {"schema": {"type": "string"}}}}})
def read_records(bucket: str, start_timestamp_us: int, end_timestamp_us: int, max_records: int,
                 cursor: str | None, format: str | None) -> Any:
    """Read records in [start, end), oldest first; follow ``next_cursor`` for the next page."""
    quota = services().quota_service()
    if not wants_csv(format):
        return quota.read_records(bucket, start_timestamp_us, end_timestamp_us, max_records, cursor)
    page = quota.read_record_page(bucket, start_timestamp_us, end_timestamp_us, max_records, cursor)
    response = Response(csv_lines(page), mimetype=CSV_TYPE, headers={"X-Content-Type-Options": "nosniff"})
    response.headers["Content-Type"] = f"{CSV_TYPE}; charset=utf-8; header=present"
    if page.next_cursor is not None:
        response.headers[NEXT_CURSOR_HEADER] = page.next_cursor
        query = urllib.parse.urlencode({**request.args.to_dict(), "cursor": page.next_cursor})
        response.headers["Link"] = f'<{request.base_url}?{query}>; rel="next"'
    return response


def wants_csv(format: str | None) -> bool:
    """``format`` wins; without it, an ``Accept`` preferring CSV to JSON (``*/*`` gets JSON)."""
    if format is not None:
        return format == "csv"
    return request.accept_mimetypes.best_match(["application/json", CSV_TYPE]) == CSV_TYPE


def csv_lines(page: RecordPage) -> Iterator[str]:
    """The page as RFC 4180 CSV, a chunk of rows at a time (the text is never held whole)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(READ_RECORD_FIELDS)
    for start in range(0, len(page.rows), CSV_ROWS_PER_CHUNK):
        writer.writerows(page.rows[start:start + CSV_ROWS_PER_CHUNK])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()
