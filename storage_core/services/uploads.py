"""Uploads: a door hands a stream, the digests the client declared and the metadata; the object is stored.

The body is spooled to disk while its digests are computed, verified against what the client declared
(``BadDigest``: nothing stored), cut into pieces and written once per target location (content
addressing: a location that has the content already is not written again), then the key is pointed
at the content in one transaction. Nothing is left behind on failure; ``storage-admin gc`` removes
what a crash leaves.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from profiles import profile
from storage_core.checksums import Checksum
from storage_core.db import transaction
from storage_core.errors import BucketNotFound, StorageUnavailable
from storage_core.models import Bucket, File, Object, Purpose, StorageLocation, utcnow
from storage_core.names import validate_key
from storage_core.services.buckets import get_bucket
from storage_core.services.content import ContentBusy, ContentStore, PendingWrite
from storage_core.services.objects import object_view
from storage_core.settings import Settings
from storage_core.spool import Digests, Spool
from storage_core.timeutil import as_utc


@dataclass(frozen=True, slots=True)
class ObjectMetadata:
    """What an upload says of its object besides the bytes; returned with every download of it.

    The native API sets ``content_type`` only; the S3 door sets them all (``x-amz-meta-*`` are
    ``user_metadata``, names in lower case without the prefix)."""

    content_type: str = "application/octet-stream"
    content_encoding: str | None = None
    content_disposition: str | None = None
    cache_control: str | None = None
    user_metadata: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"content_type": self.content_type, "content_encoding": self.content_encoding,
                "content_disposition": self.content_disposition, "cache_control": self.cache_control,
                "user_metadata": dict(self.user_metadata)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ObjectMetadata:
        return cls(data.get("content_type") or "application/octet-stream", data.get("content_encoding"),
                   data.get("content_disposition"), data.get("cache_control"), dict(data.get("user_metadata") or {}))


NO_DIGESTS = Digests()
DEFAULT_METADATA = ObjectMetadata()


@dataclass(frozen=True, slots=True)
class StoredObject:
    view: dict[str, Any]  # the object JSON of the native API
    created: bool  # False when it replaced an object of the same key
    s3_etag: str = ""  # S3's entity tag of the object (unquoted)
    checksums: dict[str, str] = field(default_factory=dict)  # verified x-amz-checksum-* values, base64


class ChecksummingStream:
    """A read()-able stream computing whole-object checksums (``storage_core.checksums``) on the way."""

    def __init__(self, raw: BinaryIO, algorithms: list[str]):
        self._raw = raw
        self.checksums = [Checksum(algorithm) for algorithm in algorithms]

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        for checksum in self.checksums:
            checksum.update(data)
        return data

    def verify(self, expected: Mapping[str, str | None]) -> dict[str, str]:
        """BadDigest unless every expected value holds; the values computed, algorithm -> base64."""
        for checksum in self.checksums:
            if expected.get(checksum.algorithm) is not None:
                checksum.verify(expected[checksum.algorithm])
        return {checksum.algorithm: checksum.b64digest() for checksum in self.checksums}


def target_locations(session: Session, bucket: Bucket) -> list[StorageLocation]:
    """The bucket's locations, or every enabled location when it names none; never a cache location (it
    holds restored copies of nearline files only)."""
    locations = [loc for loc in bucket.locations if loc.enabled and loc.purpose != Purpose.CACHE]
    if not bucket.locations:
        locations = list(session.scalars(select(StorageLocation).where(
            StorageLocation.enabled.is_(True), StorageLocation.purpose != Purpose.CACHE)
            .order_by(StorageLocation.id)))
    if not locations:
        raise StorageUnavailable(f"bucket {bucket.name!r} has no enabled storage location to write to")
    return locations


@profile("storage")
class UploadService:
    def __init__(self, session_factory: sessionmaker[Session], settings: Settings, content: ContentStore):
        self.session_factory = session_factory
        self.settings = settings
        self.content = content

    def put(self, bucket_name: str, key: str, stream: BinaryIO, *, length: int | None,
            expected: Digests = NO_DIGESTS, metadata: ObjectMetadata = DEFAULT_METADATA,
            checksums: Mapping[str, str | None] | None = None,
            verified: Callable[[], Mapping[str, str]] | None = None) -> StoredObject:
        """Store the body as the object ``key`` of the bucket. Nothing is kept on failure.

        ``checksums``: algorithm (``crc32``, ...) -> the base64 value the client declared, verified
        (BadDigest), or None to compute and record it only. ``verified``: checksums the door has
        already verified while decoding the stream (an aws-chunked trailer), asked once it is read."""
        validate_key(key)
        # fail before reading a large body; the bucket and its locations are looked up once
        with transaction(self.session_factory) as session:
            bucket = get_bucket(session, bucket_name)
            locations = target_locations(session, bucket)
            bucket_id = bucket.id
        checked = ChecksummingStream(stream, list(checksums or {}))
        with Spool(self.settings.spool_dir, self.settings.piece_size, self.settings.block_size) as spool:
            spool.receive(checked if checksums else stream, length, self.settings.max_upload_size)
            spool.verify(expected)
            computed = {**checked.verify(checksums or {}), **(verified() if verified is not None else {})}
            return self.store(spool, bucket_id, bucket_name, key, locations, metadata, spool.md5, computed)

    def store(self, spool: Spool, bucket_id: int, bucket_name: str, key: str, locations: list[StorageLocation],
              metadata: ObjectMetadata, s3_etag: str, checksums: dict[str, str],
              finish: Callable[[Session], None] | None = None) -> StoredObject:
        """Store a verified spool as the object ``key`` (also the multipart service's way of storing the
        re-cut content of an upload whose parts cannot become pieces as they are). ``finish`` runs in the
        transaction that makes the object appear."""
        owner = uuid.uuid4().hex
        link = Link(bucket_id, bucket_name, key, spool.sha256, metadata, s3_etag, checksums)
        pending, view, replaced = self._reserve(spool, locations, owner, link, finish)
        if pending:
            self.content.write(spool, pending)
            try:
                with transaction(self.session_factory) as session:
                    self.content.mark_stored(session, pending)
                    view, replaced = link_object(session, link)
                    if finish is not None:
                        finish(session)
            except Exception:
                self.content.abandon(spool.sha256, pending)
                raise
        if replaced is not None and replaced != view["checksum"]:
            self.content.release(replaced)
        return StoredObject(view, replaced is None, s3_etag, checksums)

    def _reserve(self, spool: Spool, locations: list[StorageLocation], owner: str, link: Link,
                 finish: Callable[[Session], None] | None) -> tuple[list[PendingWrite], dict[str, Any] | None,
                                                                   str | None]:
        """Reserve pending copies where the content is missing; where it is stored everywhere, link it at once.

        Another upload of the same content in progress is waited for (it will store it, or give up and
        leave the writing to us), so identical concurrent uploads all succeed."""
        deadline = time.monotonic() + self.settings.upload_wait_seconds
        pause = 0.02
        while True:
            try:
                with transaction(self.session_factory) as session:
                    pending = self.content.reserve(session, spool, locations, owner)
                    if pending:
                        return pending, None, None
                    view, replaced = link_object(session, link)
                    if finish is not None:
                        finish(session)
                    return [], view, replaced
            except ContentBusy:
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


@dataclass(frozen=True, slots=True)
class Link:
    """What an object is made of when a key is pointed at stored content."""

    bucket_id: int
    bucket_name: str
    key: str
    checksum: str
    metadata: ObjectMetadata
    s3_etag: str
    checksums: dict[str, str]


def link_object(session: Session, link: Link) -> tuple[dict[str, Any], str | None]:
    """Point the key at the content (in the caller's transaction); returns (object JSON, checksum of the
    object it replaced, if any).

    Two uploads to one key at once: the second insert waits for the first's commit, fails on the
    unique key, and replaces what the first linked; the last to commit wins and both succeed."""
    metadata = link.metadata
    while True:
        previous = session.scalar(select(Object).where(Object.bucket_id == link.bucket_id, Object.key == link.key)
                                  .with_for_update())
        now = utcnow()
        weak = previous is not None and int(as_utc(previous.created_at).timestamp()) == int(now.timestamp())
        obj = Object(bucket_id=link.bucket_id, key=link.key, checksum=link.checksum,
                     content_type=metadata.content_type, created_at=now, last_modified_weak=weak,
                     s3_etag=link.s3_etag or None, content_encoding=metadata.content_encoding,
                     content_disposition=metadata.content_disposition, cache_control=metadata.cache_control,
                     user_metadata=dict(metadata.user_metadata) or None, checksums=link.checksums or None)
        try:
            with session.begin_nested():
                if previous is not None:
                    session.delete(previous)
                    session.flush()
                session.add(obj)
        except IntegrityError:
            if session.scalar(select(Bucket.id).where(Bucket.id == link.bucket_id)) is None:
                raise BucketNotFound(f"bucket {link.bucket_name!r} was deleted during the upload") from None
            continue  # another upload linked the key meanwhile: replace it
        file = session.get(File, link.checksum)
        return object_view(obj, link.bucket_name, file), (previous.checksum if previous is not None else None)
