"""SQLAlchemy 2.0 typed models of the domain: locations, files and their copies, buckets, objects, traffic,
restore jobs of nearline files, read leases of cached copies and the events sent to a webhook."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Stable constraint names so Alembic migrations are the same on PostgreSQL and SQLite.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only makes INTEGER PRIMARY KEY an alias of rowid (autoincrement); BIGINT elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# Ids that name a row to the outside (object_id in read records, a copy held by a running download) are never
# given again: SQLite would hand out the largest rowid + 1 after a delete without AUTOINCREMENT (migration 0009).
NEVER_REUSED_IDS = {"sqlite_autoincrement": True}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands them back naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, _dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value

    def process_result_value(self, value: dt.datetime | None, _dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Access:
    ONLINE = "online"  # pieces are read directly
    NEARLINE = "nearline"  # tape, S3 Glacier: pieces must be restored (into a cache) before they are read

    ALL = (ONLINE, NEARLINE)


class Purpose:
    STORAGE = "storage"  # holds the copies of uploaded files
    CACHE = "cache"  # holds restored copies of nearline files; never an upload target

    ALL = (STORAGE, CACHE)


class StorageLocation(Base):
    __tablename__ = "storage_locations"
    __table_args__ = (
        CheckConstraint("tier IN ('hot', 'cold')", name="tier"),
        CheckConstraint("priority >= 0", name="priority"),
        CheckConstraint("access IN ('online', 'nearline')", name="access"),
        CheckConstraint("purpose IN ('storage', 'cache')", name="purpose"),
        # a cache is read directly: a restored copy on tape would need a restore itself
        CheckConstraint("purpose <> 'cache' OR access = 'online'", name="cache_online"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    plugin: Mapped[str] = mapped_column(String(32))
    tier: Mapped[str] = mapped_column(String(4))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    capacity: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    access: Mapped[str] = mapped_column(String(8), default=Access.ONLINE, server_default=Access.ONLINE)
    purpose: Mapped[str] = mapped_column(String(8), default=Purpose.STORAGE, server_default=Purpose.STORAGE)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class File(Base):
    """Content keyed by its sha256; stored once per location as ``piece_count`` pieces."""

    __tablename__ = "files"

    checksum: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    piece_size: Mapped[int] = mapped_column(BigInteger)
    piece_count: Mapped[int] = mapped_column(Integer)
    block_size: Mapped[int] = mapped_column(Integer)
    # digests (32 bytes each) of every block of every piece, in order (storage_core.layout); made with
    # ``block_hash`` (storage_core.integrity.BLOCK_HASHES): blake3, or sha256 for files stored before 0003
    block_digests: Mapped[bytes] = mapped_column(LargeBinary)
    block_hash: Mapped[str] = mapped_column(String(16), server_default="sha256")
    md5: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    copies: Mapped[list[FileCopy]] = relationship(back_populates="file", lazy="raise")


class CopyState:
    PENDING = "pending"  # pieces being written; not served
    STORED = "stored"  # complete and served
    CORRUPT = "corrupt"  # failed verification; skipped until repaired
    DELETING = "deleting"  # pieces being removed; not served
    CACHED = "cached"  # a restored copy of a nearline file on a cache location, served until ``expires_at``

    SERVABLE = (STORED, CACHED)


class FileCopy(Base):
    __tablename__ = "file_copies"
    __table_args__ = (UniqueConstraint("checksum", "location_id", name="uq_file_copies_checksum_location"),
                      NEVER_REUSED_IDS)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    checksum: Mapped[str] = mapped_column(ForeignKey("files.checksum", ondelete="CASCADE"))
    location_id: Mapped[int] = mapped_column(ForeignKey("storage_locations.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default=CopyState.PENDING)
    # the upload (or copy) writing a pending copy: stale pending copies are found and removed by gc
    owner: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # cached copies only: served until then (extended by restore requests), and the last download that
    # began reading it (least recently read copies are evicted first, after expired ones)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_read_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    file: Mapped[File] = relationship(back_populates="copies", lazy="raise")
    location: Mapped[StorageLocation] = relationship(lazy="select")


bucket_locations = Table(
    "bucket_locations",
    Base.metadata,
    Column("bucket_id", ForeignKey("buckets.id", ondelete="CASCADE"), primary_key=True),
    Column("location_id", ForeignKey("storage_locations.id", ondelete="CASCADE"), primary_key=True),
)


class Bucket(Base):
    __tablename__ = "buckets"
    __table_args__ = (CheckConstraint("visibility IN ('private', 'public-read')", name="visibility"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    owner: Mapped[str] = mapped_column(String(255))
    visibility: Mapped[str] = mapped_column(String(16), default="private")
    charged_read_quota: Mapped[int] = mapped_column(BigInteger, default=0)
    free_read_quota: Mapped[int] = mapped_column(BigInteger)
    monthly_free_read_quota: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    # loaded only where used: the download path reads buckets and must not pay for their locations
    locations: Mapped[list[StorageLocation]] = relationship(secondary=bucket_locations, lazy="select")


class Object(Base):
    __tablename__ = "objects"
    __table_args__ = (UniqueConstraint("bucket_id", "key", name="uq_objects_bucket_key"), NEVER_REUSED_IDS)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    bucket_id: Mapped[int] = mapped_column(ForeignKey("buckets.id"))
    key: Mapped[str] = mapped_column(String(1024))
    checksum: Mapped[str] = mapped_column(ForeignKey("files.checksum"), index=True)
    content_type: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # it replaced an object of the same key created within the same second: its Last-Modified (whole
    # seconds) is then a weak validator, which If-Range must not trust (RFC 9110 8.8.2.2)
    last_modified_weak: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # S3's entity tag: the md5 hex of the content for a single PUT, md5-of-part-md5s "-N" for a multipart
    # upload (None for objects stored before migration 0006: the file's md5 then)
    s3_etag: Mapped[str | None] = mapped_column(String(48), nullable=True)
    # representation headers given at upload and returned on download (None: not given)
    content_encoding: Mapped[str | None] = mapped_column(String(255), nullable=True)
    content_disposition: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    cache_control: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # x-amz-meta-* (names in lower case, without the prefix) -> value
    user_metadata: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    # whole-object checksums the client sent and the service verified (crc32, ...) -> base64
    checksums: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)

    bucket: Mapped[Bucket] = relationship(lazy="raise")
    file: Mapped[File] = relationship(lazy="raise")


class DamagedPiece(Base):
    """A piece of one copy that was found missing or corrupt: that copy does not serve that piece (its other
    pieces still serve) until ``storage-admin verify --repair`` rewrites it from a good copy."""

    __tablename__ = "damaged_pieces"

    copy_id: Mapped[int] = mapped_column(BigId, ForeignKey("file_copies.id", ondelete="CASCADE"), primary_key=True)
    piece_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    reason: Mapped[str] = mapped_column(String(16))  # PieceMissing or CorruptPiece
    detected_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class BucketTraffic(Base):
    """What a bucket consumed in one UTC month, per kind of quota (the split: ``storage_core.accounting``)."""

    __tablename__ = "bucket_traffic"
    __table_args__ = (CheckConstraint("free_quota_remaining >= 0", name="free_remaining"),)

    bucket_id: Mapped[int] = mapped_column(ForeignKey("buckets.id", ondelete="CASCADE"), primary_key=True)
    year_month: Mapped[str] = mapped_column(String(7), primary_key=True)
    charged_quota_size: Mapped[int] = mapped_column(BigInteger)
    charged_consumed_size: Mapped[int] = mapped_column(BigInteger, default=0)
    monthly_free_quota_size: Mapped[int] = mapped_column(BigInteger)
    monthly_free_consumed_size: Mapped[int] = mapped_column(BigInteger, default=0)
    # the one-time free quota left, carried over from the previous month when the row is created
    free_quota_remaining: Mapped[int] = mapped_column(BigInteger)
    free_consumed_size: Mapped[int] = mapped_column(BigInteger, default=0)


class ReadRecord(Base):
    """One charged read. The three ``*_size`` parts say which quota paid, so a refund can undo it."""

    __tablename__ = "read_records"
    __table_args__ = (Index("ix_read_records_bucket_time", "bucket_id", "timestamp_us", "id"), NEVER_REUSED_IDS)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    bucket_id: Mapped[int] = mapped_column(ForeignKey("buckets.id", ondelete="CASCADE"))
    year_month: Mapped[str] = mapped_column(String(7))
    object_name: Mapped[str] = mapped_column(String(1024))
    object_id: Mapped[int] = mapped_column(BigInteger)
    checksum: Mapped[str] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(255))
    timestamp_us: Mapped[int] = mapped_column(BigInteger)
    read_size: Mapped[int] = mapped_column(BigInteger)
    charged_size: Mapped[int] = mapped_column(BigInteger, default=0)
    monthly_free_size: Mapped[int] = mapped_column(BigInteger, default=0)
    free_size: Mapped[int] = mapped_column(BigInteger, default=0)


class PresignRevocation(Base):
    """An account revoked its presigned URLs: those signed before ``revoked_before_us`` stop working."""

    __tablename__ = "presign_revocations"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    revoked_before_us: Mapped[int] = mapped_column(BigInteger)


class AccountLimit(Base):
    """Optional per-account download limits set by admins; no row means unlimited."""

    __tablename__ = "account_limits"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    max_concurrent_downloads: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_monthly_downloads: Mapped[int | None] = mapped_column(Integer, nullable=True)


class AccountMonthlyDownloads(Base):
    __tablename__ = "account_monthly_downloads"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    year_month: Mapped[str] = mapped_column(String(7), primary_key=True)
    downloads: Mapped[int] = mapped_column(Integer, default=0)


class DownloadLease(Base):
    """A download in flight of a limited account. Renewed while streaming; a crashed instance's leases
    stop counting at ``expires_us``. Released leases are kept a while as a record of concurrency."""

    __tablename__ = "download_leases"
    __table_args__ = (Index("ix_download_leases_account_active", "account", "released_us", "expires_us"),
                      NEVER_REUSED_IDS)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account: Mapped[str] = mapped_column(String(255))
    acquired_us: Mapped[int] = mapped_column(BigInteger)
    expires_us: Mapped[int] = mapped_column(BigInteger)
    released_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class JobState:
    QUEUED = "queued"  # not started, or waiting for cache room (``waiting_since``)
    RUNNING = "running"  # the nearline location is restoring it, or it is being copied into the cache
    DONE = "done"
    FAILED = "failed"

    ACTIVE = (QUEUED, RUNNING)
    ALL = (QUEUED, RUNNING, DONE, FAILED)


class RestoreJob(Base):
    """The restore of one file from a nearline location into a cache location: one row per file, so a file
    is restored once however many ask. Workers take due jobs (``next_attempt_at``) with ``FOR UPDATE SKIP
    LOCKED`` and hold them by a lease they renew; a job whose worker died is taken again once the lease
    has expired."""

    __tablename__ = "restore_jobs"
    __table_args__ = (
        CheckConstraint("state IN ('queued', 'running', 'done', 'failed')", name="state"),
        Index("ix_restore_jobs_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    checksum: Mapped[str] = mapped_column(ForeignKey("files.checksum", ondelete="CASCADE"), unique=True)
    state: Mapped[str] = mapped_column(String(8), default=JobState.QUEUED)
    hours: Mapped[int] = mapped_column(Integer)  # how long the cached copy is kept once restored
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # expected end of the restore (Retry-After of downloads), and since when it waits for cache room
    eta: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    waiting_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # failed attempts (plugin errors) so far
    # the pending copy reserved on a cache location; it becomes the cached copy
    cache_copy_id: Mapped[int | None] = mapped_column(
        ForeignKey("file_copies.id", ondelete="SET NULL"), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    error: Mapped[str | None] = mapped_column(String(1000), nullable=True)


class CacheLease(Base):
    """A download reading a cached copy: the copy is not evicted while a live lease names it. Renewed while
    the body streams, deleted when it closes; a crashed instance's leases stop counting at ``expires_us``."""

    __tablename__ = "cache_leases"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    copy_id: Mapped[int] = mapped_column(ForeignKey("file_copies.id", ondelete="CASCADE"), index=True)
    acquired_us: Mapped[int] = mapped_column(BigInteger)
    expires_us: Mapped[int] = mapped_column(BigInteger)


class Event(Base):
    """An event for the webhook (``STORAGE_EVENT_WEBHOOK_URL``), kept until the receiver acknowledged it:
    recorded in the transaction of what it reports, so a restart loses none (at least once)."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_due", "delivered_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    checksum: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)  # the JSON sent, byte for byte the same on every attempt
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(1000), nullable=True)
class UploadState:
    OPEN = "open"  # parts may be added
    COMPLETING = "completing"  # Complete is assembling the object; no part may change


class MultipartUpload(Base):
    """A multipart upload in progress (S3's and the native API's alike, ``services/multipart.py``)."""

    __tablename__ = "multipart_uploads"
    __table_args__ = (Index("ix_multipart_uploads_bucket_key", "bucket_id", "key", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    bucket_id: Mapped[int] = mapped_column(ForeignKey("buckets.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(1024))
    initiator: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default=UploadState.OPEN)
    # what the object will carry: content_type, content_encoding, content_disposition, cache_control,
    # user_metadata (the fields of services.uploads.ObjectMetadata)
    object_metadata: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # the last part stored (or the start of Complete): gc removes uploads idle for STORAGE_UPLOAD_EXPIRY_HOURS
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PartState:
    PENDING = "pending"  # its pieces are being written (the row exists first, so gc never takes them for orphans)
    STORED = "stored"  # the current part of its number


class UploadPart(Base):
    """One part of a multipart upload: its pieces are stored under ``piece_name`` until Complete renames them."""

    __tablename__ = "upload_parts"
    __table_args__ = (Index("ix_upload_parts_upload_number", "upload_id", "part_number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("multipart_uploads.id", ondelete="CASCADE"))
    part_number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=PartState.PENDING)
    size: Mapped[int] = mapped_column(BigInteger)
    md5: Mapped[str] = mapped_column(String(32))
    # a random 64-hex name: the part's pieces are (piece_name, 0..n-1) on each location of location_ids
    piece_name: Mapped[str] = mapped_column(String(64), unique=True)
    piece_size: Mapped[int] = mapped_column(BigInteger)
    block_size: Mapped[int] = mapped_column(Integer)
    block_hash: Mapped[str] = mapped_column(String(16))
    block_digests: Mapped[bytes] = mapped_column(LargeBinary)
    checksums: Mapped[dict[str, str]] = mapped_column(JSON)
    location_ids: Mapped[list[int]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AccessKey(Base):
    """An S3 access key: the account and roles it acts as; its secret sealed (``storage_core.s3.keys``)."""

    __tablename__ = "access_keys"
    __table_args__ = (Index("ix_access_keys_account", "account"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the access key id
    account: Mapped[str] = mapped_column(String(255))
    roles: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    sealed_secret: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
