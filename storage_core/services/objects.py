"""Objects: their JSON view, lookup, listing and deletion (uploads are ``services/uploads.py``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from profiles import profile
from storage_core.cursors import decode_cursor, encode_cursor
from storage_core.db import transaction
from storage_core.errors import ObjectNotFound
from storage_core.models import File, Object
from storage_core.services.buckets import get_bucket
from storage_core.services.content import ContentStore


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
            query = (select(Object, File).join(File, File.checksum == Object.checksum)
                     .where(Object.bucket_id == bucket.id))
            if prefix:
                # a range instead of LIKE: no escaping of % and _, and it uses the (bucket, key) index
                query = query.where(Object.key >= prefix, Object.key < prefix + "\U0010ffff")
            if cursor:
                query = query.where(Object.key > decode_cursor(cursor, str)[0])
            rows = session.execute(query.order_by(Object.key).limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "objects": [object_view(obj, bucket_name, file) for obj, file in rows],
            "next_cursor": encode_cursor(rows[-1][0].key) if more else None,
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
