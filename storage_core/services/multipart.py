"""Multipart uploads: one service behind both doors (S3's multipart operations and the native ``/uploads`` routes).

A part is spooled and verified like a whole upload (Content-MD5, sha256, ``x-amz-checksum-*``), then
its pieces are written to the bucket's locations under a random name of its own (``UploadPart.piece_name``).
The part's row is committed, as ``pending``, before any piece is written, so gc's orphan scan never
takes a piece of a running part for an orphan; it becomes ``stored`` (and replaces an earlier part of
the same number) in one transaction that also checks the upload is still open.

Complete checks the part list (ascending numbers, known parts, matching ETags, 5 MiB minimum but for
the last), then computes the sha256 and md5 of the whole content by reading the parts once, in
order, block by block (every block verified, memory bounded by a block). The file is keyed by that
sha256. When the parts line up with a piece size (all parts but the last of one size P, and P at most
the piece size or a multiple of it, which is what every S3 client sends), the parts' pieces *are*
the file's pieces: each is renamed to its place (``LocationPlugin.move_piece``: a rename on a local
location, a server-side copy on S3), and the file's block digests are the parts' digests end to end.
Otherwise the content is re-cut into pieces through a spool (a read and a write). The object appears
in one transaction, with the S3 ETag ``md5(part md5s)-N``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from profiles import profile
from storage_core.db import transaction
from storage_core.errors import (
    BucketNotFound,
    Conflict,
    EntityTooSmall,
    InvalidArgument,
    InvalidPart,
    InvalidPartOrder,
    PayloadTooLarge,
    StorageUnavailable,
    UploadNotFound,
)
from storage_core.layout import FileLayout, piece_count
from storage_core.models import (
    Bucket,
    CopyState,
    File,
    FileCopy,
    MultipartUpload,
    PartState,
    StorageLocation,
    UploadPart,
    UploadState,
    utcnow,
)
from storage_core.names import validate_key
from storage_core.services.buckets import get_bucket
from storage_core.services.content import ContentStore, IterStream, PendingWrite, lock_file, write_pieces
from storage_core.services.locations import require_room
from storage_core.services.reader import VerifiedReader
from storage_core.services.sources import PluginCache, Source, serving_order
from storage_core.services.uploads import (
    NO_DIGESTS,
    ChecksummingStream,
    Link,
    ObjectMetadata,
    StoredObject,
    UploadService,
    link_object,
    target_locations,
)
from storage_core.settings import Settings
from storage_core.spool import Digests, Spool

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB  # S3's maximum part
MAX_PARTS = 10_000


@dataclass(frozen=True, slots=True)
class PartInfo:
    part_number: int
    size: int
    etag: str  # the md5 hex of the part, unquoted
    last_modified: Any
    checksums: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UploadInfo:
    upload_id: str
    bucket: str
    key: str
    initiator: str
    created_at: Any
    metadata: ObjectMetadata


@dataclass(frozen=True, slots=True)
class RequestedPart:
    part_number: int
    etag: str  # with or without quotes


@dataclass(frozen=True, slots=True)
class _Part:
    """A stored part, detached from its session."""

    number: int
    size: int
    md5: str
    piece_name: str
    piece_size: int
    block_size: int
    block_hash: str
    block_digests: bytes
    location_ids: tuple[int, ...]

    @property
    def piece_count(self) -> int:
        return piece_count(self.size, self.piece_size)

    def layout(self) -> FileLayout:
        return FileLayout(self.piece_name, self.size, self.piece_size, self.block_size, self.block_digests,
                          self.block_hash)

    @classmethod
    def of(cls, row: UploadPart) -> _Part:
        return cls(row.part_number, row.size, row.md5, row.piece_name, row.piece_size, row.block_size,
                   row.block_hash, bytes(row.block_digests), tuple(row.location_ids))


@dataclass(frozen=True)
class Completion:
    """A Complete whose part list holds: ``run()`` assembles the object (once)."""

    service: MultipartService
    bucket_id: int
    bucket: str
    key: str
    upload_id: str
    parts: list[_Part]
    metadata: ObjectMetadata

    @property
    def s3_etag(self) -> str:
        return multipart_etag([p.md5 for p in self.parts])

    def run(self) -> StoredObject:
        return self.service._run_completion(self)


def multipart_etag(md5s: list[str]) -> str:
    """S3's ETag of a multipart object: the md5 of the parts' binary md5s, then ``-`` and the part count."""
    return hashlib.md5(b"".join(bytes.fromhex(m) for m in md5s), usedforsecurity=False).hexdigest() + f"-{len(md5s)}"


def _info(upload: MultipartUpload, bucket: str) -> UploadInfo:
    return UploadInfo(upload.id, bucket, upload.key, upload.initiator, upload.created_at,
                      ObjectMetadata.from_json(upload.object_metadata))


@profile("storage")
class MultipartService:
    def __init__(self, session_factory: sessionmaker[Session], settings: Settings, content: ContentStore,
                 plugins: PluginCache, uploads: UploadService):
        self.session_factory = session_factory
        self.settings = settings
        self.content = content
        self.plugins = plugins
        self.uploads = uploads

    # ---- lookups -----------------------------------------------------------------------------------

    @staticmethod
    def _upload(session: Session, bucket_name: str, upload_id: str, *, lock: bool = False) -> MultipartUpload:
        query = (select(MultipartUpload).join(Bucket, Bucket.id == MultipartUpload.bucket_id)
                 .where(MultipartUpload.id == upload_id, Bucket.name == bucket_name))
        upload = session.scalar(query.with_for_update(of=MultipartUpload) if lock else query)
        if upload is None:
            get_bucket(session, bucket_name)  # NoSuchBucket before NoSuchUpload
            raise UploadNotFound(f"no multipart upload {upload_id!r} in progress in bucket {bucket_name!r}")
        return upload

    @staticmethod
    def _stored_parts(session: Session, upload_id: str) -> list[UploadPart]:
        return list(session.scalars(select(UploadPart).where(UploadPart.upload_id == upload_id,
                                                             UploadPart.state == PartState.STORED)
                                    .order_by(UploadPart.part_number)))

    def _locations(self, session: Session, ids: set[int]) -> list[StorageLocation]:
        return list(session.scalars(select(StorageLocation).where(StorageLocation.id.in_(ids))
                                    .order_by(*serving_order()))) if ids else []

    # ---- create, list, abort -----------------------------------------------------------------------

    def create(self, bucket_name: str, key: str, initiator: str, metadata: ObjectMetadata) -> UploadInfo:
        validate_key(key)
        with transaction(self.session_factory) as session:
            bucket = get_bucket(session, bucket_name)
            upload = MultipartUpload(id=secrets.token_hex(16), bucket_id=bucket.id, key=key, initiator=initiator,
                                     state=UploadState.OPEN, object_metadata=metadata.as_json())
            session.add(upload)
            session.flush()
            return _info(upload, bucket_name)

    def get(self, bucket_name: str, upload_id: str) -> UploadInfo:
        with transaction(self.session_factory) as session:
            return _info(self._upload(session, bucket_name, upload_id), bucket_name)

    def list_parts(self, bucket_name: str, upload_id: str, marker: int = 0,
                   limit: int = 1000) -> tuple[UploadInfo, list[PartInfo], bool]:
        """The upload, its stored parts after part number ``marker`` (at most ``limit``), and whether more follow."""
        with transaction(self.session_factory) as session:
            upload = self._upload(session, bucket_name, upload_id)
            rows = list(session.scalars(
                select(UploadPart).where(UploadPart.upload_id == upload_id, UploadPart.state == PartState.STORED,
                                         UploadPart.part_number > marker)
                .order_by(UploadPart.part_number).limit(limit + 1)))
            info = _info(upload, bucket_name)
        parts = [PartInfo(r.part_number, r.size, r.md5, r.created_at, dict(r.checksums or {})) for r in rows[:limit]]
        return info, parts, len(rows) > limit

    def list_uploads(self, bucket_name: str, prefix: str = "", key_marker: str = "", upload_id_marker: str = "",
                     limit: int = 1000) -> tuple[list[UploadInfo], bool]:
        """Uploads in progress by key, then initiation time (S3's order), after the markers: keys after
        ``key_marker``, and with ``upload_id_marker`` also the uploads of ``key_marker`` begun after that one."""
        u = MultipartUpload
        with transaction(self.session_factory) as session:
            bucket = get_bucket(session, bucket_name)
            query = select(u).where(u.bucket_id == bucket.id)
            if prefix:
                query = query.where(u.key >= prefix, u.key < prefix + "\U0010ffff")
            if key_marker:
                after = u.key > key_marker
                marker = session.get(u, upload_id_marker) if upload_id_marker else None
                if marker is not None and marker.key == key_marker and marker.bucket_id == bucket.id:
                    after = or_(after, and_(u.key == key_marker, or_(
                        u.created_at > marker.created_at, and_(u.created_at == marker.created_at, u.id > marker.id))))
                query = query.where(after)
            rows = list(session.scalars(query.order_by(u.key, u.created_at, u.id).limit(limit + 1)))
            return [_info(r, bucket_name) for r in rows[:limit]], len(rows) > limit

    def abort(self, bucket_name: str, upload_id: str) -> None:
        with transaction(self.session_factory) as session:
            upload = self._upload(session, bucket_name, upload_id, lock=True)
            if upload.state != UploadState.OPEN:
                raise Conflict(f"multipart upload {upload_id!r} is being completed")
            parts = self._drop_upload(session, upload_id)
        self._remove_pieces(parts)

    def _drop_upload(self, session: Session, upload_id: str) -> list[_Part]:
        parts = [_Part.of(row) for row in session.scalars(select(UploadPart).where(UploadPart.upload_id == upload_id))]
        session.execute(delete(UploadPart).where(UploadPart.upload_id == upload_id))
        session.execute(delete(MultipartUpload).where(MultipartUpload.id == upload_id))
        return parts

    def _remove_pieces(self, parts: list[_Part]) -> None:
        """Remove the pieces of parts no row refers to any more (best effort: gc's orphan scan finishes)."""
        if not parts:
            return
        with transaction(self.session_factory) as session:
            locations = {loc.id: loc for loc in self._locations(session, {i for p in parts for i in p.location_ids})}
        for part in parts:
            for location_id in part.location_ids:
                location = locations.get(location_id)
                if location is None:
                    continue
                try:
                    plugin = self.plugins.plugin_for(location)
                    for index in range(part.piece_count):
                        plugin.delete_piece(part.piece_name, index)
                except StorageUnavailable as exc:
                    log.warning("could not remove pieces of part %s from %s: %s", part.piece_name, location.name,
                                exc.detail)

    # ---- parts -------------------------------------------------------------------------------------

    def upload_part(self, bucket_name: str, upload_id: str, part_number: int, stream: BinaryIO, *,
                    length: int | None, expected: Digests = NO_DIGESTS,
                    checksums: Mapping[str, str | None] | None = None,
                    verified: Callable[[], Mapping[str, str]] | None = None) -> PartInfo:
        """Spool, verify and store one part (replacing an earlier part of the same number); ``checksums``
        and ``verified`` as for ``UploadService.put``."""
        if not 1 <= part_number <= MAX_PARTS:
            raise InvalidArgument(f"part number must be an integer between 1 and {MAX_PARTS}")
        with transaction(self.session_factory) as session:
            upload = self._upload(session, bucket_name, upload_id)
            if upload.state != UploadState.OPEN:
                raise UploadNotFound(f"multipart upload {upload_id!r} is being completed")
            bucket = session.get(Bucket, upload.bucket_id)
            if bucket is None:  # pragma: no cover - the join found it
                raise BucketNotFound(f"bucket {bucket_name!r} does not exist")
            locations = target_locations(session, bucket)
        checked = ChecksummingStream(stream, list(checksums or {}))
        with Spool(self.settings.spool_dir, self.settings.piece_size, self.settings.block_size,
                   sha256=expected.sha256 is not None) as spool:
            spool.receive(checked if checksums else stream, length, MAX_PART_SIZE)
            spool.verify(expected)
            computed = {**checked.verify(checksums or {}), **(verified() if verified is not None else {})}
            row = UploadPart(upload_id=upload_id, part_number=part_number, state=PartState.PENDING, size=spool.size,
                             md5=spool.md5, piece_name=secrets.token_hex(32), piece_size=spool.piece_size,
                             block_size=spool.block_size, block_hash=spool.block_hash,
                             block_digests=spool.block_digests, checksums=computed,
                             location_ids=[loc.id for loc in locations])
            with transaction(self.session_factory) as session:
                self._open_upload(session, bucket_name, upload_id)
                session.add(row)
                session.flush()
                part = _Part.of(row)
                part_id = row.id
            written: list[tuple[StorageLocation, int]] = []
            try:
                for location in locations:
                    write_pieces(self.plugins.plugin_for(location), spool, part.piece_name,
                                 lambda index, location=location: written.append((location, index)))
                with transaction(self.session_factory) as session:
                    upload = self._open_upload(session, bucket_name, upload_id, lock=True)
                    replaced = [_Part.of(r) for r in session.scalars(
                        select(UploadPart).where(UploadPart.upload_id == upload_id,
                                                 UploadPart.part_number == part_number,
                                                 UploadPart.state == PartState.STORED))]
                    if replaced:
                        session.execute(delete(UploadPart).where(UploadPart.id.in_(
                            select(UploadPart.id).where(UploadPart.upload_id == upload_id,
                                                        UploadPart.part_number == part_number,
                                                        UploadPart.state == PartState.STORED))))
                    stored = session.get(UploadPart, part_id)
                    if stored is None:  # removed meanwhile (the upload was aborted and gc ran)
                        raise UploadNotFound(f"multipart upload {upload_id!r} was aborted")
                    stored.state = PartState.STORED
                    upload.updated_at = utcnow()
                    last_modified = stored.created_at
            except Exception:
                self._undo_part(part_id, part, written)
                raise
        self._remove_pieces(replaced)
        return PartInfo(part_number, part.size, part.md5, last_modified, computed)

    def _open_upload(self, session: Session, bucket_name: str, upload_id: str, lock: bool = False) -> MultipartUpload:
        upload = self._upload(session, bucket_name, upload_id, lock=lock)
        if upload.state != UploadState.OPEN:
            raise UploadNotFound(f"multipart upload {upload_id!r} is being completed")
        return upload

    def _undo_part(self, part_id: int, part: _Part, written: list[tuple[StorageLocation, int]]) -> None:
        for location, index in written:
            try:
                self.plugins.plugin_for(location).delete_piece(part.piece_name, index)
            except Exception:  # gc's orphan scan removes it later
                log.exception("could not remove piece %s.%d of a failed part", part.piece_name, index)
        try:
            with transaction(self.session_factory) as session:
                session.execute(delete(UploadPart).where(UploadPart.id == part_id))
        except Exception:
            log.exception("could not remove the row of a failed part; gc will")

    # ---- complete ----------------------------------------------------------------------------------

    def complete(self, bucket_name: str, upload_id: str, requested: list[RequestedPart]) -> StoredObject:
        """Assemble the object from the listed parts; it appears atomically. The upload is gone afterwards."""
        return self.begin_complete(bucket_name, upload_id, requested).run()

    def begin_complete(self, bucket_name: str, upload_id: str, requested: list[RequestedPart]) -> Completion:
        """Check the part list and take the upload (no part may change any more); ``run()`` assembles.

        The two steps let a door answer a wrong part list at once and stream the slow assembly (S3 sends
        whitespace to keep the connection alive meanwhile)."""
        with transaction(self.session_factory) as session:
            upload = self._upload(session, bucket_name, upload_id, lock=True)
            if upload.state != UploadState.OPEN:
                raise Conflict(f"multipart upload {upload_id!r} is already being completed")
            stored = {row.part_number: row for row in self._stored_parts(session, upload_id)}
            parts = self._check_part_list(requested, stored, self.settings.max_upload_size)
            upload.state = UploadState.COMPLETING
            upload.updated_at = utcnow()
            return Completion(self, upload.bucket_id, bucket_name, upload.key, upload_id, parts,
                              ObjectMetadata.from_json(upload.object_metadata))

    def _run_completion(self, completion: Completion) -> StoredObject:
        try:
            result, leftovers = self._assemble(completion.bucket_id, completion.bucket, completion.key,
                                               completion.upload_id, completion.parts, completion.metadata)
        except BaseException:
            try:
                with transaction(self.session_factory) as session:
                    session.execute(update(MultipartUpload).where(MultipartUpload.id == completion.upload_id)
                                    .values(state=UploadState.OPEN, updated_at=utcnow()))
            except Exception:
                log.exception("could not reopen multipart upload %s after a failed Complete", completion.upload_id)
            raise
        self._remove_pieces(leftovers)
        return result

    @staticmethod
    def _check_part_list(requested: list[RequestedPart], stored: dict[int, UploadPart], max_size: int = 0
                         ) -> list[_Part]:
        if not requested:
            raise InvalidArgument("the part list must name at least one part")
        if len(requested) > MAX_PARTS:
            raise InvalidArgument(f"at most {MAX_PARTS} parts")
        numbers = [p.part_number for p in requested]
        if any(b <= a for a, b in itertools.pairwise(numbers)):
            raise InvalidPartOrder("the list of parts was not in ascending order of part number")
        parts: list[_Part] = []
        for item in requested:
            row = stored.get(item.part_number)
            if row is None or item.etag.strip().strip('"').lower() != row.md5:
                raise InvalidPart(f"part {item.part_number} was not uploaded, or its ETag does not match")
            parts.append(_Part.of(row))
        total = sum(p.size for p in parts)
        if max_size and total > max_size:
            raise PayloadTooLarge(f"the parts add up to {total} bytes, more than the limit of {max_size} bytes")
        for part in parts[:-1]:
            if part.size < MIN_PART_SIZE:
                raise EntityTooSmall(f"part {part.number} is {part.size} bytes; every part but the last must be "
                                     f"at least {MIN_PART_SIZE} bytes")
        return parts

    @staticmethod
    def _piece_plan(parts: list[_Part]) -> int | None:
        """The file's piece size when the parts' pieces can be its pieces as they are, else None."""
        first = parts[0]
        if any((p.piece_size, p.block_size, p.block_hash) != (first.piece_size, first.block_size, first.block_hash)
               for p in parts):
            return None
        if len(parts) == 1:
            return first.piece_size
        size = first.size
        if any(p.size != size for p in parts[:-1]) or parts[-1].size > size:
            return None
        if size <= first.piece_size:
            return size  # each part is one piece
        if size % first.piece_size == 0:
            return first.piece_size  # each part is size / piece_size whole pieces
        return None

    def _sources(self, locations: list[StorageLocation]) -> list[Source]:
        """Sources over ``locations``, which ``_locations`` listed in serving order."""
        return [self.plugins.source(0, loc) for loc in locations if loc.enabled]

    @staticmethod
    def _content(parts: list[_Part], sources: list[Source]) -> Iterator[bytes]:
        """The bytes of the parts in order, every block verified; yields to other greenlets between blocks."""
        for part in parts:
            reader = VerifiedReader(part.layout(), [s for s in sources if s.location_id in part.location_ids])
            for data in reader.iter_range(0, part.size):
                yield data
                time.sleep(0)  # a long Complete must not starve the worker's other requests

    def _assemble(self, bucket_id: int, bucket_name: str, key: str, upload_id: str, parts: list[_Part],
                  metadata: ObjectMetadata) -> tuple[StoredObject, list[_Part]]:
        """Store the content of ``parts`` as the object; returns it and the parts whose pieces are left over."""
        s3_etag = multipart_etag([p.md5 for p in parts])
        common = set(parts[0].location_ids).intersection(*(p.location_ids for p in parts[1:]))
        with transaction(self.session_factory) as session:
            locations = [loc for loc in self._locations(session, common) if loc.enabled]
        if not locations:
            raise StorageUnavailable("no enabled location holds every part of this upload")
        sources = self._sources(locations)
        plan = self._piece_plan(parts)
        if plan is None:
            # parts of irregular sizes: re-cut the content into pieces, as a whole upload would be
            with Spool(self.settings.spool_dir, self.settings.piece_size, self.settings.block_size) as spool:
                spool.receive(IterStream(self._content(parts, sources)), sum(p.size for p in parts), 0)
                stored = self.uploads.store(spool, bucket_id, bucket_name, key, locations, metadata, s3_etag, {},
                                            finish=lambda session: self._finish(session, upload_id))
            return stored, parts
        # the sha256 that keys the file is the one whole-content hash Complete pays; the content's md5 is not
        # computed (an object's S3 ETag is its own, recorded on the object: files.md5 stays empty here)
        sha256 = hashlib.sha256()
        for data in self._content(parts, sources):
            sha256.update(data)
        checksum = sha256.hexdigest()
        size = sum(p.size for p in parts)
        link = Link(bucket_id, bucket_name, key, checksum, metadata, s3_etag, {})
        try:
            view, replaced, pending = self._reserve(link, upload_id, parts, plan, size, "", locations)
        except IntegrityError:  # the same content was stored by another request at this very moment
            raise Conflict("the same content is being stored by another request; retry") from None
        if not pending:
            if replaced is not None and replaced != checksum:
                self.content.release(replaced)
            return StoredObject(view, replaced is None, s3_etag, {}), parts
        moved: list[tuple[Any, int, int, _Part]] = []
        try:
            for target in pending:
                plugin = self.plugins.plugin_for(target.location)
                for part, first in zip(parts, self._first_pieces(parts, plan), strict=True):
                    for index in range(part.piece_count):
                        self._move(plugin, part.piece_name, index, checksum, first + index,
                                   part.layout().piece_length(index))
                        moved.append((plugin, first + index, index, part))
            with transaction(self.session_factory) as session:
                lock_file(session, checksum)
                self.content.mark_stored(session, pending)
                view, replaced = link_object(session, link)
                self._finish(session, upload_id)
        except BaseException:
            for plugin, index, part_index, part in moved:  # put the parts back as they were
                try:
                    self._move(plugin, checksum, index, part.piece_name, part_index,
                               part.layout().piece_length(part_index))
                except Exception:
                    log.exception("could not move piece %s.%d back to its part", checksum, index)
            self.content.abandon(checksum, pending)
            raise
        if replaced is not None and replaced != checksum:
            self.content.release(replaced)
        # pieces of the parts on locations that did not hold every part are left over
        used = {loc.id for loc in locations}
        return StoredObject(view, replaced is None, s3_etag, {}), [
            _Part(p.number, p.size, p.md5, p.piece_name, p.piece_size, p.block_size, p.block_hash, p.block_digests,
                  tuple(set(p.location_ids) - used)) for p in parts if set(p.location_ids) - used]

    def _reserve(self, link: Link, upload_id: str, parts: list[_Part], plan: int, size: int, md5: str,
                 locations: list[StorageLocation]) -> tuple[dict[str, Any] | None, str | None, list[PendingWrite]]:
        """The file row and a pending copy per location; or, when the content is stored already, the object
        pointed at it and the upload finished right there (no pending copies)."""
        checksum = link.checksum
        with transaction(self.session_factory) as session:
            file = lock_file(session, checksum)
            if file is not None:
                if not session.scalar(select(FileCopy.id).where(FileCopy.checksum == checksum,
                                                                FileCopy.state == CopyState.STORED).limit(1)):
                    raise Conflict("the same content is being stored or removed by another request; retry")
                view, replaced = link_object(session, link)
                self._finish(session, upload_id)
                return view, replaced, []
            session.add(File(checksum=checksum, size=size, piece_size=plan, piece_count=piece_count(size, plan),
                             block_size=parts[0].block_size, block_hash=parts[0].block_hash, md5=md5,
                             block_digests=b"".join(p.block_digests for p in parts)))
            session.flush()
            pending = []
            for location in locations:
                require_room(session, location, size)
                copy = FileCopy(checksum=checksum, location_id=location.id, state=CopyState.PENDING, owner=upload_id)
                session.add(copy)
                session.flush()
                pending.append(PendingWrite(copy.id, location))
            return None, None, pending

    @staticmethod
    def _first_pieces(parts: list[_Part], piece_size: int) -> list[int]:
        firsts, offset = [], 0
        for part in parts:
            firsts.append(offset // piece_size)
            offset += part.size
        return firsts

    @staticmethod
    def _move(plugin: Any, name: str, index: int, new_name: str, new_index: int, length: int) -> None:
        if plugin.can_move_pieces:
            plugin.move_piece(name, index, new_name, new_index)
            return
        # no rename on this backend: copy the piece's bytes (one read chunk at a time), then drop the old name
        plugin.write_piece(new_name, new_index, IterStream(iter(plugin.read_piece(name, index, 0, length))), length)
        plugin.delete_piece(name, index)

    @staticmethod
    def _finish(session: Session, upload_id: str) -> None:
        """The upload is done: its rows go in the transaction that makes the object appear."""
        session.execute(delete(UploadPart).where(UploadPart.upload_id == upload_id))
        session.execute(delete(MultipartUpload).where(MultipartUpload.id == upload_id))

    # ---- garbage collection ------------------------------------------------------------------------

    def piece_names(self) -> set[str]:
        """The names under which parts hold pieces (gc's orphan scan must not take them)."""
        with transaction(self.session_factory) as session:
            return set(session.scalars(select(UploadPart.piece_name)))

    def collect(self, expiry_seconds: int, pending_grace_seconds: int, dry_run: bool = False) -> dict[str, int]:
        """Remove uploads idle for ``expiry_seconds`` and parts whose writer died (pending past the grace)."""
        now = utcnow()
        expired_before = now - dt.timedelta(seconds=expiry_seconds)
        pending_before = now - dt.timedelta(seconds=pending_grace_seconds)
        report = {"expired_uploads": 0, "abandoned_parts": 0}
        with transaction(self.session_factory) as session:
            expired = list(session.scalars(select(MultipartUpload.id)
                                           .where(MultipartUpload.updated_at < expired_before)))
            stale = [_Part.of(r) for r in session.scalars(
                select(UploadPart).where(UploadPart.state == PartState.PENDING,
                                         UploadPart.created_at < pending_before))]
        report["expired_uploads"], report["abandoned_parts"] = len(expired), len(stale)
        if dry_run:
            return report
        for upload_id in expired:
            with transaction(self.session_factory) as session:
                upload = session.scalar(select(MultipartUpload).where(MultipartUpload.id == upload_id)
                                        .with_for_update())
                if upload is None or upload.updated_at >= expired_before:
                    continue
                parts = self._drop_upload(session, upload_id)
            self._remove_pieces(parts)
        if stale:
            with transaction(self.session_factory) as session:
                session.execute(delete(UploadPart).where(UploadPart.piece_name.in_([p.piece_name for p in stale]),
                                                         UploadPart.state == PartState.PENDING))
            self._remove_pieces(stale)
        return report

