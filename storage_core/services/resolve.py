"""Resolving a download: which object is read, who pays, and its copies in serving order, in one query.

The statement is built once, from tables rather than ORM entities, so a download pays neither for
building the query nor for loading entities. On PostgreSQL it is prepared (``db.PreparedQuery``), and
the downloads by key that arrive in one worker while such a query runs share the next one (a round
trip costs the worker more CPU than the query costs PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Row, String, and_, bindparam, case, func, null, or_, select
from sqlalchemy.dialects.postgresql import ARRAY

from storage_core.auth import AccessPolicy, BucketFacts, Principal
from storage_core.db import PreparedQuery, connection
from storage_core.errors import AccessKeyNotFound, Conflict, Forbidden, NotFound, ObjectNotFound
from storage_core.integrity import INLINE_DIGESTS, DigestCache
from storage_core.layout import FileLayout
from storage_core.models import (
    Access,
    AccessKey,
    AccountLimit,
    Bucket,
    CopyState,
    DamagedPiece,
    File,
    FileCopy,
    Object,
    PresignRevocation,
    StorageLocation,
)
from storage_core.services.combiner import BUSY_GATHER_SECONDS, Combiner
from storage_core.services.permissions import bucket_access
from storage_core.services.sources import PluginCache, Source, serving_order
from storage_core.timeutil import as_utc, now_us


@dataclass(frozen=True, slots=True)
class ByKey:
    """An object named by bucket and key (Greenfield GetObject, S3 GetObject)."""

    bucket: str
    key: str


@dataclass(frozen=True, slots=True)
class ByChecksum:
    """A file named by its checksum (REGARDS); ``bucket`` chooses the paying bucket."""

    checksum: str
    bucket: str | None = None


Selector = ByKey | ByChecksum


@dataclass
class Target:
    """What is being read and who pays for it."""

    bucket_id: int
    bucket: str
    visibility: str
    key: str
    object_id: int
    content_type: str
    last_modified: dt.datetime
    last_modified_strong: bool  # whether If-Range may trust a date (see Object.last_modified_weak)
    md5: str
    file: FileLayout
    sources: list[Source]  # the copies that can serve now (online, and unexpired cached ones), in serving order
    limited: bool  # the reading account has download limits
    # copies on nearline locations, which cannot serve before a restore; the cached copies among
    # ``sources`` are their restored copies
    nearline: list[Source] = field(default_factory=list)
    # when each cached copy among ``sources`` expires, by copy id
    cache_expiry: dict[int, dt.datetime] = field(default_factory=dict)
    s3_etag: str = ""  # S3's entity tag, unquoted (the md5 for objects stored before it was recorded)
    content_encoding: str | None = None
    content_disposition: str | None = None
    cache_control: str | None = None
    user_metadata: dict[str, str] | None = None
    checksums: dict[str, str] | None = None

    @property
    def nearline_only(self) -> bool:
        """No copy can serve now, and a restore of a nearline copy would make one (an empty file needs none)."""
        return bool(self.nearline) and not self.sources and self.file.size > 0


def _resolve_statement(*conditions: Any, batch: bool = False) -> Any:
    """Objects with bucket, file, servable copies in serving order and the account's limit flag: everything
    a download needs from the database, in one statement.

    ``batch``: the objects of many downloads at once, given as four arrays (``buckets``, ``keys``,
    ``accounts``, ``access_keys``); each row says which download it belongs to in ``request`` (1-based).

    ``key_alive`` is the id of the S3 access key the download was signed with, if that key still exists:
    the S3 door keeps key identities in memory, and a deleted key is refused by this very statement (no
    round trip of its own, and no stale cache)."""
    o, b, f, c, loc, lim, rev, dmg, ak = (m.__table__ for m in (Object, Bucket, File, FileCopy, StorageLocation,
                                                               AccountLimit, PresignRevocation, DamagedPiece,
                                                               AccessKey))
    columns = [o.c.id.label("object_id"), o.c.key, o.c.content_type, o.c.created_at, o.c.last_modified_weak,
               o.c.s3_etag, o.c.content_encoding, o.c.content_disposition, o.c.cache_control, o.c.user_metadata,
               o.c.checksums,
               b.c.id.label("bucket_id"), b.c.name.label("bucket"), b.c.owner, b.c.visibility,
               f.c.checksum, f.c.size, f.c.piece_size, f.c.block_size, f.c.block_hash, f.c.md5,
               # long digests stay in the database: the resolver keeps them per process (DigestCache)
               case((func.length(f.c.block_digests) <= INLINE_DIGESTS, f.c.block_digests),
                    else_=null()).label("block_digests"),
               c.c.id.label("copy_id"), c.c.expires_at.label("copy_expires_at"), loc.c.id.label("location_id"),
               loc.c.name.label("location"), loc.c.tier, loc.c.access, loc.c.purpose,
               loc.c.updated_at.label("location_version"), lim.c.account.label("limited"),
               rev.c.revoked_before_us,
               select(dmg.c.copy_id).where(dmg.c.copy_id == c.c.id).exists().label("damaged"),
               ak.c.id.label("key_alive")]
    serving = serving_order(loc.c)
    if batch:
        names = ("buckets", "keys", "accounts", "access_keys")
        want = func.unnest(*(bindparam(n, type_=ARRAY(String)) for n in names)).table_valued(
            "bucket", "key", "account", "access_key", with_ordinality="request").render_derived(name="want")
        objects = (want.join(b, b.c.name == want.c.bucket)
                   .join(o, and_(o.c.bucket_id == b.c.id, o.c.key == want.c.key)))
        account, access_key = want.c.account, want.c.access_key
        columns, order = [want.c.request, *columns], (want.c.request, *serving)
    else:
        objects = o.join(b, b.c.id == o.c.bucket_id)
        account, access_key, order = bindparam("account"), bindparam("access_key"), (b.c.name, o.c.id, *serving)
    return (
        select(*columns)
        .select_from(
            objects
            .join(f, f.c.checksum == o.c.checksum)
            .outerjoin(c, and_(c.c.checksum == f.c.checksum, or_(*(c.c.state == s for s in CopyState.SERVABLE))))
            .outerjoin(loc, and_(loc.c.id == c.c.location_id, loc.c.enabled.is_(True)))
            .outerjoin(lim, lim.c.account == account)
            .outerjoin(rev, rev.c.account == account)
            .outerjoin(ak, ak.c.id == access_key))
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


def _facts(row: Any) -> BucketFacts:
    return BucketFacts(row.bucket_id, row.bucket, row.owner, row.visibility)
def _json(value: Any) -> Any:
    """A JSON column of a prepared statement's row: decoded by the driver on PostgreSQL, text elsewhere."""
    if isinstance(value, str):
        return json.loads(value)
    return value


class Resolver:
    """Finds the target of a download and checks that the principal may read it."""

    def __init__(self, autocommit_engine: Engine, plugins: PluginCache, policy: AccessPolicy,
                 clock: Callable[[], int] = now_us, digests: DigestCache | None = None):
        self.engine = autocommit_engine
        self.plugins = plugins
        self.policy = policy
        self.clock = clock
        self.digests = digests if digests is not None else DigestCache()
        self._batched = autocommit_engine.dialect.name == "postgresql"
        self._combiner: Combiner[list[Row[Any]]] = Combiner(self._resolve_batch, BUSY_GATHER_SECONDS)

    def resolve(self, selector: Selector, principal: Principal) -> Target:
        if isinstance(selector, ByKey):
            return self._by_key(selector.bucket, selector.key, principal)
        return self._by_checksum(selector.checksum, selector.bucket, principal)

    def _rows_by_key(self, bucket: str, key: str, principal: Principal) -> list[Row[Any]]:
        access_key = principal.access_key or ""
        if self._batched:
            return self._combiner.submit(BY_KEYS.name, (bucket, key, principal.account, access_key))
        with connection(self.engine) as conn:
            return BY_KEY.all(conn, bucket=bucket, key=key, account=principal.account, access_key=access_key)

    def _resolve_batch(self, _name: str, wanted: list[tuple[str, str, str, str]]
                       ) -> list[list[Row[Any]] | Exception]:
        with connection(self.engine) as conn:
            rows = BY_KEYS.all(conn, buckets=[w[0] for w in wanted], keys=[w[1] for w in wanted],
                               accounts=[w[2] for w in wanted], access_keys=[w[3] for w in wanted])
        found: list[Any] = [[] for _ in wanted]
        for row in rows:
            found[row.request - 1].append(row)
        return found

    def _target(self, rows: list[Any]) -> Target:
        first = rows[0]
        online, nearline, expiry = [], [], {}
        now: dt.datetime | None = None
        for row in rows:
            if row.object_id != first.object_id or row.location_id is None:
                continue
            if row.access == Access.NEARLINE:
                nearline.append(row)
                continue
            if row.copy_expires_at is not None:  # a cached copy: served until it expires
                expires_at = as_utc(row.copy_expires_at)
                now = now or dt.datetime.fromtimestamp(self.clock() / 1e6, dt.UTC)
                if expires_at <= now:
                    continue
                expiry[row.copy_id] = expires_at
            online.append(row)
        # a cached copy with damaged pieces is restored again rather than repaired: it does not serve
        sources = [s for s in self.plugins.sources_of_rows(self.engine, online) if not (s.cached and s.damaged)]
        nearline_sources = self.plugins.sources_of_rows(self.engine, nearline) if nearline else []
        return Target(first.bucket_id, first.bucket, first.visibility, first.key, first.object_id,
                      first.content_type, as_utc(first.created_at), not first.last_modified_weak, first.md5,
                      self._layout(first), sources,
                      limited=first.limited is not None, nearline=nearline_sources,
                      cache_expiry={s.copy_id: expiry[s.copy_id] for s in sources if s.copy_id in expiry},
                      s3_etag=first.s3_etag or first.md5,
                      content_encoding=first.content_encoding, content_disposition=first.content_disposition,
                      cache_control=first.cache_control, user_metadata=_json(first.user_metadata),
                      checksums=_json(first.checksums))

    def _layout(self, row: Any) -> FileLayout:
        """The file's layout; digests longer than ``INLINE_DIGESTS`` from the cache, fetched on a miss."""
        if row.block_digests is not None:
            return FileLayout.of(row)
        key = (row.checksum, row.piece_size, row.block_size, row.block_hash)
        digests = self.digests.get(key)
        if digests is None:
            f = File.__table__
            with connection(self.engine) as conn:
                found = conn.execute(select(f.c.block_digests).where(
                    f.c.checksum == row.checksum, f.c.piece_size == row.piece_size,
                    f.c.block_size == row.block_size, f.c.block_hash == row.block_hash)).first()
            if found is None:  # deleted (or stored again otherwise) since the resolve
                raise NotFound(f"file {row.checksum} no longer exists")
            digests = bytes(found.block_digests)
            self.digests.put(key, digests)
        return FileLayout(row.checksum, row.size, row.piece_size, row.block_size, digests, row.block_hash)

    def _by_key(self, bucket: str, key: str, principal: Principal) -> Target:
        rows = self._rows_by_key(bucket, key, principal)
        if principal.access_key and rows and rows[0].key_alive is None:
            raise AccessKeyNotFound(f"access key {principal.access_key} does not exist")
        if not rows:
            if principal.presigned is not None:
                raise Forbidden("the object this presigned URL names no longer exists")
            with connection(self.engine) as conn:
                if principal.access_key and not conn.scalar(select(AccessKey.id).where(
                        AccessKey.id == principal.access_key)):
                    raise AccessKeyNotFound(f"access key {principal.access_key} does not exist")
                found = bucket_access(conn, bucket)
            # who may not read the bucket may not learn which keys exist in it either
            self.policy.require_read(principal, found, key)
            raise ObjectNotFound(f"object {key!r} does not exist in bucket {bucket!r}")
        first = rows[0]
        self.policy.require_read(principal, _facts(first), key, first.revoked_before_us)
        return self._target(rows)

    def _by_checksum(self, checksum: str, bucket: str | None, principal: Principal) -> Target:
        with connection(self.engine) as conn:
            access_key = principal.access_key or ""
            if bucket is None:
                rows = BY_CHECKSUM.all(conn, checksum=checksum, account=principal.account, access_key=access_key)
            else:
                rows = BY_CHECKSUM_IN_BUCKET.all(conn, checksum=checksum, bucket=bucket, account=principal.account,
                                                 access_key=access_key)
        if principal.access_key and rows and rows[0].key_alive is None:
            raise AccessKeyNotFound(f"access key {principal.access_key} does not exist")
        readable = [row for row in rows if self.policy.can_read(principal, _facts(row), row.key, row.revoked_before_us)]
        # a file held only where the caller cannot read is, to the caller, a file that does not exist:
        # anyone holding a document must not learn from us that it is stored here
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
