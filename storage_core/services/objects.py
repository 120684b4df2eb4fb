"""Objects: their JSON view, lookup, listing and deletion (uploads are ``services/uploads.py``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.orm import Session, sessionmaker

from profiles import profile
from storage_core.cursors import decode_cursor, encode_cursor
from storage_core.db import transaction
from storage_core.errors import ObjectNotFound
from storage_core.models import File, Object
from storage_core.names import validate_key
from storage_core.services.buckets import get_bucket
from storage_core.services.content import ContentStore, lock_file

if TYPE_CHECKING:
    from storage_core.services.uploads import ObjectMetadata, StoredObject

# above every character a key may hold: ``prefix + LAST`` bounds the keys that begin with ``prefix``
LAST = "\U0010ffff"


def keys_after(prefix: str, after: str) -> list[ColumnElement[bool]]:
    """The keys of a listing page: under ``prefix`` and after ``after`` (a cursor or S3 marker; "" for none),
    with a single lower bound, the larger of the two, which PostgreSQL and SQLite both make the start of the
    (bucket_id, key) index range (tests/test_scale.py checks both plans): given two, SQLite starts at the
    prefix and filters by the cursor, which costs the keys before it."""
    terms = [Object.key > after] if after >= prefix else [Object.key >= prefix]
    if prefix:
        terms.append(Object.key < prefix + LAST)
    return terms


@dataclass(frozen=True, slots=True)
class ListedObject:
    key: str
    last_modified: dt.datetime
    s3_etag: str
    size: int
    checksum_algorithms: tuple[str, ...] = ()
    checksum: str = ""  # the content's sha256


@dataclass(frozen=True, slots=True)
class ListingPage:
    """A page of S3's listing: keys and common prefixes in key order; ``resume`` continues after it."""

    objects: list[ListedObject] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    resume: tuple[str, str] | None = None  # (list keys after this, skipping those that begin with this)
    last_item: str | None = None  # the last key or common prefix of the page (ListObjects' NextMarker)


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


@profile("storage")
class ObjectService:
    def __init__(self, session_factory: sessionmaker[Session], content: ContentStore):
        self.session_factory = session_factory
        self.content = content

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
            # a range instead of LIKE: no escaping of % and _, and it uses the (bucket, key) index
            after = decode_cursor(cursor, str)[0] if cursor else ""
            query = (select(Object, File).join(File, File.checksum == Object.checksum)
                     .where(Object.bucket_id == bucket.id, *keys_after(prefix, after)))
            rows = session.execute(query.order_by(Object.key).limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "objects": [object_view(obj, bucket_name, file) for obj, file in rows],
            "next_cursor": encode_cursor(rows[-1][0].key) if more else None,
        }

    def list_page(self, bucket_name: str, *, prefix: str = "", delimiter: str | None = None, after: str = "",
                  skip: str = "", max_keys: int = 1000) -> ListingPage:
        """S3's listing: keys after ``after`` that begin with ``prefix``, those holding ``delimiter`` past the
        prefix rolled up into common prefixes, at most ``max_keys`` entries (keys and prefixes) in key order.

        A common prefix stands for every key under it, on this page and the next: ``resume`` carries it as
        the prefix to skip, so continuing never repeats or skips a key. Keys under one common prefix are
        skipped by one query each (the next key after ``prefix + LAST``), not read one by one."""
        objects: list[ListedObject] = []
        prefixes: list[str] = []
        resume: tuple[str, str] | None = None
        last_item: str | None = None
        marker = after
        with transaction(self.session_factory) as session:
            bucket = get_bucket(session, bucket_name)
            if max_keys <= 0:
                return ListingPage()
            base = (select(Object.key, Object.created_at, Object.s3_etag, Object.checksums, File.size, File.md5,
                           File.checksum)
                    .join(File, File.checksum == Object.checksum).where(Object.bucket_id == bucket.id))
            while True:
                batch = min(max_keys + 1 - len(objects) - len(prefixes), 1000) + 1
                rows = session.execute(base.where(*keys_after(prefix, marker)).order_by(Object.key).limit(batch)).all()
                if not rows:
                    return ListingPage(objects, prefixes, False, resume, last_item)
                requery = False
                for row in rows:
                    key = row.key
                    marker = key
                    if skip and key.startswith(skip):
                        continue
                    rest = key[len(prefix):]
                    at = rest.find(delimiter) if delimiter else -1
                    if len(objects) + len(prefixes) == max_keys:
                        return ListingPage(objects, prefixes, True, resume, last_item)
                    if at >= 0:
                        common = prefix + rest[:at + len(delimiter or "")]
                        prefixes.append(common)
                        skip, resume, last_item = common, (common, common), common
                        marker, requery = common + LAST, True
                        break
                    objects.append(ListedObject(key, row.created_at, row.s3_etag or row.md5, row.size,
                                                tuple(sorted(row.checksums or {})), row.checksum))
                    skip, resume, last_item = "", (key, ""), key
                if not requery and len(rows) < batch:
                    return ListingPage(objects, prefixes, False, resume, last_item)

    def copy(self, source_bucket: str, source_key: str, bucket_name: str, key: str,
             metadata: ObjectMetadata | None = None) -> StoredObject:
        """Point ``key`` at the content of the source object: a metadata operation, no byte is read or written.

        ``metadata`` None keeps the source's (S3's COPY directive)."""
        from storage_core.services.uploads import Link, ObjectMetadata, StoredObject, link_object

        validate_key(key)
        with transaction(self.session_factory) as session:
            source = session.scalar(select(Object).where(Object.bucket_id == get_bucket(session, source_bucket).id,
                                                         Object.key == source_key))
            if source is None:
                raise ObjectNotFound(f"object {source_key!r} does not exist in bucket {source_bucket!r}")
            target = get_bucket(session, bucket_name)
            # the file row's lock keeps the content from being released while the key is pointed at it
            file = lock_file(session, source.checksum)
            if file is None:  # pragma: no cover - an object always has its file
                raise ObjectNotFound(f"object {source_key!r} has no content")
            if metadata is None:
                metadata = ObjectMetadata(source.content_type, source.content_encoding, source.content_disposition,
                                          source.cache_control, dict(source.user_metadata or {}))
            link = Link(target.id, bucket_name, key, source.checksum, metadata, source.s3_etag or file.md5,
                        dict(source.checksums or {}))
            view, replaced = link_object(session, link)
        if replaced is not None and replaced != view["checksum"]:
            self.content.release(replaced)
        return StoredObject(view, replaced is None, link.s3_etag, link.checksums)

    def delete(self, bucket_name: str, key: str) -> None:
        with transaction(self.session_factory) as session:
            bucket = get_bucket(session, bucket_name)
            obj = session.scalar(select(Object).where(Object.bucket_id == bucket.id, Object.key == key))
            if obj is None:
                raise ObjectNotFound(f"object {key!r} does not exist in bucket {bucket_name!r}")
            checksum = obj.checksum
            session.execute(delete(Object).where(Object.id == obj.id))
        self.content.release(checksum)
