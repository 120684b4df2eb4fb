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
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from profiles import profile
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
    """What an upload says of its object besides the bytes."""

    content_type: str = "application/octet-stream"


NO_DIGESTS = Digests()
DEFAULT_METADATA = ObjectMetadata()


@dataclass(frozen=True, slots=True)
class StoredObject:
    view: dict[str, Any]  # the object JSON of the native API
    created: bool  # False when it replaced an object of the same key


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
            expected: Digests = NO_DIGESTS, metadata: ObjectMetadata = DEFAULT_METADATA) -> StoredObject:
        """Store the body as the object ``key`` of the bucket. Nothing is kept on failure."""
        validate_key(key)
        # fail before reading a large body; the bucket and its locations are looked up once
        with transaction(self.session_factory) as session:
            bucket = get_bucket(session, bucket_name)
            locations = target_locations(session, bucket)
            bucket_id = bucket.id
        with Spool(self.settings.spool_dir, self.settings.piece_size, self.settings.block_size) as spool:
            spool.receive(stream, length, self.settings.max_upload_size)
            spool.verify(expected)
            owner = uuid.uuid4().hex
            pending, view, replaced = self._reserve(spool, locations, owner, bucket_id, bucket_name, key, metadata)
            if pending:
                self.content.write(spool, pending)
                try:
                    with transaction(self.session_factory) as session:
                        self.content.mark_stored(session, pending)
                        view, replaced = self._link(session, bucket_id, bucket_name, key, spool.sha256, metadata)
                except Exception:
                    self.content.abandon(spool.sha256, pending)
                    raise
        if replaced is not None and replaced != view["checksum"]:
            self.content.release(replaced)
        return StoredObject(view, replaced is None)

    def _reserve(self, spool: Spool, locations: list[StorageLocation], owner: str, bucket_id: int, bucket_name: str,
                 key: str, metadata: ObjectMetadata) -> tuple[list[PendingWrite], dict[str, Any] | None, str | None]:
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
                    view, replaced = self._link(session, bucket_id, bucket_name, key, spool.sha256, metadata)
                    return [], view, replaced
            except ContentBusy:
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    @staticmethod
    def _link(session: Session, bucket_id: int, bucket_name: str, key: str, checksum: str,
              metadata: ObjectMetadata) -> tuple[dict[str, Any], str | None]:
        """Point the key at the content; returns (object JSON, checksum of the object it replaced).

        Two uploads to one key at once: the second insert waits for the first's commit, fails on the
        unique key, and replaces what the first linked; the last to commit wins and both succeed."""
        while True:
            previous = session.scalar(select(Object).where(Object.bucket_id == bucket_id, Object.key == key)
                                      .with_for_update())
            now = utcnow()
            weak = previous is not None and int(as_utc(previous.created_at).timestamp()) == int(now.timestamp())
            obj = Object(bucket_id=bucket_id, key=key, checksum=checksum, content_type=metadata.content_type,
                         created_at=now, last_modified_weak=weak)
            try:
                with session.begin_nested():
                    if previous is not None:
                        session.delete(previous)
                        session.flush()
                    session.add(obj)
            except IntegrityError:
                if session.scalar(select(Bucket.id).where(Bucket.id == bucket_id)) is None:
                    raise BucketNotFound(f"bucket {bucket_name!r} was deleted during the upload") from None
                continue  # another upload linked the key meanwhile: replace it
            file = session.get(File, checksum)
            return object_view(obj, bucket_name, file), (previous.checksum if previous is not None else None)
