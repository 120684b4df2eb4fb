"""Downloads: resolve what is read, apply HTTP conditions and ranges, charge the quota, stream verified bytes.

The data path reads top to bottom: blueprint -> ``DownloadService.open`` (resolve, conditions, charge)
-> ``VerifiedReader`` (copies in serving order, per-block verification and failover) -> plugin.
The database session is closed before the first body byte is sent, so a small connection pool
serves any number of slow downloads.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, Row, String, and_, bindparam, case, func, or_, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, sessionmaker

from storage_core.auth import AccessPolicy, Principal
from storage_core.db import PreparedQuery, connection, transaction
from storage_core.errors import (
    BucketNotFound,
    Conflict,
    NotFound,
    ObjectNotFound,
    RangeNotSatisfiable,
    StorageUnavailable,
    Unauthorized,
)
from storage_core.models import AccountLimit, Bucket, CopyState, File, FileCopy, Object, StorageLocation
from storage_core.ranges import (
    content_range,
    etag_matches,
    if_range_allows,
    multipart_layout,
    parse_range_header,
    unsatisfied_content_range,
)
from storage_core.services.combiner import Combiner
from storage_core.services.content import ContentStore
from storage_core.services.limits import Admission, DownloadLimits
from storage_core.services.quota import Charge, QuotaService, ReadRequest
from storage_core.services.reader import FileLayout, Source, VerifiedReader
from storage_core.timeutil import as_utc

log = logging.getLogger(__name__)

# Types a browser may display inline without risk of running content from our origin.
INLINE_SAFE_TYPES = frozenset({
    "text/plain", "application/pdf", "application/json", "image/png", "image/jpeg", "image/gif",
    "image/webp", "image/avif", "audio/mpeg", "audio/ogg", "audio/wav", "video/mp4", "video/webm",
    "video/ogg",
})


@dataclass(frozen=True, slots=True)
class Conditions:
    """The request headers that shape a download."""

    method: str = "GET"
    range: str | None = None
    if_range: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None


@dataclass
class Target:
    """What is being read and who pays for it."""

    bucket_id: int
    bucket: str
    key: str
    object_id: int
    content_type: str
    last_modified: dt.datetime
    file: FileLayout
    sources: list[Source]  # the servable copies, in serving order
    limited: bool  # the reading account has download limits


@dataclass
class DownloadResponse:
    status: int
    headers: dict[str, str]
    body: Iterator[bytes] | None = None
    charge: Charge | None = field(default=None, repr=False)


def content_disposition(filename: str, inline: bool) -> str:
    """RFC 6266 with an ASCII fallback and the RFC 5987 UTF-8 form of the name."""
    kind = "inline" if inline else "attachment"
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%;' else "_" for c in filename) or "download"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def http_date(value: dt.datetime) -> str:
    return email.utils.format_datetime(as_utc(value).astimezone(dt.UTC), usegmt=True)


def not_modified_since(header: str | None, last_modified: dt.datetime) -> bool:
    if not header:
        return False
    try:
        since = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    return int(as_utc(last_modified).timestamp()) <= int(since.timestamp())


class ChargedBody:
    """The response body: counts the content bytes the client received, refunds the rest when closed.

    ``chunks`` yields ``(data, is_content)``; multipart framing is sent but not charged.
    """

    def __init__(self, chunks: Iterator[tuple[bytes, bool]], quota: QuotaService, charge: Charge | None,
                 prefetched: list[tuple[bytes, bool]], limits: DownloadLimits, admission: Admission | None):
        self._chunks = chunks
        self._quota = quota
        self._charge = charge
        self._prefetched = prefetched
        self._limits = limits
        self._admission = admission
        self.delivered = 0
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        renew_at = time.monotonic() + self._limits.renew_every_seconds if self._admission else None
        for source in (self._prefetched, self._chunks):
            for data, is_content in source:
                yield data
                # resumed: the server has written the chunk
                if is_content:
                    self.delivered += len(data)
                if renew_at is not None and time.monotonic() >= renew_at:
                    self._limits.renew(self._admission)  # type: ignore[arg-type]
                    renew_at = time.monotonic() + self._limits.renew_every_seconds
        self._prefetched = []

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        if self._admission is not None:
            try:
                self._limits.release(self._admission)
            except Exception:  # the lease expires by itself
                log.exception("could not release download lease %s", self._admission.lease_id)
        if self._charge is not None and self.delivered < self._charge.size:
            undelivered = self._charge.size - self.delivered
            log.info("read record %d ended after %d of %d bytes; refunding %d", self._charge.record_id,
                     self.delivered, self._charge.size, undelivered)
            try:
                self._quota.refund(self._charge, undelivered)
            except Exception:
                log.exception("refund of %d bytes for read record %d failed", undelivered, self._charge.record_id)


def _resolve_statement(*conditions: Any, batch: bool = False) -> Any:
    """Objects with bucket, file, servable copies in serving order and the account's limit flag: everything
    a download needs from the database, in one statement. Built once, from tables rather than ORM
    entities, so a download pays neither for building the query nor for loading entities.

    ``batch``: the objects of many downloads at once, given as three arrays (``buckets``, ``keys``,
    ``accounts``); each row says which download it belongs to in ``request`` (1-based)."""
    o, b, f, c, loc, lim = (m.__table__ for m in (Object, Bucket, File, FileCopy, StorageLocation, AccountLimit))
    columns = [o.c.id.label("object_id"), o.c.key, o.c.content_type, o.c.created_at,
               b.c.id.label("bucket_id"), b.c.name.label("bucket"), b.c.owner, b.c.visibility,
               f.c.checksum, f.c.size, f.c.piece_size, f.c.block_size, f.c.block_digests, f.c.block_hash,
               c.c.id.label("copy_id"), loc.c.id.label("location_id"), loc.c.name.label("location"), loc.c.tier,
               loc.c.updated_at.label("location_version"), lim.c.account.label("limited")]
    serving = (case((loc.c.tier == "hot", 0), else_=1), loc.c.priority, loc.c.id)
    if batch:
        names = ("buckets", "keys", "accounts")
        want = func.unnest(*(bindparam(n, type_=ARRAY(String)) for n in names)).table_valued(
            "bucket", "key", "account", with_ordinality="request").render_derived(name="want")
        objects = (want.join(b, b.c.name == want.c.bucket)
                   .join(o, and_(o.c.bucket_id == b.c.id, o.c.key == want.c.key)))
        account, columns, order = want.c.account, [want.c.request, *columns], (want.c.request, *serving)
    else:
        objects = o.join(b, b.c.id == o.c.bucket_id)
        account, order = bindparam("account"), (b.c.name, o.c.id, *serving)
    return (
        select(*columns)
        .select_from(
            objects
            .join(f, f.c.checksum == o.c.checksum)
            .outerjoin(c, and_(c.c.checksum == f.c.checksum, or_(*(c.c.state == s for s in CopyState.SERVABLE))))
            .outerjoin(loc, and_(loc.c.id == c.c.location_id, loc.c.enabled.is_(True)))
            .outerjoin(lim, lim.c.account == account))
        .where(*conditions)
        .order_by(*order)
    )


_o, _b = Object.__table__, Bucket.__table__
BY_KEY = PreparedQuery("resolve_by_key", _resolve_statement(
    _b.c.name == bindparam("bucket"), _o.c.key == bindparam("key")))
# the downloads by key that arrive together in one worker, resolved in one round trip (PostgreSQL)
BY_KEYS = PreparedQuery("resolve_by_keys", _resolve_statement(batch=True))
BY_CHECKSUM = PreparedQuery("resolve_by_checksum", _resolve_statement(_o.c.checksum == bindparam("checksum")))
BY_CHECKSUM_IN_BUCKET = PreparedQuery("resolve_by_checksum_in_bucket", _resolve_statement(
    _o.c.checksum == bindparam("checksum"), _b.c.name == bindparam("bucket")))


class DownloadService:
    def __init__(self, session_factory: sessionmaker[Session], content: ContentStore, quota: QuotaService,
                 policy: AccessPolicy, limits: DownloadLimits, verify_reads: bool = True,
                 read_engine: Engine | None = None):
        self.session_factory = session_factory
        # the resolving SELECT runs on autocommit connections of their own pool, without an ORM session
        self.read_engine: Engine = read_engine or session_factory.kw["bind"]
        self.content = content
        self.quota = quota
        self.policy = policy
        self.limits = limits
        self.verify_reads = verify_reads
        # On PostgreSQL the downloads by key that arrive while one resolving query runs share the next
        # one: a round trip to the database costs the worker more CPU than the query itself.
        self._batched = self.read_engine.dialect.name == "postgresql"
        self._resolver: Combiner[list[Row[Any]]] = Combiner(self._resolve_batch)

    # ---- resolution --------------------------------------------------------------------------------

    def _rows_by_key(self, bucket: str, key: str, account: str) -> list[Row[Any]]:
        if self._batched:
            return self._resolver.submit(BY_KEYS.name, (bucket, key, account))
        with connection(self.read_engine) as conn:
            return BY_KEY.all(conn, bucket=bucket, key=key, account=account)

    def _resolve_batch(self, _name: str, wanted: list[tuple[str, str, str]]) -> list[list[Row[Any]]]:
        with connection(self.read_engine) as conn:
            rows = BY_KEYS.all(conn, buckets=[w[0] for w in wanted], keys=[w[1] for w in wanted],
                               accounts=[w[2] for w in wanted])
        found: list[list[Row[Any]]] = [[] for _ in wanted]
        for row in rows:
            found[row.request - 1].append(row)
        return found

    def _target(self, rows: list[Any]) -> Target:
        first = rows[0]
        layout = FileLayout(first.checksum, first.size, first.piece_size, first.block_size,
                            bytes(first.block_digests), first.block_hash)
        sources = [
            Source(row.copy_id, row.location_id, row.location, row.tier,
                   self.content.directory.plugin_for_id(self.read_engine, row.location_id, row.location_version))
            for row in rows if row.object_id == first.object_id and row.location_id is not None
        ]
        return Target(first.bucket_id, first.bucket, first.key, first.object_id, first.content_type,
                      as_utc(first.created_at), layout, sources, limited=first.limited is not None)

    def resolve_object(self, bucket: str, key: str, principal: Principal) -> Target:
        rows = self._rows_by_key(bucket, key, principal.account)
        if not rows:
            with connection(self.read_engine) as conn:
                found = conn.execute(select(Bucket.owner, Bucket.visibility).where(Bucket.name == bucket)).first()
            if found is None:
                raise BucketNotFound(f"bucket {bucket!r} does not exist")
            # who may not read the bucket may not learn which keys exist in it either
            self.policy.require_read(principal, bucket, found[0], found[1], key)
            raise ObjectNotFound(f"object {key!r} does not exist in bucket {bucket!r}")
        self.policy.require_read(principal, bucket, rows[0].owner, rows[0].visibility, key)
        return self._target(rows)

    def resolve_checksum(self, checksum: str, bucket: str | None, principal: Principal) -> Target:
        with connection(self.read_engine) as conn:
            if bucket is None:
                rows = BY_CHECKSUM.all(conn, checksum=checksum, account=principal.account)
            else:
                rows = BY_CHECKSUM_IN_BUCKET.all(conn, checksum=checksum, bucket=bucket, account=principal.account)
        readable = [row for row in rows
                    if self.policy.can_read(principal, row.bucket, row.owner, row.visibility, row.key)]
        if rows and not readable and not principal.authenticated:
            raise Unauthorized("authentication required to read this file")
        if not readable:
            where = f" in bucket {bucket!r}" if bucket else ""
            raise NotFound(f"no object with checksum {checksum}{where}")
        buckets = sorted({row.bucket for row in readable})
        if len(buckets) > 1:
            raise Conflict(
                f"checksum {checksum} is in several buckets; choose the paying one with ?bucket=",
                extra={"buckets": buckets},
            )
        return self._target(readable)

    # ---- the download ------------------------------------------------------------------------------

    def open_object(self, bucket: str, key: str, conditions: Conditions, principal: Principal) -> DownloadResponse:
        return self._open(lambda: self.resolve_object(bucket, key, principal), conditions,
                          principal.account, inline=False)

    def open_checksum(self, checksum: str, bucket: str | None, conditions: Conditions, principal: Principal,
                      inline: bool) -> DownloadResponse:
        return self._open(lambda: self.resolve_checksum(checksum, bucket, principal), conditions,
                          principal.account, inline)

    def _open(self, resolve, conditions: Conditions, account: str, inline: bool) -> DownloadResponse:  # type: ignore[no-untyped-def]
        charge: Charge | None = None
        admission: Admission | None = None
        # resolving holds a pooled connection only for its query (and, batched, shares it)
        target = resolve()
        file = target.file
        etag = f'"{file.checksum}"'
        headers = self._headers(target, etag, inline)
        if self._not_modified(conditions, etag, target.last_modified):
            return DownloadResponse(304, {k: v for k, v in headers.items()
                                          if k in ("ETag", "Last-Modified", "Accept-Ranges")})
        ranges = None
        if conditions.range and if_range_allows(conditions.if_range, etag,
                                                int(as_utc(target.last_modified).timestamp())):
            ranges = parse_range_header(conditions.range, file.size)
        if ranges == []:
            raise RangeNotSatisfiable(
                f"no requested range is within the {file.size} bytes of the object",
                headers={"Content-Range": unsatisfied_content_range(file.size), **headers},
            )
        status, body_ranges, parts, closing, length = self._shape(ranges, file.size, target, headers)
        headers["Content-Length"] = str(length)
        if conditions.method == "HEAD":
            return DownloadResponse(status, headers)
        reader = VerifiedReader(file, target.sources, self.content.note_failure, verify=self.verify_reads)
        if not reader.sources and file.size:
            raise StorageUnavailable(f"no enabled location holds a stored copy of {file.checksum}")
        content_size = sum(end - start for start, end in body_ranges)
        if content_size and target.limited:
            with transaction(self.session_factory) as session:
                admission = self.limits.admit_in(session, account)
        if content_size:
            try:
                charge = self.quota.charge(ReadRequest(target.bucket_id, target.key, target.object_id,
                                                       file.checksum, account, content_size))
            except Exception:
                if admission is not None:
                    self.limits.release(admission, undo_monthly=True)
                raise
        # committed: the charge and its record are durable before any byte leaves
        chunks = self._chunks(reader, body_ranges, parts, closing)
        # Read up to the first content block before answering: when no copy can serve it, the client
        # gets a clean 503 and the charge is undone, instead of a 200 that breaks at once.
        prefetched: list[tuple[bytes, bool]] = []
        try:
            for item in chunks:
                prefetched.append(item)
                if item[1]:
                    break
        except StorageUnavailable:
            if charge is not None:
                self.quota.refund(charge, charge.size)
            if admission is not None:
                self.limits.release(admission, undo_monthly=True)
            raise
        body = ChargedBody(chunks, self.quota, charge, prefetched, self.limits, admission)
        return DownloadResponse(status, headers, body, charge)

    @staticmethod
    def _headers(target: Target, etag: str, inline: bool) -> dict[str, str]:
        content_type = target.content_type
        inline = inline and content_type.split(";")[0].strip().lower() in INLINE_SAFE_TYPES
        return {
            "ETag": etag,
            "Last-Modified": http_date(target.last_modified),
            "Accept-Ranges": "bytes",
            "Content-Type": content_type,
            "Content-Disposition": content_disposition(target.key.rsplit("/", 1)[-1] or target.key, inline),
            "X-Content-Type-Options": "nosniff",
        }

    @staticmethod
    def _not_modified(conditions: Conditions, etag: str, last_modified: dt.datetime) -> bool:
        # RFC 9110 13.2.2: If-None-Match takes precedence; If-Modified-Since only without it.
        if conditions.if_none_match is not None:
            return etag_matches(conditions.if_none_match, etag)
        return not_modified_since(conditions.if_modified_since, last_modified)

    @staticmethod
    def _shape(ranges, size, target, headers):  # type: ignore[no-untyped-def]
        """(status, content ranges, multipart parts, closing delimiter, body length)."""
        if ranges is None:
            return 200, [(0, size)], None, b"", size
        if len(ranges) == 1:
            start, end = ranges[0]
            headers["Content-Range"] = content_range(start, end, size)
            return 206, ranges, None, b"", end - start
        boundary = secrets.token_hex(16)
        parts, closing, length = multipart_layout(ranges, size, target.content_type, boundary)
        headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
        return 206, ranges, parts, closing, length

    @staticmethod
    def _chunks(reader: VerifiedReader, ranges, parts, closing) -> Iterator[tuple[bytes, bool]]:  # type: ignore[no-untyped-def]
        if parts is None:
            for start, end in ranges:
                for data in reader.iter_range(start, end):
                    yield data, True
            return
        for header, start, end in parts:
            yield header, False
            for data in reader.iter_range(start, end):
                yield data, True
        yield closing, False
