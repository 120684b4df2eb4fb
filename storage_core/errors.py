"""Domain errors: each carries its HTTP status and a stable machine-readable code."""

from __future__ import annotations

from typing import Any


class StorageError(Exception):
    """Base of every error the API reports; translated to problem+json in one handler."""

    status = 500
    code = "InternalError"
    title = "Internal error"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra or {}


class InvalidArgument(StorageError):
    status, code, title = 400, "InvalidArgument", "Invalid argument"


class BadDigest(StorageError):
    status, code, title = 400, "BadDigest", "Content digest mismatch"


# What a multipart Complete finds wrong with the part list (S3's codes; the native API shows the same code)
class InvalidPart(StorageError):
    status, code, title = 400, "InvalidPart", "Part not found or ETag mismatch"


class InvalidPartOrder(StorageError):
    status, code, title = 400, "InvalidPartOrder", "Parts not in ascending order"


class EntityTooSmall(StorageError):
    status, code, title = 400, "EntityTooSmall", "Part smaller than the minimum part size"


class Unauthorized(StorageError):
    status, code, title = 401, "Unauthorized", "Authentication required"


class AccessKeyNotFound(Unauthorized):
    """The S3 access key a request was signed with does not exist (any more)."""

    status, code, title = 403, "InvalidAccessKeyId", "Unknown access key"


class Forbidden(StorageError):
    status, code, title = 403, "Forbidden", "Not allowed"


class NotFound(StorageError):
    status, code, title = 404, "NotFound", "Not found"


# What is missing, for the doors that name it (S3's NoSuchBucket / NoSuchKey / NoSuchUpload); the native
# API keeps the one code "NotFound", so these subclasses change nothing there.
class BucketNotFound(NotFound):
    """The bucket named does not exist."""


class ObjectNotFound(NotFound):
    """The bucket exists but holds no object under the key named."""


class UploadNotFound(NotFound):
    """No multipart upload with this id is in progress (never begun, completed or aborted)."""


class Conflict(StorageError):
    status, code, title = 409, "Conflict", "Conflict"


# Which conflict, for S3's BucketAlreadyExists / BucketNotEmpty; the native code stays "Conflict".
class BucketExists(Conflict):
    """A bucket of this name already exists (owned by anyone)."""


class BucketNotEmpty(Conflict):
    """A bucket that still holds objects cannot be deleted."""


class PreconditionFailed(StorageError):
    status, code, title = 412, "PreconditionFailed", "Precondition failed"


class LengthRequired(StorageError):
    status, code, title = 411, "MissingContentLength", "Content-Length required"


class PayloadTooLarge(StorageError):
    status, code, title = 413, "EntityTooLarge", "Payload too large"


class RangeNotSatisfiable(StorageError):
    status, code, title = 416, "InvalidRange", "Range not satisfiable"


class QuotaExceeded(StorageError):
    status, code, title = 429, "QuotaExceeded", "Read quota exceeded"


class ConcurrentDownloadLimit(StorageError):
    status, code, title = 429, "ConcurrentDownloadLimit", "Too many simultaneous downloads for this account"


class MonthlyDownloadLimit(StorageError):
    status, code, title = 429, "MonthlyDownloadLimit", "Monthly download limit of this account reached"


class StorageUnavailable(StorageError):
    status, code, title = 503, "StorageUnavailable", "No storage location can serve"


class PieceMissing(StorageUnavailable):
    """A piece is absent (or unreadable) on one location; another copy may still have it."""

    code, title = "PieceMissing", "Piece missing on location"


class CorruptPiece(StorageUnavailable):
    """Bytes read from one location do not match the checksums recorded at upload."""

    code, title = "CorruptPiece", "Piece failed verification"


class NotRestored(StorageUnavailable):
    """A piece of a nearline location was read without being restored first (S3's InvalidObjectState)."""

    code, title = "NotRestored", "Piece not restored"


class NearlineOnly(StorageError):
    """The file's only copies are nearline and none is cached: it must be restored before it can be read.

    The S3 door answers both subclasses with 403 ``InvalidObjectState``."""

    status, code, title = 409, "NotAvailable", "File not available"


class NotAvailable(NearlineOnly):
    """Nearline only, and no restore is in progress (``STORAGE_RESTORE_ON_READ`` is off): ask for one with
    ``POST /api/v1/files/restore``."""

    status, code, title = 409, "NotAvailable", "File not available"


class RestoreInProgress(NearlineOnly):
    """Nearline only, and a restore is in progress; ``Retry-After`` says when to try again."""

    status, code, title = 503, "RestoreInProgress", "Restore in progress"


class PresignUnavailable(StorageError):
    status, code, title = 501, "PresignUnavailable", "Presigned URLs are not configured on this service"


class InsufficientStorage(StorageError):
    status, code, title = 507, "InsufficientStorage", "Location capacity exceeded"


class DatabaseUnavailable(StorageError):
    status, code, title = 503, "DatabaseUnavailable", "Database unavailable"


class ConfigurationError(Exception):
    """A setting or profile is invalid: the service must not start."""
