"""Marshmallow schemas of the HTTP API: request validation and response shapes (also the OpenAPI source)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, pre_load, validate, validates

from storage_core import names
from storage_core.errors import InvalidArgument

YEAR_MONTH_RE = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")
INT64_MAX = 2**63 - 1
MAX_HISTORY_MONTHS = 120  # ten years of monthly figures in one answer


def domain(validator: Callable[[str], Any]) -> Callable[[str], None]:
    """A validator of ``storage_core.names`` as a marshmallow one (its detail becomes the field's message)."""

    def check(value: str) -> None:
        try:
            validator(value)
        except InvalidArgument as exc:
            raise ValidationError(exc.detail) from None

    return check


def unsafe_text(value: str) -> str | None:
    """Why a string cannot be stored or put in a header (NUL, lone surrogates), or None."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid UTF-8 (no lone surrogates)"
    return None


def _check_strings(data: Any, path: str = "") -> None:
    if isinstance(data, str):
        problem = unsafe_text(data)
        if problem:
            raise ValidationError(f"{path or 'value'} {problem}")
    elif isinstance(data, dict):
        for key, value in data.items():
            _check_strings(key, path)
            _check_strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(data, list):
        for item in data:
            _check_strings(item, path)


class StrictSchema(Schema):
    """Request schemas: unknown fields and text the database cannot hold are 400, not 500."""

    class Meta:
        unknown = RAISE

    @pre_load
    def _safe_text(self, data: Any, **_kwargs: Any) -> Any:
        _check_strings(data)
        return data


# ---- storage locations -------------------------------------------------------------------------

class LocationSchema(StrictSchema):
    name = fields.String(required=True, validate=domain(names.validate_location_name))
    plugin = fields.String(required=True)
    tier = fields.String(load_default="hot", validate=validate.OneOf(["hot", "cold"]))
    access = fields.String(load_default="online", validate=validate.OneOf(["online", "nearline"]), metadata={
        "description": "nearline: tape or S3 Glacier, restored into a cache location before it is read; the "
                       "plugin's config must make it so (local: restore_seconds; s3: storage_class GLACIER or "
                       "DEEP_ARCHIVE)"})
    purpose = fields.String(load_default="storage", validate=validate.OneOf(["storage", "cache"]), metadata={
        "description": "cache: holds restored copies of nearline files, bounded by capacity; online, never an "
                       "upload target"})
    priority = fields.Integer(strict=True, load_default=0, validate=validate.Range(min=0, max=2**31 - 1))
    enabled = fields.Boolean(load_default=True)
    config = fields.Dict(keys=fields.String(), required=True,
                         metadata={"description": "plugin configuration; secrets are write-only"})
    capacity = fields.Integer(strict=True, allow_none=True, load_default=None,
                              validate=validate.Range(min=0, max=INT64_MAX))
    used_size = fields.Integer(strict=True, dump_only=True)
    file_count = fields.Integer(strict=True, dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    check = fields.Boolean(load_default=True, load_only=True, metadata={
        "description": "prepare the location and refuse it (400, with the reason) unless it can serve: a local "
                       "root is created, an S3 endpoint, its credentials and bucket are checked; false: add it as "
                       "it is, touching nothing"})


class LocationPatchSchema(StrictSchema):
    tier = fields.String(validate=validate.OneOf(["hot", "cold"]))
    priority = fields.Integer(strict=True, validate=validate.Range(min=0, max=2**31 - 1))
    enabled = fields.Boolean()
    config = fields.Dict(keys=fields.String(),
                         metadata={"description": "merged into the current config, then validated"})
    capacity = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0, max=INT64_MAX))
    check = fields.Boolean(load_default=True, load_only=True, metadata={
        "description": "a changed config is prepared and checked as at creation; false: skip the check"})


class LocationListSchema(Schema):
    storage_locations = fields.List(fields.Nested(LocationSchema))


# ---- buckets -----------------------------------------------------------------------------------

class BucketSchema(StrictSchema):
    name = fields.String(required=True, validate=domain(names.validate_bucket_name))
    owner = fields.String(validate=validate.Length(min=1, max=255))
    visibility = fields.String(load_default="private", validate=validate.OneOf(["private", "public-read"]))
    charged_read_quota = fields.Integer(strict=True, load_default=0, validate=validate.Range(min=0, max=INT64_MAX))
    free_read_quota = fields.Integer(strict=True, validate=validate.Range(min=0, max=INT64_MAX))
    monthly_free_read_quota = fields.Integer(strict=True, validate=validate.Range(min=0, max=INT64_MAX))
    locations = fields.List(fields.String(), metadata={
        "description": "locations new uploads are written to; empty: every enabled location"})
    created_at = fields.DateTime(dump_only=True)


class BucketPatchSchema(StrictSchema):
    owner = fields.String(validate=validate.Length(min=1, max=255))
    visibility = fields.String(validate=validate.OneOf(["private", "public-read"]))
    charged_read_quota = fields.Integer(strict=True, validate=validate.Range(min=0, max=INT64_MAX))
    free_read_quota = fields.Integer(strict=True, validate=validate.Range(min=0, max=INT64_MAX))
    monthly_free_read_quota = fields.Integer(strict=True, validate=validate.Range(min=0, max=INT64_MAX))
    locations = fields.List(fields.String())


class BucketListSchema(Schema):
    buckets = fields.List(fields.Nested(BucketSchema))


# ---- objects and files -------------------------------------------------------------------------

class ObjectSchema(Schema):
    bucket = fields.String()
    key = fields.String()
    object_id = fields.Integer()
    checksum = fields.String()
    size = fields.Integer()
    content_type = fields.String()
    etag = fields.String(metadata={"description": "quoted checksum, as in the ETag header"})
    created_at = fields.DateTime()
    piece_size = fields.Integer()
    piece_count = fields.Integer()


class ObjectListArgs(StrictSchema):
    prefix = fields.String(load_default="", validate=validate.Length(max=1024))
    limit = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=1000))
    cursor = fields.String(load_default=None, allow_none=True)


class ObjectListSchema(Schema):
    objects = fields.List(fields.Nested(ObjectSchema))
    next_cursor = fields.String(allow_none=True)


class CopySchema(Schema):
    location = fields.String()
    tier = fields.String()
    priority = fields.Integer()
    state = fields.String(metadata={"description": "stored, cached (a restored copy of a nearline file), "
                                                   "pending, corrupt or deleting"})
    damaged_pieces = fields.List(fields.Integer(), metadata={
        "description": "pieces found missing or corrupt on this copy; the others serve"})
    access = fields.String()
    purpose = fields.String()
    expires_at = fields.DateTime(allow_none=True, metadata={"description": "cached copies: kept until then"})


class ReferenceSchema(Schema):
    bucket = fields.String()
    key = fields.String()


class FileSchema(Schema):
    checksum = fields.String()
    size = fields.Integer()
    piece_size = fields.Integer()
    piece_count = fields.Integer()
    created_at = fields.DateTime()
    copies = fields.List(fields.Nested(CopySchema))
    references = fields.List(fields.Nested(ReferenceSchema))


class CopyRequestSchema(StrictSchema):
    location = fields.String(required=True, validate=validate.Length(min=1, max=63))


class ChecksumList(fields.List):
    """A list of file checksums. A list of well-formed ones (what availability and restore calls send, up to
    1,000) is checked with one regex match each: a String field per item costs marshmallow about 6 ms per
    1,000; any other value goes through ``fields.List`` for its per-item messages."""

    def __init__(self, **kwargs: Any):
        super().__init__(fields.String(validate=domain(names.validate_checksum)), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if isinstance(value, list) and all(names.is_checksum(item) for item in value):
            return list(value)
        return super()._deserialize(value, attr, data, **kwargs)


class AvailabilityRequestSchema(StrictSchema):
    checksums = ChecksumList(required=True, validate=validate.Length(max=1000))


FILE_STATE_DOC = ("available (online, or cached until expires_at), restoring, queued (the restore waits for "
                  "room in the cache), nearline (only nearline copies, no restore asked for), unknown (not "
                  "stored, or not readable by the caller)")


class AvailabilitySchema(Schema):
    checksum = fields.String()
    available = fields.Boolean()
    tier = fields.String(allow_none=True)
    state = fields.String(metadata={"description": FILE_STATE_DOC})
    expires_at = fields.DateTime(allow_none=True, metadata={"description": "when the cached copy expires; null "
                                                                           "when online"})

    def dump(self, obj: Any, *, many: bool | None = None) -> Any:
        """What ``Schema.dump`` gives of objects with these attributes (``restore.FileState``; a test compares the
        two), without its per-field machinery: 15 ms for the 1,000 files one call may ask about, against well
        under 1 ms for these plain dictionaries."""
        many = self.many if many is None else many
        dumped = [{"checksum": item.checksum, "available": item.available, "tier": item.tier, "state": item.state,
                   "expires_at": item.expires_at.isoformat() if item.expires_at is not None else None}
                  for item in (obj if many else [obj])]
        return dumped if many else dumped[0]


class RestoreRequestSchema(StrictSchema):
    checksums = ChecksumList(required=True, validate=validate.Length(min=1, max=1000))
    hours = fields.Integer(strict=True, load_default=None, validate=validate.Range(min=1, max=720), metadata={
        "description": "how long the restored copy stays in the cache (default STORAGE_RESTORE_HOURS); a cached "
                       "copy's expiry is extended to it"})


class RestoreStateSchema(Schema):
    checksum = fields.String()
    state = fields.String(metadata={"description": FILE_STATE_DOC})
    expires_at = fields.DateTime(allow_none=True)


class PresignRequestSchema(StrictSchema):
    expires_in = fields.Integer(strict=True, load_default=3600, validate=validate.Range(min=1, max=7 * 24 * 3600))


class PresignSchema(Schema):
    url = fields.String()
    expires_at = fields.Integer()


# ---- downloads ---------------------------------------------------------------------------------

class ChecksumDownloadArgs(StrictSchema):
    bucket = fields.String(load_default=None, allow_none=True)
    inline = fields.Boolean(load_default=False)


# ---- read quota --------------------------------------------------------------------------------

class ReadQuotaArgs(StrictSchema):
    year_month = fields.String(load_default=None, allow_none=True)

    @validates("year_month")
    def _month(self, value: str | None, **_kwargs: object) -> None:
        if value is not None and not YEAR_MONTH_RE.fullmatch(value):
            raise ValidationError("year_month must be YYYY-MM with a month from 01 to 12")


class ReadQuotaSchema(Schema):
    bucket = fields.String()
    year_month = fields.String()
    charged_quota_size = fields.Integer()
    charged_consumed_size = fields.Integer()
    monthly_free_quota_size = fields.Integer()
    monthly_free_consumed_size = fields.Integer()
    sp_free_quota_size = fields.Integer(metadata={"description": "one-time free quota remaining"})
    free_consumed_size = fields.Integer()
    consumed_size = fields.Integer()
    remain_quota_size = fields.Integer()


class ReadQuotaHistoryArgs(StrictSchema):
    months = fields.Integer(load_default=12, validate=validate.Range(min=1, max=MAX_HISTORY_MONTHS))


class MonthConsumptionSchema(Schema):
    year_month = fields.String()
    charged_consumed_size = fields.Integer()
    monthly_free_consumed_size = fields.Integer()
    free_consumed_size = fields.Integer()
    consumed_size = fields.Integer()


class ReadRecordArgs(StrictSchema):
    start_timestamp_us = fields.Integer(load_default=0, validate=validate.Range(min=0, max=INT64_MAX))
    end_timestamp_us = fields.Integer(load_default=INT64_MAX, validate=validate.Range(min=0, max=INT64_MAX))
    max_records = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    cursor = fields.String(load_default=None, allow_none=True)
    format = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(["json", "csv"]), metadata={
        "description": "csv: the same page as text/csv (also chosen by `Accept: text/csv`); the next cursor "
                       "is in the X-Next-Cursor and Link headers"})


class ReadRecordSchema(Schema):
    object_name = fields.String()
    object_id = fields.Integer()
    checksum = fields.String()
    account = fields.String()
    timestamp_us = fields.Integer()
    read_size = fields.Integer()


class ReadRecordListSchema(Schema):
    read_records = fields.List(fields.Nested(ReadRecordSchema))
    next_cursor = fields.String(allow_none=True)
    next_start_timestamp_us = fields.Integer()


class PresignRevocationSchema(Schema):
    account = fields.String()
    revoked_before_us = fields.Integer(metadata={"description": "URLs signed before this time no longer work"})


class AccountLimitsSchema(StrictSchema):
    account = fields.String(dump_only=True)
    max_concurrent_downloads = fields.Integer(strict=True, allow_none=True, load_default=None,
                                              validate=validate.Range(min=0, max=2**31 - 1))
    max_monthly_downloads = fields.Integer(strict=True, allow_none=True, load_default=None,
                                           validate=validate.Range(min=0, max=2**31 - 1))
    active_downloads = fields.Integer(strict=True, dump_only=True)
    downloads_this_month = fields.Integer(strict=True, dump_only=True)


# ---- multipart uploads -------------------------------------------------------------------------

class UploadCreateSchema(StrictSchema):
    key = fields.String(required=True, validate=domain(names.validate_key))
    content_type = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=255))


class UploadPartSchema(Schema):
    part_number = fields.Integer()
    size = fields.Integer()
    etag = fields.String(metadata={"description": "quoted md5 of the part, as S3's part ETag"})
    last_modified = fields.DateTime()


class UploadSchema(Schema):
    upload_id = fields.String()
    bucket = fields.String()
    key = fields.String()
    initiator = fields.String()
    created_at = fields.DateTime()
    parts = fields.List(fields.Nested(UploadPartSchema))


class CompletePartSchema(StrictSchema):
    part_number = fields.Integer(strict=True, required=True, validate=validate.Range(min=1, max=10000))
    etag = fields.String(required=True, validate=validate.Length(min=1, max=100))


class CompleteUploadSchema(StrictSchema):
    parts = fields.List(fields.Nested(CompletePartSchema), required=True,
                        validate=validate.Length(min=1, max=10000))


# ---- S3 access keys ----------------------------------------------------------------------------

class AccessKeyCreateSchema(StrictSchema):
    account = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=255))
    roles = fields.List(fields.String(validate=validate.Length(min=1, max=64)), load_default=None, allow_none=True,
                        validate=validate.Length(max=32))
    description = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=255))


class AccessKeySchema(Schema):
    access_key_id = fields.String()
    secret_access_key = fields.String(metadata={"description": "only in the answer to POST: shown once"})
    account = fields.String()
    roles = fields.List(fields.String())
    description = fields.String(allow_none=True)
    created_at = fields.DateTime()


class AccessKeyListSchema(Schema):
    access_keys = fields.List(fields.Nested(AccessKeySchema))
