"""Objects: streamed uploads (spool, verify, store once per location), listing and deletion."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from typing import Any, BinaryIO

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from profiles import profile
from storage_core.db import transaction
from storage_core.errors import InvalidArgument, ObjectNotFound, StorageUnavailable
from storage_core.models import Bucket, File, Object, StorageLocation
from storage_core.services.buckets import get_bucket
from storage_core.services.content import ContentStore
from storage_core.settings import Settings
from storage_core.spool import Spool

MAX_KEY_BYTES = 1024
# type "/" subtype, with optional parameters; no control characters (they would end up in headers)
MIME_RE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(\s*;\s*[^\x00-\x1f\x7f]*)?$")


def validate_key(key: str) -> str:
    if not key:
        raise InvalidArgument("object key must not be empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidArgument(f"object key is longer than {MAX_KEY_BYTES} bytes")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidArgument("object key must not contain control characters")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument("object key must be valid UTF-8") from None
    return key


def validate_content_type(value: str | None) -> str:
    if not value:
        return "application/octet-stream"
    value = value.strip()
    if len(value) > 255 or not MIME_RE.match(value):
        raise InvalidArgument(f"Content-Type {value!r} is not a valid media type")
    return value


def object_view(obj: Object, bucket_name: str, file: File) -> dict[str, Any]:
    return {
        "bucket": bucket_name,
        "key": obj.key,
        "object_id": obj.id,
        "checksum": file.checksum,
        "size": file.size,
        "content_type": obj.content_type,
        "etag": f'"{file.checksum}"',
        "created_at": obj.created_at,
        "piece_size": file.piece_size,
        "piece_count": file.piece_count,
    }


def encode_key_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_key_cursor(cursor: str) -> str:
    try:
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError):
        raise InvalidArgument("cursor is not one this service returned") from None


def target_locations(session: Session, bucket: Bucket) -> list[StorageLocation]:
    """The bucket's locations, or every enabled location when it names none."""
    locations = [loc for loc in bucket.locations if loc.enabled]
    if not bucket.locations:
        locations = list(session.scalars(select(StorageLocation).where(StorageLocation.enabled.is_(True))
                                         .order_by(StorageLocation.id)))
    if not locations:
        raise StorageUnavailable(f"bucket {bucket.name!r} has no enabled storage location to write to")
    return locations


@profile("storage")
class ObjectService:
    def __init__(self, session_factory: sessionmaker[Session], settings: Settings, content: ContentStore):
        self.session_factory = session_factory
        self.settings = settings
        self.content = content

    def upload(self, bucket_name: str, key: str, stream: BinaryIO, *, content_length: int | None,
               content_type: str | None, content_md5: str | None, sha256: str | None) -> tuple[dict[str, Any], bool]:
        """Store the body as the object; returns (object JSON, created). Nothing is kept on failure."""
        validate_key(key)
        content_type = validate_content_type(content_type)
        with transaction(self.session_factory) as session:  # fail before reading a large body
            target_locations(session, get_bucket(session, bucket_name))
        with Spool(self.settings.spool_dir, self.settings.piece_size, self.settings.block_size) as spool:
            spool.receive(stream, content_length, self.settings.max_upload_size)
            spool.verify(content_md5, sha256)
            owner = uuid.uuid4().hex
            with transaction(self.session_factory) as session:
                bucket = get_bucket(session, bucket_name)
                pending = self.content.reserve(session, spool, target_locations(session, bucket), owner)
                if not pending:  # every location already holds the content: link it and finish
                    view, replaced = self._link(session, bucket, key, spool.sha256, content_type)
            if pending:
                self.content.write(spool, pending)
                try:
                    with transaction(self.session_factory) as session:
                        bucket = get_bucket(session, bucket_name)
                        self.content.mark_stored(session, pending)
                        view, replaced = self._link(session, bucket, key, spool.sha256, content_type)
                except Exception:
                    self.content.abandon(spool.sha256, pending)
                    raise
        if replaced is not None and replaced != view["checksum"]:
            self.content.release(replaced)
        return view, replaced is None

    def _link(self, session: Session, bucket: Bucket, key: str, checksum: str,
              content_type: str) -> tuple[dict[str, Any], str | None]:
        """Point the key at the content; returns (object JSON, checksum of the object it replaced)."""
        previous = session.scalar(select(Object).where(Object.bucket_id == bucket.id, Object.key == key)
                                  .with_for_update())
        if previous is not None:
            session.delete(previous)
            session.flush()
        obj = Object(bucket_id=bucket.id, key=key, checksum=checksum, content_type=content_type)
        session.add(obj)
        session.flush()
        file = session.get(File, checksum)
        return object_view(obj, bucket.name, file), (previous.checksum if previous is not None else None)

    def get(self, bucket_name: str, key: str) -> dict[str, Any]:
        with transaction(self.session_factory) as session:
            bucket = get_bucket(session, bucket_name)
            row = session.execute(select(Object, File).join(File, File.checksum == Object.checksum)
                                  .where(Object.bucket_id == bucket.id, Object.key == key)).first()
            if row is None:
                raise ObjectNotFound(f"object {key!r} does not exist in bucket {bucket_name!r}")
            return object_view(row[0], bucket.name, row[1])

    def list(self, bucket_name: str, prefix: str, limit: int, cursor: str | None) -> dict[str, Any]:
        with transaction(self.session_factory) as session:
            bucket = get_bucket(session, bucket_name)
            query = (select(Object, File).join(File, File.checksum == Object.checksum)
                     .where(Object.bucket_id == bucket.id))
            if prefix:
                # a range instead of LIKE: no escaping of % and _, and it uses the (bucket, key) index
                query = query.where(Object.key >= prefix, Object.key < prefix + "\U0010ffff")
            if cursor:
                query = query.where(Object.key > decode_key_cursor(cursor))
            rows = session.execute(query.order_by(Object.key).limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "objects": [object_view(obj, bucket_name, file) for obj, file in rows],
            "next_cursor": encode_key_cursor(rows[-1][0].key) if more else None,
        }

    def delete(self, bucket_name: str, key: str) -> None:
        with transaction(self.session_factory) as session:
            bucket = get_bucket(session, bucket_name)
            obj = session.scalar(select(Object).where(Object.bucket_id == bucket.id, Object.key == key))
            if obj is None:
                raise ObjectNotFound(f"object {key!r} does not exist in bucket {bucket_name!r}")
            checksum = obj.checksum
            session.execute(delete(Object).where(Object.id == obj.id))
        self.content.release(checksum)
